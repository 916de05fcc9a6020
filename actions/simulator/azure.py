"""Fronts that play other providers in front of the simulator: Azure OpenAI, and compatible servers under a prefix.

NOT Azure and NOT those servers: loopback stand-ins so the pack's routing, auth and body checks are tested
over real HTTP. A front is ASGI middleware around the simulator's app (``Fronts.wrap``); it checks what
the provider would check, rewrites the request to the simulator's ``/v1/...`` and lets it answer.

- ``AzureMode`` serves ``/openai/deployments/{deployment}/{path}?api-version=`` (dated),
  ``/openai/{path}?api-version=`` and ``/openai/v1/{path}`` (v1, the deployment as the body's model),
  takes the key in the ``api-key`` header or an Entra ID bearer token (never both), and issues tokens
  at ``/{tenant}/oauth2/v2.0/token`` for its client credentials. In dated mode ``2024-10-21`` JSON
  bodies are validated against Microsoft's spec (``azure_2024_10_21.json``, extracted from
  ``shared/openapi/azure-openai-inference-2024-10-21.json`` by ``extract_azure``), answering 400 with
  Azure's error shape.
- ``Mount`` serves ``{prefix}/...`` as ``/v1/...`` with its own key placement and required headers
  (Ollama's ``/v1``, Groq's ``/openai/v1``, OpenRouter's ``/api/v1``, Pienteger's ``/oaiv1`` ...).

Every request a front sees is kept in ``Fronts.requests`` (credentials masked, ``auth`` says which kind
was presented) so tests can check the URL, query and headers the pack sent.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from jsonschema import Draft202012Validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AZURE_SPEC_FILE", "AzureMode", "Fronts", "Mount", "extract_azure"]

AZURE_SPEC_FILE = Path(__file__).with_name("azure_2024_10_21.json")
_DATED_SPEC_VERSION = "2024-10-21"
_TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/([^/]+)(/.+)$")
_AUTH_HEADERS = (b"authorization", b"api-key")


# ---------------------------------------------------------------- Microsoft's spec


def extract_azure(spec_path: Path) -> dict[str, Any]:
    """The request schemas of Microsoft's dated spec, as JSON Schema: path -> schema, plus the components.

    OpenAPI 3.0's ``nullable`` becomes a ``null`` type; refs point into ``$defs``.
    """
    spec = json.loads(spec_path.read_text(encoding="utf-8"))

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: convert(v) for k, v in node.items() if k not in ("nullable", "discriminator", "example",
                                                                       "x-ms-enum", "description", "title")}
        if isinstance(out.get("$ref"), str):
            out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/$defs/")
        if node.get("nullable") and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out

    requests: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        body = item.get("post", {}).get("requestBody", {}).get("content", {})
        if "application/json" in body:
            requests[path.removeprefix("/deployments/{deployment-id}")] = convert(body["application/json"]["schema"])
    return {"api_version": _DATED_SPEC_VERSION, "requests": requests,
            "$defs": convert(spec["components"]["schemas"])}


class _AzureSpec:
    """Validators per deployment path, compiled on first use."""

    def __init__(self) -> None:
        self._data: dict[str, Any] | None = None
        self._validators: dict[str, Draft202012Validator] = {}
        self._lock = threading.Lock()

    def problem(self, path: str, body: Any) -> str | None:
        with self._lock:
            if self._data is None:
                self._data = json.loads(AZURE_SPEC_FILE.read_text(encoding="utf-8"))
            schema = self._data["requests"].get(path)
            if schema is None:
                return None
            if path not in self._validators:
                self._validators[path] = Draft202012Validator({"$defs": self._data["$defs"], "allOf": [schema]})
            validator = self._validators[path]
        error = next(iter(sorted(validator.iter_errors(body), key=lambda e: len(list(e.absolute_path)))), None)
        if error is None:
            return None
        where = ".".join(str(p) for p in error.absolute_path) or "body"
        return f"'{where}': {error.message[:300]}"


AZURE_SPEC = _AzureSpec()


# ---------------------------------------------------------------- configuration


@dataclass
class AzureMode:
    """What the stand-in Azure resource accepts. ``deployments`` maps a deployment name to the model it runs."""

    api_key: str | None = None
    deployments: dict[str, str] = field(default_factory=lambda: {"gpt-4o-mini": "gpt-4o-mini"})
    api_versions: tuple[str, ...] = ("2024-10-21", "2025-04-01-preview")
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token_lifetime: int = 3600
    scope: str = "https://cognitiveservices.azure.com/.default"
    tokens: dict[str, float] = field(default_factory=dict)  # issued token -> expiry (time.time)
    token_requests: int = 0

    def expire_tokens(self) -> None:
        """Make every issued token expired now (the next API call with one gets 401)."""
        for token in self.tokens:
            self.tokens[token] = 0.0

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.client_secret, *self.tokens) if s]


@dataclass
class Mount:
    """A compatible server under ``prefix`` (``{prefix}/chat/completions`` is the simulator's ``/v1/chat/completions``).

    ``auth``: {"placement": "bearer" | "header" | "none", "name": header}; ``required_headers``: header
    names that must be present (OpenRouter's attribution headers).
    """

    prefix: str
    api_key: str | None = None
    auth: dict[str, str] = field(default_factory=lambda: {"placement": "bearer"})
    required_headers: tuple[str, ...] = ()


# ---------------------------------------------------------------- the middleware


class Fronts:
    """The Azure stand-in and the prefix mounts of one simulator; empty, it passes every request through."""

    def __init__(self) -> None:
        self.azure: AzureMode | None = None
        self.mounts: list[Mount] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._inner_key: tuple[str | None, dict[str, Any]] = (None, {})

    def reset(self) -> None:
        with self._lock:
            self.azure, self.mounts, self.requests = None, [], []

    def inner_key(self, api_key: str | None, auth: dict[str, Any]) -> None:
        """The simulator's own key, put back on a rewritten request (the front checked the caller's)."""
        self._inner_key = (api_key, auth)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def front(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or (self.azure is None and not self.mounts):
                await app(scope, receive, send)
                return
            await self._handle(app, scope, receive, send)
        return front

    async def _handle(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        azure = self.azure
        if azure is not None and azure.client_secret and (found := _TOKEN_PATH.match(path)):
            body = await _read(receive)
            await _reply(send, *self._token(azure, unquote(found.group(1)), body))
            return
        if azure is not None and (path == "/openai" or path.startswith("/openai/")):
            await self._azure(app, azure, scope, receive, send)
            return
        for mount in self.mounts:
            if path.startswith(mount.prefix + "/"):
                await self._mount(app, mount, scope, receive, send)
                return
        await app(scope, receive, send)

    # Entra ID ----------------------------------------------------------------------------------
    def _token(self, azure: AzureMode, tenant: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        azure.token_requests += 1
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "AADSTS70003 (simulator)"}
        if tenant != azure.tenant_id:
            return 400, {"error": "invalid_request", "error_description": "AADSTS90002: tenant not found (simulator)"}
        if form.get("client_id") != azure.client_id or not hmac.compare_digest(
                form.get("client_secret", "").encode(), (azure.client_secret or "").encode()):
            return 401, {"error": "invalid_client", "error_description": "AADSTS7000215: invalid client secret "
                                                                         "(simulator)"}
        if form.get("scope") != azure.scope:
            return 400, {"error": "invalid_scope", "error_description": "AADSTS70011 (simulator)"}
        token = "entra-sim-" + secrets.token_urlsafe(24)
        azure.tokens[token] = time.time() + azure.token_lifetime
        return 200, {"token_type": "Bearer", "expires_in": azure.token_lifetime, "access_token": token}

    # Azure OpenAI ------------------------------------------------------------------------------
    def _azure_auth(self, azure: AzureMode, headers: dict[str, str]) -> tuple[str, str | None]:
        """(which credential was presented, the refusal or None)."""
        key, bearer = headers.get("api-key"), headers.get("authorization")
        if key is not None and bearer is not None:
            return "both", "send the api-key header or an Authorization bearer token, not both"
        if key is not None:
            ok = azure.api_key is not None and hmac.compare_digest(key.encode(), azure.api_key.encode())
            return "api-key", None if ok else "Access denied due to invalid subscription key or wrong API endpoint."
        if bearer is not None and bearer[:7].lower() == "bearer ":
            expiry = azure.tokens.get(bearer[7:])
            if expiry is None:
                return "bearer", "Unauthorized. Access token is missing, invalid, audience is incorrect."
            if expiry <= time.time():
                return "bearer", "Unauthorized. Access token has expired."
            return "bearer", None
        return "none", "Access denied due to missing subscription key."

    async def _azure(self, app: ASGIApp, azure: AzureMode, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read(receive)
        kind, refusal = self._azure_auth(azure, headers)
        version = query.get("api-version")
        found = _DEPLOYMENT_PATH.match(path)
        deployment = unquote(found.group(1)) if found else None
        self._keep("azure", scope, query, headers, body, kind, azure.secrets(), deployment=deployment)
        if refusal is not None:
            await _reply(send, 401, _azure_error("401", refusal))
            return
        content_type = headers.get("content-type", "")
        if path.startswith("/openai/v1/"):
            rest, model = path.removeprefix("/openai/v1"), None
            if version is not None:
                await _reply(send, 400, _azure_error("BadRequest", "the v1 path takes no api-version"))
                return
            parsed = _json_or_none(body, content_type)
            if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
                if parsed["model"] not in azure.deployments:
                    await _reply(send, 404, _deployment_missing(parsed["model"]))
                    return
                model = azure.deployments[parsed["model"]]
            await self._forward(app, scope, receive, send, rest, body, model)
            return
        if version is None:
            await _reply(send, 404, _azure_error("404", "Resource not found (the api-version query parameter is "
                                                        "missing)"))
            return
        if version not in azure.api_versions:
            await _reply(send, 400, _azure_error("BadRequest", f"API version {version} is not supported"))
            return
        if found is None:
            await self._forward(app, scope, receive, send, path.removeprefix("/openai"), body, None)
            return
        rest = found.group(2)
        if deployment not in azure.deployments:
            await _reply(send, 404, _deployment_missing(deployment or ""))
            return
        parsed = _json_or_none(body, content_type)
        if version == _DATED_SPEC_VERSION and parsed is not None:
            problem = AZURE_SPEC.problem(rest, parsed)
            if problem is not None:
                await _reply(send, 400, _azure_error("BadRequest", f"Invalid request body: {problem} (Azure "
                                                                   f"OpenAI {version} spec, simulator)"))
                return
        await self._forward(app, scope, receive, send, rest, body, azure.deployments[deployment])

    # compatible servers ------------------------------------------------------------------------
    async def _mount(self, app: ASGIApp, mount: Mount, scope: Scope, receive: Receive, send: Send) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read(receive)
        placement = mount.auth.get("placement", "bearer")
        presented = None
        if placement == "bearer":
            value = headers.get("authorization", "")
            presented = value[7:] if value[:7].lower() == "bearer " else None
        elif placement == "header":
            presented = headers.get(mount.auth["name"].lower())
        self._keep(mount.prefix, scope, query, headers, body, placement, [mount.api_key or ""])
        if placement != "none" and (presented is None or mount.api_key is None
                                    or not hmac.compare_digest(presented.encode(), mount.api_key.encode())):
            await _reply(send, 401, {"error": {"message": "missing or wrong API key (simulator mount)",
                                               "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        missing = [h for h in mount.required_headers if h.lower() not in headers]
        if missing:
            await _reply(send, 400, {"error": {"message": f"missing header {missing[0]} (simulator mount)",
                                               "type": "invalid_request_error", "code": None}})
            return
        await self._forward(app, scope, receive, send, scope["path"].removeprefix(mount.prefix), body, None)

    # plumbing ----------------------------------------------------------------------------------
    def _keep(self, front: str, scope: Scope, query: dict[str, str], headers: dict[str, str], body: bytes,
              auth: str, hidden: list[str], **extra: Any) -> None:
        def mask(text: str) -> str:
            for secret in hidden:
                if secret:
                    text = text.replace(secret, "<secret>")
            return text

        with self._lock:
            self.requests.append({"front": front, "method": scope["method"], "path": scope["path"],
                                  "query": {k: mask(v) for k, v in query.items()},
                                  "headers": {k: mask(v) for k, v in headers.items()}, "auth": auth,
                                  "body": mask(body.decode("utf-8", "replace")), **extra})
            del self.requests[:-1000]

    async def _forward(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, rest: str, body: bytes,
                       model: str | None) -> None:
        """Hand the request to the simulator as ``/v1{rest}``, the body's model set to the deployment's."""
        content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), "")
        if model is not None:
            parsed = _json_or_none(body, content_type)
            if isinstance(parsed, dict):
                body = json.dumps({**parsed, "model": model}).encode()
        api_key, auth = self._inner_key
        headers = [(k, v) for k, v in scope["headers"] if k not in _AUTH_HEADERS and k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        query = scope.get("query_string", b"")
        if api_key and auth.get("placement", "bearer") == "bearer":
            headers.append((b"authorization", f"Bearer {api_key}".encode()))
        elif api_key and auth.get("placement") == "header":
            headers.append((auth["name"].lower().encode(), (auth.get("prefix", "") + api_key).encode()))
        query = b"&".join(p for p in query.split(b"&") if p and not p.startswith(b"api-version="))
        inner = {**scope, "path": "/v1" + rest, "raw_path": ("/v1" + rest).encode(), "headers": headers,
                 "query_string": query}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(inner, replay, send)


def _json_or_none(body: bytes, content_type: str) -> Any:
    if not content_type.startswith("application/json") or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _azure_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _deployment_missing(name: str) -> dict[str, Any]:
    return _azure_error("DeploymentNotFound", f"The API deployment for this resource does not exist ({name!r}). "
                                              "(simulator)")


async def _read(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"server", b"azure-openai-simulator (NOT Azure)")]})
    await send({"type": "http.response.body", "body": payload})
