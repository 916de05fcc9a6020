"""OpenAI's spec as the simulator reads it: request validation with OpenAI's 400 messages, and answers
synthesized from response schemas.

The data comes from ``openapi_operations.json`` (see ``extract.py``); validators are compiled on first
use per operation, so starting a simulator costs one JSON load, not 289 compilations.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from actions._coerce import json_type
from actions.simulator.extract import DATA_FILE

__all__ = ["Operation", "operation", "operations", "sample_for", "validate_request"]

JSON = "application/json"
MULTIPART = "multipart/form-data"


@cache
def _data() -> dict[str, Any]:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


class Operation:
    """One spec operation: its route, request schemas (compiled on demand) and answer schema."""

    def __init__(self, operation_id: str, raw: dict[str, Any], defs: dict[str, Any]) -> None:
        self.operation_id = operation_id
        self.spec: str = raw["spec"]
        self.method: str = raw["method"]
        self.path: str = raw["path"]
        self.defs = defs
        self._requests: dict[str, Any] = raw.get("request") or {}
        self.response_schema: Any = (raw.get("response") or {}).get("schema")
        self._validators: dict[str, Draft202012Validator] = {}

    @property
    def content_types(self) -> tuple[str, ...]:
        return tuple(self._requests)

    def _rooted(self, schema: Any) -> dict[str, Any]:
        """The schema with the spec's ``$defs`` beside it, so its ``#/$defs/…`` refs resolve."""
        return {"$defs": self.defs, "allOf": [schema]}

    def validator(self, content_type: str) -> Draft202012Validator | None:
        if content_type not in self._requests:
            return None
        if content_type not in self._validators:
            inlined = _inline(self._requests[content_type], self.defs, ())
            self._validators[content_type] = Draft202012Validator(self._rooted(inlined))
        return self._validators[content_type]

    def known_fields(self, content_type: str) -> frozenset[str]:
        """Top-level request parameters the spec names (an unknown one is refused like the API does)."""
        return frozenset(_top_level_properties(self._requests.get(content_type), self.defs, 0))

    def field_types(self, content_type: str) -> dict[str, set[str]]:
        """JSON types each top-level field accepts (multipart text is read as these)."""
        types: dict[str, set[str]] = {}
        for name, sub in _top_level_property_schemas(self._requests.get(content_type), self.defs, 0).items():
            types.setdefault(name, set()).update(_types_of(sub, self.defs, 0))
        return types

    def synthesized_answer(self) -> Any:
        """A deterministic answer that fits the response schema (for operations without a behaviour)."""
        if self.response_schema is None:
            return {}
        return sample_for(self.response_schema, {"$defs": self.defs}, required_only_below=3)


@cache
def operations() -> dict[str, Operation]:
    data = _data()
    return {operation_id: Operation(operation_id, raw, data["defs"][raw["spec"]])
            for operation_id, raw in data["operations"].items()}


def operation(operation_id: str) -> Operation | None:
    return operations().get(operation_id)


