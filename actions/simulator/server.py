"""The simulator's HTTP side: a Starlette app served by uvicorn on 127.0.0.1 in a background thread.

Per API request, in this order: count and keep it, play a scripted fault, check the key where the auth
placement puts it, take a rate-limit slot, route it (from the manifests), validate the body against the
spec, answer (a registered behaviour, else the default answer), stream it when the request asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actions import ActionManifest, registry
from actions.simulator.azure import Fronts
from actions.simulator.behaviours import (
    BEHAVIOURS,
    STREAMS,
    Call,
    Context,
    Download,
    Reply,
    default_answer,
    is_example_request,
)
from actions.simulator.bodies import Upload, parse_body, read_body
from actions.simulator.extract import SPECS
from actions.simulator.routes import RouteTable
from actions.simulator.spec import JSON, MULTIPART, operation, validate_request
from actions.simulator.state import Faults, RateLimit, Traffic, error_body, fault_error
from actions.simulator.store import DEFAULT_AFTER_POLLS, JobClock, Store

__all__ = ["Simulator"]

HANG_SECONDS = 30.0
JOB_OUTCOMES = ("completed", "failed", "cancelled", "expired")
CURRENT_SPEC = next(iter(SPECS))
SERVER_HEADER = "openai-simulator (NOT the real OpenAI API)"
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


class _Drop:
    """The answer of a ``drop`` fault (and of a hang cut short by ``stop``): no answer, the connection closed."""


DROP = _Drop()


class Simulator:
    """A loopback OpenAI-compatible server: NOT the real API. ``with Simulator() as sim:``; ``sim.url`` is the
    base URL (…/v1) to configure. See docs/simulator.md for the options, faults and control routes."""

    def __init__(self, port: int = 0, *, latency: float = 0.0, api_key: str | None = None,
                 admin_key: str | None = None, auth: dict[str, Any] | None = None, legacy_edits: bool = True,
                 rate_limit_rpm: int | None = None,
                 manifests: dict[str, ActionManifest] | None = None, job_after_polls: int | None = DEFAULT_AFTER_POLLS,
                 job_after_seconds: float | None = None) -> None:
        self.port = port
        self.latency = latency
        self.api_key = api_key or None
        #: When set, the admin actions' routes (``http.key: admin``, OpenAI's /organization endpoints) demand this key
        #: and no other, as the API refuses project keys there.
        self.admin_key = admin_key or None
        self.auth = dict(auth or {"placement": "bearer"})
        if self.auth.get("placement", "bearer") not in ("bearer", "header", "query", "none"):
            raise ValueError("auth.placement must be one of bearer, header, query, none")
        if self.auth.get("placement") in ("header", "query") and not self.auth.get("name"):
            raise ValueError(f"auth.name is required for the {self.auth['placement']} placement")
        #: Serve operations only an older spec has (today: POST /edits); False answers them 404 like the API.
        self.legacy_edits = legacy_edits
        self.rate_limit_rpm = rate_limit_rpm
        #: Stand-ins for Azure OpenAI and for compatible servers under a path prefix (``azure.py``).
        self.fronts = Fronts()
        self.fronts.inner_key(self.api_key, self.auth)
        self.routes = RouteTable(registry() if manifests is None else manifests)
        self.url = ""
        #: When long jobs (batches, background responses, file indexing) finish; ``reset`` restores these.
        self.job_settings = (job_after_polls, job_after_seconds)
        self.context = Context(store=Store(JobClock(job_after_polls, job_after_seconds)))
        self._lock = threading.Lock()
        self._faults = Faults(self._lock)
        self._traffic = Traffic(self._lock)
        self._rate = RateLimit(rate_limit_rpm)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._address: tuple[str, int] | None = None

    # state ---------------------------------------------------------------------------------------
    @property
    def calls(self) -> int:
        return self._traffic.calls

    @property
    def in_flight(self) -> int:
        return self._traffic.in_flight

    @property
    def max_in_flight(self) -> int:
        return self._traffic.max_in_flight

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The API requests received (newest last; the oldest are forgotten beyond 10,000), the key masked."""
        return self._traffic.requests

    @property
    def faults(self) -> list[dict[str, Any]]:
        return self._faults.scripted

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) the server is bound to; always 127.0.0.1."""
        return self._address

    def reset(self) -> None:
        """Clear faults, counters, kept requests, the rate-limit window and every object the API side issued (files,
        batches, vector stores, responses, conversations), and restore the job settings (requests in flight stay
        counted)."""
        self._faults.clear()
        self.fronts.reset()
        self._traffic.clear()
        self._rate.clear()
        self.context.store.clear()
        self.context.store.clock.configure(*self.job_settings)

    def configure_jobs(self, after_polls: int | None = DEFAULT_AFTER_POLLS, after_seconds: float | None = None) -> None:
        """When long jobs finish: after ``after_polls`` looks (retrieves, lists, or retrieves of the parent; None:
        never by looks) or ``after_seconds`` since they began (None: never by time), whichever comes first.
        ValueError names a bad setting."""
        self.context.store.clock.configure(after_polls, after_seconds)

    def complete_jobs(self, object_id: str | None = None, outcome: str = "completed") -> list[str]:
        """Finish running jobs now (one by id, or all) as ``completed``, ``failed`` or ``cancelled`` (batches also
        ``expired``); the ids finished."""
        if outcome not in JOB_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(JOB_OUTCOMES)}, not {outcome!r}")
        return self.context.store.complete(object_id, outcome)

    def jobs(self) -> dict[str, Any]:
        """The job settings and the jobs still running."""
        return self.context.store.clock.settings() | {"running": self.context.store.pending()}

    def add_fault(self, fault: dict[str, Any]) -> None:
        """Script a fault, matched in the order added against requests to /v1 API routes.

        Keys: ``method`` (None = any), ``path`` under /v1 (None = any; also covers sub-paths), ``times`` (matching
        requests it applies to, -1 = forever), ``kind``: ``status`` (``status``, ``error_code``, ``headers``, or a
        verbatim ``body``), ``drop`` (read the request, close without answering), ``malformed`` (200, body not
        JSON), ``hang`` (``latency`` seconds, default 30, then answer; ``stop()`` cuts it short) or ``latency``
        (add ``latency`` seconds). The request is counted and kept whichever fault fires.
        """
        self._faults.add(fault)

    def calls_by_route(self) -> dict[str, int]:
        return self.stats()["by_route"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self._traffic.snapshot()

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Bind 127.0.0.1 (never another interface) and serve in a daemon thread; returns when it accepts."""
        # IPPROTO_TCP named, or asyncio leaves Nagle on and every keep-alive answer stalls ~40 ms
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.port))
            listener.listen(1024)  # bursts of concurrent workers must not wait on a small backlog
        except OSError:
            listener.close()
            raise
        self._address = listener.getsockname()[:2]
        self.port = self._address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.context.base_url = self.url
        config = uvicorn.Config(_app(self), log_config=None, log_level="warning", access_log=False, lifespan="off",
                                server_header=False, timeout_keep_alive=300, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            async def main() -> None:
                self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
                watcher = asyncio.create_task(_signal_when(lambda: bool(self._server and self._server.started),
                                                           started))
                try:
                    assert self._server is not None
                    await self._server.serve(sockets=[listener])
                finally:
                    watcher.cancel()
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - reported to start() below
                failure.append(exc)
            finally:
                started.set()
                listener.close()

        self._thread = threading.Thread(target=serve, name=f"openai-simulator-{self.port}", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure or not self._server.started:
            self.stop()
            raise RuntimeError(f"the simulator did not start: {failure[0] if failure else 'timed out'}")
        return self

    def stop(self) -> None:
        """Stop accepting, cut hanging answers short (their connections close unanswered), then shut down."""
        loop, stopping, server = self._loop, self._stopping, self._server
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if server is not None:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = self._loop = self._stopping = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # helpers the app uses ------------------------------------------------------------------------
    def mask(self, text: str) -> str:
        """Never echo or keep the simulator's own keys: they become ``<api-key>`` and ``<admin-key>``."""
        keys = sorted(((self.api_key, "<api-key>"), (self.admin_key, "<admin-key>")), key=lambda k: -len(k[0] or ""))
        for key, label in keys:  # the longer first, in case one key contains the other
            if key:
                text = text.replace(key, label)
        return text

    def presented_key(self, request: Request) -> str | None:
        placement = self.auth.get("placement", "bearer")
        if placement == "bearer":
            value = request.headers.get("authorization") or ""
            return value[7:] if value[:7].lower() == "bearer " else None
        if placement == "header":
            value = request.headers.get(self.auth["name"])
            prefix = self.auth.get("prefix") or ""
            return value[len(prefix):] if value is not None and value.startswith(prefix) else None
        if placement == "query":
            return request.query_params.get(self.auth["name"])
        return None

    def auth_error(self, request: Request, admin: bool = False) -> dict[str, Any] | None:
        """None when the key is right (or none is required); OpenAI's 401 body otherwise, never echoing the key.

        ``admin``: the route is an admin action's, which takes ``admin_key`` (when one is configured)."""
        expected = self.admin_key if admin and self.admin_key else self.api_key
        if not expected or self.auth.get("placement") == "none":
            return None
        presented = self.presented_key(request)
        if presented is not None and hmac.compare_digest(presented.encode(), expected.encode()):
            return None
        if presented and admin and self.admin_key:
            return error_body("This endpoint takes an Admin API key; the key provided is not one (simulator).",
                              "invalid_request_error", None, "invalid_api_key")
        if not presented:
            where = {"bearer": "an Authorization header using Bearer auth",
                     "header": f"the {self.auth.get('name')} header",
                     "query": f"the {self.auth.get('name')} query parameter"}.get(self.auth.get("placement", ""), "")
            message = f"You didn't provide an API key. You need to provide your API key in {where} (simulator)."
        else:
            message = ("Incorrect API key provided: ...redacted.... You can find your API key at "
                       "https://platform.openai.com/account/api-keys. (simulator)")
        return error_body(message, "invalid_request_error", None, "invalid_api_key")

    async def pause(self, seconds: float) -> bool:
        """Wait, waking early if the simulator stops; False means "stopping: do not answer"."""
        if seconds <= 0 or self._stopping is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return False
        return True

    def close_connection(self, client: Any) -> None:
        """Close the connection a request came on, without answering (the ``drop`` fault)."""
        server = self._server
        for connection in list(server.server_state.connections) if server else []:
            if getattr(connection, "client", None) == (tuple(client) if client else None):
                connection.transport.close()  # type: ignore[attr-defined]


async def _signal_when(condition: Callable[[], bool], event: threading.Event) -> None:
    while not condition():
        await asyncio.sleep(0.005)
    event.set()


# ---------------------------------------------------------------- responses


def _json(sim: Simulator, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    payload = sim.mask(json.dumps(body)).encode()  # never echo the key, even when the prompt quotes it
    return Response(payload, status, {"server": SERVER_HEADER, **(headers or {})}, media_type="application/json")


def _sse(sim: Simulator, chunks: list[Any], headers: dict[str, str]) -> StreamingResponse:
    """Server-sent events, one per chunk, ending with ``[DONE]`` (uvicorn does the chunked coding)."""
    async def events() -> Any:
        for chunk in chunks:
            yield f"data: {sim.mask(json.dumps(chunk))}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), 200, {"server": SERVER_HEADER, "cache-control": "no-cache", **headers},
                             media_type="text/event-stream")


# ---------------------------------------------------------------- the app


class _Api:
    """``/v1/{path}``: every API request, bound or not (unknown paths are counted too, then get 404)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self.sim
        started = time.monotonic()
        request = Request(scope, receive)
        method, path = request.method, "/" + str(scope["path_params"]["path"])
        raw = await read_body(request)
        if raw is None:
            await _json(sim, 400, error_body("The request body could not be read.", "invalid_request_error"),
                        {"connection": "close"})(scope, receive, send)
            return
        content_type = request.headers.get("content-type", "")
        match = sim.routes.match(method, path)
        uploads: dict[str, Upload] = {}
        body, problem = parse_body(raw, content_type, match.route.operation_id if match and match.route else None,
                                   uploads)
        kept_body = json.loads(sim.mask(json.dumps(body))) if problem is None else sim.mask(raw.decode("utf-8",
                                                                                                          "replace"))
        request_id, period = sim._traffic.begin(match.label if match else f"{method} {path}", {
            "method": method, "path": "/v1" + path,
            "query": {k: sim.mask(v) for k, v in request.query_params.items()},
            # every pair in order, repeats kept: how lists (include[]=a&include[]=b) and objects were sent
            "query_pairs": [[k, sim.mask(v)] for k, v in request.query_params.multi_items()],
            "headers": {k: sim.mask(v) for k, v in request.headers.items()},
            "body": kept_body, "at": time.time(),
        })
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                sim._traffic.end(period)

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                end()  # before the last byte leaves: a client holding its answer never sees it in flight
            await send(message)

        try:
            answer = await self._answer(request, method, path, match, body, problem, len(raw), request_id, started,
                                        uploads)
            if isinstance(answer, _Drop):
                end()
                sim.close_connection(scope.get("client"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(receive(), 2)  # http.disconnect, once the close went through
                return
            await answer(scope, receive, send_counted)
        finally:
            end()

    async def _answer(self, request: Request, method: str, path: str, match: Any, body: Any, problem: str | None,
                      size: int, request_id: str, started: float, uploads: dict[str, Upload]) -> Response | _Drop:
        sim = self.sim
        fault = sim._faults.take(method, path)
        delay = sim.latency
        if fault and fault["kind"] in ("latency", "hang"):
            delay += float(fault.get("latency") or (HANG_SECONDS if fault["kind"] == "hang" else 0.1))
        if not await sim.pause(delay):
            return DROP

        def headers(**extra: str) -> dict[str, str]:
            processing = max(1, round((time.monotonic() - started) * 1000))
            return {"x-request-id": request_id, "openai-processing-ms": str(processing),
                    "openai-version": "2020-10-01", **sim._rate.headers(), **extra}

        if fault and fault["kind"] == "drop":  # the request was received; the answer never comes
            return DROP
        if fault and fault["kind"] == "malformed":
            return Response(b'{"id": "chatcmpl-sim-trunc", "object": "chat.compl', 200, headers(),
                            media_type="application/json")
        if fault and fault["kind"] == "status":
            status = int(fault.get("status") or 500)
            extra = {str(k).lower(): str(v) for k, v in (fault.get("headers") or {}).items()}
            scripted = fault.get("body")
            if isinstance(scripted, str):
                return Response(scripted.encode(), status, headers() | extra, media_type="application/json")
            error = scripted if scripted is not None else fault_error(status, fault.get("error_code"))
            return _json(sim, status, error, headers() | extra)
        admin = match is not None and match.route is not None and match.route.manifest.http.key == "admin"
        refusal = sim.auth_error(request, admin)
        if refusal is not None:
            return _json(sim, 401, refusal, headers())
        wait = sim._rate.admit(max(1, size // 4))
        if wait is not None:
            message = (f"Rate limit reached for requests per min (RPM): Limit {sim.rate_limit_rpm}, Used "
                       f"{sim.rate_limit_rpm}, Requested 1. Please try again in {wait:.2f}s. (simulator)")
            retry = {"retry-after-ms": str(max(1, int(wait * 1000))), "retry-after": str(int(wait) + 1)}
            return _json(sim, 429, error_body(message, "requests", None, "rate_limit_exceeded"), headers() | retry)
        if match is None:
            return _json(sim, 404, error_body(f"Invalid URL ({method} /v1{path})", "invalid_request_error", None,
                                              "unknown_url"), headers())
        if match.route is None:
            return _json(sim, 405, error_body(f"Method {method} not allowed on /v1{path}.", "invalid_request_error"),
                         headers(allow=", ".join(match.allowed)))
        manifest = match.route.manifest
        if manifest.openapi.spec != CURRENT_SPEC and not sim.legacy_edits:
            instead = f"; use {manifest.replaced_by}" if manifest.replaced_by else ""
            return _json(sim, 404, error_body(f"The {method} /v1{path} endpoint has been shut down{instead}.",
                                              "invalid_request_error", None, "not_found"), headers())
        spec_operation = operation(match.route.operation_id)
        content_type = MULTIPART if request.headers.get("content-type", "").startswith(MULTIPART) else JSON
        takes_body = spec_operation is not None and spec_operation.validator(content_type) is not None
        if takes_body:
            if problem is not None:
                return _json(sim, 400, error_body(problem, "invalid_request_error"), headers())
            invalid = validate_request(match.route.operation_id, body, content_type)
            if invalid is not None:
                message, param, code = invalid
                return _json(sim, 400, error_body(message, "invalid_request_error", param, code), headers())
        request_body = body if takes_body and isinstance(body, dict) else {}
        behaviour = BEHAVIOURS.get(match.route.operation_id)
        call = Call(request_body, dict(match.params), dict(request.query_params), uploads)
        with sim.context.store.lock:  # a test thread may be completing jobs through ``complete_jobs``
            answer = behaviour(sim.context, call) if behaviour else default_answer(manifest)
        if isinstance(answer, Reply) and answer.status == 404 and is_example_request(manifest, call):
            answer = default_answer(manifest)  # an example's made-up ids (file_abc123) name example objects
        if isinstance(answer, Reply):
            return _json(sim, answer.status, answer.body, headers())
        if isinstance(answer, Download):
            return Response(answer.content, 200, {"server": SERVER_HEADER, **headers()}, media_type=answer.media_type)
        if answer is None and manifest.http.answer == "empty":  # the spec declares no body: none is sent
            return Response(b"", 200, {"server": SERVER_HEADER, **headers()})
        stream = manifest.http.stream
        if stream is not None and (request_body.get(stream.flag) is True or call.query.get(stream.flag) == "true"):
            chunker = STREAMS.get(match.route.operation_id)
            return _sse(sim, chunker(answer, request_body) if chunker else [answer], headers())
        return _json(sim, 200, answer, headers())


def _control(sim: Simulator) -> list[Route]:
    """``/v1/_sim/*``: no key and not counted, because they are not the API."""

    async def reset(_request: Request) -> Response:
        sim.reset()
        return _json(sim, 200, {"ok": True})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return _json(sim, 200, {"faults": sim.faults})
        try:
            fault = json.loads(await request.body() or b"{}")
            sim.add_fault(fault)
        except (ValueError, TypeError) as exc:
            return _json(sim, 400, error_body(f"Invalid fault: {exc}", "invalid_request_error"))
        return _json(sim, 200, {"ok": True})

    async def stats(_request: Request) -> Response:
        return _json(sim, 200, sim.stats())

    async def requests(request: Request) -> Response:
        kept = sim._traffic.kept()
        limit = request.query_params.get("limit", "")
        if limit:
            if not limit.isdigit():
                return _json(sim, 400, error_body("Invalid value for 'limit': expected a non-negative integer.",
                                                  "invalid_request_error", "limit"))
            kept = kept[len(kept) - int(limit):] if int(limit) else []
        return _json(sim, 200, {"object": "list", "data": kept})

    async def jobs(request: Request) -> Response:
        if request.method == "POST":
            try:
                settings = json.loads(await request.body() or b"{}")
                if not isinstance(settings, dict) or set(settings) - {"after_polls", "after_seconds"}:
                    raise ValueError("the body is a JSON object with after_polls and/or after_seconds")
                current = sim.context.store.clock.settings()
                sim.configure_jobs(settings.get("after_polls", current["after_polls"]),
                                   settings.get("after_seconds", current["after_seconds"]))
            except (ValueError, TypeError) as exc:
                return _json(sim, 400, error_body(f"Invalid job settings: {exc}", "invalid_request_error"))
        return _json(sim, 200, sim.jobs())

    async def complete(request: Request) -> Response:
        try:
            order = json.loads(await request.body() or b"{}")
            if not isinstance(order, dict) or set(order) - {"id", "outcome"}:
                raise ValueError("the body is a JSON object with an optional id and outcome")
            if order.get("id") is not None and not isinstance(order["id"], str):
                raise ValueError("id must be a string")
            finished = sim.complete_jobs(order.get("id"), str(order.get("outcome", "completed")))
        except (ValueError, TypeError) as exc:
            return _json(sim, 400, error_body(f"Invalid completion: {exc}", "invalid_request_error"))
        return _json(sim, 200, {"completed": finished})

    async def image(request: Request) -> Response:
        png = sim.context.images.get(request.path_params["name"])
        if png is None:
            return _json(sim, 404, error_body("No such simulated image.", "invalid_request_error", None, "not_found"))
        return Response(png, 200, {"server": SERVER_HEADER}, media_type="image/png")

    async def unknown(request: Request) -> Response:
        return _json(sim, 404, error_body(f"Unknown simulator control route {request.method} {request.url.path}",
                                          "invalid_request_error"))

    return [Route("/v1/_sim/reset", reset, methods=["POST"]), Route("/v1/_sim/faults", faults, methods=["GET", "POST"]),
            Route("/v1/_sim/stats", stats, methods=["GET"]), Route("/v1/_sim/requests", requests, methods=["GET"]),
            Route("/v1/_sim/images/{name}", image, methods=["GET"]),
            Route("/v1/_sim/jobs", jobs, methods=["GET", "POST"]),
            Route("/v1/_sim/jobs/complete", complete, methods=["POST"]),
            Route("/v1/_sim/{rest:path}", unknown, methods=ALL_METHODS)]


def _app(sim: Simulator) -> ASGIApp:
    async def outside(request: Request) -> Response:
        return _json(sim, 404, error_body(f"Invalid URL ({request.method} {request.url.path}): this server serves /v1",
                                          "invalid_request_error", None, "unknown_url"))

    api: Callable[[Scope, Receive, Send], Awaitable[None]] = _Api(sim)
    return sim.fronts.wrap(Starlette(routes=[*_control(sim), Route("/v1/{path:path}", api),
                                             Route("/{path:path}", outside, methods=ALL_METHODS)]))
