"""``openai-pack serve``: workflows triggered by webhooks (a Starlette app on uvicorn).

``POST /hooks/<workflow>`` with the workflow's shared secret (``X-Pack-Secret`` or a bearer
token, compared in constant time; optionally an HMAC signature with a timestamp and a replay
window) starts a run whose inputs are the JSON body. ``Idempotency-Key`` makes a repeated
delivery return the first run. The answer is 202 with the run id, or the run's output with
``?wait=N``. The event is saved before the answer: when the run store is unreachable the caller
gets 503 and retries, instead of a 202 for an event that was lost. Payloads are data: nothing
here renders them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integration.errors import InputError, PackError
from integration.redact import install_log_redaction, register_secret
from workers.engine import Engine
from workers.workflow import Workflow, load_workflow_dir

__all__ = ["SIGNATURE_WINDOW", "create_app", "serve", "sign"]

log = logging.getLogger("openai_pack.webhooks")
SIGNATURE_WINDOW = 300


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Pack-Signature`` value a sender computes: ``t=<unix>,v1=<hex hmac-sha256 of "<t>.<body>">``."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class _RateWindow:
    """Per-hook sliding minute, in-process: a flood from one sender cannot starve the others."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.hits: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def wait(self, key: str) -> float:
        now = time.monotonic()
        with self.lock:
            window = self.hits.setdefault(key, deque())
            while window and now - window[0] >= 60:
                window.popleft()
            if len(window) >= self.per_minute:
                return 60 - (now - window[0])
            window.append(now)
        return 0.0


