"""An action's form, generated from its manifest, and the submitted form turned back into inputs.

Each input property becomes one control chosen by its schema: an ``enum`` a select, a boolean a
select of (unset, true, false) since a checkbox cannot say "not given", a number an ``<input
type=number>`` with the schema's range, a file field a file picker, a field with ``x-options-from``
a text box offering the choices (e.g. model ids from ``list_models``), and anything structured
(arrays, objects, unions) a textarea taking JSON or text. Every submitted value stays text:
the action's own coercion and validation read it exactly as they read a workflow's values, so
the error the page shows is the one a workflow would get, naming the field.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FormField", "MAX_UPLOAD_BYTES", "fields_for", "inputs_from_form"]

#: The largest file the console accepts in one form (the API's own limits are checked by the action).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024


@dataclass
class FormField:
    """One control of an action's form."""

    name: str
    kind: str  # select | boolean | number | file | options | text | json
    label: str
    description: str = ""
    required: bool = False
    default: str = ""
    choices: list[str] = field(default_factory=list)
    minimum: str = ""
    maximum: str = ""
    step: str = ""
    type_text: str = ""


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in schema.get("anyOf", []) + schema.get("oneOf", []) if isinstance(b, dict)]


def _type_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"][:12])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind:
        return str(kind) + (" (file)" if schema.get("format") == "binary" else "")
    branches = _branches(schema)
    return " or ".join(sorted({str(b.get("type", "value")) for b in branches})) if branches else "value"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _is_file(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "string" and schema.get("format") == "binary"


def fields_for(manifest: Any, model_choices: list[str] | None = None) -> list[FormField]:
    """The form's controls, in manifest order (required fields first)."""
    required = set(manifest.input.get("required", []))
    properties: dict[str, Any] = manifest.properties
    ordered = sorted(properties, key=lambda name: name not in required)
    result = []
    for name in ordered:
        schema = properties[name]
        if not isinstance(schema, dict):
            continue
        control = FormField(name=name, kind="json", label=name, description=str(schema.get("description", "")),
                            required=name in required, default=_text(schema.get("default")),
                            type_text=_type_text(schema))
        kind = schema.get("type")
        if "enum" in schema:
            control.kind, control.choices = "select", [_text(v) for v in schema["enum"]]
        elif kind == "boolean":
            control.kind = "boolean"
        elif kind in ("integer", "number"):
            control.kind = "number"
            low = schema.get("minimum", schema.get("exclusiveMinimum"))
            high = schema.get("maximum", schema.get("exclusiveMaximum"))
            control.minimum, control.maximum = _text(low), _text(high)
            control.step = "1" if kind == "integer" else "any"
        elif _is_file(schema):
            control.kind = "file"
        elif schema.get("x-options-from"):
            control.kind = "options"
            examples = [_text(v) for v in schema.get("examples", []) if isinstance(v, str)]
            control.choices = list(dict.fromkeys([*(model_choices or []), *examples]))
        elif kind == "string":
            control.kind = "text"
        result.append(control)
    return result


async def inputs_from_form(form: Any, fields: list[FormField]) -> dict[str, Any]:
    """Submitted values as the action's text inputs: blanks left out, files as data URLs.

    Only the manifest's own field names are read; anything else in the form is ignored (the CSRF
    value, the integration choice).
    """
    inputs: dict[str, Any] = {}
    for control in fields:
        value = form.get(control.name)
        if control.kind == "file":
            if value is None or isinstance(value, str) or not getattr(value, "filename", ""):
                continue
            data = await value.read(MAX_UPLOAD_BYTES + 1)
            if len(data) > MAX_UPLOAD_BYTES:
                from integration.errors import InputError

                raise InputError([{"field": control.name, "reason": f"is over the console's limit of "
                                   f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB (use a workflow with a file path)"}])
            mime = getattr(value, "content_type", "") or "application/octet-stream"
            inputs[control.name] = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            continue
        if not isinstance(value, str) or value == "":
            continue
        inputs[control.name] = value
    return inputs
