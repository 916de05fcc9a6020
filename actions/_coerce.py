"""Schema-directed string coercion: workflow builders send every field as text.

Rewst types every field "String (?)", templates render to text, webhooks deliver strings. So
``"0.7"``, ``"2"``, ``"true"``, ``'["a","b"]'`` and ``'{"50256": -100}'`` are turned into what
the field's schema asks for before validation. Rules:

- Only strings are converted, and only when the schema does not accept the string as it is,
  except for JSON list/object text given to a union field that takes a string and a list/object
  (``stop``, ``input``, ``prompt``...): at the top level it is read as that list/object and then
  validated, so ``'["a","b","c","d","e"]'`` for ``stop`` is refused for its 5 items rather than
  sent as one literal stop string. Inside structured values (a message's ``content``) such text
  is only read as JSON when the result fits, so a message can still say ``"[1, 2]"``.
- JSON text is parsed strictly (no NaN/Infinity, bounded depth, no lone surrogates); text that
  does not parse stays text and validation names the field.
- ``""`` or ``null`` on an optional field that does not take them means "not given" and the
  field is dropped; a real ``0`` or ``false`` is never dropped.
- A value that cannot be converted is left alone, so validation reports it with its field name.
"""

from __future__ import annotations

import math
import re
from typing import Any

from actions._inputs import parse_json_text
from actions._validate import is_valid
from integration.errors import InputError

