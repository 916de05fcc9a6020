"""``openai-pack serve``: workflows triggered by webhooks (a Starlette app on uvicorn).

``POST /hooks/<workflow>`` starts a run whose inputs are the JSON body. The caller proves it
knows the workflow's shared secret (``X-Pack-Secret`` or a bearer token, compared in constant
time) and, when the workflow asks for it, signs the body (``X-Pack-Signature: t=<unix>,v1=<hex
HMAC-SHA256 of "<t>." + body>``, accepted for five minutes either side of now, so a captured
request cannot be replayed later). ``Idempotency-Key`` makes a redelivery return the first run.

The event is saved before the answer: when the run store is unreachable the caller gets 503 and
retries, never a 202 for an event that was lost. Payloads are data: nothing here renders them,
they are stored as the run's inputs and templates only ever read them as values.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integration.errors import InputError
from integration.redact import install_log_redaction, register_secret, scrub_data
from workers.engine import Engine
from workers.state.runs import FINISHED
from workers.workflow import Workflow, load_workflow_dir

__all__ = ["MIN_SECRET_LENGTH", "SIGNATURE_WINDOW", "configure_logging", "create_app", "serve", "sign"]

log = logging.getLogger("openai_pack.webhooks")

#: Seconds a signature timestamp may be away from the server's clock (either way).
SIGNATURE_WINDOW = 300
#: Shorter shared secrets are refused: they can be guessed, and would be too short to scrub from logs.
MIN_SECRET_LENGTH = 16
#: ``?wait=`` requests waiting at once; more get their 202 at once instead of holding a thread.
MAX_WAITERS = 64
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Pack-Signature`` value a sender computes for ``body`` (now, or at ``timestamp``)."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={stamp},v1={_digest(secret, stamp, body)}"


def _digest(secret: str, stamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


class HookError(Exception):
    """An answer other than success; always rendered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        body = {"error": {"code": self.code, "message": self.message, **self.extra}}
        return JSONResponse(scrub_data(body), status_code=self.status, headers=self.headers)


