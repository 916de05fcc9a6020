"""A loopback OpenAI-compatible server: NOT the real API. Used by the tests, the demo and benchmarks.

It serves every endpoint the manifests bind, validates request bodies against the request schemas
extracted from OpenAI's published spec (``_openapi_requests.json``; a wrong body gets OpenAI's 400
error shape with ``param``), answers with deterministic spec-shaped bodies including ``usage``,
streams server-sent events, serves images as URLs or base64, and plays scripted faults (statuses
with Retry-After, latency, dropped connections, malformed bodies, hangs). It counts what it
received. It listens on 127.0.0.1 only.

Moderation flags a text when it contains one of ``FLAG_WORDS`` (so tests can take both branches).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import struct
import sys
import threading
import time
import zlib
from collections import Counter, deque
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jsonschema import Draft202012Validator

__all__ = ["FLAG_WORDS", "MODELS", "Simulator", "main"]

FLAG_WORDS = ("kill", "violence", "bomb")
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
MODELS = (
    ("gpt-4o", 1715367049, "system"), ("gpt-4o-mini", 1721172741, "system"), ("gpt-4.1", 1744316542, "system"),
    ("o3-mini", 1737146383, "system"), ("gpt-3.5-turbo-instruct", 1692901427, "system"),
    ("dall-e-2", 1698798177, "system"), ("dall-e-3", 1698785189, "system"), ("gpt-image-1", 1745517030, "system"),
    ("omni-moderation-latest", 1731689265, "system"), ("text-moderation-latest", 1680000000, "openai"),
    ("text-embedding-3-small", 1705948997, "system"), ("whisper-1", 1677532384, "openai-internal"),
)
ROUTES = {
    ("POST", "/chat/completions"): "createChatCompletion",
    ("POST", "/completions"): "createCompletion",
    ("POST", "/edits"): "createEdit",
    ("POST", "/images/generations"): "createImage",
    ("POST", "/moderations"): "createModeration",
    ("GET", "/models"): "listModels",
}


# ---------------------------------------------------------------- spec extraction


def _to_json_schema(node: Any, components: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Inline $refs (cutting recursion), turn OpenAPI-isms into JSON Schema, drop prose."""
    if isinstance(node, list):
        return [_to_json_schema(n, components, seen) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen or len(seen) > 12:
            return {}
        return _to_json_schema(components.get(name, {}), components, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "title", "example", "examples", "x-oaiMeta", "x-oaiTypeLabel", "discriminator",
                   "deprecated", "readOnly", "x-stainless-const", "x-oaiExpandable", "default", "nullable") \
                or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {k: _to_json_schema(v, components, seen) for k, v in value.items()}
        else:
            out[key] = _to_json_schema(value, components, seen)
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "type" not in out and any(k in out for k in ("anyOf", "oneOf", "allOf")):
            out = {"anyOf": [out, {"type": "null"}]}
    if "oneOf" in out:  # OpenAI's oneOfs overlap (a string matches two branches); anyOf is what they mean
        out["anyOf"] = out.pop("oneOf")
    return out


def extract_spec(directory: str) -> dict[str, Any]:
    """Request body schemas of the bound operations, from shared/openapi/*.yaml."""
    import yaml

    wanted = {"2026-08": ["createChatCompletion", "createCompletion", "createImage", "createModeration"],
              "2023-12": ["createEdit"]}
    schemas: dict[str, Any] = {}
    for version, operation_ids in wanted.items():
        with open(f"{directory}/openai-{version}.yaml", encoding="utf-8") as handle:
            spec = yaml.safe_load(handle)
        components = spec["components"]["schemas"]
        for item in spec["paths"].values():
            for operation in item.values():
                if isinstance(operation, dict) and operation.get("operationId") in operation_ids:
                    body = operation["requestBody"]["content"]["application/json"]["schema"]
                    schemas[operation["operationId"]] = _to_json_schema(body, components)
    return schemas


@cache
def _validators() -> dict[str, Draft202012Validator]:
    raw = json.loads(resources.files("actions").joinpath("_openapi_requests.json").read_text(encoding="utf-8"))
    return {op: Draft202012Validator(schema) for op, schema in raw.items()}


def _param(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_request(operation_id: str, body: Any) -> tuple[str, str] | None:
    """(message, param) of the first problem, like OpenAI's 400, or None."""
    validator = _validators().get(operation_id)
    if validator is None:
        return None
    error = next(iter(sorted(validator.iter_errors(body), key=lambda e: (len(e.path), str(e.path)))), None)
    if error is None:
        return None
    param = _param(error.absolute_path)
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        name = missing[0] if missing else "?"
        param = f"{param}.{name}" if param else name
        return f"Missing required parameter: '{param}'.", param
    return f"Invalid value for '{param or 'body'}': {error.message[:300]}", param


# ---------------------------------------------------------------- deterministic answers


def tokens(text: str) -> int:
    return max(1, round(len(text.split()) * 4 / 3))


def _png(seed: str) -> bytes:
    """An 8x8 solid PNG whose colour comes from the prompt."""
    r, g, b = hashlib.sha256(seed.encode()).digest()[:3]
    raw = b"".join(b"\x00" + bytes((r, g, b)) * 8 for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _sample(schema: Any, depth: int = 0) -> Any:
    """A value that fits a (simple) JSON schema: for response_format json_schema and tool arguments."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _sample(schema[key][0], depth + 1)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        return {k: _sample(v, depth + 1) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample(schema.get("items") or {"type": "string"}, depth + 1)]
    return {"integer": 1, "number": 0.5, "boolean": True, "null": None}.get(str(kind), "simulated")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class Answers:
    """Response bodies per operation; ``counter`` makes ids unique and deterministic per server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.images: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._n = 0

    def next_id(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    @staticmethod
    def _usage(prompt: str, completion: str) -> dict[str, int]:
        p, c = tokens(prompt), tokens(completion)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        last_user = next((_text_of(m.get("content")) for m in reversed(messages)
                          if isinstance(m, dict) and m.get("role") == "user"), prompt)
        fmt = body.get("response_format") or {}
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        finish, tool_calls = "stop", None
        if fmt.get("type") == "json_schema":
            content: str | None = json.dumps(_sample((fmt.get("json_schema") or {}).get("schema") or {}))
        elif fmt.get("type") == "json_object":
            content = json.dumps({"result": f"Simulated reply to: {last_user[:60]}"})
        elif tools and body.get("tool_choice", "auto") != "none":
            function = tools[0]["function"]
            tool_calls = [{"id": f"call_sim{self.next_id()}", "type": "function",
                           "function": {"name": function["name"],
                                        "arguments": json.dumps(_sample(function.get("parameters") or {}))}}]
            content, finish = None, "tool_calls"
        else:
            content = f"Simulated reply to: {last_user[:60]}"
        choices = []
        for index in range(int(body.get("n") or 1)):
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
        usage = self._usage(prompt, (content or "") * len(choices))
        return {"id": f"chatcmpl-sim{self.next_id()}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "choices": choices, "usage": usage, "system_fingerprint": "fp_sim",
                "service_tier": "default"}

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        text_in = prompt if isinstance(prompt, str) else json.dumps(prompt)
        text = f" Simulated continuation of: {text_in[:40]}"
        n = int(body.get("n") or 1)
        return {"id": f"cmpl-sim{self.next_id()}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": "stop"} for i in range(n)],
                "usage": self._usage(text_in, text * n)}

    def edit(self, body: dict[str, Any]) -> dict[str, Any]:
        text = str(body.get("input") or "")
        edited = text.replace("wek", "week").replace("teh", "the") or "Simulated edit"
        n = int(body.get("n") or 1)
        return {"object": "edit", "created": int(time.time()),
                "choices": [{"text": edited, "index": i, "finish_reason": "stop"} for i in range(n)],
                "usage": self._usage(text + " " + str(body.get("instruction")), edited * n)}

    def image(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = str(body.get("prompt"))
        model = body.get("model") or "dall-e-2"
        data = []
        for i in range(int(body.get("n") or 1)):
            png = _png(f"{prompt}:{i}")
            if model == "gpt-image-1" or body.get("response_format") == "b64_json":
                item: dict[str, Any] = {"b64_json": base64.b64encode(png).decode()}
            else:
                name = f"img-{self.next_id()}.png"
                self.images[name] = png
                item = {"url": f"{self.base_url}/_sim/images/{name}"}
            if model == "dall-e-3":
                item["revised_prompt"] = f"{prompt} (simulated revision)"
            data.append(item)
        out: dict[str, Any] = {"created": int(time.time()), "data": data}
        if model == "gpt-image-1":
            out["usage"] = {"input_tokens": tokens(prompt), "output_tokens": 272 * len(data),
                            "total_tokens": tokens(prompt) + 272 * len(data)}
        return out

    def moderation(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        if inputs and all(isinstance(i, dict) for i in inputs):
            inputs = [" ".join(str(i.get("text", "")) for i in inputs)]  # multimodal parts: one result
        results = []
        for text in inputs:
            lowered = str(text).lower()
            hits = {"violence"} if any(word in lowered for word in FLAG_WORDS) else set()
            results.append({
                "flagged": bool(hits),
                "categories": {c: c in hits for c in MODERATION_CATEGORIES},
                "category_scores": {c: (0.91 if c in hits else 0.0004) for c in MODERATION_CATEGORIES},
                "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
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
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


_STATUS_ERRORS = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"), 409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", "unprocessable_entity"), 429: ("requests", "rate_limit_exceeded"),
}


# ---------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and hung up is part of the script, not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Simulator:
    """Start with ``with Simulator() as sim:``; ``sim.url`` is the base URL to configure."""

    def __init__(self, port: int = 0, *, latency: float = 0.0, api_key: str | None = None,
                 auth: dict[str, Any] | None = None, legacy_edits: bool = True,
                 rate_limit_rpm: int | None = None) -> None:
        self.port = port
        self.latency = latency
        self.api_key = api_key
        self.auth = auth or {"placement": "bearer"}
        self.legacy_edits = legacy_edits
        self.rate_limit_rpm = rate_limit_rpm
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.reset()

    # state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.faults: list[dict[str, Any]] = []
            self.calls = 0
            self._by_route: Counter[str] = Counter()
            self.requests: list[dict[str, Any]] = []
            self.in_flight = 0
            self.max_in_flight = 0
            self._window: deque[float] = deque()

    def add_fault(self, fault: dict[str, Any]) -> None:
        """Script a fault; see the module docstring and ``_fault_for``."""
        entry = {"method": None, "path": None, "times": 1, "kind": "status"} | dict(fault)
        if entry["path"] and not str(entry["path"]).startswith("/"):
            entry["path"] = "/" + str(entry["path"])
        with self._lock:
            self.faults.append(entry)

    def calls_by_route(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_route)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": self.calls, "by_route": dict(self._by_route), "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight}

    def _fault_for(self, method: str, path: str) -> dict[str, Any] | None:
        with self._lock:
            for fault in self.faults:
                if fault["times"] == 0:
                    continue
                if fault["method"] and fault["method"].upper() != method:
                    continue
                if fault["path"] and not (path == fault["path"] or path.startswith(fault["path"] + "/")):
                    continue
                if fault["times"] > 0:
                    fault["times"] -= 1
                return dict(fault)
        return None

    def _rate_limited(self) -> float | None:
        """Seconds until a slot frees in the rolling 60 s window, or None when there is room."""
        if not self.rate_limit_rpm:
            return None
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0] >= 60:
                self._window.popleft()
            if len(self._window) >= self.rate_limit_rpm:
                return 60 - (now - self._window[0])
            self._window.append(now)
        return None

    def _ratelimit_headers(self) -> dict[str, str]:
        limit = self.rate_limit_rpm or 10000
        with self._lock:
            used = len(self._window) if self.rate_limit_rpm else min(self.calls, limit)
        return {"x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-remaining-requests": str(max(0, limit - used)),
                "x-ratelimit-reset-requests": "60s" if self.rate_limit_rpm else "6ms",
                "x-ratelimit-limit-tokens": "30000000", "x-ratelimit-remaining-tokens": "29999000",
                "x-ratelimit-reset-tokens": "0s"}

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Simulator:
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = _Server(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.answers = Answers(self.url)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # auth -------------------------------------------------------------------------------------
    def _authorised(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if not self.api_key:
            return True
        placement = self.auth.get("placement", "bearer")
        if placement == "bearer":
            return bool(headers.get("Authorization") == f"Bearer {self.api_key}")
        if placement == "header":
            return bool(headers.get(self.auth["name"]) == (self.auth.get("prefix") or "") + self.api_key)
        if placement == "query":
            return query.get(self.auth["name"], [None])[0] == self.api_key
        return True

    def _mask(self, text: str) -> str:
        return text.replace(self.api_key, "<api-key>") if self.api_key else text


class _Handler(BaseHTTPRequestHandler):
    sim: Simulator
    protocol_version = "HTTP/1.1"
    server_version = "openai-simulator/1.0 (NOT the real OpenAI API)"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: tests and benchmarks read counters, not access logs."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # helpers ------------------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, *,
              content_type: str = "application/json", raw: bytes | None = None) -> None:
        payload = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self, method: str) -> None:
        sim = self.sim
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not path.startswith("/v1"):
            self._send(404, _error(f"Unknown URL {path} (this simulator serves /v1)", "invalid_request_error"))
            return
        path = path[3:] or "/"
        if path.startswith("/_sim/"):
            self._control(method, path, raw)
            return
        with sim._lock:
            sim.calls += 1
            sim._by_route[f"{method} {path if not path.startswith('/models/') else '/models/{model}'}"] += 1
            sim.in_flight += 1
            sim.max_in_flight = max(sim.max_in_flight, sim.in_flight)
            request_number = sim.calls
        try:
            self._api(method, path, query, raw, request_number)
        finally:
            with sim._lock:
                sim.in_flight -= 1

    def _control(self, method: str, path: str, raw: bytes) -> None:
        sim = self.sim
        if method == "GET" and path.startswith("/_sim/images/"):
            png = sim.answers.images.get(path.rsplit("/", 1)[-1])
            if png is None:
                self._send(404, _error("No such image", "invalid_request_error"))
            else:
                self._send(200, None, content_type="image/png", raw=png)
        elif method == "POST" and path == "/_sim/faults":
            sim.add_fault(json.loads(raw or b"{}"))
            self._send(200, {"ok": True})
        elif method == "POST" and path == "/_sim/reset":
            sim.reset()
            self._send(200, {"ok": True})
        elif method == "GET" and path == "/_sim/stats":
            self._send(200, sim.stats())
        else:
            self._send(404, _error(f"Unknown control route {method} {path}", "invalid_request_error"))

    def _api(self, method: str, path: str, query: dict[str, list[str]], raw: bytes, number: int) -> None:
        sim = self.sim
        headers = {"x-request-id": f"req_sim_{number}", "openai-processing-ms": "1",
                   "openai-version": "2020-10-01", **sim._ratelimit_headers()}
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
            if method == "POST":
                self._send(400, _error("We could not parse the JSON body of your request.",
                                       "invalid_request_error"), headers)
                return
        sim.requests.append({
            "method": method, "path": "/v1" + path, "query": {k: sim._mask(v[0]) for k, v in query.items()},
            "headers": {k.lower(): sim._mask(v) for k, v in self.headers.items()},
            "body": json.loads(sim._mask(json.dumps(body))) if body is not None else None,
            "at": time.time(),
        })
        fault = sim._fault_for(method, path)
        delay = sim.latency
        if fault and fault["kind"] in ("latency", "hang"):
            delay += float(fault.get("latency", 30 if fault["kind"] == "hang" else 0.1))
        if delay:
            time.sleep(delay)
        if fault and fault["kind"] == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault and fault["kind"] == "malformed":
            self._send(200, None, headers, raw=b'{"id": "chatcmpl-trunc", "object": "chat.comp')
            return
        if fault and fault["kind"] == "status":
            status = int(fault.get("status", 500))
            kind, code = _STATUS_ERRORS.get(status, ("server_error", None))
            code = fault.get("error_code") or code
            if code == "insufficient_quota":
                kind = "insufficient_quota"
            message = {429: "Rate limit reached (simulated).", 401: "Incorrect API key provided (simulated)."}.get(
                status, f"Simulated error {status}.")
            if code == "insufficient_quota":
                message = "You exceeded your current quota, please check your plan and billing details."
            self._send(status, fault.get("body") or _error(message, kind, None, code),
                       headers | dict(fault.get("headers") or {}))
            return
        if not sim._authorised(self.headers, query):
            self._send(401, _error("Incorrect API key provided. You can find your API key at "
                                   "https://platform.openai.com/account/api-keys.", "invalid_request_error", None,
                                   "invalid_api_key"), headers)
            return
        wait = sim._rate_limited()
        if wait is not None:
            self._send(429, _error("Rate limit reached for requests (simulated).", "requests", None,
                                   "rate_limit_exceeded"),
                       headers | {"retry-after-ms": str(int(wait * 1000)), "Retry-After": str(int(wait) + 1),
                                  "x-ratelimit-remaining-requests": "0"})
            return
        self._answer(method, path, body, headers)

    def _answer(self, method: str, path: str, body: Any, headers: dict[str, str]) -> None:
        sim = self.sim
        if method == "GET" and path.startswith("/models/"):
            model = sim.answers.model(path.split("/", 2)[2])
            if model is None:
                self._send(404, _error(f"The model '{path.split('/', 2)[2]}' does not exist",
                                       "invalid_request_error", "model", "model_not_found"), headers)
            else:
                self._send(200, model, headers)
            return
        operation = ROUTES.get((method, path))
        if operation is None:
            known = any(p == path for _, p in ROUTES)
            status = 405 if known else 404
            self._send(status, _error(f"Invalid URL ({method} /v1{path})", "invalid_request_error"), headers)
            return
        if operation == "createEdit" and not sim.legacy_edits:
            self._send(404, _error("This endpoint has been shut down (POST /v1/edits).", "invalid_request_error",
                                   None, "not_found"), headers)
            return
        if operation == "listModels":
            self._send(200, {"object": "list", "data": [sim.answers.model(m[0]) for m in MODELS]}, headers)
            return
        problem = validate_request(operation, body)
        if problem is not None:
            self._send(400, _error(problem[0], "invalid_request_error", problem[1]), headers)
            return
        answer = {"createChatCompletion": sim.answers.chat, "createCompletion": sim.answers.completion,
                  "createEdit": sim.answers.edit, "createImage": sim.answers.image,
                  "createModeration": sim.answers.moderation}[operation](body)
        if body.get("stream") is True and operation in ("createChatCompletion", "createCompletion"):
            self._stream(operation, answer, body, headers)
            return
        self._send(200, answer, headers)

    def _stream(self, operation: str, answer: dict[str, Any], body: dict[str, Any], headers: dict[str, str]) -> None:
        """OpenAI's chunk format, then [DONE]; the connection closes at the end of the stream."""
        events: list[dict[str, Any]] = []
        base = {"id": answer["id"], "created": answer["created"], "model": answer["model"]}
        if operation == "createChatCompletion":
            base |= {"object": "chat.completion.chunk", "system_fingerprint": "fp_sim"}
            for choice in answer["choices"]:
                i, message = choice["index"], choice["message"]
                events.append(base | {"choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                   "finish_reason": None}]})
                text = message.get("content") or ""
                for piece in (text[: len(text) // 3], text[len(text) // 3: 2 * len(text) // 3],
                              text[2 * len(text) // 3:]):
                    if piece:
                        events.append(base | {"choices": [{"index": i, "delta": {"content": piece},
                                                           "finish_reason": None}]})
                if message.get("tool_calls"):
                    calls = [{"index": n, **c} for n, c in enumerate(message["tool_calls"])]
                    events.append(base | {"choices": [{"index": i, "delta": {"tool_calls": calls},
                                                       "finish_reason": None}]})
                events.append(base | {"choices": [{"index": i, "delta": {}, "finish_reason": choice["finish_reason"]}]})
        else:
            base |= {"object": "text_completion"}
            for choice in answer["choices"]:
                text = choice["text"]
                for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                    events.append(base | {"choices": [{"index": choice["index"], "text": piece, "logprobs": None,
                                                       "finish_reason": None}]})
                events.append(base | {"choices": [{"index": choice["index"], "text": "", "logprobs": None,
                                                   "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(base | {"choices": [], "usage": answer["usage"]})
        payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


def main(argv: list[str] | None = None) -> int:
    """``python -m actions._simulator [--port N]`` or ``extract-spec DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["extract-spec"]:
        directory = args[1] if len(args) > 1 else "../shared/openapi"
        schemas = extract_spec(directory)
        target = resources.files("actions").joinpath("_openapi_requests.json")
        with resources.as_file(target) as path:
            path.write_text(json.dumps(schemas, indent=None, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"wrote {len(schemas)} request schemas: {', '.join(sorted(schemas))}")
        return 0
    parser = argparse.ArgumentParser(prog="openai-pack simulate", description="Loopback OpenAI API simulator.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--api-key-env", help="Require the key held by this environment variable (bearer).")
    options = parser.parse_args(args)
    import os

    key = os.environ.get(options.api_key_env) if options.api_key_env else None
    with Simulator(options.port, latency=options.latency, api_key=key) as sim:
        print("OpenAI API SIMULATOR — not the real API. Answers are canned and deterministic.")
        print(f"base URL: {sim.url}   (configure an integration with --base-url {sim.url} --auth none)")
        print("faults: POST /v1/_sim/faults, counters: GET /v1/_sim/stats. Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
