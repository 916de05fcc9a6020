"""A loopback OpenAI-compatible server: NOT the real API. Used by the tests, the demo and the benchmarks.

Why it exists: every layer above (client retries, workers, workflows) must be tested against real HTTP
on a real socket, without a key and without spending money. So it:

- serves every endpoint the manifests bind (``ROUTES`` plus ``GET /models/{model}``) on 127.0.0.1 only;
- validates each POST body against the request schema extracted from OpenAI's published spec
  (``_openapi_requests.json``, made by ``python -m actions._simulator extract-spec DIR``) and answers a
  wrong body with OpenAI's 400 shape, ``param`` naming the field (``messages[0].role``);
- checks the key where the integration's ``auth`` placement puts it (401 ``invalid_api_key`` otherwise,
  never echoing what was sent);
- answers deterministically and in the spec's shapes, with ``usage``; streams server-sent events;
- enforces an optional requests-per-minute budget (rolling 60 s) with 429 and ``retry-after-ms``;
- plays scripted faults (``add_fault`` or ``POST /v1/_sim/faults``): ``status``, ``drop``, ``malformed``,
  ``hang``, ``latency``;
- counts what it received (``calls``, ``calls_by_route()``, ``requests`` with the key masked,
  ``in_flight``/``max_in_flight``).

Moderation flags a text (category ``violence``) when it contains one of ``FLAG_WORDS``, case-insensitive,
so tests can take both branches: "how do I kill a process" is flagged, "hello" is not.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import threading
import time
import zlib
from collections import Counter, OrderedDict, deque
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jsonschema import Draft202012Validator, ValidationError

from actions._coerce import json_type

__all__ = ["FAULT_KINDS", "FLAG_WORDS", "MODELS", "ROUTES", "Simulator", "extract_spec", "main", "validate_request"]

BANNER = "OpenAI API SIMULATOR — not the real API"
DEFAULT_PORT = 8765
FLAG_WORDS = ("kill", "violence", "bomb")
FAULT_KINDS = ("status", "drop", "malformed", "hang", "latency")
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
#: Categories omni-moderation also scores on images (the others apply to text only).
IMAGE_CATEGORIES = frozenset({"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "violence",
                              "violence/graphic"})
MODELS = (
    ("gpt-4o", 1715367049, "system"), ("gpt-4o-mini", 1721172741, "system"), ("gpt-4.1", 1744316542, "system"),
    ("o3-mini", 1737146383, "system"), ("gpt-3.5-turbo-instruct", 1692901427, "system"),
    ("dall-e-2", 1698798177, "system"), ("dall-e-3", 1698785189, "system"), ("gpt-image-1", 1745517030, "system"),
    ("omni-moderation-latest", 1731689265, "system"), ("text-moderation-latest", 1677532384, "openai"),
    ("text-embedding-3-small", 1705948997, "system"), ("whisper-1", 1677532384, "openai"),
)
#: (method, path under /v1) → operationId; ``GET /models/{model}`` is matched separately.
ROUTES = {
    ("POST", "/chat/completions"): "createChatCompletion",
    ("POST", "/completions"): "createCompletion",
    ("POST", "/edits"): "createEdit",
    ("POST", "/images/generations"): "createImage",
    ("POST", "/moderations"): "createModeration",
    ("GET", "/models"): "listModels",
}
SPEC_OPERATIONS = {
    "openai-2026-08.yaml": ("createChatCompletion", "createCompletion", "createImage", "createModeration"),
    "openai-2023-12.yaml": ("createEdit",),
}
REQUESTS_FILE = "_openapi_requests.json"
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_IMAGES_KEPT = 512


# ---------------------------------------------------------------- spec extraction (run once, output committed)

#: OpenAPI prose and vendor keys that carry no validation meaning (``x-*`` are dropped too).
_PROSE_KEYS = frozenset({"description", "title", "example", "examples", "default", "deprecated", "readOnly",
                         "writeOnly", "discriminator", "externalDocs", "xml", "nullable", "format",
                         "$comment", "contentEncoding", "contentMediaType"})
_MAX_REF_DEPTH = 12


def _merge_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 ``nullable: true`` as JSON Schema: null joins the type (and the enum, if any)."""
    if not schema:
        return schema  # {} already accepts null
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        out = dict(schema, type=[*types, "null"] if "null" not in types else types)
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if "enum" in schema:
        return dict(schema, enum=[*schema["enum"], None]) if None not in schema["enum"] else schema
    if set(schema) == {"anyOf"}:
        return {"anyOf": _simplify_any_of([*schema["anyOf"], {"type": "null"}])}
    return {"anyOf": [schema, {"type": "null"}]}


