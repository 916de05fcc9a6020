"""Redis inside bridged greenlets (``integration.aio``): connections that wait on the loop, shared pipelines.

The in-flight executor runs fan-out chains as greenlets on a few event loops; their store commands
are the ordinary synchronous redis-py calls, so the ledger, lease and run-store code stays one
path. Without this, each command would hold its whole loop for a Redis round trip (profiled: most
of a loop thread's time at 1,000 in flight). A socket of ``BridgedConnection`` sends and receives
without blocking and, inside a bridge, waits for readiness on the loop, so other chains run
meanwhile; everywhere else (pool threads, the heartbeat, the CLI) it blocks exactly as before.

``SharedPipelines`` goes one step further: the batches the chains of one loop ask for in the same
turn of the loop travel as one pipeline, so a thousand chains pay redis-py's per-pipeline cost and
a wait on the loop once per turn instead of once per batch each.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import redis

from integration.aio import await_only, in_bridge, wait_io
from integration.errors import StoreUnavailableError

__all__ = ["BridgedConnection", "SharedPipelines"]


class _BridgedSocket:
    """Wraps a connected socket: ``recv``/``sendall`` wait on the running loop when called from a bridge."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _wait(self, readable: bool) -> None:
        wait_io(self._sock, write=not readable, timeout=self._sock.gettimeout())

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not in_bridge() or self._sock.gettimeout() == 0:
            return self._sock.recv(size, flags)
        while True:
            try:
                return self._sock.recv(size, flags | socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._wait(readable=True)

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        """What the hiredis parser reads with; waits like ``recv``."""
        if not in_bridge() or self._sock.gettimeout() == 0:
            return self._sock.recv_into(buffer, size, flags)
        while True:
            try:
                return self._sock.recv_into(buffer, size, flags | socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._wait(readable=True)

    def sendall(self, data: bytes | memoryview, flags: int = 0) -> None:
        if not in_bridge():
            self._sock.sendall(data, flags)
            return
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view, flags | socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._wait(readable=False)
                continue
            view = view[sent:]


class BridgedConnection(redis.Connection):
    """A plain TCP redis-py connection whose socket cooperates with bridged greenlets."""

    def _connect(self) -> Any:
        return _BridgedSocket(super()._connect())


class _Group:
    """The batches of one turn of the loop: the commands in order, and where each follower's slice starts."""

    def __init__(self, calls: list[Any]) -> None:
        self.calls = list(calls)
        self.followers: list[tuple[int, int, asyncio.Future[list[Any]]]] = []


class SharedPipelines:
    """The batches bridged greenlets ask for in one turn of their loop, run as one pipeline.

    The first greenlet to ask in a turn leads: it lets the loop run every other ready greenlet once
    (each that asks meanwhile adds its batch and waits), then runs all the batches as one pipeline
    and hands each its own slice of the results, errors included. Each batch's commands stay
    together and in order, so what was atomic or ordered within a batch still is; a pipeline is not
    a transaction, so nothing between batches changes either. ``run`` returns the results with a
    command's error as its result; a failure of the pipeline itself (the store went away) is raised
    in every greenlet whose batch it carried.
    """

    def __init__(self, run: Callable[[list[Any]], list[Any]], *, most: int = 5000) -> None:
        self._run = run
        self._most = most  # commands per shared pipeline; a full group leaves the next asker to lead a new one
        self._open: dict[asyncio.AbstractEventLoop, _Group] = {}

    def run(self, calls: list[Any]) -> list[Any]:
        """``calls``' results (errors as results), from a pipeline shared with this turn's other batches."""
        loop = asyncio.get_running_loop()
        group = self._open.get(loop)
        if group is not None and len(group.calls) < self._most:
            ready: asyncio.Future[list[Any]] = loop.create_future()
            group.followers.append((len(group.calls), len(calls), ready))
            group.calls.extend(calls)
            return await_only(ready)
        group = _Group(calls)
        self._open[loop] = group
        try:
            try:
                await_only(asyncio.sleep(0))  # every other ready greenlet runs once, and may join
            finally:
                if self._open.get(loop) is group:
                    del self._open[loop]
            results = self._run(group.calls)
        except BaseException as exc:
            passed = exc if isinstance(exc, Exception) else StoreUnavailableError(
                "run store: the shared pipeline's sender stopped before it was sent")
            for _, _, waiting in group.followers:
                if not waiting.done():
                    waiting.set_exception(passed)
            raise
        for start, count, waiting in group.followers:
            if not waiting.done():
                waiting.set_result(results[start:start + count])
        return results[:len(calls)]
