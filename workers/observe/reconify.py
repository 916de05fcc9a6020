"""The Reconify sink (seed 002): a copy of every chat and completion interaction, sent off the step's path.

On when ``OPENAI_PACK_RECONIFY_URL`` is set (keys from ``RECONIFY_APP_KEY`` and ``RECONIFY_API_KEY``,
the seed's names), or when the integration carries its own ``reconify`` override (URL and keys, the
keys sealed in the integration store like its API key).

The step only writes the copy to an **outbox** in the run store (Redis in production, the embedded
SQLite file otherwise): one write, no network. The copy holds the integration's *name*, never the
Reconify keys; they are added by the drain task at send time, from the environment or the sealed
store. ``openai_pack.reconify_drain`` sends the copies with a short timeout, keeps a failed one for
another attempt (with backoff) up to ``OPENAI_PACK_RECONIFY_MAX_ATTEMPTS``, then drops it and
counts it. A full outbox (``OPENAI_PACK_RECONIFY_MAX_QUEUED``) drops new copies, counted too. A
sink that answers 500 or hangs therefore costs the step one local write.

The payload is the seed's shape: ``reconify`` (format, type, version, appKey, apiKey),
``timestamps`` (request, response in ms), ``session`` (the run id, or the task id outside a
workflow), ``user`` (``{"userId": ...}`` when the call's input has ``user``), ``request`` (the
body exactly as sent, numbers typed after coercion) and ``response`` (the body exactly as received;
a stream's assembled answer).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from celery import Celery, Task

from integration.auth import payload_key
from integration.errors import PackError
from integration.model import Integration
from integration.redact import register_secret, scrub
from integration.store import resolve
from workers.observe import metrics
from workers.state.kv import KV

__all__ = ["DRAIN_TASK", "Outbox", "SinkConfig", "payload_type", "register_drain_task", "sink_for"]

log = logging.getLogger("openai_pack.reconify")

DRAIN_TASK = "openai_pack.reconify_drain"
URL_ENV, APP_KEY_ENV, API_KEY_ENV = "OPENAI_PACK_RECONIFY_URL", "RECONIFY_APP_KEY", "RECONIFY_API_KEY"
PREFIX = "opk:reconify:"
#: The actions whose interactions are copied, and the seed's ``type`` for each.
TYPES = {"create_chat_completion": "chat", "create_completion": "completion", "create_response": "chat"}
API_VERSION = "1.0.0"
#: The drain task of this process's Celery app, once ``register_drain_task`` ran.
_drain_task: Task | None = None


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        log.warning("%s must be a number, got %r: using %g", name, raw, default)
        return default


def payload_type(action: str) -> str | None:
    return TYPES.get(action)


@dataclass(frozen=True)
class SinkConfig:
    """Where copies for one integration go. ``repr`` never shows the keys."""

    url: str
    app_key: str | None
    api_key: str | None

    def __repr__(self) -> str:
        return f"SinkConfig(url={self.url!r}, app_key=***, api_key=***)"


def sink_for(integration: Integration) -> SinkConfig | None:
    """The integration's override, field by field over the environment; None when no URL is set."""
    override = integration.reconify
    url = (override.url if override and override.url else None) or os.environ.get(URL_ENV, "").strip() or None
    if url is None:
        return None

    def key(field: str, env: str) -> str | None:
        secret = getattr(override, field, None) if override else None
        if secret is not None:
            return payload_key(secret)
        value = os.environ.get(env, "").strip() or None
        register_secret(value)  # redacted from logs and records from now on, like an API key
        return value

    return SinkConfig(url=url, app_key=key("app_key", APP_KEY_ENV), api_key=key("api_key", API_KEY_ENV))


def build_copy(*, request: dict[str, Any], response: Any, session: str, requested_ms: int,
               responded_ms: int) -> dict[str, Any]:
    """The payload without its ``reconify`` keys block (added at send time)."""
    copy: dict[str, Any] = {"timestamps": {"request": requested_ms, "response": responded_ms},
                            "session": session, "request": request, "response": response}
    user = request.get("user")
    if isinstance(user, str) and user:
        copy["user"] = {"userId": user}
    return copy


