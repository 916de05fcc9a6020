"""Signed webhook requests already accepted: the replay guard's memory, kept in the run store."""

from __future__ import annotations

import hashlib

from workers.state.kv import KV

__all__ = ["PENDING_SIGNATURE", "SeenSignatures"]

#: What a claimed signature maps to until its run is saved.
PENDING_SIGNATURE = "-"
#: How long a signature is remembered: twice the webhooks' 300 s timestamp window plus a minute of skew.
MEMORY_SECONDS = 2 * 300 + 60


class SeenSignatures:
    """Signed requests already accepted, each remembered (as a hash of its HMAC) for as long as its
    timestamp stays inside the window: a replay inside the window maps to the run it started."""

    def __init__(self, kv: KV, *, ttl: float = MEMORY_SECONDS) -> None:
        self.kv = kv
        self.ttl = ttl

    @staticmethod
    def _key(hook: str, digest: str) -> str:
        return f"opk:hook-signature:{hook}:{hashlib.sha256(digest.encode()).hexdigest()}"

    def claim(self, hook: str, digest: str) -> str | None:
        """None when the signature is new (and now claimed); else its run id, or PENDING while it starts."""
        key = self._key(hook, digest)
        if self.kv.set(key, PENDING_SIGNATURE, nx=True, ttl=self.ttl):
            return None
        return self.kv.get(key) or PENDING_SIGNATURE

    def started(self, hook: str, digest: str, run_id: str) -> None:
        self.kv.set(self._key(hook, digest), run_id, ttl=self.ttl)

    def release(self, hook: str, digest: str) -> None:
        """The request was refused (or not saved): the sender may send it again."""
        self.kv.delete_if(self._key(hook, digest), PENDING_SIGNATURE)
