"""``integrations check``: which groups of actions an endpoint answers, at the cost of nothing.

One probe per group, never one call per action, and never a paid one: a listing (GET), or a request
whose empty body the API refuses with 400 before doing any work. A server that has the operation
answers 2xx, 400 or 422; one without it answers 404 or 405. An Azure integration's unserved groups
are known without a call (``integration.providers``). A 401 or 403 fails the whole check: the key is
wrong, so nothing else can be learnt.
"""

from __future__ import annotations

from typing import Any

import actions
from integration.client import client_for
from integration.errors import ApiError, AuthenticationError, ConfigError, InputError, PackError, PermissionDeniedError
from integration.model import Integration

__all__ = ["GROUPS", "probe"]

#: group -> (method, path, body): the cheapest request that tells "served" from "not served".
GROUPS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "models": ("GET", "/models", None),
    "chat": ("POST", "/chat/completions", {}),
    "completions": ("POST", "/completions", {}),
    "embeddings": ("POST", "/embeddings", {}),
    "responses": ("POST", "/responses", {}),
    "images": ("POST", "/images/generations", {}),
    "audio": ("POST", "/audio/speech", {}),
    "moderations": ("POST", "/moderations", {}),
    "files": ("GET", "/files", None),
    "batches": ("GET", "/batches", None),
    "vector_stores": ("GET", "/vector_stores", None),
    "assistants": ("GET", "/assistants", None),
    "fine_tuning": ("GET", "/fine_tuning/jobs", None),
}
_PREFIXES = {"chat": "/chat/", "completions": "/completions", "embeddings": "/embeddings", "responses": "/responses",
             "images": "/images/", "audio": "/audio/", "moderations": "/moderations", "files": "/files",
             "batches": "/batches", "vector_stores": "/vector_stores", "assistants": "/assistants",
             "fine_tuning": "/fine_tuning/", "models": "/models"}


def _actions_of(group: str) -> list[str]:
    prefix = _PREFIXES[group].rstrip("/")
    return sorted(name for name, m in actions.registry().items()
                  if m.http.path == prefix or m.http.path.startswith(prefix + "/"))


def probe(integration: Integration) -> dict[str, Any]:
    """{"ok", "integration", "models", "groups": {group: {"answers", "status", "actions"}}}."""
    client = client_for(integration)
    deployments = integration.azure.deployments if integration.azure else {}
    groups: dict[str, dict[str, Any]] = {}
    models = None
    for group, (method, path, body) in GROUPS.items():
        if body is not None and deployments:  # an Azure deployment path needs a deployment to go to
            body = {"model": next(iter(deployments))}
        entry: dict[str, Any] = {"actions": _actions_of(group)}
        try:
            response = client.request(method, path, json_body=body, idempotent=True, max_retries=0,
                                      max_inline_wait=0, action=f"probe {group}")
            entry.update(answers=True, status=response.status)
            if group == "models" and isinstance(response.body, dict):
                models = len(response.body.get("data") or [])
        except (AuthenticationError, PermissionDeniedError):
            raise
        except (ConfigError, InputError) as exc:  # refused before sending: the provider does not serve it
            entry.update(answers=False, status=None, reason=exc.message)
        except ApiError as exc:
            status = exc.status
            unsure = status is None or status == 429 or status >= 500  # busy or broken: no verdict
            entry.update(answers=None if unsure else status in (400, 422), status=status)
        except PackError as exc:
            entry.update(answers=None, status=None, reason=exc.message)
        groups[group] = entry
    answered = any(g["answers"] for g in groups.values())
    return {"ok": answered, "integration": integration.name, "models": models, "groups": groups}