def _inline(node: Any, defs: dict[str, Any], stack: tuple[str, ...]) -> Any:
    """The schema with its ``$defs`` refs copied in, except where a schema refers to itself (that ref stays and
    resolves through ``$defs``): validating then follows no refs on the common paths, about 3x faster."""
    if isinstance(node, list):
        return [_inline(item, defs, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in stack or name not in defs:
            return node
        return _inline(defs[name], defs, (*stack, name))
    return {key: value if key in ("enum", "const", "required") else _inline(value, defs, stack)
            for key, value in node.items()}


def _deref(schema: Any, defs: dict[str, Any]) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/$defs/"):
        schema = defs.get(schema["$ref"].removeprefix("#/$defs/"), {})
    return schema


def _top_level_property_schemas(schema: Any, defs: dict[str, Any], depth: int) -> dict[str, Any]:
    schema = _deref(schema, defs)
    if not isinstance(schema, dict) or depth > 16:
        return {}
    found = dict(schema.get("properties") or {})
    for key in ("allOf", "anyOf"):
        for sub in schema.get(key) or []:
            for name, value in _top_level_property_schemas(sub, defs, depth + 1).items():
                found.setdefault(name, value)
    return found


def _top_level_properties(schema: Any, defs: dict[str, Any], depth: int) -> set[str]:
    return set(_top_level_property_schemas(schema, defs, depth))


def _types_of(schema: Any, defs: dict[str, Any], depth: int) -> set[str]:
    schema = _deref(schema, defs)
    if not isinstance(schema, dict) or depth > 16:
        return set()
    kind = schema.get("type")
    found = set(kind if isinstance(kind, list) else [kind] if kind else [])
    for key in ("allOf", "anyOf"):
        for sub in schema.get(key) or []:
            found |= _types_of(sub, defs, depth + 1)
    return found


# ---------------------------------------------------------------- request validation (OpenAI's 400 shape)


def _param(path: Any) -> str:
    """jsonschema's path as OpenAI writes ``param``: ``messages[0].content``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
               "object": "an object", "array": "an array", "null": "null"}


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expected(types: list[str]) -> str:
    words = [_TYPE_WORDS.get(t, t) for t in dict.fromkeys(types) if t != "null"] or ["null"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _is_root_type(error: ValidationError) -> bool:
    return not error.relative_path and error.validator == "type"


def _is_tag(error: ValidationError) -> bool:
    """An enum/const miss one level down: the branch's discriminator (``role``, ``type``) says "not me"."""
    return len(error.relative_path) == 1 and error.validator in ("enum", "const")


def _first(errors: list[ValidationError]) -> ValidationError:
    return min(errors, key=lambda e: (len(e.absolute_path), e.validator != "required"))


def _leaves(error: ValidationError) -> list[ValidationError]:
    """An ``allOf`` (how refs are wrapped) reports its own failures; its context holds the real ones."""
    if error.validator == "allOf" and error.context:
        return [leaf for sub in error.context for leaf in _leaves(sub)]
    return [error]


def _explain(error: ValidationError) -> tuple[str, str | None]:
    """(message, param) for one jsonschema error, descending into anyOf to the branch that was meant."""
    path = list(error.absolute_path)
    param = _param(path) or None
    where = f"'{param}'" if param else "the request body"
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).extend(_leaves(sub))
        meant = [errs for errs in branches.values() if not any(_is_root_type(e) or _is_tag(e) for e in errs)]
        if meant:  # fewest problems; then a branch that got past the type check (its error says more)
            best = min(meant, key=lambda errs: (len(errs), _first(errs).validator == "type"))
            return _explain(_first(best))
        tags = [e for errs in branches.values() for e in errs if _is_tag(e)]
        if tags:
            key = tags[0].relative_path[0]
            allowed: list[Any] = []
            for tag in tags:
                if tag.relative_path[0] == key:
                    values = tag.validator_value if tag.validator == "enum" else [tag.validator_value]
                    allowed += [v for v in values if v not in allowed]
            tag_param = _param([*path, key])
            return (f"Invalid value for '{tag_param}': {_show(tags[0].instance)}. Supported values are: "
                    f"{', '.join(_show(v) for v in allowed)}.", tag_param)
        types: list[str] = []
        for errs in branches.values():
            for sub in errs:
                if _is_root_type(sub):
                    types += sub.validator_value if isinstance(sub.validator_value, list) else [sub.validator_value]
        if types:
            return (f"Invalid type for {where}: expected {_expected(types)}, but got "
                    f"{_TYPE_WORDS.get(json_type(error.instance), 'a value')} instead.", param)
        return f"Invalid value for {where}: it matches none of the accepted shapes.", param
    if error.validator == "allOf" and error.context:
        return _explain(_first(_leaves(error)))
    if error.validator == "required":
        missing = next((name for name in error.validator_value
                        if isinstance(error.instance, dict) and name not in error.instance), "?")
        full = _param([*path, missing])
        return f"Missing required parameter: '{full}'.", full
    if error.validator == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return (f"Invalid type for {where}: expected {_expected(types)}, but got "
                f"{_TYPE_WORDS.get(json_type(error.instance), 'a value')} instead.", param)
    if error.validator in ("enum", "const"):
        values = error.validator_value if error.validator == "enum" else [error.validator_value]
        return (f"Invalid value for {where}: {_show(error.instance)}. Supported values are: "
                f"{', '.join(_show(v) for v in values)}.", param)
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if error.validator in bounds:
        return (f"Invalid value for {where}: expected a value {bounds[str(error.validator)]} "
                f"{error.validator_value}, but got {_show(error.instance)} instead.", param)
    sizes = {"minItems": ("at least", "item"), "maxItems": ("at most", "item"),
             "minLength": ("at least", "character"), "maxLength": ("at most", "character"),
             "minProperties": ("at least", "property"), "maxProperties": ("at most", "property")}
    if error.validator in sizes:
        bound, unit = sizes[str(error.validator)]
        return (f"Invalid value for {where}: expected {bound} {error.validator_value} {unit}(s), "
                f"but got {len(error.instance)}.", param)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed_names = set((error.schema or {}).get("properties") or {})
        extra = next((k for k in error.instance if k not in allowed_names), "?")
        full = _param([*path, extra])
        return f"Unknown parameter: '{full}'.", full
    return f"Invalid value for {where}: {error.message[:200]}", param


def validate_request(operation_id: str, body: Any,
                     content_type: str = JSON) -> tuple[str, str | None, str | None] | None:
    """(message, param, code) of the first problem with a request body, as OpenAI reports it; None if valid
    (or when the spec declares no body of that content type for the operation)."""
    spec_operation = operation(operation_id)
    validator = spec_operation.validator(content_type) if spec_operation else None
    if spec_operation is None or validator is None:
        return None
    if not isinstance(body, dict):
        return ("Invalid type for the request body: expected an object, but got "
                f"{_TYPE_WORDS.get(json_type(body), 'a value')} instead.", None, None)
    known = spec_operation.known_fields(content_type)
    unknown = next((name for name in body if name not in known), None)
    if unknown is not None:
        return f"Unknown parameter: '{unknown}'.", unknown, "unknown_parameter"
    errors = [leaf for error in validator.iter_errors(body) for leaf in _leaves(error)]
    if not errors:
        return None
    message, param = _explain(_first(errors))
    return message, param, None


# ---------------------------------------------------------------- values that fit a schema


def sample_for(schema: Any, root: Any = None, *, required_only_below: int | None = None) -> Any:
    """A deterministic value that fits a JSON Schema: ``const`` and the first enum value win, an ``anyOf`` takes
    its first branch whose sample fits, arrays get their minimum (at least one) item, objects every property
    (structured outputs make them all required).

    Used for json_schema replies, tool arguments and answers synthesized from the spec. With
    ``required_only_below`` set, objects deeper than that keep only their required properties and arrays their
    minimum, which keeps a synthesized answer of a big, recursive response schema small and finite.
    """
    return _Sampler(schema if root is None else root, required_only_below).sample(schema, 0)


class _Sampler:
    def __init__(self, root: Any, required_only_below: int | None) -> None:
        self.root = root
        self.required_only_below = required_only_below
        self._validator: Draft202012Validator | None = None

    def fits(self, schema: Any, value: Any) -> bool:
        try:
            if self._validator is None:
                self._validator = Draft202012Validator(self.root if isinstance(self.root, dict) else {})
            return bool(self._validator.evolve(schema=schema).is_valid(value))
        except Exception:  # noqa: BLE001 - a user's broken schema: take the first branch, as before
            return True

    def trimmed(self, depth: int) -> bool:
        return self.required_only_below is not None and depth > self.required_only_below

    def sample(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict) or depth > 24:
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target: Any = self.root
            for part in ref[1:].split("/"):
                if part:
                    target = target.get(part, {}) if isinstance(target, dict) else {}
            resolved = self.sample(target, depth + 1)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            extra = self.sample(siblings, depth + 1) if siblings else None
            return resolved | extra if isinstance(resolved, dict) and isinstance(extra, dict) else resolved
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return next((v for v in schema["enum"] if v is not None), None)
        for key in ("anyOf", "oneOf"):
            options = [s for s in schema.get(key) or [] if not (isinstance(s, dict) and s.get("type") == "null")]
            if options:
                rest = {k: v for k, v in schema.items() if k != key}
                samples = [self.sample({"allOf": [rest, option]} if rest else option, depth + 1) for option in options]
                return next((value for value in samples if self.fits(schema, value)), samples[0])
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            plain: Any = None
            parts = [*schema["allOf"], *([{k: v for k, v in schema.items() if k != "allOf"}]
                                        if set(schema) - {"allOf"} else [])]
            for part in (p for p in parts if p != {}):  # {} allows anything: it says nothing about the value
                value = self.sample(part, depth + 1)
                if isinstance(value, dict):
                    merged |= value
                elif value is not None and plain is None:
                    plain = value
            return merged if merged or plain is None else plain
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in schema):
            properties = schema.get("properties") or {}
            if self.trimmed(depth):
                properties = {k: v for k, v in properties.items() if k in set(schema.get("required") or [])}
            return {name: self.sample(sub, depth + 1) for name, sub in properties.items()}
        if kind == "array":
            count = int(schema.get("minItems") or 0)
            if not self.trimmed(depth):
                count = max(1, count)
            return [self.sample(schema.get("items") or {"type": "string"}, depth + 1) for _ in range(count)]
        if kind == "integer":
            return int(schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1))
        if kind == "number":
            return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 0.5)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        if kind == "string" or kind is None:
            return "simulated".ljust(int(schema.get("minLength") or 0), "x")
        return None
