"""Synchronous code that waits on asyncio: how one worker thread keeps a thousand calls in flight.

The pack's call path (coercion, the ledger, the lease, the budget, the client's retry loop, the
error mapping) is synchronous, and it should stay one path: rewriting it as ``async`` would make a
second copy of every policy. Instead, code that must hold many calls at once runs that same
synchronous path inside *bridged* greenlets driven by an asyncio event loop (``run_bridged``). Only
the waits leave the greenlet: a socket that would block waits for readiness on the loop
(``wait_io``, used by the HTTP connections here and by the run store's Redis connections), and
``pause`` sleeps with ``asyncio.sleep``, so the loop serves every other call meanwhile. Outside a
bridged greenlet (a thread-pool step, the CLI) everything blocks exactly like its ordinary
counterpart.

HTTP inside a bridge is httpcore's *synchronous* connection code on sockets that wait this way
(``_BridgedBackend``): per exchange that is one or two waits on the loop, where httpcore's asyncio
code over anyio cost a coroutine chain, a cancel scope and a timer per read and write (profiled:
~27 % of a worker at 1,000 calls in flight; ``docs/performance.md``).

A bridged call never holds its place longer than its own timeout: the whole exchange (connect,
send, answer) is bounded by the sum of its connect, write and read timeouts, so a server that
accepts a request and then trickles or goes silent cannot keep it past that.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import select
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpcore
import httpx
from greenlet import getcurrent, greenlet

__all__ = ["BridgeTransport", "Gate", "await_only", "in_bridge", "pause", "run_bridged", "wait_io"]

T = TypeVar("T")


class _Bridged(greenlet):  # type: ignore[misc]
    """A greenlet whose parent is a coroutine waiting to await what it hands over.

    ``deadline`` (a ``time.monotonic()`` value), while set, bounds every socket wait of the greenlet:
    it is how one whole HTTP exchange is kept within its total timeout. ``gate``, when set, is the
    ``Gate`` it runs under (``holding``: it has a place now)."""

    deadline: float | None = None
    timed_out: str = ""
    gate: Gate | None = None
    holding: bool = False


class Gate:
    """At most ``width`` bridged greenlets of one loop run at once; the others wait for a place, first come first.

    A greenlet gives its place up while it waits for an HTTP answer or sleeps (``pause``), and
    takes one again before it goes on, so the gate bounds the greenlets *working* (their CPU and
    their short store round trips), not the calls in flight. Why: a thousand answers that arrive
    together would otherwise all resume at once, and every one of them would finish its
    bookkeeping only after all the others (each store round trip waits behind a thousand
    greenlets' work), leaving the server idle for most of a second (measured: 0.57 s between an
    answer and the next request at 1,000 in flight, 1 s answers). Under the gate the first answers
    are through within a few milliseconds and their next requests go out while the rest wait.
    Used from one loop's thread only.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self._free = width
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def resize(self, width: int) -> None:
        self._free += width - self.width
        self.width = width
        while self._free > 0 and self._waiting:
            self._free -= 1
            self._hand_over()

    def enter(self, current: _Bridged) -> None:
        """Take a place (waiting on the loop for one when all are taken)."""
        if self._free > 0:
            self._free -= 1
        else:
            place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(place)
            try:
                await_only(place)  # its place is handed over when it wakes
            except BaseException:
                if place.done() and not place.cancelled():  # handed over, but this greenlet is leaving
                    self._hand_over()
                raise
        current.holding = True

    def leave(self, current: _Bridged) -> None:
        """Give the place up: the longest waiter takes it."""
        if not current.holding:
            return
        current.holding = False
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():  # a waiter that was cancelled meanwhile is skipped
                place.set_result(None)
                return
        self._free += 1


class _SteppingAside:
    """``with _SteppingAside(current):`` the greenlet gives its ``Gate`` place up while it waits for something
    slow (an answer, a sleep), and takes one again (waiting for it if need be) before it goes on."""

    __slots__ = ("current",)

    def __init__(self, current: _Bridged) -> None:
        self.current = current

    def __enter__(self) -> None:
        if self.current.gate is not None:
            self.current.gate.leave(self.current)

    def __exit__(self, *_: object) -> None:
        if self.current.gate is not None:
            self.current.gate.enter(self.current)


def in_bridge() -> bool:
    """True inside ``run_bridged``: waits may be handed to the event loop."""
    return isinstance(getcurrent(), _Bridged)


