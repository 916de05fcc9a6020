"""Execution leases: one live execution of a step (or item, or task) at a time, kept alive while it runs.

A lease is a short-lived key owned by one delivery. While the delivery works, one heartbeat thread
per process extends every lease it holds, so a call slower than the broker's visibility timeout
keeps its lease: the redelivered copy of its message finds the lease live and waits (re-queues)
instead of calling again or declaring the call's outcome unknown. The TTL stays short, so after a
real crash (no more heartbeats) the lease lapses within seconds and the redelivered message
takes over without waiting out the length of the call.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from integration.errors import StoreError

if TYPE_CHECKING:
    from workers.state.kv import KV, Op

__all__ = ["Leases"]

log = logging.getLogger("openai_pack.leases")


class Leases:
    """Acquire, keep alive and release leases in a ``KV``; ``lost()`` tells a holder its lease lapsed."""

    def __init__(self, kv: KV, *, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix
        self._held: dict[str, tuple[str, float]] = {}  # key → (owner, ttl)
        self._lost: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def acquire(self, key: str, owner: str, ttl: float) -> bool:
        """True when ``owner`` holds the lease now (newly, or still from its own earlier attempt)."""
        if not self.kv.batch([self.acquire_op(key, owner, ttl)])[0]:
            return False
        self.hold(key, owner, ttl)
        return True

    def acquire_op(self, key: str, owner: str, ttl: float) -> Op:
        """``acquire`` as a batch entry (its result: whether ``owner`` holds the lease); ``hold`` it when True."""
        return ("claim", (self.prefix + key, owner, ttl), {})

    def hold(self, key: str, owner: str, ttl: float) -> None:
        """``owner`` holds the lease: the heartbeat keeps it alive from now on."""
        with self._lock:
            self._held[key] = (owner, ttl)
            self._lost.discard((key, owner))
        self._ensure_heartbeat()

    def release(self, key: str, owner: str) -> None:
        self.kv.batch([self.release_op(key, owner)])

    def release_op(self, key: str, owner: str) -> Op:
        """``release`` as a batch entry: the heartbeat stops keeping the lease now, the batch deletes it."""
        with self._lock:
            if self._held.get(key, ("",))[0] == owner:
                del self._held[key]
            self._lost.discard((key, owner))
        return ("delete_if", (self.prefix + key, owner), {})

    def lost(self, key: str, owner: str) -> bool:
        """The heartbeat found this lease taken or expired: another delivery may have acted meanwhile."""
        with self._lock:
            return (key, owner) in self._lost

    def holder(self, key: str) -> str | None:
        return self.kv.get(self.prefix + key)

    # the heartbeat ------------------------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked child starts its own thread
            self._thread = threading.Thread(target=self._beat, name="openai-pack-lease-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        """Every third of the shortest TTL held, extend each held lease; note the ones found lost."""
        while True:
            with self._lock:
                held = dict(self._held)
            period = min((ttl for _, ttl in held.values()), default=3.0) / 3
            self._wake.wait(max(0.2, period))
            entries = list(held.items())
            try:  # one round trip for all: a process holding a thousand leases must beat within their TTL
                extended = self.kv.extend_all([(self.prefix + key, owner, ttl) for key, (owner, ttl) in entries])
            except StoreError as exc:  # the store is away: try again next beat
                log.warning("lease heartbeat for %d leases failed: %s", len(entries), exc)
                continue
            for (key, (owner, ttl)), alive in zip(entries, extended, strict=True):
                if alive:
                    continue
                with self._lock:
                    if self._held.get(key, ("",))[0] != owner:
                        continue  # released meanwhile
                    # Expired (the process stalled longer than the TTL): take it back if nobody else did.
                    if self.kv.set(self.prefix + key, owner, nx=True, ttl=ttl):
                        continue
                    log.warning("lease %s was taken by another delivery while this one still ran", key)
                    self._lost.add((key, owner))
                    del self._held[key]
