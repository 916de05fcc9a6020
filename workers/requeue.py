"""``Requeue``: the one way a step says "not now" (rate budget, long Retry-After, a busy lease)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Requeue"]


@dataclass
class Requeue(Exception):
    """Put the step back on the queue after ``countdown`` seconds instead of blocking a worker thread."""

    countdown: float
    reason: str
