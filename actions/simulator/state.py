"""What the simulator remembers between requests: scripted faults, counters, kept requests, the rate limit.

Read from test threads while the server's event loop writes it, hence one lock. Counters change
before the answer leaves (``begin``) or before its last byte is sent (``end``), so a client that holds
its answer always reads counts that include it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

__all__ = ["FAULT_KINDS", "MAX_REQUESTS_KEPT", "Faults", "RateLimit", "Traffic", "error_body", "fault_error"]

FAULT_KINDS = ("status", "drop", "malformed", "hang", "latency")
#: The oldest kept requests are forgotten beyond this, so a long ``simulate`` session stays small.
MAX_REQUESTS_KEPT = 10_000


class Faults:
    """Scripted faults, matched in the order added against requests to /v1 API routes."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.scripted: list[dict[str, Any]] = []

    def add(self, fault: dict[str, Any]) -> dict[str, Any]:
        """Check and keep one fault (see ``Simulator.add_fault`` for its keys); ValueError names what is wrong."""
        if not isinstance(fault, dict):
            raise ValueError("a fault is a JSON object")
        entry: dict[str, Any] = {"method": None, "path": None, "times": 1, "kind": "status"} | dict(fault)
        if entry["kind"] not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, not {entry['kind']!r}")
        if not isinstance(entry["times"], int) or entry["times"] < -1 or isinstance(entry["times"], bool):
            raise ValueError("fault times must be an integer >= -1 (-1 = forever)")
        for key in ("latency", "status"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"fault {key} must be a non-negative number")
        if entry["method"]:
            entry["method"] = str(entry["method"]).upper()
        if entry["path"]:
            path = "/" + str(entry["path"]).lstrip("/")
            entry["path"] = path[3:] if path.startswith("/v1/") else path
        with self._lock:
            self.scripted.append(entry)
        return entry

    def take(self, method: str, path: str) -> dict[str, Any] | None:
        """The first live fault matching the request, used up by one (unless times is -1)."""
        with self._lock:
            for fault in self.scripted:
                if fault["times"] == 0:
                    continue
                if fault["method"] and fault["method"] != method:
                    continue
                if fault["path"] and not (path == fault["path"] or path.startswith(fault["path"] + "/")):
                    continue
                if fault["times"] > 0:
                    fault["times"] -= 1
                return dict(fault)
        return None

    def clear(self) -> None:
        with self._lock:
            self.scripted = []


class Traffic:
    """Calls, calls per route, calls in flight (and the most at once), and the requests as received."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._period = 0
        self._request_ids = 0  # never reset: an x-request-id stays unique for the server's life
        self.clear()

    def clear(self) -> None:
        """Forget counts and requests: a new counting period starts.

        Requests still hanging from before (a test's hang fault, a client that gave up) belong to
        the old period and are no longer counted in flight, so the next test's ``max_in_flight``
        sees only its own traffic.
        """
        with self._lock:
            self._period += 1
            self.calls = 0
            self.by_route: Counter[str] = Counter()
            self.requests: list[dict[str, Any]] = []
            self.in_flight = 0
            self.max_in_flight = 0

    def begin(self, label: str, record: dict[str, Any]) -> tuple[str, int]:
        """Count a request as received and in flight: its ``x-request-id`` and counting period."""
        with self._lock:
            self.calls += 1
            self.by_route[label] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append(record)
            if len(self.requests) > MAX_REQUESTS_KEPT:
                del self.requests[:len(self.requests) - MAX_REQUESTS_KEPT]
            self._request_ids += 1
            return f"req_sim_{self._request_ids}", self._period

    def end(self, period: int) -> None:
        """Called before the answer's last byte is sent (or the connection dropped), never after."""
        with self._lock:
            if period == self._period:
                self.in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"calls": self.calls, "by_route": dict(self.by_route), "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight}

    def kept(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)


class RateLimit:
    """An optional requests-per-minute budget over a moving 60 s window (the ``limits`` library), and OpenAI's
    ``x-ratelimit-*`` headers. Tokens (a quarter of the body's bytes) are counted for the headers only."""

    def __init__(self, rpm: int | None) -> None:
        self.rpm = rpm
        self._requests = RateLimitItemPerMinute(rpm) if rpm else None
        self._tokens = RateLimitItemPerMinute(rpm * 1000) if rpm else None
        self.clear()

    def clear(self) -> None:
        storage = MemoryStorage()
        self._window = MovingWindowRateLimiter(storage)
        self._token_window = SlidingWindowCounterRateLimiter(storage)  # O(1) per hit, whatever the cost

    def admit(self, cost: int) -> float | None:
        """Take a slot; None if admitted, else the seconds until one frees."""
        if self._requests is None or self._tokens is None:
            return None
        if not self._window.hit(self._requests, "requests"):
            reset = self._window.get_window_stats(self._requests, "requests").reset_time
            return max(reset - time.time(), 0.001)
        self._token_window.hit(self._tokens, "tokens", cost=min(cost, self._tokens.amount))
        return None

    def headers(self) -> dict[str, str]:
        if self._requests is None or self._tokens is None:
            return {"x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "10000",
                    "x-ratelimit-reset-requests": "6ms", "x-ratelimit-limit-tokens": "30000000",
                    "x-ratelimit-remaining-tokens": "30000000", "x-ratelimit-reset-tokens": "0s"}
        now = time.time()
        requests = self._window.get_window_stats(self._requests, "requests")
        tokens = self._token_window.get_window_stats(self._tokens, "tokens")
        used = self._requests.amount - requests.remaining
        return {"x-ratelimit-limit-requests": str(self._requests.amount),
                "x-ratelimit-remaining-requests": str(requests.remaining),
                "x-ratelimit-reset-requests": _duration(requests.reset_time - now if used else 0.0),
                "x-ratelimit-limit-tokens": str(self._tokens.amount),
                "x-ratelimit-remaining-tokens": str(tokens.remaining),
                "x-ratelimit-reset-tokens": _duration(max(0.0, tokens.reset_time - now)
                                                      if tokens.remaining < self._tokens.amount else 0.0)}


def _duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* style: ``120ms``, ``8.6s``."""
    seconds = max(0.0, seconds)
    return f"{max(0, round(seconds * 1000))}ms" if seconds < 1 else f"{seconds:.1f}s"


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


#: status → (type, code, message) for scripted ``status`` faults; 5xx not listed are server_error.
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Simulated bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported (simulated)."),
    404: ("invalid_request_error", "not_found", "The requested resource was not found (simulated)."),
    408: ("invalid_request_error", "timeout", "Request timed out (simulated)."),
    409: ("invalid_request_error", "conflict", "Conflict (simulated)."),
    422: ("invalid_request_error", "unprocessable_entity", "Unprocessable entity (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    500: ("server_error", None, "The server had an error while processing your request (simulated)."),
    502: ("server_error", None, "Bad gateway (simulated)."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later (simulated)."),
}


def fault_error(status: int, error_code: str | None) -> dict[str, Any]:
    """The error body a scripted ``status`` fault answers with, shaped like OpenAI's for that status."""
    kind, code, message = _STATUS_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                      None, f"Simulated error {status}."))
    code = error_code or code
    if code == "insufficient_quota":
        kind = "insufficient_quota"
        message = "You exceeded your current quota, please check your plan and billing details (simulated)."
    elif status == 429 and code and code != "rate_limit_exceeded":
        kind = code
    return error_body(message, kind, None, code)
