"""The call ledger: at most one paid call per step execution, however often its message is delivered.

Before a request the step's idempotency key is *claimed*; after the answer it is *done* with the
result. A redelivered message whose key is done returns the stored result without calling. One
whose key is claimed but not done may have reached the API (a worker died mid-request, or the
answer never came): for a paid action that is reported as "outcome unknown" instead of paying
twice; a repeatable action (GET, moderation) simply calls again. A call that certainly had no
effect (refused before sending, a 4xx/5xx answer) releases its claim so a retry may call again.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from integration.errors import OutcomeUnknownError
from integration.redact import scrub_data
from workers.state.kv import KV, Op

__all__ = ["LEDGER_TTL", "Ledger"]

LEDGER_TTL = 7 * 24 * 3600
PREFIX = "opk:ledger:"


class Ledger:
    def __init__(self, kv: KV) -> None:
        self.kv = kv

    def begin(self, key: str, *, idempotent: bool, what: str) -> dict[str, Any] | None:
        """Claim ``key``; return the stored result when it is already done."""
        # A token unique to this attempt: the store can tell its own claim, retried after a failover, from another's.
        claim = json.dumps({"state": "claimed", "at": time.time(), "attempt": uuid.uuid4().hex})
        if self.kv.claim(PREFIX + key, claim, ttl=LEDGER_TTL):
            return None
        entry = json.loads(self.kv.get(PREFIX + key) or "{}")
        if entry.get("state") == "done":
            return entry["result"]  # type: ignore[no-any-return]
        if idempotent:
            self.kv.set(PREFIX + key, claim, ttl=LEDGER_TTL)
            return None
        raise OutcomeUnknownError(
            f"{what} was sent before (attempt claimed at {time.strftime('%H:%M:%S', time.gmtime(entry.get('at', 0)))}"
            " UTC) and its answer never arrived; it is not repeated automatically to avoid paying twice. "
            "Check the API side, then re-run the step if needed.", ledger_key=key)

    def done(self, key: str, result: dict[str, Any]) -> None:
        self.write(self.done_op(key, result))

    def write(self, op: Op) -> None:
        """Make a write prepared by ``done_op`` now (a task has no record to batch it with)."""
        self.kv.batch([op])

    def done_op(self, key: str, result: dict[str, Any]) -> Op:
        """The "done" write as a batch entry, so it travels with the step's record in one round trip."""
        entry = {"state": "done", "at": time.time(), "result": scrub_data(result)}
        return ("set", (PREFIX + key, json.dumps(entry, default=str)), {"ttl": LEDGER_TTL})

    def release(self, key: str) -> None:
        """The call certainly had no effect: a later attempt may call again."""
        self.kv.delete(PREFIX + key)

    def state(self, key: str) -> str | None:
        raw = self.kv.get(PREFIX + key)
        return None if raw is None else str(json.loads(raw).get("state"))