__all__ = ["coerce_inputs", "resolve_ref"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_INTEGER = re.compile(r"^[+-]?\d+(\.0*)?$")
_MISSING = object()


def resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``#/...`` references (manifests keep shared shapes under ``$defs``)."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        pointer = schema["$ref"]
        if not pointer.startswith("#/"):
            return schema
        target: Any = root
        for part in pointer[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **extra} if extra else target
        seen += 1
    return schema


_kinds: dict[int, tuple[dict[str, Any], set[str]]] = {}


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema admits (memoised per schema object: manifests are read-only)."""
    cached = _kinds.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    kinds = _types_uncached(schema)
    if len(_kinds) < 8192:
        _kinds[id(schema)] = (schema, kinds)
    return kinds


def _types_uncached(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type")
    if declared is None:
        kinds: set[str] = set()
        if "enum" in schema:
            kinds |= {json_type(v) for v in schema["enum"]}
        if "const" in schema:
            kinds.add(json_type(schema["const"]))
        if "properties" in schema:
            kinds.add("object")
        if "items" in schema or "prefixItems" in schema:
            kinds.add("array")
        return kinds
    return {declared} if isinstance(declared, str) else set(declared)


def json_type(value: Any) -> str:
    """The JSON Schema type name of a decoded JSON value (the simulator uses it for its messages too)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _accepts_null(schema: dict[str, Any], root: dict[str, Any]) -> bool:
    schema = resolve_ref(schema, root)
    if "null" in _types(schema):
        return True
    return any(_accepts_null(b, root) for b in schema.get("anyOf", []) + schema.get("oneOf", []))


_branches: dict[tuple[int, int], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}


def _fits(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """Whether ``value`` is valid against a branch (refs resolved against the manifest's input)."""
    key = (id(schema), id(root))
    cached = _branches.get(key)
    if cached is None or cached[0] is not schema or cached[1] is not root:
        cached = (schema, root, {**schema, "$defs": root.get("$defs", {})})
        if len(_branches) < 4096:
            _branches[key] = cached
    return is_valid(value, cached[2])


def _from_text(text: str, kinds: set[str]) -> Any:
    """Convert one string to the first scalar or container kind it cleanly reads as, else _MISSING."""
    stripped = text.strip()
    lowered = stripped.lower()
    if "null" in kinds and lowered in {"null", "none"}:
        return None
    if "boolean" in kinds:
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    if "integer" in kinds and _INTEGER.match(stripped) and len(stripped) <= _MAX_DIGITS:
        return int(stripped.split(".")[0])
    if "number" in kinds and len(stripped) <= _MAX_DIGITS:
        try:
            number = float(stripped)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return int(stripped) if _INTEGER.match(stripped) and "." not in stripped else number
    if ("array" in kinds and stripped.startswith("[")) or ("object" in kinds and stripped.startswith("{")):
        parsed = _json_or_missing(stripped)
        if json_type(parsed) in kinds:
            return parsed
    return _MISSING


#: Longer numeric text is not a number anyone means (and Python refuses ints over 4,300 digits).
_MAX_DIGITS = 400


def _json_or_missing(text: str) -> Any:
    """The strictly parsed JSON value, or _MISSING (validation then names the field)."""
    try:
        return parse_json_text(text, "")
    except InputError:
        return _MISSING


def coerce_value(value: Any, schema: dict[str, Any], root: dict[str, Any], top_level: bool = False) -> Any:
    """Coerce one value against its (sub)schema; never raises, leaves what it can't convert."""
    schema = resolve_ref(schema, root)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return _coerce_union(value, [resolve_ref(b, root) for b in branches], root, top_level)
    kinds = _types(schema)
    if top_level and isinstance(value, str) and "string" in kinds and kinds & {"array", "object"}:
        parsed = _container_text(value, [schema])  # "type": ["string", "array"] is a union too
        if parsed is not _MISSING:
            value = parsed
    if isinstance(value, str) and "string" not in kinds and kinds:
        converted = _from_text(value, kinds)
        if converted is _MISSING:
            return value
        value = converted
    elif isinstance(value, float) and "integer" in kinds and "number" not in kinds and value.is_integer():
        value = int(value)
    elif isinstance(value, int | float) and not isinstance(value, bool) and kinds == {"string"}:
        value = str(value)
    if isinstance(value, list) and "array" in kinds:
        return _coerce_list(value, schema, root)
    if isinstance(value, dict) and "object" in kinds:
        return coerce_object(value, schema, root)
    return value


def _coerce_list(value: list[Any], schema: dict[str, Any], root: dict[str, Any]) -> list[Any]:
    prefix = schema.get("prefixItems", [])
    items = schema.get("items")
    out = []
    for index, item in enumerate(value):
        sub = prefix[index] if index < len(prefix) else items
        out.append(coerce_value(item, sub, root) if isinstance(sub, dict) else item)
    return out


def _container_text(value: Any, branches: list[dict[str, Any]]) -> Any:
    """JSON list/object text for a union that takes that container: the parsed value, else _MISSING."""
    if not isinstance(value, str) or not value.strip().startswith(("[", "{")):
        return _MISSING
    parsed = _json_or_missing(value.strip())
    if parsed is _MISSING or not any(json_type(parsed) in _types(b) for b in branches):
        return _MISSING
    return parsed


def _coerce_union(value: Any, branches: list[dict[str, Any]], root: dict[str, Any], top_level: bool = False) -> Any:
    """Pick the branch the value fits after coercion; prefer keeping a string that a branch accepts.

    At the top level, JSON list/object text is read as that container even when it does not fit
    (validation then says why): a builder who writes a list means a list.
    """
    if top_level:
        parsed = _container_text(value, branches)
        if parsed is not _MISSING:
            kind = json_type(parsed)
            fitting = [b for b in branches if kind in _types(b)]
            chosen = next((b for b in fitting if _fits(coerce_value(parsed, b, root), b, root)), fitting[0])
            return coerce_value(parsed, chosen, root)
    for branch in branches:
        if _fits(value, branch, root):
            if not isinstance(value, str) or not value.strip().startswith(("[", "{")):
                return coerce_value(value, branch, root)
            break
    for branch in branches:
        candidate = coerce_value(value, branch, root)
        if candidate is not value and _fits(candidate, branch, root):
            return candidate
    for branch in branches:
        if json_type(value) in _types(branch) or (isinstance(value, int) and "number" in _types(branch)):
            return coerce_value(value, branch, root)
    return value


def coerce_object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Coerce declared properties; drop optional ones given as "" or null when they don't take it."""
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    top_level = schema is root
    extra = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub = properties.get(key)
        if sub is None:
            out[key] = coerce_value(item, extra, root) if isinstance(extra, dict) else item
            continue
        if key not in required and _means_not_given(item, sub, root):
            continue
        out[key] = coerce_value(item, sub, root, top_level)
    return out


def _means_not_given(item: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    if item is None:
        return not _accepts_null(schema, root)
    return isinstance(item, str) and item.strip() == ""


def coerce_inputs(inputs: dict[str, Any], input_schema: dict[str, Any]) -> dict[str, Any]:
    """The entry point: a new dict of coerced inputs (the caller's dict is not changed)."""
    return coerce_object(inputs, input_schema, input_schema)
