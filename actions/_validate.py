"""Input validation that speaks to people: every problem names its field path and says what was wrong.

jsonschema's own messages ("'robot' is not valid under any of the given schemas") are written for
schema authors; automation builders need ``messages[1].role: must be one of: system, user, ...``.

Manifests are JSON Schema 2020-12. The compiled fast path (fastjsonschema) implements draft-07,
so it is used only for schemas whose every keyword means the same in both drafts; a schema
with ``prefixItems``, ``dependentRequired``, a ``$ref`` with validating siblings and the like is
checked by the complete 2020-12 validator instead. Nothing is ever skipped: the choice only
changes speed, never the verdict.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

__all__ = ["check_schema", "field_path", "is_valid", "problems_for", "unsupported_keywords", "uses_fast_path",
           "validator_for"]

#: Keywords whose draft-07 meaning (what fastjsonschema implements) equals their 2020-12 meaning.
_SAME_IN_DRAFT_07 = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "patternProperties",
    "propertyNames", "minProperties", "maxProperties", "items", "minItems", "maxItems", "uniqueItems",
    "contains", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
    "maxLength", "pattern", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref", "$defs",
})
#: 2020-12 keywords the draft-07 fast path would ignore or misread.
_ONLY_IN_2020_12 = frozenset({
    "prefixItems", "dependentRequired", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems",
    "minContains", "maxContains", "$dynamicRef", "$dynamicAnchor", "$anchor", "$id", "$vocabulary",
    "contentSchema",
})
#: Keywords that only annotate (never change a verdict), in both drafts.
_ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment",
    "$schema", "format", "contentMediaType", "contentEncoding",
})
_HINTS = {
    "nullable": " (OpenAPI 3.0's form: write \"type\": [..., \"null\"] or an anyOf with {\"type\": \"null\"})",
    "definitions": " (draft-07's name: use \"$defs\")",
    "dependencies": " (draft-07's: use \"dependentRequired\" or \"dependentSchemas\")",
    "additionalItems": " (draft-07's: use \"prefixItems\" with \"items\")",
    "discriminator": " (OpenAPI's annotation: drop it, the anyOf/oneOf decides)",
}
#: Keywords whose value is one subschema, a list of them, or a name -> subschema map.
_ONE_SCHEMA = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
               "unevaluatedProperties", "unevaluatedItems", "contentSchema")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")


def _subschemas(schema: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """(JSON-pointer-ish location, subschema) for every schema directly inside ``schema``."""
    for key in _ONE_SCHEMA:
        if key in schema:
            yield f".{key}", schema[key]
    for key in _SCHEMA_LISTS:
        for index, sub in enumerate(schema.get(key) or []):
            yield f".{key}[{index}]", sub
    for key in _SCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            yield f".{key}.{name}", sub


def _walk(schema: Any, where: str = "") -> Iterable[tuple[str, dict[str, Any]]]:
    stack = [(where, schema)]
    while stack:
        location, current = stack.pop()
        if isinstance(current, dict):
            yield location, current
            stack.extend((location + sub_where, sub) for sub_where, sub in _subschemas(current))


def unsupported_keywords(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(location, keyword, hint) for each keyword that is not JSON Schema 2020-12 nor a pack ``x-`` extension.

    A misspelt or foreign keyword (OpenAPI's ``nullable``) would be silently ignored by every
    validator, so manifests are refused with it instead.
    """
    known = _SAME_IN_DRAFT_07 | _ONLY_IN_2020_12 | _ANNOTATIONS
    return [(where, key, _HINTS.get(key, "")) for where, sub in _walk(schema) for key in sub
            if key not in known and not key.startswith("x-")]


def uses_fast_path(schema: dict[str, Any]) -> bool:
    """Whether the draft-07 compiled check gives exactly the 2020-12 verdict for this schema.

    Every keyword must mean the same in both drafts, and a ``$ref`` must be local with only
    annotations beside it (draft-07 ignores a ``$ref``'s siblings; 2020-12 applies them).
    """
    for _, sub in _walk(schema):
        for key in sub:
            if key in _ANNOTATIONS or key.startswith("x-"):
                continue
            if key not in _SAME_IN_DRAFT_07:
                return False
        if "$ref" in sub:
            if not str(sub["$ref"]).startswith("#/"):
                return False
            if any(k not in _ANNOTATIONS and k != "$ref" and not k.startswith("x-") for k in sub):
                return False
    return True

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
_validators: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}


