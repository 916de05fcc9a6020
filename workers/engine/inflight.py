"""The in-flight executor: one event loop per worker process runs many fan-out chains at once.

A fan-out *slot* task (one Celery message, one pool thread) hands its chains to this executor and
waits for them. Each chain is the same synchronous code a thread-pool slot runs (lease, ledger,
budget, call, record, claim of the next item), run in a bridged greenlet (``integration.aio``):
its HTTP exchanges and retry sleeps wait on the loop, so a thousand chains cost a thousand
suspended greenlets and sockets, not a thousand threads. Store commands stay synchronous: each is
a sub-millisecond loopback round trip that briefly holds the loop, which is what keeps the ledger,
lease and budget code one path for threads and the loop alike.

Why this design, and what the alternatives measured: ``docs/performance.md``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from integration.aio import run_bridged

__all__ = ["InFlight", "executor"]


class InFlight:
    """An event loop in a daemon thread; ``run_all`` runs synchronous callables on it as greenlets."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # a forked child starts its own loop
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=serve, name="openai-pack-inflight", daemon=True).start()
                ready.wait()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run_all(self, functions: list[Callable[[], Any]]) -> list[Any]:
        """Run every function concurrently on the loop; block until all end; results or exceptions, in order."""
        if not functions:
            return []
        future: Future[list[Any]] = asyncio.run_coroutine_threadsafe(self._gather(functions), self._running_loop())
        return future.result()

    async def _gather(self, functions: list[Callable[[], Any]]) -> list[Any]:
        return list(await asyncio.gather(*(run_bridged(function) for function in functions), return_exceptions=True))


_executor = InFlight()


def executor() -> InFlight:
    """The process's executor (its loop thread starts on first use)."""
    return _executor
