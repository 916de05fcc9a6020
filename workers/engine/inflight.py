"""The in-flight executor: a few event loops per worker process run many fan-out chains at once.

A fan-out *slot* task (one Celery message, one pool thread) hands its chains to this executor and
waits for them. Each chain is the same synchronous code a thread-pool slot runs (lease, ledger,
budget, call, record, claim of the next item), run in a bridged greenlet (``integration.aio``):
its HTTP exchanges and retry sleeps wait on an event loop, so a thousand chains cost a thousand
suspended greenlets and sockets, not a thousand threads.

Store commands stay synchronous too, so the ledger, lease and budget code is one path for threads
and loops alike; their Redis sockets (``workers.state.bridged``) wait on the loop like the HTTP ones.
One loop per process is the default: with both kinds of wait on it, more loops (each in its own
thread, ``Settings.inflight_loops``) only contend for the GIL. Why this design, and what the
alternatives measured: ``docs/performance.md``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from integration.aio import Gate, run_bridged

__all__ = ["InFlight", "executor"]


def _start_loop(name: str) -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    threading.Thread(target=serve, name=name, daemon=True).start()
    ready.wait()
    return loop


class InFlight:
    """Event loops in daemon threads; ``run_all`` runs synchronous callables on them as greenlets."""

    def __init__(self) -> None:
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._gates: dict[asyncio.AbstractEventLoop, Gate] = {}
        self._pid = 0
        self._lock = threading.Lock()
        self._next = 0

    def _running_loops(self, count: int) -> list[asyncio.AbstractEventLoop]:
        with self._lock:
            if self._pid != os.getpid():  # a forked child starts its own loops
                self._loops, self._pid = [], os.getpid()
            while len(self._loops) < count:
                self._loops.append(_start_loop(f"openai-pack-inflight-{len(self._loops)}"))
            return self._loops[:count]

    def run_all(self, functions: list[Callable[[], Any]], *, loops: int = 1, working: int = 0) -> list[Any]:
        """Run every function concurrently on ``loops`` loops; block until all end; results or exceptions.

        ``working`` > 0: at most that many of a loop's greenlets work at once (``integration.aio.Gate``;
        the others wait for their answers, or for a place)."""
        if not functions:
            return []
        loops = self._running_loops(loops)
        gates = [self._gate(loop, working) for loop in loops]
        with self._lock:  # deal the functions round-robin over the loops, continuing where the last call stopped
            first = self._next % len(loops)
            self._next = first + len(functions)
        groups: list[list[int]] = [[] for _ in loops]
        for position in range(len(functions)):
            groups[(first + position) % len(loops)].append(position)
        futures: list[tuple[list[int], Future[list[Any]]]] = [
            (group, asyncio.run_coroutine_threadsafe(_gather([functions[p] for p in group], gate), loop))
            for group, loop, gate in zip(groups, loops, gates, strict=True) if group]
        results: list[Any] = [None] * len(functions)
        for group, future in futures:
            for position, outcome in zip(group, future.result(), strict=True):
                results[position] = outcome
        return results


    def _gate(self, loop: asyncio.AbstractEventLoop, working: int) -> Gate | None:
        """The loop's gate, one for all its slots (its width follows the latest setting)."""
        if working <= 0:
            return None
        with self._lock:
            gate = self._gates.get(loop)
            if gate is None:
                gate = self._gates[loop] = Gate(working)
        if gate.width != working:
            loop.call_soon_threadsafe(gate.resize, working)  # the gate belongs to the loop's thread
        return gate


async def _gather(functions: list[Callable[[], Any]], gate: Gate | None) -> list[Any]:
    return list(await asyncio.gather(*(run_bridged(function, gate=gate) for function in functions),
                                     return_exceptions=True))


_executor = InFlight()


def executor() -> InFlight:
    """The process's executor (its loop threads start on first use)."""
    return _executor