def await_only(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` on the driving event loop, from synchronous code in a bridged greenlet."""
    current = getcurrent()
    if not isinstance(current, _Bridged):
        raise RuntimeError("await_only() outside run_bridged()")
    return current.parent.switch(awaitable)  # type: ignore[no-any-return]


async def run_bridged(function: Callable[..., T], *args: Any, gate: Gate | None = None) -> T:
    """Run synchronous ``function`` so that each ``await_only`` in it suspends only this coroutine.

    With ``gate`` it runs only while it holds a place in it (see ``Gate``)."""
    child = _Bridged(_gated if gate is not None else function, parent=getcurrent())
    child.gate = gate
    handed = child.switch(function, *args) if gate is not None else child.switch(*args)
    while not child.dead:
        try:
            value = await handed
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back into the greenlet
            handed = child.throw(exc)
        else:
            handed = child.switch(value)
    return handed  # type: ignore[no-any-return]


def _gated(function: Callable[..., T], *args: Any) -> T:
    current = getcurrent()
    current.gate.enter(current)
    try:
        return function(*args)
    finally:
        current.gate.leave(current)


def pause(seconds: float) -> None:
    """``time.sleep`` that, inside a bridged greenlet, lets the loop run every other call meanwhile."""
    current = getcurrent()
    if not isinstance(current, _Bridged):
        time.sleep(seconds)
        return
    with _SteppingAside(current):
        await_only(asyncio.sleep(seconds))


def _wake(ready: asyncio.Future[bool], value: bool) -> None:
    if not ready.done():
        ready.set_result(value)


def wait_io(sock: socket.socket, *, write: bool = False, timeout: float | None = None) -> None:
    """Until ``sock`` can be read (``write``: written) or ``timeout`` seconds pass (``TimeoutError``).

    Inside a bridge the greenlet waits on the loop (a reader or writer callback and one timer), so
    the loop runs every other call meanwhile; elsewhere it blocks in ``poll``. The bridged exchange's
    deadline, when one is set, caps ``timeout``."""
    current = getcurrent()
    if not isinstance(current, _Bridged):
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            raise TimeoutError("timed out")
        return
    if current.deadline is not None:
        left = current.deadline - time.monotonic()
        if timeout is None or timeout >= left:  # the exchange's deadline comes first
            timeout, current.timed_out = max(0.0, left), "deadline"
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()
    fd = sock.fileno()
    if write:
        loop.add_writer(fd, _wake, ready, True)
    else:
        loop.add_reader(fd, _wake, ready, True)
    timer = None if timeout is None else loop.call_later(timeout, _wake, ready, False)
    try:
        became_ready = await_only(ready)
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
    if not became_ready:
        raise TimeoutError("timed out")
    current.timed_out = ""


class _BridgedStream(httpcore.NetworkStream):
    """A non-blocking socket (TLS through an ``ssl.SSLObject`` over memory buffers) whose waits are ``wait_io``.

    The same object serves plain and TLS connections: TLS bytes are moved between the socket and the
    ``SSLObject`` here, so no read or handshake ever blocks the loop's thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    # raw socket ----------------------------------------------------------------------------
    def _recv(self, max_bytes: int, timeout: float | None) -> bytes:
        while True:
            try:
                return self._sock.recv(max_bytes)
            except BlockingIOError:
                wait_io(self._sock, timeout=timeout)

    def _send_all(self, data: bytes | memoryview, timeout: float | None) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                wait_io(self._sock, write=True, timeout=timeout)

    # TLS -----------------------------------------------------------------------------------
    def _tls_io(self, operation: Callable[[], T], timeout: float | None) -> T:
        """Run an ``SSLObject`` operation, moving its records through the socket until it completes."""
        while True:
            try:
                result = operation()
                wants_more = False
            except ssl.SSLWantReadError:
                wants_more = True
            pending = self._outgoing.read()
            if pending:
                self._send_all(pending, timeout)
            if not wants_more:
                return result
            data = self._recv(65536, timeout)
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()

    # httpcore.NetworkStream ------------------------------------------------------------------
    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _MappedErrors(httpcore.ReadTimeout, httpcore.ReadError):
            if self._tls is None:
                return self._recv(max_bytes, timeout)
            tls = self._tls
            try:
                return self._tls_io(lambda: tls.read(max_bytes), timeout)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _MappedErrors(httpcore.WriteTimeout, httpcore.WriteError):
            if self._tls is None:
                self._send_all(buffer, timeout)
                return
            view = memoryview(buffer)
            while view:
                view = view[self._tls_io(functools.partial(self._tls.write, view), timeout):]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        with _MappedErrors(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                self._tls = ssl_context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
                self._tls_io(self._tls.do_handshake, timeout)
            except BaseException:
                self.close()
                raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._tls
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # an idle keep-alive connection that is readable was closed by the server
            if self._sock.fileno() < 0:
                return True
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


class _MappedErrors:
    """Socket timeouts and errors as httpcore's exceptions (httpx maps those to its own, keeping the message)."""

    def __init__(self, timeout: type[Exception], error: type[Exception]) -> None:
        self.timeout, self.error = timeout, error

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any) -> bool:
        if exc is None:
            return False
        if isinstance(exc, TimeoutError):
            raise self.timeout(str(exc) or "timed out") from exc
        if isinstance(exc, (OSError, ssl.SSLError)):
            raise self.error(str(exc) or type(exc).__name__) from exc
        return False


class _BridgedBackend(httpcore.NetworkBackend):
    """httpcore's network backend for bridged lanes: non-blocking connect, streams that wait with ``wait_io``."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        with _MappedErrors(httpcore.ConnectTimeout, httpcore.ConnectError):
            failure: OSError = OSError(f"no address for {host}")
            for family, kind, proto, _, address in self._addresses(host, port):
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if local_address is not None:
                        sock.bind((local_address, 0))
                    code = sock.connect_ex(address)
                    if code in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                        wait_io(sock, write=True, timeout=timeout)
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        raise OSError(code, errno.errorcode.get(code, str(code)))
                    return _BridgedStream(sock)
                except OSError as exc:  # TimeoutError included: try the next address, keep the last failure
                    sock.close()
                    failure = exc
            raise failure

    @staticmethod
    def _addresses(host: str, port: int) -> list[tuple[Any, ...]]:
        """An IP literal as it is; a name resolved off the loop's thread (``getaddrinfo`` blocks)."""
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, host)
            except OSError:
                continue
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        if in_bridge():
            loop = asyncio.get_running_loop()
            return list(await_only(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)

    def sleep(self, seconds: float) -> None:
        pause(seconds)


def _total_timeout(request: httpx.Request) -> float | None:
    """Connect + write + read: the longest one exchange may take before its answer is given up."""
    timeout = request.extensions.get("timeout") or {}
    parts = [timeout.get("connect"), timeout.get("write"), timeout.get("read")]
    if any(part is None for part in parts):
        return None
    return float(sum(parts))


class _Lane(httpx.HTTPTransport):
    """One connection for one exchange at a time: httpx's transport over a one-connection httpcore pool
    whose sockets wait with ``wait_io``.

    httpcore's pool scans every connection it holds (and polls each idle socket) whenever a request
    starts or ends; at a thousand in flight that scan was most of the loop's time (profiled: 57 % of
    the loop thread with one pool of 600 connections, 26 % with pools of 32). A lane's scan is one
    connection long, and picking a lane is a pop from a free list. (httpx takes no network backend, so
    the pool it built is replaced by one with the bridged backend, made with the same settings.)
    """

    def __init__(self, retries: int, verify: ssl.SSLContext, backend: _BridgedBackend) -> None:
        super().__init__(retries=retries, verify=verify)
        self._pool = httpcore.ConnectionPool(ssl_context=verify, max_connections=1, max_keepalive_connections=1,
                                             keepalive_expiry=30, retries=retries, network_backend=backend)


class BridgeTransport(httpx.BaseTransport):
    """A synchronous httpx transport whose exchanges, inside a bridge, wait on the event loop.

    Connections are kept alive after their answer (a thousand calls must not reconnect, leaving a
    thousand sockets in TIME_WAIT, every time they finish). Bridged exchanges take a *lane*
    (``_Lane``: one keep-alive connection) from a free list: the lane freed last (its connection is
    the warmest), or a new one when none is idle, so the transport holds as many connections as it
    ever had exchanges at once and never scans them. All lanes share one TLS context (building one
    loads the CA bundle: 256 of them cost the first answers ~10 s here). Outside a bridge the
    ordinary pooled transport serves the request.
    """

    def __init__(self, *, retries: int = 0, max_connections: int = 1024) -> None:
        self.retries = retries
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._sync = httpx.HTTPTransport(retries=retries, limits=limits)
        self._backend = _BridgedBackend()
        self._lanes: list[_Lane] = []  # every lane
        self._idle: list[_Lane] = []  # the idle ones, freed last at the end
        self._tls: ssl.SSLContext | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        current = getcurrent()
        if not isinstance(current, _Bridged):
            return self._sync.handle_request(request)
        lane = self._idle.pop() if self._idle else self._new_lane()
        total = _total_timeout(request)
        outer = current.deadline  # an enclosing deadline, if any, still holds
        deadlines = [d for d in (outer, None if total is None else time.monotonic() + total) if d is not None]
        current.deadline = min(deadlines) if deadlines else None
        with _SteppingAside(current):  # another greenlet works while this one waits for its answer
            try:
                response = lane.handle_request(request)
                try:  # the whole answer, within the deadline; the client decodes the raw bytes as it would its own
                    content = b"".join(response.iter_raw())
                finally:
                    response.close()
            except httpx.TimeoutException:
                if current.timed_out == "deadline":
                    raise httpx.ReadTimeout(f"no complete answer within {total:g} s", request=request) from None
                raise
            finally:
                current.deadline, current.timed_out = outer, ""
                self._idle.append(lane)  # a failed exchange's connection is closed; the lane reconnects
        kept = {k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")}
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(content),
                              extensions=kept, request=request)

    def _new_lane(self) -> _Lane:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        lane = _Lane(self.retries, self._tls, self._backend)
        self._lanes.append(lane)
        return lane

    def close(self) -> None:
        """Close every connection, the lanes' and the pooled transport's."""
        self._idle.clear()
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.close()
        self._sync.close()