class SlidingWindow:
    """At most ``per_minute`` hits per key in any 60 s, in this process: one flooding sender
    slows its own hook down, not the others or the store."""

    def __init__(self, per_minute: int, *, clock: Any = time.monotonic) -> None:
        self.per_minute = max(1, int(per_minute))
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """0 when the hit is allowed (and counted), else the seconds until one would be."""
        now = self.clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(0.001, 60 - (now - hits[0]))
            hits.append(now)
            return 0.0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_payload(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 naming what is wrong with it."""
    if not body.strip():
        raise HookError(400, "invalid_json", "the body is empty; send a JSON object ({} when there are no inputs)")
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise HookError(400, "invalid_json", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise HookError(400, "invalid_json",
                        f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise HookError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HookError(400, "invalid_json", "the body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise HookError(400, "invalid_json",
                        f"the body must be a JSON object (it becomes the run's inputs), got a {type(payload).__name__}")
    return payload


class Hooks:
    """The request handlers, over one engine and one directory of workflows."""

    def __init__(self, workflows: dict[str, Workflow], engine: Engine, *, max_wait: float,
                 rate_per_minute: int) -> None:
        self.workflows = workflows
        self.engine = engine
        self.max_wait = max(0.0, float(max_wait))
        self.rate = SlidingWindow(rate_per_minute)
        self._waiters: anyio.CapacityLimiter | None = None  # made in the event loop, on first use
        for workflow in workflows.values():
            if workflow.webhook is None:
                continue
            value = os.environ.get(workflow.webhook.secret_env)
            register_secret(value)
            if not value:
                log.warning("hook %s: %s is not set; its requests get 503 until it is", workflow.name,
                            workflow.webhook.secret_env)
            elif len(value) < MIN_SECRET_LENGTH:
                log.warning("hook %s: %s is shorter than %d characters; its requests get 503", workflow.name,
                            workflow.webhook.secret_env, MIN_SECRET_LENGTH)

    # authentication -----------------------------------------------------------------------------
    @staticmethod
    def _secret(workflow: Workflow) -> str:
        assert workflow.webhook is not None
        variable = workflow.webhook.secret_env
        value = os.environ.get(variable) or ""
        if not value:
            raise HookError(503, "config_invalid", f"the webhook secret variable {variable} is not set on this server")
        register_secret(value)
        if len(value) < MIN_SECRET_LENGTH:
            raise HookError(503, "config_invalid", f"the webhook secret in {variable} is shorter than "
                            f"{MIN_SECRET_LENGTH} characters; set a longer one")
        return value

    def _check_secret(self, request: Request, workflow: Workflow) -> str:
        """The secret when the caller sent it, else 401 (the same answer for missing and wrong)."""
        secret = self._secret(workflow)
        given = request.headers.get("x-pack-secret")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode()):
            raise HookError(401, "unauthorized", "missing or wrong webhook secret (X-Pack-Secret or a bearer token)")
        return secret

    @staticmethod
    def _check_signature(header: str | None, secret: str, body: bytes) -> None:
        if not header:
            raise HookError(401, "bad_signature", "this hook requires X-Pack-Signature: t=<unix seconds>,v1=<hex>")
        stamp: int | None = None
        candidates: list[str] = []
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key == "t" and value.isdigit():
                stamp = int(value)
            elif key == "v1":
                candidates.append(value.strip())
        if stamp is None or not candidates:
            raise HookError(401, "bad_signature", "X-Pack-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>")
        if abs(time.time() - stamp) > SIGNATURE_WINDOW:
            raise HookError(401, "bad_signature",
                            f"signature timestamp outside the window ({SIGNATURE_WINDOW}s either side of now)")
        expected = _digest(secret, stamp, body).encode()
        # Every candidate is compared (no early exit), so timing says nothing about which one failed.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), expected)
        if not matched:
            raise HookError(401, "bad_signature", "the signature does not match the body")

    # body --------------------------------------------------------------------------------------
    @staticmethod
    async def _read_body(request: Request, limit: int) -> bytes:
        too_large = HookError(413, "payload_too_large", f"the body is over this hook's limit of {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise HookError(400, "bad_request", "Content-Length is not a number")
            if int(declared) > limit:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # counted too: a chunked body has no Content-Length
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    # handlers -----------------------------------------------------------------------------------
    async def hook(self, request: Request) -> JSONResponse:
        name = request.path_params["workflow"]
        run_id: str | None = None
        status = 500  # unless an answer is made below
        try:
            try:
                run_id, response = await self._hook(request, name)
            except HookError as exc:
                response = exc.response()
            status = response.status_code
            return response
        finally:  # one line per request, whatever happened; never headers, never the body
            shown = name if name in self.workflows else "<unknown>"  # a path is caller text: no log injection
            log.log(logging.INFO if status < 400 else logging.WARNING, "POST /hooks/%s -> %d run=%s",
                    shown, status, run_id or "-")

    async def _hook(self, request: Request, name: str) -> tuple[str | None, JSONResponse]:
        workflow = self.workflows.get(name)
        if workflow is None or workflow.webhook is None:
            raise HookError(404, "not_found", f"no webhook-enabled workflow named {name[:80]!r}")
        retry = self.rate.retry_after(name)
        if retry:
            raise HookError(429, "rate_limited", f"more than {self.rate.per_minute} requests a minute to this hook",
                            headers={"Retry-After": str(math.ceil(retry))})
        secret = self._check_secret(request, workflow)  # before reading a byte of an unauthenticated body
        wait = self._wait_seconds(request)
        key = request.headers.get("idempotency-key")
        if key is not None and not _KEY_PATTERN.match(key):
            raise HookError(400, "bad_idempotency_key", "Idempotency-Key must be 1 to 200 printable ASCII characters")
        body = await self._read_body(request, workflow.webhook.max_body_bytes)
        if workflow.webhook.signature == "hmac-sha256":
            self._check_signature(request.headers.get("x-pack-signature"), secret, body)
        payload = parse_payload(body)
        event_id = key or (request.headers.get("x-request-id") or "")[:200] or secrets.token_hex(8)
        trigger = {"type": "webhook", "workflow": name, "event_id": event_id,
                   "remote": request.client.host if request.client else None}
        try:
            run_id, created = await run_in_threadpool(
                self.engine.start_run, workflow, payload, trigger=trigger,
                idempotency_key=f"hook:{name}:{key}" if key else None)
        except InputError as exc:
            raise HookError(422, "invalid_input", exc.message, extra={"problems": exc.problems}) from None
        except Exception as exc:  # the store (or the broker) is unreachable: the event may not be saved
            log.error("hook %s: could not save the event: %s", name, type(exc).__name__)
            raise HookError(503, "store_unavailable", "the run store is unavailable; retry later",
                            headers={"Retry-After": "5"}) from None
        headers = {"Location": f"/runs/{run_id}"}
        header: dict[str, Any] | None = None
        if self._waiters is None:
            self._waiters = anyio.CapacityLimiter(MAX_WAITERS)
        # Waits hold a thread each: they get their own limiter so they never starve the threads
        # start_run needs, and past MAX_WAITERS the caller gets its 202 at once and polls instead.
        if wait > 0 and self._waiters.available_tokens > 0:
            try:
                header = await anyio.to_thread.run_sync(functools.partial(self.engine.wait, run_id, wait),
                                                        limiter=self._waiters)
            except Exception:
                header = None  # the run is saved; the caller polls GET /runs/<id>
            if header is not None and header.get("status") in FINISHED:
                body_out = {"run_id": run_id, "status": header["status"], "created": created,
                            "output": header.get("output"), "error": header.get("error")}
                return run_id, JSONResponse(scrub_data(body_out), headers=headers)
        status = header.get("status") if header else "running" if created else await self._status(run_id)
        return run_id, JSONResponse({"run_id": run_id, "status": status, "created": created},
                                    status_code=202 if created else 200, headers=headers)

    async def _status(self, run_id: str) -> str | None:
        try:
            return await run_in_threadpool(self.engine.store.status, run_id)
        except Exception:
            return None

    def _wait_seconds(self, request: Request) -> float:
        raw = request.query_params.get("wait")
        if raw is None or raw == "":
            return 0.0
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise HookError(400, "bad_request", "wait must be a number of seconds")
        return min(seconds, self.max_wait)

    async def run(self, request: Request) -> JSONResponse:
        run_id = request.path_params["run_id"]
        status = 500
        try:
            try:
                response = await self._run(request, run_id)
            except HookError as exc:
                response = exc.response()
            status = response.status_code
            return response
        finally:
            shown = run_id if _RUN_ID_PATTERN.match(run_id) else "<invalid>"
            log.log(logging.INFO if status < 400 else logging.WARNING, "GET /runs/%s -> %d", shown, status)

    async def _run(self, request: Request, run_id: str) -> JSONResponse:
        not_found = HookError(404, "not_found", "no such run of a webhook-enabled workflow")
        if not _RUN_ID_PATTERN.match(run_id):
            raise not_found
        try:
            record = await run_in_threadpool(self.engine.store.record, run_id)
        except Exception:
            raise HookError(503, "store_unavailable", "the run store is unavailable; retry later",
                            headers={"Retry-After": "5"}) from None
        workflow = self.workflows.get(record["workflow"]) if record else None
        if record is None or workflow is None or workflow.webhook is None:
            raise not_found
        self._check_secret(request, workflow)
        return JSONResponse(scrub_data(record))

    async def health(self, _: Request) -> JSONResponse:
        try:
            await run_in_threadpool(self.engine.store.kv.ping)
        except Exception:
            return HookError(503, "store_unavailable", "the run store is unavailable").response()
        return JSONResponse({"ok": True, "hooks": sorted(n for n, w in self.workflows.items() if w.webhook)})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (unknown path, wrong method) in the same JSON shape as ours."""
    status = getattr(exc, "status_code", 500)
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return HookError(status, code, str(getattr(exc, "detail", "")) or "error",
                     headers=getattr(exc, "headers", None)).response()


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("internal error: %s", type(exc).__name__)
    return HookError(500, "internal_error", "internal error; the event may not have been saved").response()


def create_app(workflows_dir: str | Path, *, engine: Engine | None = None, max_wait: float = 300,
               rate_per_minute: int = 600) -> Starlette:
    """The ASGI app over the workflows of ``workflows_dir``; ``engine`` defaults to the process's."""
    install_log_redaction()
    workflows = load_workflow_dir(workflows_dir)
    if engine is None:
        from workers.app import engine as default_engine

        engine = default_engine()
    hooks = Hooks(workflows, engine, max_wait=max_wait, rate_per_minute=rate_per_minute)
    app = Starlette(exception_handlers={HTTPException: _http_error, Exception: _internal_error}, routes=[
        Route("/hooks/{workflow}", hooks.hook, methods=["POST"]),
        Route("/runs/{run_id}", hooks.run, methods=["GET"]),
        Route("/healthz", hooks.health, methods=["GET"]),
    ])
    app.state.hooks = hooks
    return app


def configure_logging(level: str = "info") -> None:
    """Our one line per request on stderr (uvicorn only sets up its own loggers); HTTP client chatter off."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve(workflows_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, *, max_wait: float = 300,
          rate_per_minute: int = 600, log_level: str = "info") -> None:
    """Serve the hooks with uvicorn until interrupted."""
    import uvicorn

    configure_logging(log_level)
    app = create_app(workflows_dir, max_wait=max_wait, rate_per_minute=rate_per_minute)
    hooks = sorted(name for name, w in app.state.hooks.workflows.items() if w.webhook)
    log.info("serving %d hook(s) on http://%s:%d/hooks/: %s", len(hooks), host, port, ", ".join(hooks) or "none")
    # uvicorn's access log is off: it would print query strings; the line per request above says what matters.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level=log_level, server_header=False)