class Hooks:
    """The request handlers, over one engine and one directory of workflows."""

    def __init__(self, workflows: dict[str, Workflow], engine: Engine, *, max_wait: float,
                 rate_per_minute: int) -> None:
        self.workflows = workflows
        self.engine = engine
        self.max_wait = max_wait
        self.rate = _RateWindow(rate_per_minute)
        for workflow in workflows.values():
            if workflow.webhook:
                register_secret(os.environ.get(workflow.webhook.secret_env))

    def _secret(self, workflow: Workflow) -> str | JSONResponse:
        assert workflow.webhook is not None
        secret = os.environ.get(workflow.webhook.secret_env)
        if not secret:
            return _error(503, "hook_not_configured",
                          f"the secret variable {workflow.webhook.secret_env} is not set on this server")
        register_secret(secret)
        return secret

    def _authenticate(self, request: Request, workflow: Workflow, body: bytes | None) -> JSONResponse | None:
        secret = self._secret(workflow)
        if isinstance(secret, JSONResponse):
            return secret
        given = request.headers.get("x-pack-secret", "")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:]
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return _error(401, "unauthorized", "missing or wrong webhook secret")
        if body is not None and workflow.webhook and workflow.webhook.signature == "hmac-sha256":
            return self._check_signature(request.headers.get("x-pack-signature", ""), secret, body)
        return None

    @staticmethod
    def _check_signature(header: str, secret: str, body: bytes) -> JSONResponse | None:
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        try:
            stamp = int(fields.get("t", ""))
        except ValueError:
            return _error(401, "bad_signature", "X-Pack-Signature must be t=<unix seconds>,v1=<hex hmac>")
        if abs(time.time() - stamp) > SIGNATURE_WINDOW:
            return _error(401, "bad_signature", f"signature timestamp outside the {SIGNATURE_WINDOW}s window")
        expected = sign(secret, body, stamp).split("v1=", 1)[1]
        if not hmac.compare_digest(fields.get("v1", "").encode(), expected.encode()):
            return _error(401, "bad_signature", "signature does not match the body")
        return None

    async def _read_body(self, request: Request, limit: int) -> bytes | JSONResponse:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _error(413, "payload_too_large", f"body is over the {limit}-byte limit of this hook")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _error(413, "payload_too_large", f"body is over the {limit}-byte limit of this hook")
            chunks.append(chunk)
        return b"".join(chunks)

    async def hook(self, request: Request) -> JSONResponse:
        name = request.path_params["workflow"]
        workflow = self.workflows.get(name)
        if workflow is None or workflow.webhook is None:
            return _error(404, "no_such_hook", f"no webhook-enabled workflow named {name!r}")
        retry = self.rate.wait(name)
        if retry:
            return _error(429, "too_many_requests", "hook rate limit reached", {"Retry-After": str(int(retry) + 1)})
        body = await self._read_body(request, workflow.webhook.max_body_bytes)
        if isinstance(body, JSONResponse):
            return body
        denied = self._authenticate(request, workflow, body)
        if denied is not None:
            log.warning("hook %s: %s", name, json.loads(denied.body)["error"]["code"])
            return denied
        try:
            payload = json.loads(body) if body.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, "invalid_json", f"body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return _error(400, "invalid_json", "body must be a JSON object (it becomes the run's inputs)")
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 200):
            return _error(400, "bad_idempotency_key", "Idempotency-Key must be 1 to 200 characters")
        event_id = key or request.headers.get("x-request-id") or secrets.token_hex(8)
        trigger = {"type": "webhook", "workflow": name, "event_id": event_id,
                   "remote": request.client.host if request.client else None}
        try:
            run_id, created = await run_in_threadpool(
                self.engine.start_run, workflow, payload, trigger=trigger,
                idempotency_key=f"hook:{name}:{key}" if key else None)
        except InputError as exc:
            return JSONResponse({"error": exc.to_dict()}, status_code=422)
        except PackError as exc:
            return JSONResponse({"error": exc.to_dict()}, status_code=400)
        except Exception as exc:  # the store or broker is unreachable: the event was not saved
            log.error("hook %s: could not save the event: %s", name, type(exc).__name__)
            return _error(503, "store_unavailable", "the run store is unavailable; retry later",
                          {"Retry-After": "5"})
        log.info("hook %s: run %s (%s)", name, run_id, "new" if created else "duplicate delivery")
        wait = self._wait_seconds(request)
        headers = {"Location": f"/runs/{run_id}"}
        if wait > 0:
            header = await run_in_threadpool(self.engine.wait, run_id, wait)
            if header and header.get("status") in ("succeeded", "failed", "cancelled"):
                return JSONResponse({"run_id": run_id, "status": header["status"], "created": created,
                                     "output": header.get("output"), "error": header.get("error")},
                                    headers=headers)
        status = self.engine.store.status(run_id)
        return JSONResponse({"run_id": run_id, "status": status, "created": created},
                            status_code=202 if created else 200, headers=headers)

    def _wait_seconds(self, request: Request) -> float:
        raw = request.query_params.get("wait")
        try:
            return max(0.0, min(float(raw), self.max_wait)) if raw else 0.0
        except ValueError:
            return 0.0

    async def run(self, request: Request) -> JSONResponse:
        run_id = request.path_params["run_id"]
        try:
            record = await run_in_threadpool(self.engine.store.record, run_id)
        except Exception:
            return _error(503, "store_unavailable", "the run store is unavailable; retry later")
        workflow = self.workflows.get(record["workflow"]) if record else None
        if record is None or workflow is None or workflow.webhook is None:
            return _error(404, "no_such_run", f"no run {run_id!r} of a webhook-enabled workflow")
        denied = self._authenticate(request, workflow, None)
        if denied is not None:
            return denied
        return JSONResponse(record)

    async def health(self, _: Request) -> JSONResponse:
        try:
            await run_in_threadpool(self.engine.store.kv.ping)
        except Exception:
            return _error(503, "store_unavailable", "the run store is unavailable")
        return JSONResponse({"ok": True, "workflows": sorted(self.workflows)})


def create_app(workflows_dir: str | Path, *, engine: Engine | None = None, max_wait: float = 300,
               rate_per_minute: int = 600) -> Starlette:
    """The ASGI app; ``engine`` defaults to the process's (from the environment)."""
    install_log_redaction()
    if engine is None:
        from workers.app import engine as default_engine

        engine = default_engine()
    hooks = Hooks(load_workflow_dir(workflows_dir), engine, max_wait=max_wait, rate_per_minute=rate_per_minute)
    return Starlette(routes=[
        Route("/hooks/{workflow}", hooks.hook, methods=["POST"]),
        Route("/runs/{run_id}", hooks.run, methods=["GET"]),
        Route("/healthz", hooks.health, methods=["GET"]),
    ])


def serve(workflows_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, *, max_wait: float = 300) -> None:
    import uvicorn

    app = create_app(workflows_dir, max_wait=max_wait)
    # uvicorn's access log would print query strings; our own one-line log says what matters.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")