def _simplify_any_of(branches: list[Any]) -> list[Any]:
    """Flatten nested anyOfs; ``anyOf: [{type: string}, {type: string, enum: [...]}]`` (OpenAI's "a known model or
    any string") is just a string."""
    flat: list[Any] = []
    for branch in branches:
        is_group = isinstance(branch, dict) and set(branch) == {"anyOf"}
        flat += branch["anyOf"] if is_group else [branch]
    branches = flat
    plain = {b["type"] for b in branches if isinstance(b, dict) and set(b) == {"type"} and isinstance(b["type"], str)}
    kept = [b for b in branches
            if not (isinstance(b, dict) and set(b) <= {"type", "enum", "const"} and set(b) != {"type"}
                    and isinstance(b.get("type"), str) and b["type"] in plain)]
    unique: list[Any] = []
    for branch in kept:
        if branch not in unique:
            unique.append(branch)
    return unique


def _to_json_schema(node: Any, components: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """Inline ``$ref``s (a ref already being expanded becomes ``{}``), make OpenAPI-isms JSON Schema, drop prose."""
    if isinstance(node, list):
        return [_to_json_schema(item, components, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name in stack or len(stack) >= _MAX_REF_DEPTH or name not in components:
            resolved: Any = {}
        else:
            resolved = _to_json_schema(components[name], components, (*stack, name))
        siblings = _to_json_schema({k: v for k, v in node.items() if k != "$ref"}, components, stack)
        if siblings:
            resolved = {"allOf": [resolved, siblings]} if resolved else siblings
        return _merge_nullable(resolved) if node.get("nullable") is True else resolved
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _PROSE_KEYS or key.startswith("x-"):
            continue
        if key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {name: _to_json_schema(sub, components, stack) for name, sub in value.items()}
        elif key in ("enum", "const", "required", "type"):
            out[key] = value
        else:
            out[key] = _to_json_schema(value, components, stack)
    if out.get("required") == []:
        del out["required"]
    if "oneOf" in out:  # OpenAI's oneOfs overlap (a string can match two branches); anyOf is what they mean
        branches = out.pop("oneOf")
        out = {"allOf": [out, {"anyOf": branches}]} if "anyOf" in out else out | {"anyOf": branches}
    if "anyOf" in out:
        out["anyOf"] = _simplify_any_of(out["anyOf"])
        if len(out["anyOf"]) == 1 and isinstance(out["anyOf"][0], dict) and not set(out) - {"anyOf"}:
            out = out["anyOf"][0]
    if "allOf" in out and len(out["allOf"]) == 1 and set(out) == {"allOf"}:
        out = out["allOf"][0]
    return _merge_nullable(out) if node.get("nullable") is True else out


def _load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the 3 MB spec takes ~6 s with the pure-Python loader
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader either way


def extract_spec(directory: str | Path) -> dict[str, Any]:
    """Request-body JSON Schemas of the bound operations, from ``shared/openapi/*.yaml``."""
    schemas: dict[str, Any] = {}
    for filename, operation_ids in SPEC_OPERATIONS.items():
        spec = _load_yaml(Path(directory) / filename)
        components = spec.get("components", {}).get("schemas", {})
        for item in spec["paths"].values():
            for operation in item.values():
                if isinstance(operation, dict) and operation.get("operationId") in operation_ids:
                    body = operation["requestBody"]["content"]["application/json"]["schema"]
                    schemas[operation["operationId"]] = _to_json_schema(body, components)
        missing = set(operation_ids) - set(schemas)
        if missing:
            raise LookupError(f"{filename} has no operation {', '.join(sorted(missing))}")
    return schemas


# ---------------------------------------------------------------- request validation (OpenAI's 400 shape)


class _Operation:
    """One operation's compiled validator and the top-level parameter names it knows."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.validator = Draft202012Validator(schema)
        self.known = frozenset(_top_level_properties(schema))


def _top_level_properties(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    names = set(schema.get("properties") or {})
    for key in ("allOf", "anyOf"):
        for sub in schema.get(key) or []:
            names |= _top_level_properties(sub)
    return names


@cache
def _operations() -> dict[str, _Operation]:
    raw = json.loads(resources.files("actions").joinpath(REQUESTS_FILE).read_text(encoding="utf-8"))
    return {operation_id: _Operation(schema) for operation_id, schema in raw.items()}


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


def _explain(error: ValidationError) -> tuple[str, str | None]:
    """(message, param) for one jsonschema error, descending into anyOf to the branch that was meant."""
    path = list(error.absolute_path)
    param = _param(path) or None
    where = f"'{param}'" if param else "the request body"
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
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


def validate_request(operation_id: str, body: Any) -> tuple[str, str | None, str | None] | None:
    """(message, param, code) of the first problem with a request body, as OpenAI reports it; None if valid."""
    operation = _operations().get(operation_id)
    if operation is None:
        return None
    if not isinstance(body, dict):
        return ("Invalid type for the request body: expected an object, but got "
                f"{_TYPE_WORDS.get(json_type(body), 'a value')} instead.", None, None)
    unknown = next((name for name in body if name not in operation.known), None)
    if unknown is not None:
        return f"Unknown parameter: '{unknown}'.", unknown, "unknown_parameter"
    errors = list(operation.validator.iter_errors(body))
    if not errors:
        return None
    message, param = _explain(_first(errors))
    return message, param, None


# ---------------------------------------------------------------- deterministic answers


def tokens(text: str) -> int:
    """A rough token count (about 4 tokens per 3 words), so usage is plausible and deterministic."""
    return max(1, round(len(text.split()) * 4 / 3))


def png_bytes(seed: str, size: int = 8) -> bytes:
    """A small valid PNG, one solid colour taken from ``seed``'s hash (stdlib only: zlib + struct)."""
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    rows = b"".join(b"\x00" + bytes((red, green, blue)) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def sample_for(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that fits a simple JSON Schema: enums take their first value, arrays get one item, objects every
    property (structured outputs make them all required). Used for json_schema replies and tool arguments."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return sample_for(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [s for s in schema.get(key) or [] if not (isinstance(s, dict) and s.get("type") == "null")]
        if options:
            return sample_for(options[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = sample_for(part, root, depth + 1)
            if isinstance(value, dict):
                merged |= value
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return {name: sample_for(sub, root, depth + 1) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample_for(schema.get("items") or {"type": "string"}, root, depth + 1)
                for _ in range(max(1, int(schema.get("minItems") or 1)))]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return schema.get("minimum", 0.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "simulated"


def _text_of(content: Any) -> str:
    """The text of a message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _usage(prompt: str, completion: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = tokens(prompt), tokens(completion) if completion else 0
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Answers:
    """Response bodies per operation. Ids come from a counter, so they are unique and repeatable per server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.images: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._n = 0

    def next_id(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt = " ".join(_text_of(m.get("content")) for m in messages)
        last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), prompt)
        reply = f"Simulated reply to: {last_user[:60]}"
        response_format = body.get("response_format") or {}
        functions = [t["function"] for t in body.get("tools") or []
                     if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)]
        tool_choice = body.get("tool_choice", "auto")
        answered_tool = bool(messages) and messages[-1].get("role") == "tool"  # the model saw the result: answer
        finish, tool_calls, content = "stop", None, reply
        if functions and tool_choice != "none" and not answered_tool:
            function = functions[0]
            if isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
                wanted = tool_choice["function"].get("name")
                function = next((f for f in functions if f.get("name") == wanted), function)
            arguments = sample_for(function.get("parameters") or {"type": "object", "properties": {}})
            tool_calls = [{"id": f"call_sim{self.next_id()}", "type": "function",
                           "function": {"name": function.get("name"), "arguments": json.dumps(arguments)}}]
            content, finish = None, "tool_calls"
        elif response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
            content = json.dumps(sample_for(schema))
        elif response_format.get("type") == "json_object":
            content = json.dumps({"result": reply})
        choices = []
        for index in range(int(body.get("n") or 1)):
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None,
                                       "annotations": []}
            if tool_calls:
                message["tool_calls"] = tool_calls
            choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
        completion = (content or json.dumps(tool_calls)) * len(choices)
        return {"id": f"chatcmpl-sim{self.next_id()}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "choices": choices, "usage": _usage(prompt, completion),
                "service_tier": "default", "system_fingerprint": "fp_sim"}

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        elif isinstance(prompt, str):
            prompts = [prompt]
        else:  # token arrays or null: one prompt, described
            prompts = [json.dumps(prompt)]
        n = int(body.get("n") or 1)
        choices, produced = [], ""
        for text_in in prompts:
            text = f" Simulated continuation of: {text_in[:40]}"
            if body.get("echo"):
                text = text_in + text
            for _ in range(n):
                choices.append({"index": len(choices), "text": text, "logprobs": None, "finish_reason": "stop"})
                produced += text
        return {"id": f"cmpl-sim{self.next_id()}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model"), "choices": choices, "usage": _usage(" ".join(prompts), produced),
                "system_fingerprint": "fp_sim"}

    def edit(self, body: dict[str, Any]) -> dict[str, Any]:
        text = str(body.get("input") or "")
        instruction = str(body.get("instruction") or "")
        edited = text.replace("wek", "week").replace("teh", "the") if text else f"Simulated edit: {instruction[:60]}"
        n = int(body.get("n") or 1)
        return {"object": "edit", "created": int(time.time()),
                "choices": [{"text": edited, "index": i, "finish_reason": "stop"} for i in range(n)],
                "usage": _usage(f"{text} {instruction}", edited * n)}

    def image(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = str(body.get("prompt"))
        model = body.get("model") or "dall-e-2"
        data = []
        for i in range(int(body.get("n") or 1)):
            png = png_bytes(f"{prompt}:{i}")
            if str(model).startswith("gpt-image") or body.get("response_format") == "b64_json":
                item: dict[str, Any] = {"b64_json": base64.b64encode(png).decode()}
            else:
                name = f"img-sim{self.next_id()}.png"
                with self._lock:
                    self.images[name] = png
                    while len(self.images) > MAX_IMAGES_KEPT:
                        self.images.popitem(last=False)
                item = {"url": f"{self.base_url}/_sim/images/{name}"}
            if model == "dall-e-3":
                item["revised_prompt"] = f"{prompt} (simulated revision)"
            data.append(item)
        out: dict[str, Any] = {"created": int(time.time()), "data": data}
        if str(model).startswith("gpt-image"):
            out["usage"] = {"input_tokens": tokens(prompt), "output_tokens": 272 * len(data),
                            "total_tokens": tokens(prompt) + 272 * len(data)}
        return out

    def moderation(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("input")
        if isinstance(raw, list) and raw and all(isinstance(part, dict) for part in raw):
            inputs: list[tuple[str, bool]] = [(" ".join(str(p.get("text", "")) for p in raw),
                                               any(p.get("type") == "image_url" for p in raw))]  # one multimodal input
        else:
            inputs = [(str(text), False) for text in ([raw] if isinstance(raw, str) else list(raw or []))]
        results = []
        for text, has_image in inputs:
            hit = any(word in text.lower() for word in FLAG_WORDS)
            applied = {}
            for category in MODERATION_CATEGORIES:
                kinds = ["text"] if text else []
                if has_image and category in IMAGE_CATEGORIES:
                    kinds.append("image")
                applied[category] = kinds
            results.append({
                "flagged": hit,
                "categories": {c: hit and c == "violence" for c in MODERATION_CATEGORIES},
                "category_scores": {c: (0.91 if hit and c == "violence" else 0.0004) for c in MODERATION_CATEGORIES},
                "category_applied_input_types": applied,
            })
        return {"id": f"modr-sim{self.next_id()}", "model": body.get("model") or "omni-moderation-latest",
                "results": results}

    @staticmethod
    def model(model_id: str) -> dict[str, Any] | None:
        for name, created, owner in MODELS:
            if name == model_id:
                return {"id": name, "object": "model", "created": created, "owned_by": owner}
        return None


def _error(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


#: status → (type, code, message) for scripted ``status`` faults; 5xx not listed are server_error.
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Simulated bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported (simulated)."),
    404: ("invalid_request_error", "not_found", "The requested resource was not found (simulated)."),
    408: ("invalid_request_error", "timeout", "Request timed out (simulated)."),
    409: ("invalid_request_error", "conflict", "Conflict (simulated)."),
    422: ("invalid_request_error", "unprocessable_entity", "Unprocessable entity (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    500: ("server_error", None, "The server had an error while processing your request (simulated)."),
    502: ("server_error", None, "Bad gateway (simulated)."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later (simulated)."),
}


def _fault_error(status: int, error_code: str | None) -> dict[str, Any]:
    kind, code, message = _STATUS_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                      None, f"Simulated error {status}."))
    code = error_code or code
    if code == "insufficient_quota":
        kind = "insufficient_quota"
        message = "You exceeded your current quota, please check your plan and billing details (simulated)."
    elif status == 429 and code and code != "rate_limit_exceeded":
        kind = code
    return _error(message, kind, None, code)


def _duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* style: ``120ms``, ``8.6s``."""
    return f"{max(0, round(seconds * 1000))}ms" if seconds < 1 else f"{seconds:.1f}s"


# ---------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # bursts of concurrent workers must not wait on the default backlog of 5

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and hung up is part of the script, not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class Simulator:
    """Start with ``with Simulator() as sim:``; ``sim.url`` is the base URL (…/v1) to configure."""

    def __init__(self, port: int = 0, *, latency: float = 0.0, api_key: str | None = None,
                 auth: dict[str, Any] | None = None, legacy_edits: bool = True,
                 rate_limit_rpm: int | None = None) -> None:
        self.port = port
        self.latency = latency
        self.api_key = api_key or None
        self.auth = dict(auth or {"placement": "bearer"})
        if self.auth.get("placement") in ("header", "query") and not self.auth.get("name"):
            raise ValueError(f"auth.name is required for the {self.auth['placement']} placement")
        self.legacy_edits = legacy_edits
        self.rate_limit_rpm = rate_limit_rpm
        self.url = ""
        self.answers = Answers(self.url)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._request_ids = 0
        self.reset()

    # state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Clear faults, counters and recorded requests (requests still in flight keep being tracked)."""
        with self._lock:
            self.faults: list[dict[str, Any]] = []
            self.calls = 0
            self._by_route: Counter[str] = Counter()
            self.requests: list[dict[str, Any]] = []
            self.max_in_flight = self.in_flight
            self._window: deque[tuple[float, int]] = deque()

    def add_fault(self, fault: dict[str, Any]) -> None:
        """Script a fault, matched in the order added against requests to /v1 API routes.

        Keys: ``method`` (None = any), ``path`` under /v1 (None = any; also covers sub-paths), ``times`` (matching
        requests it applies to, -1 = forever), ``kind``: ``status`` (``status``, ``error_code``, ``headers``, or a
        verbatim ``body``), ``drop`` (read the request, close without answering), ``malformed`` (200, body not
        JSON), ``hang`` (``latency`` seconds, default 30, then answer) or ``latency`` (add ``latency`` seconds).
        The request is counted and recorded whichever fault fires.
        """
        entry: dict[str, Any] = {"method": None, "path": None, "times": 1, "kind": "status"} | dict(fault)
        if entry["kind"] not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, not {entry['kind']!r}")
        if not isinstance(entry["times"], int) or entry["times"] < -1 or isinstance(entry["times"], bool):
            raise ValueError("fault times must be an integer >= -1 (-1 = forever)")
        if entry["method"]:
            entry["method"] = str(entry["method"]).upper()
        if entry["path"]:
            path = "/" + str(entry["path"]).lstrip("/")
            entry["path"] = path[3:] if path.startswith("/v1/") else path
        with self._lock:
            self.faults.append(entry)

    def calls_by_route(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_route)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": self.calls, "by_route": dict(self._by_route), "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight}

    def _take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        """The first live fault matching the request, used up by one (unless times is -1)."""
        with self._lock:
            for fault in self.faults:
                if fault["times"] == 0:
                    continue
                if fault["method"] and fault["method"] != method:
                    continue
                if fault["path"] and not (path == fault["path"] or path.startswith(fault["path"] + "/")):
                    continue
                if fault["times"] > 0:
                    fault["times"] -= 1
                return dict(fault)
        return None

    def _admit(self, cost: int) -> float | None:
        """Take a slot in the rolling 60 s window; seconds until one frees if the budget is spent."""
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0][0] >= 60:
                self._window.popleft()
            if self.rate_limit_rpm and len(self._window) >= self.rate_limit_rpm:
                return max(60 - (now - self._window[0][0]), 0.001)
            if self.rate_limit_rpm:
                self._window.append((now, cost))
        return None

    def _ratelimit_headers(self) -> dict[str, str]:
        rpm = self.rate_limit_rpm
        request_limit, token_limit = (rpm, rpm * 1000) if rpm else (10_000, 30_000_000)
        now = time.monotonic()
        with self._lock:
            used = len(self._window)
            used_tokens = sum(cost for _, cost in self._window)
            reset = 60 - (now - self._window[0][0]) if self._window else 0.0
        return {"x-ratelimit-limit-requests": str(request_limit),
                "x-ratelimit-remaining-requests": str(max(0, request_limit - used)),
                "x-ratelimit-reset-requests": _duration(reset) if rpm else "6ms",
                "x-ratelimit-limit-tokens": str(token_limit),
                "x-ratelimit-remaining-tokens": str(max(0, token_limit - used_tokens)),
                "x-ratelimit-reset-tokens": _duration(reset * min(1.0, used_tokens / token_limit)) if rpm else "0s"}

    def _next_request_id(self) -> str:
        with self._lock:
            self._request_ids += 1
            return f"req_sim_{self._request_ids}"

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Bind 127.0.0.1 (never another interface) and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"sim": self})
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self.port), handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.answers.base_url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"openai-simulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake hanging handlers, close open connections; never waits for a hang to finish."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # auth ----------------------------------------------------------------------------------------
    def _presented_key(self, headers: Any, query: dict[str, list[str]]) -> str | None:
        placement = self.auth.get("placement", "bearer")
        if placement == "bearer":
            value = headers.get("Authorization") or ""
            return value[7:] if value[:7].lower() == "bearer " else None
        if placement == "header":
            value = headers.get(self.auth["name"])
            prefix = self.auth.get("prefix") or ""
            return value[len(prefix):] if value is not None and value.startswith(prefix) else None
        if placement == "query":
            return (query.get(self.auth["name"]) or [None])[0]
        return None

    def _auth_error(self, headers: Any, query: dict[str, list[str]]) -> dict[str, Any] | None:
        """None when the key is right (or none is required); OpenAI's 401 body otherwise, never echoing the key."""
        if not self.api_key or self.auth.get("placement") == "none":
            return None
        presented = self._presented_key(headers, query)
        if presented is not None and hmac.compare_digest(presented.encode(), self.api_key.encode()):
            return None
        if not presented:
            where = {"bearer": "an Authorization header using Bearer auth",
                     "header": f"the {self.auth.get('name')} header",
                     "query": f"the {self.auth.get('name')} query parameter"}.get(self.auth.get("placement", ""), "")
            message = f"You didn't provide an API key. You need to provide your API key in {where} (simulator)."
        else:
            message = ("Incorrect API key provided: ...redacted.... You can find your API key at "
                       "https://platform.openai.com/account/api-keys. (simulator)")
        return _error(message, "invalid_request_error", None, "invalid_api_key")

    def _mask(self, text: str) -> str:
        return text.replace(self.api_key, "<api-key>") if self.api_key else text


def _route_label(method: str, path: str) -> str:
    return f"{method} /models/{{model}}" if path.startswith("/models/") else f"{method} {path}"


class _Handler(BaseHTTPRequestHandler):
    sim: Simulator
    protocol_version = "HTTP/1.1"
    server_version = "openai-simulator/1.0 (NOT the real OpenAI API)"
    timeout = 300  # an idle keep-alive connection is closed eventually
    disable_nagle_algorithm = True  # headers and body are two writes: with Nagle, keep-alive calls stall ~40 ms

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: tests and benchmarks read counters, not access logs (which would also show query keys)."""

    def setup(self) -> None:
        super().setup()
        with self.sim._lock:
            self.sim._connections.add(self.connection)

    def finish(self) -> None:
        with self.sim._lock:
            self.sim._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # plumbing ------------------------------------------------------------------------------------
    def _read_body(self) -> bytes | None:
        """The whole request body (Content-Length or chunked); None if it is unreadable or too big."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    length = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                size += length
                if size > MAX_BODY_BYTES:
                    return None
                parts.append(self.rfile.read(length))
                self.rfile.readline(8)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, *,
              content_type: str = "application/json", raw: bytes | None = None) -> None:
        payload = raw if raw is not None else self.sim._mask(json.dumps(body)).encode()  # never echo the key
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self, method: str) -> None:
        sim = self.sim
        started = time.monotonic()
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._send(400, _error("The request body could not be read.", "invalid_request_error"),
                       {"Connection": "close"})
            return
        if path != "/v1" and not path.startswith("/v1/"):
            self._send(404, _error(f"Invalid URL ({method} {path}): this server serves /v1",
                                   "invalid_request_error", None, "unknown_url"))
            return
        path = path[3:] or "/"
        if path.startswith("/_sim/"):
            self._control(method, path, raw)
            return
        body: Any = None
        try:
            body = json.loads(raw) if raw else None
            parsed = True
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = False
        with sim._lock:
            sim.calls += 1
            sim._by_route[_route_label(method, path)] += 1
            sim.in_flight += 1
            sim.max_in_flight = max(sim.max_in_flight, sim.in_flight)
            sim.requests.append({
                "method": method, "path": "/v1" + path,
                "query": {k: sim._mask(v[0]) for k, v in query.items()},
                "headers": {k.lower(): sim._mask(v) for k, v in self.headers.items()},
                "body": (json.loads(sim._mask(json.dumps(body))) if parsed
                         else sim._mask(raw.decode("utf-8", "replace"))),
                "at": time.time(),
            })
        try:
            self._api(method, path, query, body if parsed else ..., len(raw), started)
        finally:
            with sim._lock:
                sim.in_flight -= 1

    def _control(self, method: str, path: str, raw: bytes) -> None:
        """``/v1/_sim/*``: images, faults, reset, stats. No auth and not counted: they are not the API."""
        sim = self.sim
        if path.startswith("/_sim/images/"):
            png = sim.answers.images.get(path.rsplit("/", 1)[-1]) if method == "GET" else None
            if png is None:
                self._send(404, _error("No such simulated image.", "invalid_request_error", None, "not_found"))
            else:
                self._send(200, None, content_type="image/png", raw=png)
        elif path == "/_sim/faults" and method == "POST":
            try:
                fault = json.loads(raw or b"{}")
                if not isinstance(fault, dict):
                    raise ValueError("a fault is a JSON object")
                sim.add_fault(fault)
            except (ValueError, TypeError) as exc:
                self._send(400, _error(f"Invalid fault: {exc}", "invalid_request_error"))
                return
            self._send(200, {"ok": True})
        elif path == "/_sim/reset" and method == "POST":
            sim.reset()
            self._send(200, {"ok": True})
        elif path == "/_sim/stats" and method == "GET":
            self._send(200, sim.stats())
        else:
            self._send(404, _error(f"Unknown simulator control route {method} /v1{path}", "invalid_request_error"))

    def _pause(self, seconds: float) -> bool:
        """Sleep, waking early if the simulator stops; False means "stopping, do not answer"."""
        return not self.sim._stopping.wait(seconds) if seconds > 0 else True

    def _api(self, method: str, path: str, query: dict[str, list[str]], body: Any, size: int,
             started: float) -> None:
        sim = self.sim
        request_id = sim._next_request_id()
        fault = sim._take_fault(method, path)
        delay = sim.latency
        if fault and fault["kind"] in ("latency", "hang"):
            delay += float(fault.get("latency") or (30.0 if fault["kind"] == "hang" else 0.1))
        if not self._pause(delay):
            self.close_connection = True
            return

        def headers(**extra: str) -> dict[str, str]:
            processing = max(1, round((time.monotonic() - started) * 1000))
            return {"x-request-id": request_id, "openai-processing-ms": str(processing),
                    "openai-version": "2020-10-01", **sim._ratelimit_headers(), **extra}

        if fault and fault["kind"] == "drop":  # the request was received; the answer never comes
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault["kind"] == "malformed":
            self._send(200, None, headers(), raw=b'{"id": "chatcmpl-sim-trunc", "object": "chat.compl')
            return
        if fault and fault["kind"] == "status":
            status = int(fault.get("status") or 500)
            extra = {str(k): str(v) for k, v in (fault.get("headers") or {}).items()}
            scripted = fault.get("body")
            if isinstance(scripted, str):
                self._send(status, None, headers() | extra, raw=scripted.encode())
            else:
                self._send(status, scripted if scripted is not None else _fault_error(status, fault.get("error_code")),
                           headers() | extra)
            return
        problem = sim._auth_error(self.headers, query)
        if problem is not None:
            self._send(401, problem, headers())
            return
        wait = sim._admit(max(1, size // 4))
        if wait is not None:
            message = (f"Rate limit reached for requests per min (RPM): Limit {sim.rate_limit_rpm}, Used "
                       f"{sim.rate_limit_rpm}, Requested 1. Please try again in {wait:.2f}s. (simulator)")
            self._send(429, _error(message, "requests", None, "rate_limit_exceeded"),
                       headers() | {"retry-after-ms": str(max(1, int(wait * 1000))),
                                    "Retry-After": str(int(wait) + 1)})
            return
        self._route(method, path, body, headers)

    def _route(self, method: str, path: str, body: Any, headers: Any) -> None:
        sim = self.sim
        if path.startswith("/models/") and path.count("/") == 2:
            if method != "GET":
                self._send(405, _error(f"Method {method} not allowed on /v1{path}.", "invalid_request_error"),
                           headers(Allow="GET"))
                return
            model_id = path.split("/", 2)[2]
            model = sim.answers.model(model_id)
            if model is None:
                self._send(404, _error(f"The model '{model_id[:100]}' does not exist or you do not have access to it.",
                                       "invalid_request_error", "model", "model_not_found"), headers())
            else:
                self._send(200, model, headers())
            return
        operation = ROUTES.get((method, path))
        if operation is None:
            allowed = sorted(m for m, p in ROUTES if p == path)
            if allowed:
                self._send(405, _error(f"Method {method} not allowed on /v1{path}.", "invalid_request_error"),
                           headers(Allow=", ".join(allowed)))
            else:
                self._send(404, _error(f"Invalid URL ({method} /v1{path})", "invalid_request_error", None,
                                       "unknown_url"), headers())
            return
        if operation == "createEdit" and not sim.legacy_edits:
            self._send(404, _error("The /v1/edits endpoint has been shut down; use /v1/chat/completions.",
                                   "invalid_request_error", None, "not_found"), headers())
            return
        if operation == "listModels":
            self._send(200, {"object": "list", "data": [sim.answers.model(m[0]) for m in MODELS]}, headers())
            return
        if body is ...:
            self._send(400, _error("We could not parse the JSON body of your request. (HINT: This likely means you "
                                   "aren't using your HTTP library correctly.)", "invalid_request_error"), headers())
            return
        problem = validate_request(operation, body)
        if problem is not None:
            message, param, code = problem
            self._send(400, _error(message, "invalid_request_error", param, code), headers())
            return
        answer = {"createChatCompletion": sim.answers.chat, "createCompletion": sim.answers.completion,
                  "createEdit": sim.answers.edit, "createImage": sim.answers.image,
                  "createModeration": sim.answers.moderation}[operation](body)
        if body.get("stream") is True and operation in ("createChatCompletion", "createCompletion"):
            self._stream(operation, answer, body, headers())
            return
        self._send(200, answer, headers())

    # streaming -----------------------------------------------------------------------------------
    @staticmethod
    def _chunks(operation: str, answer: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
        """OpenAI's stream chunks for an answer: role, content in ~3 pieces, finish_reason, optional usage."""
        usage_requested = bool((body.get("stream_options") or {}).get("include_usage"))
        base: dict[str, Any] = {"id": answer["id"], "created": answer["created"], "model": answer["model"],
                                "system_fingerprint": "fp_sim"}
        events: list[dict[str, Any]] = []

        def thirds(text: str) -> list[str]:
            cut = max(1, len(text) // 3)
            return [p for p in (text[:cut], text[cut:2 * cut], text[2 * cut:]) if p]

        if operation == "createChatCompletion":
            base["object"] = "chat.completion.chunk"
            for choice in answer["choices"]:
                index, message = choice["index"], choice["message"]
                opening = "" if message.get("content") is not None else None  # tool calls open with null content
                events.append({"index": index, "delta": {"role": "assistant", "content": opening, "refusal": None},
                               "finish_reason": None, "logprobs": None})
                for piece in thirds(message.get("content") or ""):
                    events.append({"index": index, "delta": {"content": piece}, "finish_reason": None,
                                   "logprobs": None})
                for n, call in enumerate(message.get("tool_calls") or []):
                    events.append({"index": index, "finish_reason": None, "logprobs": None, "delta": {"tool_calls": [
                        {"index": n, "id": call["id"], "type": "function",
                         "function": {"name": call["function"]["name"], "arguments": ""}}]}})
                    for piece in thirds(call["function"]["arguments"]):
                        events.append({"index": index, "finish_reason": None, "logprobs": None, "delta": {
                            "tool_calls": [{"index": n, "function": {"arguments": piece}}]}})
                events.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"],
                               "logprobs": None})
        else:
            base["object"] = "text_completion"
            for choice in answer["choices"]:
                for piece in thirds(choice["text"]):
                    events.append({"index": choice["index"], "text": piece, "logprobs": None, "finish_reason": None})
                events.append({"index": choice["index"], "text": "", "logprobs": None, "finish_reason": "stop"})
        chunks = [base | {"choices": [event]} | ({"usage": None} if usage_requested else {}) for event in events]
        if usage_requested:
            chunks.append(base | {"choices": [], "usage": answer["usage"]})
        return chunks

    def _stream(self, operation: str, answer: dict[str, Any], body: dict[str, Any], headers: dict[str, str]) -> None:
        """Server-sent events with chunked transfer encoding, one event per chunk, ending with ``[DONE]``."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        events = [self.sim._mask(json.dumps(chunk)) for chunk in self._chunks(operation, answer, body)] + ["[DONE]"]
        for event in events:
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


# ---------------------------------------------------------------- command line


def _extract_main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m actions._simulator extract-spec",
                                     description="Extract request-body JSON Schemas from OpenAI's OpenAPI files.")
    parser.add_argument("directory", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/openapi"),
                        help="Folder holding openai-2026-08.yaml and openai-2023-12.yaml.")
    parser.add_argument("--output", default=str(Path(__file__).with_name(REQUESTS_FILE)))
    options = parser.parse_args(args)
    schemas = extract_spec(options.directory)
    Path(options.output).write_text(json.dumps(schemas, separators=(",", ":"), sort_keys=True) + "\n",
                                    encoding="utf-8")
    print(f"wrote {len(schemas)} request schemas ({', '.join(sorted(schemas))}) to {options.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m actions._simulator [--port N] [--latency S] [--api-key-env NAME]`` or ``… extract-spec DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["extract-spec"]:
        return _extract_main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m actions._simulator",
                                     description=f"{BANNER}: a loopback OpenAI-compatible server for tests and demos.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="Port on 127.0.0.1 (0 = any free port).")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"], help="Always 127.0.0.1 (loopback only).")
    parser.add_argument("--latency", type=float, default=0.0, help="Seconds added before every answer.")
    parser.add_argument("--api-key-env", metavar="NAME", help="Require the key held by this environment variable.")
    parser.add_argument("--auth", choices=["bearer", "header", "query"], default="bearer",
                        help="Where the key must be (with --api-key-env).")
    parser.add_argument("--auth-name", help="Header or query parameter name (header/query placements).")
    parser.add_argument("--auth-prefix", default="", help="Text before the key in a custom header.")
    parser.add_argument("--rate-limit-rpm", type=int, help="Requests per rolling minute before 429.")
    parser.add_argument("--no-legacy-edits", action="store_true", help="Answer POST /v1/edits with 404, like today.")
    options = parser.parse_args(args)
    key = None
    if options.api_key_env:
        key = os.environ.get(options.api_key_env, "").strip()
        if not key:
            print(f"error: environment variable {options.api_key_env} is not set or empty", file=sys.stderr)
            return 2
    auth: dict[str, Any] = {"placement": options.auth}
    if options.auth in ("header", "query"):
        auth |= {"name": options.auth_name or ("X-Api-Key" if options.auth == "header" else "api_key"),
                 "prefix": options.auth_prefix}
    sim = Simulator(options.port, latency=options.latency, api_key=key, auth=auth,
                    legacy_edits=not options.no_legacy_edits, rate_limit_rpm=options.rate_limit_rpm)
    with sim:
        print(f"{BANNER}. Answers are canned and deterministic; nothing is sent to OpenAI.")
        print(f"base URL: {sim.url}")
        needs = f"required ({options.auth} placement)" if key else "not required (add the integration with --auth none)"
        print(f"key: {needs}")
        print(f"faults: POST {sim.url}/_sim/faults   stats: GET {sim.url}/_sim/stats   Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
