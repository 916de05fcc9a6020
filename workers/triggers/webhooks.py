"""``openai-pack serve``: workflows triggered by webhooks (a Starlette app on uvicorn).

``POST /hooks/<workflow>`` starts a run whose inputs are the JSON body. The caller proves it
knows the workflow's shared secret (``X-Pack-Secret`` or a bearer token, compared in constant
time) and, when the workflow asks for it, signs the body (``X-Pack-Signature: t=<unix>,v1=<hex
HMAC-SHA256 of "<t>." + body>``, accepted for five minutes either side of now). A signed request
is remembered in the run store while its timestamp is in that window, so a captured request
replayed gets the first run back instead of starting another. ``Idempotency-Key`` makes a
redelivery return the first run; the same key with a different body is a 409.

Checks run in this order, each before any work the next one needs: the hook exists (404), the
secret (401; wrong secrets are counted per client address and answered 429 past the limit,
without ever touching the hook's own budget), the hook's rate budget (429), the media type
(415), the body's size (413), the signature (401), the body (400), the inputs (422).

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
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from actions import parse_json_text
from integration import errors
from integration.errors import InputError, PackError
from integration.redact import install_log_redaction, register_secret, scrub_data
from integration.store import register_store_secrets
from workers.engine import Engine
from workers.observe.metrics import metrics_route
from workers.state.runs import FINISHED
from workers.state.signatures import PENDING_SIGNATURE
from workers.workflow import Workflow, load_workflow_dir

__all__ = ["FAILED_AUTH_PER_MINUTE", "MIN_SECRET_LENGTH", "SIGNATURE_WINDOW", "configure_logging", "create_app",
           "parse_payload", "serve", "sign"]

log = logging.getLogger("openai_pack.webhooks")

#: Seconds a signature timestamp may be away from the server's clock (either way).
SIGNATURE_WINDOW = 300
#: Shorter shared secrets are refused: they can be guessed, and would be too short to scrub from logs.
MIN_SECRET_LENGTH = 16
#: Requests with a missing or wrong secret accepted from one client address in any 60 s (then 429).
FAILED_AUTH_PER_MINUTE = 60
#: ``?wait=`` requests waiting at once; more get their 202 at once instead of holding a thread.
MAX_WAITERS = 64
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: A signature timestamp: ASCII digits, at most 12 (``int()`` and float arithmetic stay trivially safe).
_STAMP_PATTERN = re.compile(r"[0-9]{1,12}")
_CONTENT_LENGTH_PATTERN = re.compile(r"[0-9]{1,18}")


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Pack-Signature`` value a sender computes for ``body`` (now, or at ``timestamp``)."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={stamp},v1={_digest(secret, stamp, body)}"


def _digest(secret: str, stamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


class HookRefusal(errors.HookError):
    """An answer other than success; always rendered as ``{"error": {"code", "message", **extra}}``.

    Named apart from its base: error records are rebuilt by class name, and a ``HookError`` record
    must come back as the error tree's own class.
    """

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, **(extra or {}))
        self.status, self.code = status, code
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        body = {"error": {"code": self.code, "message": self.message, **self.extra}}
        return Answer(scrub_data(body), status_code=self.status, headers=self.headers)


class Answer(JSONResponse):
    """Starlette's JSON answer that cannot fail on text: a lone surrogate (from an API answer or a
    record written elsewhere) goes out as its ``\\udXXX`` escape instead of becoming a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