_fast: dict[int, tuple[dict[str, Any], Callable[[Any], Any] | None]] = {}


_draft7_meta: Callable[[Any], Any] | None = None


def check_schema(schema: dict[str, Any]) -> None:
    """``Draft202012Validator.check_schema``, in milliseconds for schemas on the fast path.

    The 2020-12 meta-schema check costs about 30 ms per generated manifest (its ``$dynamicRef``s), 8 s for
    the 250 shipped ones at every start. For a schema whose keywords mean the same in draft-07 (no
    array-form ``items``, ``deprecated`` a boolean) the compiled draft-07 meta-schema, applied to the root
    and to every ``$defs`` entry (draft-07 does not look inside ``$defs``), accepts exactly what the
    2020-12 one accepts. Anything else, and every failure, goes through the full check for its message.
    """
    global _draft7_meta
    if uses_fast_path(schema) and not any(isinstance(sub.get("items"), list) or
                                          not isinstance(sub.get("deprecated", False), bool)
                                          for _, sub in _walk(schema)):
        if _draft7_meta is None:
            from jsonschema import Draft7Validator

            _draft7_meta = fastjsonschema.compile(Draft7Validator.META_SCHEMA, use_default=False, use_formats=False)
        try:
            _draft7_meta(schema)
            for _, sub in _walk(schema):
                for definition in (sub.get("$defs") or {}).values():
                    _draft7_meta(definition)
            return
        except fastjsonschema.JsonSchemaException:
            pass
    Draft202012Validator.check_schema(schema)


def fast_check(schema: dict[str, Any]) -> Callable[[Any], Any] | None:
    """A compiled (fastjsonschema) validity check for the common case: valid input.

    It only answers "valid or not"; the explanations come from ``jsonschema``. Defaults are never
    injected (``use_default=False``): only what was given is sent. None when the schema uses a
    keyword the draft-07 compiler would read differently (see ``uses_fast_path``) or cannot
    handle, and then the complete 2020-12 validator does everything.
    """
    cached = _fast.get(id(schema))
    if cached is None or cached[0] is not schema:
        compiled: Callable[[Any], Any] | None = None
        if uses_fast_path(schema):
            try:
                compiled = fastjsonschema.compile(schema, use_default=False, use_formats=False)
            except Exception:  # an unsupported construct: fall back to the slower, complete validator
                compiled = None
        cached = (schema, compiled)
        _fast[id(schema)] = cached
    return cached[1]


def is_valid(value: Any, schema: dict[str, Any]) -> bool:
    check = fast_check(schema)
    if check is None:
        return bool(validator_for(schema).is_valid(value))
    try:
        check(value)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """One compiled validator per (cached, read-only) manifest schema."""
    cached = _validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, Draft202012Validator(schema))
        _validators[id(schema)] = cached
    return cached[1]


