"""Generate ``manifests/*.json`` from OpenAI's spec plus the hand-written overrides in ``manifests/overrides``.

    python -m actions.spec generate [--spec FILE] [--check]

Every operation of the spec ends up in exactly one row of ``docs/coverage.md``: covered (a manifest),
folded into another action (the ``?beta=true`` duplicates), or excluded with the reason (what the binder
cannot do yet). Only operations the generic binder runs honestly today get a manifest.

An override file ``manifests/overrides/<name>.json`` names an operation and says what to change:

- ``"operationId"`` (required): the operation; the file name is the action's name (this is how a badly
  broken operationId such as ``Getorganizationspendlimit`` gets a readable name);
- ``"manifest"``: the whole curated manifest, written as is (the seven seed actions);
- ``"set"``: top-level manifest keys that replace the generated ones (title, description, idempotent, …);
- ``"fields"``: per input field, keys merged into its schema (``null`` as a value removes that key); a field
  the operation does not have may be added only as a pack option (``"x-pack-only": true``, never sent);
- ``"output_fields"``: properties the pack's handler adds to the output (e.g. ``output_text``);
- ``"exclude"``: a reason; the operation is listed as excluded instead of generated.

The output is deterministic: the same spec and overrides give the same bytes, so a second run changes
nothing (a test checks it with ``--check``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from actions._outputs import empty_result
from actions.simulator.media import example_content
from actions.simulator.spec import sample_for
from actions.spec.source import REPO, SpecOperation, converted, load_spec, operations, resolve, spec_label

__all__ = ["COVERAGE_FILE", "MANIFEST_DIR", "OVERRIDE_DIR", "Entry", "Plan", "action_name", "build", "differences",
           "expected_name", "load_overrides", "write"]

MANIFEST_DIR = REPO / "manifests"
OVERRIDE_DIR = MANIFEST_DIR / "overrides"
COVERAGE_FILE = REPO / "docs" / "coverage.md"
COMMAND = "make generate  (python -m actions.spec generate)"

_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_BETA_SUFFIX = "?beta=true"
#: Operations whose streamed answer the binder reassembles (the only ones that may keep a ``stream`` field), and how
#: (``actions/_streaming.py``). createImage is the curated seed manifest, which does not offer ``stream``.
_ASSEMBLED_STREAMS = {"createChatCompletion": "chat_completion", "createCompletion": "completion",
                      "createResponse": "response", "getResponse": "response",
                      "createTranscription": "transcription", "createImageEdit": "image",
                      "createThreadAndRun": "run", "createRun": "run", "submitToolOuputsToRun": "run"}
#: Content types of an answer that is a file's bytes (with ``application/json`` declared as a plain string, as
#: ``downloadFile`` is, and a GET of ``…/content`` that declares nothing).
_BINARY_TYPES = ("application/octet-stream", "application/zip", "audio/", "video/", "image/")
#: Request fields a binary answer cannot honour (the bytes are returned whole, not as events).
_BINARY_DROPPED = {"stream_format": "`stream_format` not offered (the audio is returned whole, saved or as base64)"}
#: Pack options of every binary action (``actions/_outputs.py``).
_SAVE_TO_FIELD = {
    "type": "string", "minLength": 1, "x-pack-only": True,
    "description": "Pack option, never sent to the API: the file to write the answer's bytes to (its directory is "
                   "created if missing; an existing file is never overwritten, the step fails naming save_to), or an "
                   "existing directory (or a path ending in /) to write a new file in. The output's path says where. "
                   "Without it the bytes come back as base64.",
    "examples": ["/var/lib/rewst/downloads/"],
}
_PARSE_FIELD = {
    "enum": ["jsonl", "text"], "x-pack-only": True,
    "description": "Pack option, never sent to the API: also read the file into the output: jsonl as a list of "
                   "records (batch output and error files), text as text. Without save_to the bytes are then not "
                   "returned as base64.",
}
#: Operations whose file content a workflow may want parsed (text files they store), by operationId.
_PARSEABLE = {"downloadFile", "RetrieveContainerFileContent"}
#: The output of an action whose answer has no body (``actions/_outputs.empty_result``).
_EMPTY_OUTPUT: dict[str, Any] = {
    "type": "object", "required": ["status"],
    "properties": {
        "id": {"type": "string", "description": "The id the call named (the last path parameter)."},
        "deleted": {"type": "boolean", "description": "A DELETE was accepted (the API answered with no body)."},
        "ok": {"type": "boolean", "description": "The call was accepted (the API answered with no body)."},
        "status": {"type": "integer", "description": "The HTTP status of the answer."},
    },
}
#: The output of an action whose answer is bytes (``actions/_outputs.binary_output``).
_BINARY_OUTPUT: dict[str, Any] = {
    "type": "object", "required": ["content_type", "bytes", "sha256"], "additionalProperties": False,
    "properties": {
        "content_type": {"type": "string", "description": "The answer's media type (audio/mpeg, application/zip…)."},
        "bytes": {"type": "integer", "minimum": 0, "description": "The answer's size in bytes."},
        "sha256": {"type": "string", "description": "SHA-256 of the bytes, hex."},
        "filename": {"type": "string", "description": "The file name the API suggested, when it did."},
        "path": {"type": "string", "description": "With save_to: the absolute path of the file written."},
        "base64": {"type": "string", "description": "Without save_to (and parse): the bytes, base64."},
        "records": {"type": "array", "description": "With parse: jsonl: one item per line of the file."},
        "text": {"type": "string", "description": "With parse: text: the file as text."},
    },
}
#: Categories for untagged operations, by path prefix (longest first).
_UNTAGGED = (("/organization", "Administration"), ("/chatkit", "ChatKit"), ("/containers", "Containers"),
             ("/responses", "Responses"), ("/content_provenance", "Content provenance"))
#: Headers the integration or the client sets; a parameter of that name is not offered as a field.
_CLIENT_HEADERS = frozenset({"authorization", "openai-organization", "openai-project", "content-type",
                             "content-length", "user-agent", "host"})
_SMALL_WORDS = frozenset({"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to",
                          "with"})
_ASSISTANTS_SHUTDOWN = ("OpenAI shut the Assistants API down on 2026-08-26 (threads, messages and runs with it); "
                        "use the Responses and Conversations APIs instead.")
#: What replaces each operation of the shut-down Assistants group (by operationId).
_ASSISTANTS_REPLACED_BY = {
    "listAssistants": "create_response", "createAssistant": "create_response", "getAssistant": "create_response",
    "modifyAssistant": "create_response", "deleteAssistant": "create_response",
    "createThread": "create_conversation", "getThread": "get_conversation", "modifyThread": "update_conversation",
    "deleteThread": "delete_conversation", "listMessages": "list_conversation_items",
    "createMessage": "create_conversation_items", "getMessage": "get_conversation_item",
    "modifyMessage": "get_conversation_item", "deleteMessage": "delete_conversation_item",
    "createThreadAndRun": "create_response", "listRuns": "get_response", "createRun": "create_response",
    "getRun": "get_response", "modifyRun": "get_response", "cancelRun": "cancel_response",
    "listRunSteps": "list_input_items", "getRunStep": "list_input_items",
    "submitToolOuputsToRun": "create_response",
}
_STREAM_FIELDS = ("stream", "stream_options")
#: Paths whose operations take the integration's Admin API key instead of its API key.
_ADMIN_PREFIX = "/organization/"
#: ``OpenAI-Beta: value`` in a spec example's request (the curl line): a header the operation needs.
_BETA_HEADER = re.compile(r"OpenAI-Beta:\s*([A-Za-z0-9_.=,-]+)", re.IGNORECASE)
#: The pack-only inputs of a paginated action (``actions/_pages.py`` reads them).
_PAGINATION_INPUTS = {
    "fetch_all": {"type": "boolean", "x-pack-only": True, "description": (
        "Fetch every page and return all items in order in one answer (each page is retried on its own). "
        "Default false: one page.")},
    "max_items": {"type": "integer", "minimum": 1, "maximum": 100000, "x-pack-only": True, "description": (
        "With fetch_all, stop after this many items (has_more then stays true). Default 10000.")},
}
_PLAIN_EXAMPLE_VALUES = {"model": "gpt-4o-mini", "voice": "alloy"}


def action_name(operation_id: str) -> str:
    """snake_case of an operationId (camelCase, PascalCase or kebab-case); overrides fix the mashed ones."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", operation_id.replace("-", "_"))
    spaced = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", spaced)
    return re.sub(r"_+", "_", spaced).strip("_").lower()