class MinuteLimit:
    """At most ``per_minute`` hits per key in any 60 s (a moving window), in this process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = max(1, int(per_minute))
        self._item: RateLimitItem = RateLimitItemPerMinute(self.per_minute)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, *key: str) -> float:
        """0 when the hit is allowed (and counted), else the seconds until one would be."""
        if self._limiter.hit(self._item, *key):
            return 0.0
        return max(0.001, self._limiter.get_window_stats(self._item, *key).reset_time - time.time())


def parse_payload(body: bytes) -> dict[str, Any]:
    """The body as a JSON object of valid Unicode text, or a 400 naming what is wrong and where."""
    if not body.strip():
        raise HookRefusal(400, "invalid_json", "the body is empty; send a JSON object ({} when there are no inputs)")
    try:
        text = body.decode("utf-8")  # strict: no other encoding, and no surrogate smuggled in as bytes
    except UnicodeDecodeError as exc:
        raise HookRefusal(400, "invalid_json", f"the body is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:  # the actions' strict reading: NaN/Infinity, lone surrogates and deep nesting refused, naming where
        payload = parse_json_text(text, "body")
    except InputError as exc:
        problem = exc.problems[0]
        reason = problem["reason"]
        if problem["field"] == "body":
            raise HookRefusal(400, "invalid_json", f"the body {reason}") from None
        where = "a key of the body" if reason.startswith("is a field name") else problem["field"]
        raise HookRefusal(400, "invalid_json", f"the body is refused at {where}: {reason}") from None
    if not isinstance(payload, dict):
        raise HookRefusal(400, "invalid_json",
                          "the body must be a JSON object (it becomes the run's inputs), "
                          f"got a {type(payload).__name__}")
    return payload


def _body_digest(payload: dict[str, Any]) -> str:
    """What makes two deliveries "the same body": their values, whatever the key order or spacing."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_media_type(header: str | None) -> None:
    """JSON only: ``application/json`` or ``application/<anything>+json``, UTF-8 if a charset is named."""
    media, _, parameters = (header or "").partition(";")
    media = media.strip().lower()
    charset = ""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    json_type = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
    if not json_type or charset not in ("", "utf-8", "utf8"):
        shown = repr(header[:100]) if header else "none"
        raise HookRefusal(415, "unsupported_media_type", "Content-Type must be application/json (or "
                          f"application/<type>+json), in UTF-8; got {shown}")


