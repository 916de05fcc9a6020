"""Where a request goes: one pure function turns (integration, method, OpenAI path, body) into the URL to call.

OpenAI and every OpenAI-compatible server (Ollama, vLLM, LiteLLM, OpenRouter, Groq, a proxy) take
``{base_url}/{path}``; the presets below only change an integration's defaults. Azure OpenAI has its
own scheme (``docs/providers.md``):

- **dated mode** (``azure.api_version`` set): the deployment-bound operations (``DEPLOYMENT_PATHS``) go
  to ``{endpoint}/openai/deployments/{deployment}/{path}``, every other one to ``{endpoint}/openai/{path}``,
  both with ``?api-version=``. Microsoft's spec for 2024-10-21 has no ``developer`` chat role (it is
  sent as ``system``) and generates one image of three sizes per request (other values are refused
  naming the field, before anything is sent);
- **v1 mode** (no api-version): ``{endpoint}/openai/v1/{path}``, the deployment as the body's model.

An operation Azure does not serve (moderations, the admin API, ...) is refused before any call.
Nothing here reads a key: keys and tokens are placed by ``auth_for`` (``integration.auth`` and
``integration.entra``), so a sync and an async client route and authenticate the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from integration.auth import ApiKeyAuth
from integration.entra import EntraAuth
from integration.errors import ConfigError, InputError
from integration.model import AuthPlacement, Integration, Provider

__all__ = ["AZURE_SERVED_PREFIXES", "DEPLOYMENT_PATHS", "PRESETS", "Routed", "auth_for", "azure_serves",
           "model_of", "route"]

#: Operations Azure binds to a deployment (``/openai/deployments/{deployment}/...`` in dated mode).
DEPLOYMENT_PATHS = frozenset({"/completions", "/chat/completions", "/embeddings", "/audio/transcriptions",
                              "/audio/translations", "/audio/speech", "/images/generations", "/images/edits"})
#: Other operations Azure OpenAI serves (``/openai/{path}``); anything else is refused before a call.
AZURE_SERVED_PREFIXES = ("/files", "/batches", "/fine_tuning", "/models", "/assistants", "/threads",
                         "/vector_stores", "/responses", "/uploads")
#: The last dated api-version whose image and chat limits the pack checks (Microsoft's 2024-10-21 spec).
_LIMITED_API_VERSION = "2024-10-21"
_AZURE_IMAGE_SIZES = ("1792x1024", "1024x1792", "1024x1024")

#: Defaults a preset gives ``integrations add --provider NAME``: only what differs from plain OpenAI.
PRESETS: dict[str, dict[str, Any]] = {
    Provider.ollama: {"base_url": "http://localhost:11434/v1", "auth": {"placement": "none"}},
    Provider.vllm: {"base_url": "http://localhost:8000/v1"},
    Provider.litellm: {"base_url": "http://localhost:4000/v1"},
    Provider.openrouter: {"base_url": "https://openrouter.ai/api/v1",
                          "extra_headers": {"X-Title": "openai-actions-pack"}},
    Provider.groq: {"base_url": "https://api.groq.com/openai/v1"},
    Provider.pienteger: {"base_url": "https://api.pienteger.com/oaiv1",
                         "auth": {"placement": "header", "name": "X-Api-Key"}},
}


@dataclass(frozen=True)
class Routed:
    """One request as it must go out: absolute URL, extra query parameters, and the (possibly adapted) body."""

    url: str
    params: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    files: Any = None


def model_of(json_body: Any, files: Any) -> str | None:
    """The ``model`` a request names, from a JSON body or a multipart field."""
    if isinstance(json_body, dict) and isinstance(json_body.get("model"), str):
        return json_body["model"]
    for name, value in files or ():
        if name == "model" and isinstance(value, tuple) and value[0] is None:
            return str(value[1])
    return None


def azure_serves(path: str) -> bool:
    """Whether Azure OpenAI has the operation at ``path`` (an OpenAI path such as ``/chat/completions``)."""
    path = "/" + path.lstrip("/")
    return path in DEPLOYMENT_PATHS or any(path == p or path.startswith(p + "/") for p in AZURE_SERVED_PREFIXES)


def route(integration: Integration, method: str, path: str, *, json_body: Any = None, files: Any = None,
          action: str | None = None) -> Routed:
    """The URL, query and body for ``method path`` on this integration; raises before any call when it cannot go.

    ``path`` is relative to an OpenAI base URL (``/chat/completions``); ``action`` only names the
    action in messages.
    """
    path = "/" + path.lstrip("/")
    if integration.provider != Provider.azure or integration.azure is None:
        return Routed(integration.base_url + path, {}, json_body, files)
    azure = integration.azure
    what = f"{method} {path}" + (f" (action {action})" if action else "")
    if not azure_serves(path):
        raise ConfigError(f"Azure OpenAI does not serve {what}; integration {integration.name!r} is an Azure "
                          "integration, so nothing was sent: use an OpenAI integration for this step",
                          field="integration", integration=integration.name)
    model = model_of(json_body, files)
    if azure.api_version is None:  # v1: OpenAI's paths, the deployment as the model
        if model is not None:
            json_body, files = _with_model(json_body, files, azure.deployment_for(model))
        return Routed(f"{azure.endpoint}/openai/v1{path}", {}, json_body, files)
    params = {"api-version": azure.api_version}
    if path not in DEPLOYMENT_PATHS:
        return Routed(f"{azure.endpoint}/openai{path}", params, json_body, files)
    if model is None or not model.strip():
        raise InputError([{"field": "model", "reason": f"Azure OpenAI sends {what} to a deployment: give the "
                                                        "deployment name (or a model the integration maps to one)"}],
                         action=action)
    deployment = quote(azure.deployment_for(model), safe="")
    if azure.api_version[:10] <= _LIMITED_API_VERSION:
        json_body = _dated_body(path, json_body, action)
    return Routed(f"{azure.endpoint}/openai/deployments/{deployment}{path}", params, json_body, files)


def _with_model(json_body: Any, files: Any, model: str) -> tuple[Any, Any]:
    if isinstance(json_body, dict):
        return {**json_body, "model": model}, files
    if files:
        files = [(n, (None, model)) if n == "model" and isinstance(v, tuple) and v[0] is None else (n, v)
                 for n, v in files]
    return json_body, files


def _dated_body(path: str, body: Any, action: str | None) -> Any:
    """What Microsoft's 2024-10-21 spec takes: ``developer`` becomes ``system``; image limits refused by field."""
    if not isinstance(body, dict):
        return body
    messages = body.get("messages") if path == "/chat/completions" else None
    if isinstance(messages, list) and any(isinstance(m, dict) and m.get("role") == "developer" for m in messages):
        body = copy.copy(body)
        body["messages"] = [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
                            for m in messages]
    if path == "/images/generations":
        problems = []
        n = body.get("n")
        if isinstance(n, int) and n > 1:
            problems.append({"field": "n", "reason": f"Azure OpenAI api-version {_LIMITED_API_VERSION} makes one "
                                                     f"image per request, not {n}: run the step once per image"})
        size = body.get("size")
        if size is not None and size not in _AZURE_IMAGE_SIZES:
            problems.append({"field": "size", "reason": f"Azure OpenAI api-version {_LIMITED_API_VERSION} takes "
                                                        f"{', '.join(_AZURE_IMAGE_SIZES)}, not {size!r}"})
        if problems:
            raise InputError(problems, action=action)
    return body


def auth_for(integration: Integration, *, admin: bool = False) -> httpx.Auth:
    """The httpx auth that places this integration's credential: its key, an Entra ID token, or (``admin``,
    OpenAI's /organization actions) its Admin API key in the same placement."""
    if integration.auth.placement == AuthPlacement.entra and not admin:
        return EntraAuth(integration)
    return ApiKeyAuth(integration, admin=admin)