def expected_name(operation_id: str, override_dir: Path = OVERRIDE_DIR) -> str:
    """The action name the generator gives an operation: its override file's name, else ``action_name``."""
    overrides = load_overrides(override_dir)
    return overrides[operation_id][0] if operation_id in overrides else action_name(operation_id)


@dataclass
class Entry:
    """One operation's fate: the action it became, the one it was folded into, or why it was left out."""

    operation: SpecOperation
    status: str  # covered | folded | excluded
    name: str
    reason: str = ""
    manifest: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Everything one generator run produces: manifests by file name and the coverage page."""

    entries: list[Entry]
    files: dict[str, str]  # file name in manifests/ -> text
    coverage: str


# ---------------------------------------------------------------- overrides


def load_overrides(directory: Path = OVERRIDE_DIR) -> dict[str, tuple[str, dict[str, Any]]]:
    """operationId -> (action name, override), from ``manifests/overrides/<name>.json``."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        unknown = set(data) - {"operationId", "manifest", "set", "fields", "output_fields", "exclude", "why"}
        if unknown or not isinstance(data.get("operationId"), str):
            raise ValueError(f"{path}: an override needs operationId and only manifest/set/fields/output_fields/"
                             "exclude/why "
                             f"(unknown: {sorted(unknown)})")
        if data["operationId"] in found:
            raise ValueError(f"{path}: operationId {data['operationId']!r} is overridden twice")
        found[data["operationId"]] = (path.stem, data)
    return found


# ---------------------------------------------------------------- text


def _clean(text: Any, limit: int = 400) -> str:
    """Spec prose as one plain paragraph: markdown links and emphasis dropped, cut at a sentence end."""
    if not isinstance(text, str):
        return ""
    paragraph = text.strip().split("\n\n")[0]
    paragraph = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", paragraph)
    paragraph = re.sub(r"[*`]+", "", paragraph)
    paragraph = re.sub(r"<[^>]+>", "", paragraph)
    paragraph = " ".join(paragraph.split())
    if len(paragraph) <= limit:
        return paragraph
    cut = paragraph[:limit]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > limit // 3 else cut.rstrip() + "…"


#: Words written specially in titles; a leading ``retrieve`` reads as "Get", as in the seed's "Get Model".
_TITLE_WORDS = {"api": "API", "apis": "APIs", "id": "ID", "ids": "IDs", "chatkit": "ChatKit", "url": "URL"}