def field_path(parts: Iterable[Any]) -> str:
    """``["messages", 1, "role"]`` -> ``messages[1].role``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!r}"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    return "an object"


def _one_of(options: list[Any]) -> str:
    return ", ".join(repr(o) if isinstance(o, str) else str(o) for o in options)


def _deepest(errors: list[ValidationError]) -> list[ValidationError]:
    """From a failed anyOf/oneOf, the errors that got furthest into the value: the most specific."""
    flat: list[ValidationError] = []
    for err in errors:
        if err.validator in ("anyOf", "oneOf") and err.context:
            flat.extend(_deepest(list(err.context)))
        else:
            flat.append(err)
    if not flat:
        return []
    depth = max(len(e.absolute_path) for e in flat)
    deepest = [e for e in flat if len(e.absolute_path) == depth]
    # A type mismatch at the same depth is the least informative; keep the others when there are any.
    informative = [e for e in deepest if e.validator != "type"]
    return informative or deepest


def _reason(err: ValidationError) -> tuple[list[Any], str]:
    """The path and a plain-words reason for one jsonschema error."""
    path = list(err.absolute_path)
    value, kind, schema = err.instance, err.validator, err.schema
    if kind == "required":
        missing = err.message.split("'")[1] if "'" in err.message else str(err.validator_value)
        return [*path, missing], "is required"
    if kind == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        unexpected = sorted(set(value) - set(known)) if isinstance(value, dict) else []
        name = unexpected[0] if unexpected else "?"
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else (f"; known fields: {', '.join(known)}"
                                                                  if known else "; this takes no fields")
        return [*path, name], f"is not a known field{suggestion}"
    if kind == "type":
        wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted)
        return path, f"must be {words} (got {_describe(value)})"
    if kind == "enum":
        return path, f"must be one of: {_one_of(err.validator_value)} (got {_describe(value)})"
    if kind == "const":
        return path, f"must be {err.validator_value!r} (got {_describe(value)})"
    if kind == "minimum":
        return path, f"must be at least {err.validator_value} (got {value})"
    if kind == "maximum":
        return path, f"must be at most {err.validator_value} (got {value})"
    if kind == "exclusiveMinimum":
        return path, f"must be greater than {err.validator_value} (got {value})"
    if kind == "exclusiveMaximum":
        return path, f"must be less than {err.validator_value} (got {value})"
    if kind == "minLength":
        if err.validator_value == 1:
            return path, "must not be empty"
        return path, f"must be at least {err.validator_value} characters long (got {len(value)})"
    if kind == "maxLength":
        return path, f"must be at most {err.validator_value} characters long (got {len(value)})"
    if kind == "minItems":
        return path, f"must have at least {err.validator_value} item(s) (got {len(value)})"
    if kind == "maxItems":
        return path, f"must have at most {err.validator_value} item(s) (got {len(value)})"
    if kind in ("minProperties", "maxProperties"):
        word = "at least" if kind == "minProperties" else "at most"
        return path, f"must have {word} {err.validator_value} entr(ies) (got {len(value)})"
    if kind == "pattern":
        return path, f"must match the pattern {err.validator_value} (got {_describe(value)})"
    if kind == "uniqueItems":
        return path, "must not repeat items"
    if kind == "dependentRequired" and isinstance(value, dict):
        for given, needs in err.validator_value.items():
            missing = [n for n in needs if given in value and n not in value]
            if missing:
                return [*path, missing[0]], f"is required when {given!r} is given"
    if kind == "propertyNames":
        return path, f"has a key that is not allowed: {err.message}"
    return path, err.message[:200]


def _union_reason(err: ValidationError) -> tuple[list[Any], str]:
    """For anyOf/oneOf: report the most specific branch error, merging alternatives of one field."""
    deepest = _deepest(list(err.context or []))
    if not deepest:
        return list(err.absolute_path), f"does not match any allowed form (got {_describe(err.instance)})"
    reasons = [_reason(e) for e in deepest]
    path = reasons[0][0]
    consts = [e.validator_value for e in deepest if e.validator == "const"]
    enums = [v for e in deepest if e.validator == "enum" for v in e.validator_value]
    if consts or enums:
        options = list(dict.fromkeys([*consts, *enums]))
        return path, f"must be one of: {_one_of(options)} (got {_describe(deepest[0].instance)})"
    types = [t for e in deepest if e.validator == "type"
             for t in (e.validator_value if isinstance(e.validator_value, list) else [e.validator_value])]
    if len(types) == len(deepest) and types:
        words = " or ".join(dict.fromkeys(_TYPE_WORDS.get(t, t) for t in types))
        return path, f"must be {words} (got {_describe(deepest[0].instance)})"
    return reasons[0]


def problems_for(value: Any, schema: dict[str, Any]) -> list[dict[str, str]]:
    """Every problem as ``{field, reason}``, in a stable order (by field path)."""
    if is_valid(value, schema):
        return []
    problems: dict[tuple[str, str], None] = {}
    for err in validator_for(schema).iter_errors(value):
        path, reason = _union_reason(err) if err.validator in ("anyOf", "oneOf") else _reason(err)
        problems[(field_path(path), reason)] = None
    return [{"field": f, "reason": r} for f, r in sorted(problems)]