class Hooks:
    """The request handlers, over one engine and one directory of workflows."""

    def __init__(self, workflows: dict[str, Workflow], engine: Engine, *, max_wait: float,
                 rate_per_minute: int, failed_auth_per_minute: int = FAILED_AUTH_PER_MINUTE) -> None:
        self.workflows = workflows
        self.engine = engine
        self.max_wait = max(0.0, float(max_wait))
        #: What requests carrying the hook's secret spend, per hook.
        self.rate = MinuteLimit(rate_per_minute)
        #: What requests with a missing or wrong secret spend, per client address; never the hook's budget.
        self.failed_auth = MinuteLimit(failed_auth_per_minute)
        self._flood_logged = MinuteLimit(1)
        self.seen = engine.store.signatures
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
            raise HookRefusal(503, "config_invalid",
                              f"the webhook secret variable {variable} is not set on this server")
        register_secret(value)
        if len(value) < MIN_SECRET_LENGTH:
            raise HookRefusal(503, "config_invalid", f"the webhook secret in {variable} is shorter than "
                              f"{MIN_SECRET_LENGTH} characters; set a longer one")
        return value

    def _check_secret(self, request: Request, workflow: Workflow) -> str:
        """The secret when the caller sent it; else 401, or 429 once its address has failed too often.

        The secret is always compared, even for an address over its limit: sharing an address (a
        NAT, a proxy) with someone guessing never locks the real sender out. Guessing itself is
        what the 16-character minimum is for.
        """
        secret = self._secret(workflow)
        given = request.headers.get("x-pack-secret")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        if hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode()):
            return secret
        address = request.client.host if request.client else "unknown"
        retry = self.failed_auth.retry_after(address)
        if retry:
            raise HookRefusal(429, "too_many_failed_attempts", f"more than {self.failed_auth.per_minute} requests a "
                              "minute with a missing or wrong secret from this address",
                              headers={"Retry-After": str(math.ceil(retry))})
        raise HookRefusal(401, "unauthorized", "missing or wrong webhook secret (X-Pack-Secret or a bearer token)")

    @staticmethod
    def _check_signature(header: str | None, secret: str, body: bytes) -> str:
        """The expected HMAC of this timestamp and body when one ``v1=`` value matches it, else 401."""
        if not header:
            raise HookRefusal(401, "bad_signature", "this hook requires X-Pack-Signature: t=<unix seconds>,v1=<hex>")
        stamp: int | None = None
        malformed = False
        candidates: list[str] = []
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key == "t":
                malformed |= stamp is not None or not _STAMP_PATTERN.fullmatch(value)
                stamp = int(value) if _STAMP_PATTERN.fullmatch(value) else None
            elif key == "v1":
                candidates.append(value.strip())
        if malformed or stamp is None or not candidates:
            raise HookRefusal(401, "bad_signature", "X-Pack-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256> "
                              "(one t=, at most 12 ASCII digits)")
        if abs(time.time() - stamp) > SIGNATURE_WINDOW:
            raise HookRefusal(401, "bad_signature",
                              f"signature timestamp outside the window ({SIGNATURE_WINDOW}s either side of now)")
        expected = _digest(secret, stamp, body)
        # Every candidate is compared (no early exit), so timing says nothing about which one failed.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), expected.encode())
        if not matched:
            raise HookRefusal(401, "bad_signature", "the signature does not match the body")
        return expected

    # body --------------------------------------------------------------------------------------
    @staticmethod
    async def _read_body(request: Request, limit: int) -> bytes:
        too_large = HookRefusal(413, "payload_too_large", f"the body is over this hook's limit of {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not _CONTENT_LENGTH_PATTERN.fullmatch(declared.strip()):
                raise HookRefusal(400, "bad_request", "Content-Length is not a number")
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
        quiet = False
        try:
            try:
                run_id, response = await self._hook(request, name)
            except HookRefusal as exc:
                response = exc.response()
                if exc.code == "too_many_failed_attempts":  # a flood is not a log flood: a line a minute
                    quiet = bool(self._flood_logged.retry_after(request.client.host if request.client else ""))
            status = response.status_code
            return response
        finally:  # one line per request, whatever happened; never headers, never the body
            shown = name if name in self.workflows else "<unknown>"  # a path is caller text: no log injection
            level = logging.DEBUG if quiet else logging.INFO if status < 400 else logging.WARNING
            log.log(level, "POST /hooks/%s -> %d run=%s", shown, status, run_id or "-")

    async def _hook(self, request: Request, name: str) -> tuple[str | None, JSONResponse]:
        workflow = self.workflows.get(name)
        if workflow is None or workflow.webhook is None:
            raise HookRefusal(404, "not_found", f"no webhook-enabled workflow named {name[:80]!r}")
        secret = self._check_secret(request, workflow)  # before reading a byte of an unauthenticated body
        retry = self.rate.retry_after("hook", name)
        if retry:
            raise HookRefusal(429, "rate_limited", f"more than {self.rate.per_minute} requests a minute to this hook",
                              headers={"Retry-After": str(math.ceil(retry))})
        _check_media_type(request.headers.get("content-type"))
        wait = self._wait_seconds(request)
        key = request.headers.get("idempotency-key")
        if key is not None and not _KEY_PATTERN.match(key):
            raise HookRefusal(400, "bad_idempotency_key", "Idempotency-Key must be 1 to 200 printable ASCII characters")
        body = await self._read_body(request, workflow.webhook.max_body_bytes)
        signature = None
        if workflow.webhook.signature == "hmac-sha256":
            signature = self._check_signature(request.headers.get("x-pack-signature"), secret, body)
        payload = parse_payload(body)
        digest = _body_digest(payload)
        event_id = key or (request.headers.get("x-request-id") or "")[:200] or secrets.token_hex(8)
        trigger = {"type": "webhook", "workflow": name, "event_id": event_id,
                   "remote": request.client.host if request.client else None, "body_sha256": digest}
        run_id, created = await run_in_threadpool(self._start, workflow, payload, trigger, key, signature)
        return run_id, await self._answer(run_id, created, wait)

    def _start(self, workflow: Workflow, payload: dict[str, Any], trigger: dict[str, Any], key: str | None,
               signature: str | None) -> tuple[str, bool]:
        """Save the event and start its run, or find the run it already started: (run id, created)."""
        name = workflow.name
        try:
            # This process never calls the API, so only the store can tell it which keys to scrub;
            # asked per event (one stat while nothing changed), a key added since is known too.
            register_store_secrets()
        except PackError as exc:
            log.error("hook %s: cannot read the integration store to scrub its keys: %s", name, exc.code)
            raise HookRefusal(503, "config_invalid", "the integration store cannot be read, so API keys pasted into "
                              "the payload could not be scrubbed; the event was not saved",
                              headers={"Retry-After": "5"}) from None
        except Exception as exc:
            log.error("hook %s: cannot read the integration store: %s", name, type(exc).__name__)
            raise HookRefusal(503, "store_unavailable", "the integration store is unavailable; retry later",
                              headers={"Retry-After": "5"}) from None
        try:
            if signature is not None:
                seen = self.seen.claim(name, signature)
                if seen == PENDING_SIGNATURE:
                    raise HookRefusal(409, "request_in_progress", "the same signed request is being handled; "
                                      "retry in a second to get its run", headers={"Retry-After": "1"})
                if seen is not None:
                    return seen, False
            try:
                run_id, created = self.engine.start_run(workflow, payload, trigger=trigger,
                                                        idempotency_key=f"hook:{name}:{key}" if key else None)
                if not created:
                    self._same_body_or_409(run_id, trigger["body_sha256"])
            except BaseException:
                if signature is not None:
                    self.seen.release(name, signature)
                raise
            if signature is not None:
                self.seen.started(name, signature, run_id)
            return run_id, created
        except HookRefusal:
            raise
        except InputError as exc:
            raise HookRefusal(422, "invalid_input", exc.message, extra={"problems": exc.problems}) from None
        except Exception as exc:  # the store (or the broker) is unreachable: the event may not be saved
            log.error("hook %s: could not save the event: %s", name, type(exc).__name__)
            raise HookRefusal(503, "store_unavailable", "the run store is unavailable; retry later",
                              headers={"Retry-After": "5"}) from None

    def _same_body_or_409(self, run_id: str, digest: str) -> None:
        """An Idempotency-Key names one event: the same key with other values is refused, not dropped."""
        first = self.engine.store.field(run_id, "trigger") or {}
        if first.get("body_sha256") not in (None, digest):
            raise HookRefusal(409, "idempotency_key_reused", f"this Idempotency-Key was first used with a "
                              f"different body (run {run_id}); send a new key for a new event",
                              extra={"run_id": run_id})

    async def _answer(self, run_id: str, created: bool, wait: float) -> JSONResponse:
        """``{run_id, status, created, output, error}``: 200 once the run has finished, else 202."""
        header: dict[str, Any] | None = None
        if self._waiters is None:
            self._waiters = anyio.CapacityLimiter(MAX_WAITERS)
        try:
            # Waits hold a thread each: they get their own limiter so they never starve the threads
            # start_run needs, and past MAX_WAITERS the caller gets its 202 at once and polls instead.
            if wait > 0 and self._waiters.available_tokens > 0:
                header = await anyio.to_thread.run_sync(functools.partial(self.engine.wait, run_id, wait),
                                                        limiter=self._waiters)
            elif not created:
                header = await run_in_threadpool(self.engine.store.fields, run_id, ["status", "output", "error"])
        except Exception:
            header = None  # the run is saved; the caller polls GET /runs/<id>
        header = header or {"status": "running" if created else None}
        finished = header.get("status") in FINISHED
        body = {"run_id": run_id, "status": header.get("status"), "created": created,
                "output": header.get("output") if finished else None,
                "error": header.get("error") if finished else None}
        return Answer(scrub_data(body), status_code=200 if finished else 202, headers={"Location": f"/runs/{run_id}"})

    def _wait_seconds(self, request: Request) -> float:
        raw = request.query_params.get("wait")
        if raw is None or raw == "":
            return 0.0
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise HookRefusal(400, "bad_request", "wait must be a number of seconds")
        return min(seconds, self.max_wait)

    async def run(self, request: Request) -> JSONResponse:
        run_id = request.path_params["run_id"]
        status = 500
        try:
            try:
                response = await self._run(request, run_id)
            except HookRefusal as exc:
                response = exc.response()
            status = response.status_code
            return response
        finally:
            shown = run_id if _RUN_ID_PATTERN.match(run_id) else "<invalid>"
            log.log(logging.INFO if status < 400 else logging.WARNING, "GET /runs/%s -> %d", shown, status)

    async def _run(self, request: Request, run_id: str) -> JSONResponse:
        not_found = HookRefusal(404, "not_found", "no such run of a webhook-enabled workflow")
        if not _RUN_ID_PATTERN.match(run_id):
            raise not_found
        try:
            record = await run_in_threadpool(self.engine.store.record, run_id)
        except Exception:
            raise HookRefusal(503, "store_unavailable", "the run store is unavailable; retry later",
                              headers={"Retry-After": "5"}) from None
        workflow = self.workflows.get(record["workflow"]) if record else None
        if record is None or workflow is None or workflow.webhook is None:
            raise not_found
        self._check_secret(request, workflow)
        return Answer(scrub_data(record))

    async def health(self, _: Request) -> JSONResponse:
        try:
            await run_in_threadpool(self.engine.store.ping)
        except Exception:
            return HookRefusal(503, "store_unavailable", "the run store is unavailable").response()
        return Answer({"ok": True, "hooks": sorted(n for n, w in self.workflows.items() if w.webhook)})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (unknown path, wrong method) in the same JSON shape as ours."""
    status = getattr(exc, "status_code", 500)
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return HookRefusal(status, code, str(getattr(exc, "detail", "")) or "error",
                       headers=getattr(exc, "headers", None)).response()


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("internal error: %s", type(exc).__name__)
    return HookRefusal(500, "internal_error", "internal error; the event may not have been saved").response()


def create_app(workflows_dir: str | Path, *, engine: Engine | None = None, max_wait: float = 300,
               rate_per_minute: int = 600, failed_auth_per_minute: int = FAILED_AUTH_PER_MINUTE,
               console_loopback_only: bool = True) -> Starlette:
    """The ASGI app over the workflows of ``workflows_dir``; ``engine`` defaults to the process's.

    With ``OPENAI_PACK_CONSOLE_TOKEN`` set, the web console is mounted at ``/console`` too.
    """
    install_log_redaction()
    workflows = load_workflow_dir(workflows_dir)
    if engine is None:
        from workers.app import engine as default_engine

        engine = default_engine()
    register_store_secrets()  # a key pasted into a payload is scrubbed before the run is saved (D12)
    hooks = Hooks(workflows, engine, max_wait=max_wait, rate_per_minute=rate_per_minute,
                  failed_auth_per_minute=failed_auth_per_minute)
    app = Starlette(exception_handlers={HTTPException: _http_error, Exception: _internal_error}, routes=[
        Route("/hooks/{workflow}", hooks.hook, methods=["POST"]),
        Route("/runs/{run_id}", hooks.run, methods=["GET"]),
        Route("/healthz", hooks.health, methods=["GET"]),
        metrics_route(engine.settings.broker_url),  # Prometheus (workers.observe.metrics)
    ])
    app.state.hooks = hooks
    from workers.console import MOUNT, console_token, create_console_app

    token = console_token()
    if token:
        app.mount(MOUNT, create_console_app(token, workflows_dir=workflows_dir, engine=engine,
                                            loopback_only=console_loopback_only))
    return app


def configure_logging(level: str = "info") -> None:
    """Our one line per request on stderr (uvicorn only sets up its own loggers); HTTP client chatter off."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve(workflows_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, *, max_wait: float = 300,
          rate_per_minute: int = 600, failed_auth_per_minute: int = FAILED_AUTH_PER_MINUTE,
          log_level: str = "info") -> None:
    """Serve the hooks with uvicorn until interrupted."""
    import uvicorn

    configure_logging(log_level)
    from workers.console import is_loopback

    app = create_app(workflows_dir, max_wait=max_wait, rate_per_minute=rate_per_minute,
                     failed_auth_per_minute=failed_auth_per_minute, console_loopback_only=is_loopback(host))
    hooks = sorted(name for name, w in app.state.hooks.workflows.items() if w.webhook)
    log.info("serving %d hook(s) on http://%s:%d/hooks/: %s", len(hooks), host, port, ", ".join(hooks) or "none")
    # uvicorn's access log is off: it would print query strings; the line per request above says what matters.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level=log_level, server_header=False)