def _title(name: str) -> str:
    """A short Rewst label from the action name (``list_vector_store_files`` → "List Vector Store Files"); the
    spec's longer summary opens the description."""
    words = name.split("_")
    if words[0] == "retrieve":
        words[0] = "get"
    return " ".join(_TITLE_WORDS.get(w, w.capitalize()) for w in words)


#: Tags renamed so generated actions share the seed actions' categories.
_CATEGORY_NAMES = {"Chat": "Chat Completions"}


def _category(operation: SpecOperation) -> str:
    if operation.tag:
        return _CATEGORY_NAMES.get(operation.tag, operation.tag)
    for prefix, category in _UNTAGGED:
        if operation.path.startswith(prefix):
            return category
    return operation.path.strip("/").split("/")[0].replace("_", " ").capitalize()


def _description(operation: SpecOperation) -> str:
    summary = _clean(operation.raw.get("summary"), 120).rstrip(".")
    detail = _clean(operation.raw.get("description"), 500)
    if detail and not detail.lower().startswith(summary.lower()):
        return f"{summary}. {detail}" if summary else detail
    return detail or (summary + ".")


# ---------------------------------------------------------------- schemas


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"].removeprefix("#/$defs/")} if isinstance(node.get("$ref"), str) else set()
    for key, value in node.items():
        if key not in ("enum", "const", "examples", "default"):
            found |= _refs(value)
    return found


def defs_for(roots: Any, spec: dict[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    """The ``$defs`` a schema reaches (components converted once per run), sorted by name."""
    components = spec.get("components", {}).get("schemas", {})
    defs: dict[str, Any] = {}
    pending = sorted(_refs(roots))
    while pending:
        name = pending.pop()
        if name in defs or name not in components:
            continue
        if name not in cache:
            cache[name] = converted_component(components[name], name)
        defs[name] = cache[name]
        pending.extend(sorted(_refs(defs[name]) - set(defs)))
    return dict(sorted(defs.items()))


def converted_component(schema: Any, name: str) -> Any:
    from actions.simulator.extract import to_json_schema

    return without_foreign_keywords(to_json_schema(schema, name))


#: JSON Schema 2020-12's keywords; anything else in the spec (``min_items``, a typo for ``minItems``) is dropped
#: rather than shipped, because every validator would ignore it and the manifest loader refuses it.
SCHEMA_KEYWORDS = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "patternProperties",
    "propertyNames", "minProperties", "maxProperties", "items", "prefixItems", "minItems", "maxItems", "uniqueItems",
    "contains", "minContains", "maxContains", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
    "$ref", "$defs", "dependentRequired", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems",
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment", "format",
    "contentMediaType", "contentEncoding",
})
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")


