"""Synchronous code that waits on asyncio: how one worker thread keeps a thousand calls in flight.

The pack's call path (coercion, the ledger, the lease, the budget, the client's retry loop, the
error mapping) is synchronous, and it should stay one path: rewriting it as ``async`` would make a
second copy of every policy. Instead, code that must hold many calls at once runs that same
synchronous path inside *bridged* greenlets driven by an asyncio event loop (``run_bridged``). Only
the waits leave the greenlet: ``BridgeTransport`` sends the HTTP request on an ``httpx``
``AsyncHTTPTransport`` and ``pause`` sleeps with ``asyncio.sleep``, so the loop serves every other
call meanwhile. Outside a bridged greenlet (a thread-pool step, the CLI) both behave exactly like
their blocking counterparts.

A bridged call never holds its place longer than its own timeout: the whole exchange (connect,
send, answer) is bounded by the sum of its connect, write and read timeouts, so a server that
accepts a request and then trickles or goes silent cannot keep it past that.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from greenlet import getcurrent, greenlet

__all__ = ["BridgeTransport", "await_only", "in_bridge", "pause", "run_bridged"]

T = TypeVar("T")


class _Bridged(greenlet):  # type: ignore[misc]
    """A greenlet whose parent is a coroutine waiting to await what it hands over."""


def in_bridge() -> bool:
    """True inside ``run_bridged``: waits may be handed to the event loop."""
    return isinstance(getcurrent(), _Bridged)


def await_only(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` on the driving event loop, from synchronous code in a bridged greenlet."""
    current = getcurrent()
    if not isinstance(current, _Bridged):
        raise RuntimeError("await_only() outside run_bridged()")
    return current.parent.switch(awaitable)  # type: ignore[no-any-return]


async def run_bridged(function: Callable[..., T], *args: Any) -> T:
    """Run synchronous ``function`` so that each ``await_only`` in it suspends only this coroutine."""
    child = _Bridged(function, parent=getcurrent())
    handed = child.switch(*args)
    while not child.dead:
        try:
            value = await handed
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back into the greenlet
            handed = child.throw(exc)
        else:
            handed = child.switch(value)
    return handed  # type: ignore[no-any-return]


def pause(seconds: float) -> None:
    """``time.sleep`` that, inside a bridged greenlet, lets the loop run every other call meanwhile."""
    if in_bridge():
        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def _total_timeout(request: httpx.Request) -> float | None:
    """Connect + write + read: the longest one exchange may take before its answer is given up."""
    timeout = request.extensions.get("timeout") or {}
    parts = [timeout.get("connect"), timeout.get("write"), timeout.get("read")]
    if any(part is None for part in parts):
        return None
    return float(sum(parts))


class _Lane:
    """One asynchronous pool that carries one exchange at a time, so it holds one connection.

    httpcore's pool scans every connection it holds (and polls each idle socket) whenever a request
    starts or ends; at a thousand in flight that scan was most of the loop's time (profiled: 57 % of
    the loop thread with one pool of 600 connections, 26 % with pools of 32). A lane's scan is one
    connection long, and picking a lane is a pop from a free list.
    """

    def __init__(self, retries: int, verify: ssl.SSLContext) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30)
        self.pool = httpx.AsyncHTTPTransport(retries=retries, limits=limits, verify=verify)


class BridgeTransport(httpx.BaseTransport):
    """A synchronous httpx transport that sends on asyncio connections when called from a bridge.

    Connections are kept alive after their answer (a thousand calls must not reconnect, leaving a
    thousand sockets in TIME_WAIT, every time they finish). Each event loop keeps its own *lanes*
    (``_Lane``: a one-connection pool) and a free list of the idle ones: an exchange takes the lane
    freed last (its connection is the warmest), or opens a new one when none is idle, so a loop holds
    as many connections as it ever had exchanges at once and never scans them. All lanes share one
    TLS context (building one loads the CA bundle: 256 of them cost the first answers ~10 s here).
    """

    def __init__(self, *, retries: int = 0, max_connections: int = 1024) -> None:
        self.retries = retries
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._sync = httpx.HTTPTransport(retries=retries, limits=limits)
        self._lanes: dict[asyncio.AbstractEventLoop, list[_Lane]] = {}  # every lane of a loop
        self._idle: dict[asyncio.AbstractEventLoop, list[_Lane]] = {}  # the idle ones, freed last at the end
        self._tls: ssl.SSLContext | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not in_bridge():
            return self._sync.handle_request(request)
        return await_only(self._send(request))

    def _take_lane(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        idle = self._idle.setdefault(loop, [])
        if idle:
            return idle.pop()
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        lane = _Lane(self.retries, self._tls)
        self._lanes.setdefault(loop, []).append(lane)
        return lane

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send and read the whole answer, within the exchange's total timeout."""
        total = _total_timeout(request)
        loop = asyncio.get_running_loop()
        lane = self._take_lane(loop)
        try:
            async with asyncio.timeout(total):
                response = await lane.pool.handle_async_request(request)
                try:  # raw bytes: the synchronous client decodes them as it would its own
                    content = b"".join([chunk async for chunk in response.aiter_raw()])
                finally:
                    await response.aclose()
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within {total:g} s", request=request) from None
        finally:
            self._idle[loop].append(lane)  # a failed exchange's connection is closed; the lane reconnects
        kept = {k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")}
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(content),
                              extensions=kept, request=request)

    async def aclose_loop(self) -> None:
        """Close the calling loop's connections (the executor does this when it stops)."""
        loop = asyncio.get_running_loop()
        self._idle.pop(loop, None)
        for lane in self._lanes.pop(loop, []):
            await lane.pool.aclose()

    def close(self) -> None:
        self._sync.close()
