"""Redis connections whose waits go to the event loop inside a bridged greenlet (``integration.aio``).

The in-flight executor runs fan-out chains as greenlets on a few event loops; their store commands
are the ordinary synchronous redis-py calls, so the ledger, lease and run-store code stays one
path. Without this, each command would hold its whole loop for a Redis round trip (profiled: most
of a loop thread's time at 1,000 in flight). A socket of ``BridgedConnection`` sends and receives
without blocking and, inside a bridge, waits for readiness on the loop, so other chains run
meanwhile; everywhere else (pool threads, the heartbeat, the CLI) it blocks exactly as before.
"""

from __future__ import annotations

import socket
from typing import Any

import redis

from integration.aio import in_bridge, wait_io

__all__ = ["BridgedConnection"]


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