def without_foreign_keywords(node: Any) -> Any:
    """A converted schema with every non-2020-12 keyword removed (property names are data, not keywords)."""
    if isinstance(node, list):
        return [without_foreign_keywords(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in SCHEMA_KEYWORDS and not key.startswith("x-"):
            continue
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: without_foreign_keywords(sub) for name, sub in value.items()}
        elif key in ("enum", "const", "examples", "default", "required", "type"):
            out[key] = value
        else:
            out[key] = without_foreign_keywords(value)
    return out


def flatten_object(schema: Any, spec: dict[str, Any], depth: int = 0) -> tuple[dict[str, Any], list[str]] | None:
    """A request body's top-level (properties, required), through $ref and allOf; None for a union body."""
    schema = resolve(schema, spec)
    if not isinstance(schema, dict) or depth > 8:
        return None
    if schema.get("anyOf") or schema.get("oneOf"):
        return None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for part in schema.get("allOf") or []:
        flat = flatten_object(part, spec, depth + 1)
        if flat is None:
            return None
        for key, value in flat[0].items():
            properties.setdefault(key, value)
        required += [r for r in flat[1] if r not in required]
    for key, value in (schema.get("properties") or {}).items():
        properties[key] = value
    required += [r for r in schema.get("required") or [] if r not in required]
    return properties, required


def _field_description(raw: Any, spec: dict[str, Any], name: str) -> str:
    text = _clean(raw.get("description") if isinstance(raw, dict) else None, 300)
    if not text:
        text = _clean((resolve(raw, spec) or {}).get("description"), 300)
    return text or f"The {name.replace('_', ' ')} (see OpenAI's API reference)."


def _inline_scalar_refs(schema: Any, spec: dict[str, Any]) -> Any:
    """A field that refers to a small scalar shape (``PartialImages``: an integer 0-3) gets it inline, at the
    top and in its anyOf branches, so its type, enum and bounds show in the docs and the checks."""
    if not isinstance(schema, dict):
        return schema
    if isinstance(schema.get("$ref"), str):
        components = spec.get("components", {}).get("schemas", {})
        target = components.get(schema["$ref"].removeprefix("#/$defs/"))
        if isinstance(target, dict):
            small = without_foreign_keywords(converted(target))
            if isinstance(small, dict) and not _refs(small) and "properties" not in small and "items" not in small:
                siblings = {k: v for k, v in schema.items() if k != "$ref"}
                return {**{k: v for k, v in small.items() if k not in ("description", "title")}, **siblings}
        return schema
    if isinstance(schema.get("anyOf"), list):
        return {**schema, "anyOf": [_inline_scalar_refs(branch, spec) for branch in schema["anyOf"]]}
    return schema


def _field_schema(raw: Any, spec: dict[str, Any], name: str) -> dict[str, Any]:
    schema = _inline_scalar_refs(without_foreign_keywords(converted(raw if raw is not None else {})), spec)
    schema = dict(schema) if isinstance(schema, dict) else {}
    schema["description"] = _field_description(raw, spec, name)
    default = raw.get("default") if isinstance(raw, dict) else None
    if isinstance(default, str | int | float | bool):
        schema["default"] = default
    return schema


def _is_object_schema(schema: Any, spec: dict[str, Any], depth: int = 0) -> bool:
    """Whether every answer the schema allows is a JSON object (what the binder returns as output)."""
    schema = resolve(schema, spec)
    if not isinstance(schema, dict) or depth > 8:
        return False
    if schema.get("type") == "object" or "properties" in schema:
        return True
    if any(_is_object_schema(part, spec, depth + 1) for part in schema.get("allOf") or []):
        return True
    branches = schema.get("anyOf") or schema.get("oneOf") or []
    return bool(branches) and all(_is_object_schema(part, spec, depth + 1) for part in branches)


#: How many ``$ref`` hops an output schema keeps; deeper shapes are left open (``{}``). Outputs are read,
#: not validated before a paid call, and the full shapes would make every manifest 100-200 KB.
OUTPUT_REF_DEPTH = 2


def _shallow(node: Any, defs: dict[str, Any], hops: int = 0) -> Any:
    """A converted schema with its refs inlined up to ``OUTPUT_REF_DEPTH`` hops, open beyond."""
    if isinstance(node, list):
        return [_shallow(item, defs, hops) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str):
        siblings = {k: _shallow(v, defs, hops) for k, v in node.items() if k != "$ref"}
        target = defs.get(node["$ref"].removeprefix("#/$defs/"))
        if hops >= OUTPUT_REF_DEPTH or target is None:
            return siblings
        inlined = _shallow(target, defs, hops + 1)
        return {"allOf": [inlined, siblings]} if siblings else inlined
    return {key: value if key in ("enum", "const") else _shallow(value, defs, hops) for key, value in node.items()}


# ---------------------------------------------------------------- one operation


class _Excluded(Exception):
    """The operation cannot be an honest action yet; the message says what it needs."""


def _parameter_field(param: dict[str, Any]) -> str:
    """The input field a parameter becomes: ``x[]`` is field ``x`` (the binder adds the brackets back to every
    list), a header is its SDK name (``x-stainless-param``) or its name in snake_case."""
    name = str(param.get("name"))
    if param.get("in") == "header":
        sdk_name = (param.get("schema") or {}).get("x-stainless-param")
        return str(sdk_name) if isinstance(sdk_name, str) else name.lower().replace("-", "_")
    return name.removesuffix("[]")


def _inputs(operation: SpecOperation, spec: dict[str, Any], notes: list[str],
            header_params: dict[str, str] | None = None) -> tuple[dict[str, Any], list[str], str, list[str]]:
    """(properties, required, encoding, query fields) for the generic binder; header parameters are added to
    ``header_params`` (field -> header name)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    query: list[str] = []
    header_params = {} if header_params is None else header_params
    for param in operation.parameters:
        name, where = _parameter_field(param), param.get("in")
        if name in _STREAM_FIELDS and where == "query" and not param.get("required") \
                and operation.operation_id not in _ASSEMBLED_STREAMS:
            notes.append(f"`{name}` not offered yet (needs stream assembly for this operation)")
            continue
        is_required = bool(param.get("required")) or where == "path"
        usable = _FIELD_NAME.match(name) and param.get("style") in (None, "form", "simple", "deepObject")
        if not usable or (where == "header" and str(param.get("name")).lower() in _CLIENT_HEADERS):
            if is_required:
                raise _Excluded(f"needs the {where} parameter {param.get('name')!r}")
            notes.append(f"optional {where} parameter `{param.get('name')}` not offered (its name or style has no "
                         "input field form)")
            continue
        if where not in ("path", "query", "header"):
            raise _Excluded(f"needs {where} parameters")
        if name in properties:
            raise _Excluded(f"two parameters become the input field {name!r}")
        schema = _field_schema(param.get("schema") or {"type": "string"}, spec, name)
        if not schema.get("description") or schema["description"].startswith("The "):
            schema["description"] = _clean(param.get("description"), 300) or schema["description"]
        if where == "path":
            if schema.get("type") == "string":
                schema.setdefault("minLength", 1)
        elif where == "header":
            header_params[name] = str(param.get("name"))
        else:
            query.append(name)
        if "example" in param and isinstance(param["example"], str | int):
            schema["examples"] = [param["example"]]
        properties[name] = schema
        if is_required:
            required.append(name)
    request_types = operation.request_types
    if not request_types:
        return properties, required, "none", query
    content_type = "application/json" if "application/json" in request_types else "multipart/form-data"
    if content_type not in request_types:
        raise _Excluded(f"needs a {' or '.join(request_types)} request body")
    flat = flatten_object(_without_choices(operation.request_schema(content_type), spec), spec)
    if flat is None:
        raise _Excluded("needs a request body that is a union of object shapes")
    body, body_required = flat
    stream_kind = _ASSEMBLED_STREAMS.get(operation.operation_id)
    for name, raw in body.items():
        if name in properties:
            raise _Excluded(f"body field {name!r} clashes with a parameter of the same name")
        if name in _STREAM_FIELDS and stream_kind is None:
            if name in body_required:
                raise _Excluded("needs streamed answers assembled for this operation")
            notes.append(f"`{name}` not offered yet (needs stream assembly for this operation)")
            continue
        file_schema = _file_schema(raw, spec, name) if content_type == "multipart/form-data" else None
        properties[name] = file_schema or _field_schema(raw, spec, name)
    required += [r for r in body_required if r in properties and r not in required]
    return properties, required, "json" if content_type == "application/json" else "multipart", query


def _example_headers(operation: SpecOperation) -> dict[str, str]:
    """Constant headers the operation's spec examples send (``OpenAI-Beta: assistants=v2``): the API wants them."""
    examples = (operation.raw.get("x-oaiMeta") or {}).get("examples")
    found: set[str] = set()
    for example in examples if isinstance(examples, list) else [examples]:
        request = example.get("request") if isinstance(example, dict) else None
        texts = [request] if isinstance(request, str) else list(request.values()) if isinstance(request, dict) else []
        for text in texts:
            if isinstance(text, str):
                found.update(_BETA_HEADER.findall(text))
    if len(found) > 1:
        raise _Excluded(f"its examples send different OpenAI-Beta headers ({', '.join(sorted(found))})")
    return {"OpenAI-Beta": found.pop()} if found else {}


def _pagination(query: list[str], output: Any) -> dict[str, str] | None:
    """How a list pages, from its query fields and answer: ``after`` + ``has_more`` is cursor style, ``page`` +
    ``next_page`` page style (the usage reports); anything else is not walked by ``fetch_all``."""
    answer = output.get("properties") if isinstance(output, dict) else None
    if not isinstance(answer, dict) or "data" not in answer:
        return None
    if "after" in query and "has_more" in answer:
        return {"style": "cursor", "param": "after"}
    if "page" in query and "next_page" in answer:
        return {"style": "page", "param": "page"}
    return None


def _file_schema(raw: Any, spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A multipart file part (``format: binary``, or a list of them) as the pack's file field, else None."""
    resolved = resolve(raw, spec)
    if not isinstance(resolved, dict):
        return None
    description = _field_description(raw, spec, name)
    if resolved.get("type") == "string" and resolved.get("format") == "binary":
        return {"type": "string", "format": "binary", "description": description}
    items = resolve(resolved.get("items"), spec)
    if resolved.get("type") == "array" and isinstance(items, dict) and items.get("format") == "binary":
        schema: dict[str, Any] = {"type": "array", "items": {"type": "string", "format": "binary"}}
        for bound in ("minItems", "maxItems"):
            if bound in resolved:
                schema[bound] = resolved[bound]
        return {**schema, "description": description}
    return None


def _answer_kind(operation: SpecOperation, spec: dict[str, Any]) -> str:
    """``json`` (an object), ``empty`` (no body declared) or ``binary`` (a file's bytes), as the binder reads it."""
    _, content = operation.success
    schema = operation.response_schema()
    if "application/json" in content and _is_object_schema(schema, spec):
        return "json"
    if not content:  # nothing declared: a GET of …/content still answers the file's bytes
        return "binary" if operation.method == "GET" and operation.path.endswith("/content") else "empty"
    declared_string = "application/json" in content and (resolve(schema, spec) or {}).get("type") == "string"
    if declared_string or any(kind.startswith(_BINARY_TYPES) for kind in content):
        return "binary"
    raise _Excluded(f"needs {', '.join(sorted(content))} answers")


def _output(operation: SpecOperation) -> Any:
    return without_foreign_keywords(converted(operation.response_schema()))


def _body_choices(operation: SpecOperation, spec: dict[str, Any]) -> list[list[str]]:
    """A body that is one object whose ``anyOf``/``oneOf`` only says which fields are required (``file_ids`` or
    ``files``): the required groups, one per branch (empty for any other body)."""
    for content_type in ("application/json", "multipart/form-data"):
        schema = resolve(operation.request_schema(content_type), spec)
        if not isinstance(schema, dict):
            continue
        branches = schema.get("anyOf") or schema.get("oneOf") or []
        if branches and all(isinstance(b, dict) and set(b) == {"required"} for b in branches):
            return [list(branch["required"]) for branch in branches]
    return []


def _without_choices(schema: Any, spec: dict[str, Any]) -> Any:
    """The body schema without its required-groups union (``_body_choices`` carries that to the input schema)."""
    resolved = resolve(schema, spec)
    if not isinstance(resolved, dict):
        return schema
    branches = resolved.get("anyOf") or resolved.get("oneOf") or []
    if branches and all(isinstance(b, dict) and set(b) == {"required"} for b in branches):
        return {key: value for key, value in resolved.items() if key not in ("anyOf", "oneOf")}
    return schema


def _nullable_fields(node: Any) -> Any:
    """Every object property of an output may be null: the API sends null for unset fields the spec does not mark
    nullable (a file's ``expires_at``), and an output schema describes what arrives, it guards nothing."""
    if isinstance(node, list):
        return [_nullable_fields(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: value if key in ("enum", "const", "examples", "default") else _nullable_fields(value)
           for key, value in node.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _or_null(sub) for name, sub in out["properties"].items()}
    return out


def _or_null(schema: Any) -> Any:
    if not isinstance(schema, dict) or not schema:
        return schema
    kind = schema.get("type")
    if isinstance(kind, str) and set(schema) <= {"type", "description"}:
        return {**schema, "type": [kind, "null"]} if kind != "null" else schema
    if isinstance(kind, list):
        closed = "null" in kind or "enum" in schema or "const" in schema
        return schema if closed else {**schema, "type": [*kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _example_output(operation: SpecOperation, output: dict[str, Any]) -> dict[str, Any]:
    """The spec's example answer when it is JSON and fits the schema, else one synthesized from the schema."""
    examples = (operation.raw.get("x-oaiMeta") or {}).get("examples")
    candidates = examples if isinstance(examples, list) else [examples]
    validator = Draft202012Validator(output)
    for candidate in candidates:
        text = candidate.get("response") if isinstance(candidate, dict) else None
        if not isinstance(text, str):
            continue
        try:
            value = json.loads(re.sub(r",(\s*[}\]])", r"\1", text))  # the spec's examples keep trailing commas
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and validator.is_valid(value):
            return value
    value = sample_for(output, output, required_only_below=2)
    if not isinstance(value, dict) or not validator.is_valid(value):
        raise _Excluded("no example answer fits the response schema")
    return value


def _minimal_value(prop: dict[str, Any], root: dict[str, Any]) -> Any:
    """The synthesized sample when it fits, else the first plain value of the right kind that does."""
    validator = Draft202012Validator({**prop, "$defs": root.get("$defs", {})})
    candidates = [sample_for(prop, root, required_only_below=0), {}, [], "example", 1, True]
    return next((value for value in candidates if validator.is_valid(value)), candidates[0])


#: Tiny valid files for examples of file fields, as data: URLs (a workflow's own form of file content).
_EXAMPLE_FILES = {
    "/audio": "data:audio/wav;base64,UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=",
    "/images": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/"
               "PchI7wAAAABJRU5ErkJggg==",
    "/videos": "data:video/mp4;base64,AAAAGGZ0eXBtcDQyAAAAAG1wNDJpc29t",
    "": "data:text/plain;base64,SGVsbG8gZnJvbSB0aGUgcGFjaw==",
}


def _example_file(path: str) -> str:
    return next(url for prefix, url in _EXAMPLE_FILES.items() if path.startswith(prefix))


def _example_input(properties: dict[str, Any], required: list[str], schema: dict[str, Any],
                   path: str = "") -> dict[str, Any]:
    example: dict[str, Any] = {}
    for name in required:
        prop = properties[name]
        if name in _PLAIN_EXAMPLE_VALUES:
            example[name] = _PLAIN_EXAMPLE_VALUES[name]
        elif prop.get("examples"):
            example[name] = prop["examples"][0]
        elif prop.get("format") == "binary":
            example[name] = _example_file(path)
        elif prop.get("type") == "array" and (prop.get("items") or {}).get("format") == "binary":
            example[name] = [_example_file(path)]
        elif name.endswith("_ids") and (prop.get("items") or {}).get("type") == "string":
            example[name] = [f"{name.removesuffix('_ids')}_abc123"]
        elif prop.get("type") == "string" and "enum" not in prop and "pattern" not in prop:
            example[name] = f"{name.removesuffix('_id')}_abc123" if name.endswith("_id") else f"example {name}"
        else:
            example[name] = _minimal_value(prop, schema)
    if not Draft202012Validator(schema).is_valid(example):
        raise _Excluded("no example input could be synthesized that fits the input schema")
    return example


def _manifest(operation: SpecOperation, name: str, spec: dict[str, Any], label: str, notes: list[str],
              defs_cache: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    header_params: dict[str, str] = {}
    properties, required, encoding, query = _inputs(operation, spec, notes, header_params)
    answer = _answer_kind(operation, spec)
    if answer == "binary":
        for dropped, note in _BINARY_DROPPED.items():
            if properties.pop(dropped, None) is not None:
                notes.append(note)
                required = [r for r in required if r != dropped]
        properties["save_to"] = dict(_SAVE_TO_FIELD)
        if operation.operation_id in _PARSEABLE:
            properties["parse"] = dict(_PARSE_FIELD)
    choices = _body_choices(operation, spec)
    input_schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if required:
        input_schema["required"] = required
    input_schema["properties"] = properties
    if choices:  # exactly one of the groups (the spec calls them mutually exclusive)
        input_schema["oneOf"] = [{"required": group} for group in choices]
    input_defs = defs_for(properties, spec, defs_cache)
    if input_defs:
        input_schema["$defs"] = input_defs
    if answer == "json":
        output = _output(operation)
        output_schema = _shallow(output, defs_for(output, spec, defs_cache))
        output_schema = _nullable_fields(output_schema) if isinstance(output_schema, dict) else {}
    else:
        output_schema = json.loads(json.dumps(_EMPTY_OUTPUT if answer == "empty" else _BINARY_OUTPUT))
    http: dict[str, Any] = {"method": operation.method, "path": operation.path}
    if query:
        http["query"] = query
    constant_headers = _example_headers(operation)
    if constant_headers:
        http["headers"] = constant_headers
    if header_params:
        http["header_params"] = header_params
    if operation.path.startswith(_ADMIN_PREFIX):
        http["key"] = "admin"
    http["encoding"] = encoding
    pagination = _pagination(query, output_schema)
    if pagination:
        http["pagination"] = pagination
        properties.update(json.loads(json.dumps(_PAGINATION_INPUTS)))
    if operation.operation_id in _ASSEMBLED_STREAMS and "stream" in properties:
        http["stream"] = {"flag": "stream", "assemble": _ASSEMBLED_STREAMS[operation.operation_id]}
    if answer != "json":
        http["answer"] = answer
    manifest: dict[str, Any] = {
        "name": name,
        "title": _title(name),
        "category": _category(operation),
        "description": _description(operation),
        "version": "1.0.0",
        "openapi": {"operationId": operation.operation_id, "spec": label},
        "http": http,
        "idempotent": operation.method in ("GET", "DELETE"),
    }
    deprecated, replaced_by = _deprecation(operation)
    if deprecated:
        manifest["deprecated"] = deprecated
        if replaced_by:
            manifest["replaced_by"] = replaced_by
    manifest["input"] = input_schema
    manifest["output"] = output_schema
    if "examples" not in (override.get("set") or {}):
        example_required = required + [name for name in (choices[0] if choices else []) if name not in required]
        example_input = _example_input(properties, example_required, input_schema, operation.path)
        if answer == "json":
            example_output = _example_output(operation, output_schema)
        elif answer == "empty":
            path_values = {name: example_input[name] for name in re.findall(r"\{([a-z_0-9]+)\}", operation.path)}
            example_output = empty_result(operation.method, path_values, operation.success[0] or 200)
        else:
            content, media_type = example_content(operation.operation_id)  # what the simulator answers
            example_output = {"content_type": media_type, "bytes": len(content),
                              "sha256": hashlib.sha256(content).hexdigest(),
                              "base64": base64.b64encode(content).decode("ascii")}
        manifest["examples"] = [{"title": "Minimal call", "input": example_input, "output": example_output}]
    return manifest


def _check_examples(manifest: dict[str, Any]) -> None:
    """Every example (generated or hand-written) fits the schemas, or the action is not shipped."""
    inputs, outputs = Draft202012Validator(manifest["input"]), Draft202012Validator(manifest["output"])
    for example in manifest.get("examples") or []:
        if not inputs.is_valid(example["input"]) or not outputs.is_valid(example["output"]):
            raise _Excluded(f"example {example['title']!r} does not fit the schemas")


def _deprecation(operation: SpecOperation) -> tuple[str | None, str | None]:
    if operation.operation_id in _ASSISTANTS_REPLACED_BY:
        return _ASSISTANTS_SHUTDOWN, _ASSISTANTS_REPLACED_BY[operation.operation_id]
    if operation.raw.get("deprecated"):
        return "OpenAI marks this operation deprecated in the API reference.", None
    return None, None


def _apply(manifest: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """An override's ``set`` and ``fields`` over a generated manifest (see the module docstring)."""
    result = dict(manifest)
    for key, value in (override.get("set") or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    properties = result["input"]["properties"]
    for field_name, changes in (override.get("fields") or {}).items():
        if field_name not in properties and not changes.get("x-pack-only"):
            raise ValueError(f"override of {manifest['name']}: no input field {field_name!r} (a field the "
                             "operation lacks can only be added as a pack option, with x-pack-only: true)")
        merged = dict(properties.get(field_name) or {})
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        properties[field_name] = merged
    added = override.get("output_fields")
    if added:
        output = dict(result["output"])
        if "allOf" in output:
            output["allOf"] = [*output["allOf"], {"type": "object", "properties": added}]
        else:
            output["properties"] = {**(output.get("properties") or {}), **added}
        result["output"] = output
    return result


# ---------------------------------------------------------------- options-from links


def _list_actions(entries: list[Entry]) -> dict[str, str]:
    """Collection path -> its list action, for covered GETs whose answer is a list and need no input."""
    found: dict[str, str] = {}
    for entry in entries:
        manifest = entry.manifest
        if entry.status != "covered" or manifest is None or manifest["http"]["method"] != "GET":
            continue
        if manifest["input"].get("required") or "{" in manifest["http"]["path"]:
            continue
        if "data" in (manifest["output"].get("properties") or {}):
            found[manifest["http"]["path"]] = manifest["name"]
    return found


def _link_options(entries: list[Entry]) -> None:
    """``x-options-from``: a path id comes from the list at its collection; a body/query id from the one list
    whose collection names it (ambiguous names get no link)."""
    lists = _list_actions(entries)
    by_field: dict[str, set[str]] = {"model": {"list_models"}}
    for entry in entries:
        if entry.status != "covered" or entry.manifest is None:
            continue
        path = entry.manifest["http"]["path"]
        for found in re.finditer(r"\{([a-z_0-9]+)\}", path):
            collection = path[: found.start()].rstrip("/")
            if collection in lists:
                by_field.setdefault(found.group(1), set()).add(lists[collection])
    names = {entry.name for entry in entries if entry.status == "covered"}
    for entry in entries:
        manifest = entry.manifest
        if entry.status != "covered" or manifest is None or entry.reason == "curated":
            continue
        path = manifest["http"]["path"]
        for field_name, schema in manifest["input"]["properties"].items():
            if "x-options-from" in schema:
                continue
            marker = "{" + field_name + "}"
            if marker in path:
                collection = path[: path.index(marker)].rstrip("/")
                target = lists.get(collection)
            else:
                choices = by_field.get(field_name, set())
                target = next(iter(choices)) if len(choices) == 1 else None
            if target and target in names and target != manifest["name"]:
                schema["x-options-from"] = target


# ---------------------------------------------------------------- the whole run


def build(spec_path: Path, override_dir: Path = OVERRIDE_DIR) -> Plan:
    """Plan every manifest and the coverage page from the spec and overrides (nothing written)."""
    spec = load_spec(spec_path)
    label = spec_label(spec_path)
    overrides = load_overrides(override_dir)
    defs_cache: dict[str, Any] = {}
    entries: list[Entry] = []
    all_ops = operations(spec)
    plain = {(op.method, op.path) for op in all_ops if _BETA_SUFFIX not in op.path}
    for operation in all_ops:
        name, override = overrides.get(operation.operation_id, (action_name(operation.operation_id), {}))
        if _BETA_SUFFIX in operation.path and (operation.method, operation.path.replace(_BETA_SUFFIX, "")) in plain:
            entries.append(Entry(operation, "folded", name, "the `?beta=true` duplicate of the operation at "
                                 f"`{operation.method} {operation.path.replace(_BETA_SUFFIX, '')}`"))
            continue
        if "exclude" in override:
            entries.append(Entry(operation, "excluded", name, str(override["exclude"])))
            continue
        if "manifest" in override:
            entries.append(Entry(operation, "covered", name, "curated", dict(override["manifest"])))
            continue
        notes: list[str] = []
        try:
            manifest = _apply(_manifest(operation, name, spec, label, notes, defs_cache, override), override)
            _check_examples(manifest)
        except _Excluded as exc:
            entries.append(Entry(operation, "excluded", name, f"not yet: {exc}"))
            continue
        entries.append(Entry(operation, "covered", name, "generated", manifest, notes))
    _check_names(entries)
    _link_options(entries)
    files: dict[str, str] = {}
    for entry in entries:
        if entry.status == "covered" and entry.manifest is not None:
            files[f"{entry.name}.json"] = _dump(entry.manifest)
    spec_ids = {op.operation_id for op in all_ops}
    for operation_id, (name, override) in sorted(overrides.items()):
        if operation_id in spec_ids:
            continue
        if "manifest" not in override:
            raise ValueError(f"manifests/overrides/{name}.json: operation {operation_id!r} is not in {spec_path.name}")
        files[f"{name}.json"] = _dump(override["manifest"])  # e.g. create_edit, from the 2023 spec
    return Plan(entries, dict(sorted(files.items())), coverage_page(entries, spec_path, files))


def _check_names(entries: list[Entry]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.status != "covered":
            continue
        if not re.fullmatch(r"[a-z][a-z0-9_]*", entry.name):
            raise ValueError(f"{entry.operation.operation_id}: name {entry.name!r} is not snake_case "
                             "(add manifests/overrides/<name>.json naming the operation)")
        if entry.name in seen:
            raise ValueError(f"{entry.operation.operation_id} and {seen[entry.name]} both become {entry.name!r}")
        seen[entry.name] = entry.operation.operation_id


def _dump(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def coverage_page(entries: list[Entry], spec_path: Path, files: dict[str, str]) -> str:
    """docs/coverage.md: every operation of the spec in one table, with totals."""
    counts = {status: sum(e.status == status for e in entries) for status in ("covered", "folded", "excluded")}
    legacy = sorted(set(files) - {f"{e.name}.json" for e in entries if e.status == "covered"})
    lines = [
        "# Coverage of OpenAI's API",
        "",
        f"Generated by `{COMMAND}` from `{spec_path.name}`; do not edit by hand.",
        "",
        f"{len(entries)} operations: **{counts['covered']} covered** by an action, {counts['folded']} folded into "
        f"another action, {counts['excluded']} not covered yet (the reason names what the pack still needs).",
        "",
        "| method | path | operationId | status | action or reason |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in entries:
        op = entry.operation
        what = f"`{entry.name}`" if entry.status == "covered" else entry.reason
        if entry.status == "folded":
            what = f"{entry.reason}"
        if entry.notes:
            what += " (" + "; ".join(entry.notes) + ")"
        path = op.path.replace("|", "\\|")
        lines.append(f"| {op.method} | `{path}` | `{op.operation_id}` | {entry.status} | {what} |")
    if legacy:
        lines += ["", "Actions kept from older specs (curated, not in this spec): "
                  + ", ".join(f"`{name.removesuffix('.json')}`" for name in legacy) + "."]
    return "\n".join(lines) + "\n"


def write(plan: Plan, manifest_dir: Path = MANIFEST_DIR, coverage_file: Path = COVERAGE_FILE) -> list[str]:
    """Write the plan; manifests no longer produced are removed. Returns the files that changed."""
    changed: list[str] = []
    for file_name, text in plan.files.items():
        target = manifest_dir / file_name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(str(target.relative_to(manifest_dir.parent)))
    for stale in sorted(manifest_dir.glob("*.json")):
        if stale.name not in plan.files and not stale.name.startswith("_"):
            stale.unlink()
            changed.append(str(stale.relative_to(manifest_dir.parent)) + " (removed)")
    if not coverage_file.is_file() or coverage_file.read_text(encoding="utf-8") != plan.coverage:
        coverage_file.write_text(plan.coverage, encoding="utf-8")
        changed.append(str(coverage_file.relative_to(coverage_file.parents[1])))
    return changed


def differences(plan: Plan, manifest_dir: Path = MANIFEST_DIR, coverage_file: Path = COVERAGE_FILE) -> list[str]:
    """What ``write`` would change, without writing (``--check``)."""
    found = [name for name, text in plan.files.items()
             if not (manifest_dir / name).is_file() or (manifest_dir / name).read_text(encoding="utf-8") != text]
    found += [p.name + " (would be removed)" for p in sorted(manifest_dir.glob("*.json"))
              if p.name not in plan.files and not p.name.startswith("_")]
    if not coverage_file.is_file() or coverage_file.read_text(encoding="utf-8") != plan.coverage:
        found.append(coverage_file.name)
    return found