class Outbox:
    """Copies waiting to be sent: one key each under ``opk:reconify:out:``, plus attempt counts and totals."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    # the step's side ---------------------------------------------------------------------------
    def put(self, integration: str, action: str, copy: dict[str, Any]) -> bool:
        """Queue one copy; False (and counted as dropped) when the outbox is full."""
        limit = int(_number("OPENAI_PACK_RECONIFY_MAX_QUEUED", 10000))
        if self.kv.incr(PREFIX + "queued") > limit:
            self.kv.incr(PREFIX + "queued", -1)
            self._count("dropped")
            return False
        entry = {"integration": integration, "type": TYPES[action], "copy": copy}
        self.kv.set(f"{PREFIX}out:{time.time_ns()}-{secrets.token_hex(4)}", json.dumps(entry, default=str))
        self._count("queued")
        return True

    def wake_drain(self) -> None:
        """Ask for a drain unless one is already due (the flag is cleared when a drain starts).

        Without the pack's Celery app in this process (a script calling ``actions`` directly) the copy
        waits in the outbox for the next drain a worker runs.
        """
        if _drain_task is not None and self.kv.set(PREFIX + "drain_due", "1", nx=True, ttl=60):
            _drain_task.apply_async(countdown=0)

    # the drain's side --------------------------------------------------------------------------
    def pending(self) -> list[str]:
        return sorted(self.kv.scan(PREFIX + "out:"))

    def totals(self) -> dict[str, int]:
        """Copies queued, delivered, failed (attempts) and dropped since the store was created."""
        return {name: int(self.kv.get(PREFIX + f"total:{name}") or 0)
                for name in ("queued", "delivered", "failed", "dropped")}

    def _count(self, outcome: str) -> None:
        self.kv.incr(PREFIX + f"total:{outcome}")
        metrics.child(metrics.reconify_copies, outcome).inc()

    def _forget(self, key: str) -> None:
        self.kv.delete(key, PREFIX + "attempts:" + key)
        self.kv.incr(PREFIX + "queued", -1)

    def drain(self, *, client: httpx.Client, budget_seconds: float = 20.0, batch: int = 200) -> dict[str, Any]:
        """Send what is waiting. Stops at the first failure (the sink is down: try later) or after
        ``budget_seconds``; returns counts and how long to wait before the next drain (None: empty)."""
        self.kv.delete(PREFIX + "drain_due")  # a copy queued from now on asks for a new drain
        max_attempts = max(1, int(_number("OPENAI_PACK_RECONIFY_MAX_ATTEMPTS", 5)))
        base_delay = max(0.05, _number("OPENAI_PACK_RECONIFY_RETRY_DELAY", 2.0))
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + budget_seconds
        sent = failed = dropped = 0
        retry_in: float | None = None
        for key in self.pending()[:batch]:
            if time.monotonic() > deadline:
                retry_in = 0.0
                break
            if not self.kv.set(PREFIX + "lock:" + key, owner, nx=True, ttl=60):
                continue  # another drain has it
            try:
                raw = self.kv.get(key)
                if raw is None:
                    continue
                ok, why = self._send(json.loads(raw), client)
                if ok:
                    self._forget(key)
                    self._count("delivered")
                    sent += 1
                    continue
                self._count("failed")
                failed += 1
                attempts = int(self.kv.incr(PREFIX + "attempts:" + key))
                if attempts >= max_attempts:
                    self._forget(key)
                    self._count("dropped")
                    dropped += 1
                    log.warning("reconify copy dropped after %d attempts: %s", attempts, why)
                    continue
                retry_in = base_delay * 2 ** (attempts - 1)
                log.info("reconify copy not delivered (attempt %d of %d): %s", attempts, max_attempts, why)
                break
            finally:
                self.kv.delete_if(PREFIX + "lock:" + key, owner)
        if retry_in is None and self.pending():
            retry_in = 0.0
        return {"sent": sent, "failed": failed, "dropped": dropped, "retry_in": retry_in}

    def _send(self, entry: dict[str, Any], client: httpx.Client) -> tuple[bool, str]:
        """POST one copy with its keys added now; (delivered, why not). Nothing here logs the keys."""
        try:
            integration = resolve(entry.get("integration"))
        except PackError as exc:
            return False, f"integration unavailable ({exc.code})"
        sink = sink_for(integration)
        if sink is None:
            return False, "no Reconify URL is configured any more"
        payload = {"reconify": {"format": "openai", "type": entry["type"], "version": API_VERSION,
                                "appKey": sink.app_key, "apiKey": sink.api_key}, **entry["copy"]}
        try:
            response = client.post(sink.url, json=payload)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__} from the sink"
        if 200 <= response.status_code < 300:
            return True, ""
        return False, scrub(f"the sink answered HTTP {response.status_code}")


def _client() -> httpx.Client:
    timeout = max(0.1, _number("OPENAI_PACK_RECONIFY_TIMEOUT", 5.0))
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)), follow_redirects=False,
                        headers={"User-Agent": "openai-actions-pack/0.1 (reconify sink)"})


def register_drain_task(app: Celery, kv_of: Any) -> Task:
    """``openai_pack.reconify_drain``: send waiting copies; re-queue itself with backoff while any remain."""

    @app.task(name=DRAIN_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None)
    def drain(self: Task) -> dict[str, Any]:
        outbox = Outbox(kv_of())
        with _client() as client:
            result = outbox.drain(client=client)
        if result["retry_in"] is not None and outbox.kv.set(PREFIX + "drain_due", "1", nx=True, ttl=60):
            self.apply_async(countdown=result["retry_in"])
        return result

    global _drain_task
    _drain_task = drain
    return drain
