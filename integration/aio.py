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


class _Shard:
    """One asynchronous connection pool and the number of exchanges it carries now."""

    def __init__(self, retries: int, verify: ssl.SSLContext) -> None:
        # Unbounded by count: the executor bounds the calls in flight, a pool must not queue them.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=30)
        self.pool = httpx.AsyncHTTPTransport(retries=retries, limits=limits, verify=verify)
        self.busy = 0


class BridgeTransport(httpx.BaseTransport):
    """A synchronous httpx transport that sends on asyncio connection pools when called from a bridge.

    Connections are kept alive after their answer (a thousand calls must not reconnect, leaving a
    thousand sockets in TIME_WAIT, every time they finish). Asynchronous pools belong to one event
    loop each, and there are ``SHARDS`` of them per loop, each exchange going to the least busy:
    httpcore's pool scans every connection it holds whenever a request starts or ends, so one pool
    of a thousand connections spends the loop's time in that scan (profiled: 57 % of the loop
    thread at 600 in flight); pools of at most ~``PER_SHARD`` busy connections each do not. A new pool
    is opened only when every pool carries that many, and all share one TLS context (building one
    loads the CA bundle: 256 of them cost the first answers ~10 s on this machine).
    """

    PER_SHARD = 32

    def __init__(self, *, retries: int = 0, max_connections: int = 1024) -> None:
        self.retries = retries
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._sync = httpx.HTTPTransport(retries=retries, limits=limits)
        self._async: dict[asyncio.AbstractEventLoop, list[_Shard]] = {}
        self._tls: ssl.SSLContext | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not in_bridge():
            return self._sync.handle_request(request)
        return await_only(self._send(request))

    def _shard(self) -> _Shard:
        shards = self._async.setdefault(asyncio.get_running_loop(), [])
        least = min(shards, key=lambda shard: shard.busy, default=None)  # the first idle one while few run
        if least is None or least.busy >= self.PER_SHARD:
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            least = _Shard(self.retries, self._tls)
            shards.append(least)
        return least

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send and read the whole answer, within the exchange's total timeout."""
        total = _total_timeout(request)
        shard = self._shard()
        shard.busy += 1
        try:
            async with asyncio.timeout(total):
                response = await shard.pool.handle_async_request(request)
                try:  # raw bytes: the synchronous client decodes them as it would its own
                    content = b"".join([chunk async for chunk in response.aiter_raw()])
                finally:
                    await response.aclose()
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within {total:g} s", request=request) from None
        finally:
            shard.busy -= 1
        kept = {k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")}
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(content),
                              extensions=kept, request=request)

    async def aclose_loop(self) -> None:
        """Close the calling loop's connections (the executor does this when it stops)."""
        for shard in self._async.pop(asyncio.get_running_loop(), []):
            await shard.pool.aclose()

    def close(self) -> None:
        self._sync.close()
