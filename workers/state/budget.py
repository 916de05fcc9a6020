"""The rate budget every worker draws from: one per integration, kept in the run store's Redis.

An integration may declare ``rate_limits`` (requests and tokens per minute). Before each request
a worker takes one request (and an estimate of the tokens) from a moving window shared through
Redis, using the ``limits`` library; when the window is full the step is re-queued with a delay
instead of holding a worker thread. The API's own ``x-ratelimit-remaining-*`` / ``-reset-*``
headers tighten it further: when the API says a budget is spent, every worker pauses that
integration until the reset it announced.
"""

from __future__ import annotations

import re
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from actions import Call
from integration.client import ApiResponse
from integration.redis_urls import connect, is_sentinel_url
from workers.requeue import Requeue
from workers.state.kv import KV, store_failures

__all__ = ["Budget", "parse_reset"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
PAUSE_PREFIX = "opk:pause:"
#: How long one process trusts its read of an integration's pause (``Budget._pause_of``).
PAUSE_FRESH = 0.2


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset durations: ``"1s"``, ``"6m0s"``, ``"20ms"``, or plain seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return sum(float(number) * _UNIT[unit] for number, unit in parts)


def window_for(per_minute: int) -> RateLimitItem:
    """The per-minute budget as the shortest whole-number window: 600/min becomes 10 per second.

    OpenAI enforces limits over periods shorter than a minute, so a burst of a minute's budget in
    the first second is refused anyway; spreading it evenly is what the API accepts.
    """
    for seconds in (1, 2, 3, 5, 10, 15, 20, 30, 60):
        if (per_minute * seconds) % 60 == 0:
            return RateLimitItemPerSecond(per_minute * seconds // 60, seconds)
    return RateLimitItemPerSecond(per_minute, 60)


class Budget:
    """Shared request/token windows per integration, plus pauses learnt from the API's headers."""

    def __init__(self, storage_url: str, kv: KV) -> None:
        storage: Storage
        if is_sentinel_url(storage_url):  # the window follows the master through a failover, like the store
            client = connect(storage_url, field="OPENAI_PACK_STORE_URL", socket_timeout=10, socket_connect_timeout=5)
            storage = RedisStorage("redis://", connection_pool=client.connection_pool)
        elif storage_url.startswith(("redis://", "rediss://")):
            storage = storage_from_string(storage_url)
        else:
            storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)
        self.kv = kv
        #: integration → (when read, the pause's end or None): a read serves this process for ``PAUSE_FRESH`` s
        self._pauses: dict[str, tuple[float, str | None]] = {}

    def _pause_of(self, name: str) -> str | None:
        """The integration's pause, as every worker sees it in the store, read at most every ``PAUSE_FRESH`` s.

        A fan-out asked for it once per request (a store round trip per item, ~5 % of a worker's time at
        1,000 calls in flight). A pause this process set is known at once; one another worker set is seen
        within ``PAUSE_FRESH`` s, and a request sent meanwhile that is refused with a 429 is re-queued
        like any other (a 429 is an answer that certainly had no effect: nothing is paid twice)."""
        now = time.monotonic()
        cached = self._pauses.get(name)
        if cached is not None and now - cached[0] < PAUSE_FRESH:
            return cached[1]
        paused = self.kv.get(PAUSE_PREFIX + name)
        if len(self._pauses) > 1024:
            self._pauses.clear()
        self._pauses[name] = (now, paused)
        return paused

    def before_request(self, call: Call) -> None:
        """Take this request from the budget, or raise ``Requeue`` with the time until there is room."""
        name = call.integration.name
        paused = self._pause_of(name)
        if paused is not None and float(paused) > time.time():
            raise Requeue(float(paused) - time.time() + 0.05, f"integration {name!r} paused by the API's rate headers")
        limits = call.integration.rate_limits
        if limits is None:
            return
        if limits.requests_per_minute:
            self._take(window_for(limits.requests_per_minute), name, "requests", 1)
        if limits.tokens_per_minute:
            item = window_for(limits.tokens_per_minute)
            self._take(item, name, "tokens", min(call.manifest.estimate_tokens(call.inputs), item.amount))

    def _take(self, item: RateLimitItem, name: str, what: str, cost: int) -> None:
        with store_failures():  # the window lives in Redis: its failures are the store's, not the step's
            if self.limiter.hit(item, "openai-pack", name, what, cost=cost):
                return
            stats = self.limiter.get_window_stats(item, "openai-pack", name, what)
        wait = max(0.05, stats.reset_time - time.time())
        # The window frees up gradually; come back a little after the oldest hit expires.
        raise Requeue(min(wait, 60.0), f"{what}-per-minute budget of {name!r} spent")

    def after_response(self, call: Call, response: ApiResponse) -> None:
        """When the API says a budget is spent, pause the integration for every worker until its reset."""
        headers = response.headers
        for what in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{what}")
            if remaining is None or not remaining.strip().isdigit() or int(remaining) > 0:
                continue
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{what}"))
            if reset:
                until = time.time() + reset
                self.kv.set(PAUSE_PREFIX + call.integration.name, f"{until:.3f}", ttl=reset + 1)
                self._pauses[call.integration.name] = (time.monotonic(), f"{until:.3f}")
