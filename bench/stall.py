"""The row-4 stall, reproduced without Celery: ``python -m bench.stall [REQUESTS] [THREADS] [KEEPALIVE]``.

Threads post to the responder (100 ms answers) through one ``httpx.Client`` whose pool keeps
``KEEPALIVE`` idle connections (the pack's client kept 64 before issue 15). Every exchange is timed on
the client; the responder counts what it received and answered, and the kernel's TCP counters
(``/proc/net/netstat``, ``/proc/net/snmp``) are read before and after, so a stalled request can be
placed: lost before the server's HTTP layer saw it (a listen-queue overflow), or answered late.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time
from pathlib import Path

import httpx

from bench.common import responder, summary

COUNTERS = {"TcpExt": ("ListenOverflows", "ListenDrops", "TCPTimeouts", "TCPSynRetrans", "TCPAbortOnTimeout"),
            "Tcp": ("ActiveOpens", "RetransSegs")}


def tcp_counters() -> dict[str, int]:
    """Selected kernel TCP counters (the network namespace's, so other traffic adds to them)."""
    values: dict[str, int] = {}
    for name in ("/proc/net/netstat", "/proc/net/snmp"):
        lines = Path(name).read_text().splitlines()
        for head, row in zip(lines[::2], lines[1::2], strict=False):
            prefix, *keys = head.split()
            numbers = row.split()[1:]
            for key, number in zip(keys, numbers, strict=False):
                if key in COUNTERS.get(prefix.rstrip(":"), ()):
                    values[f"{prefix.rstrip(':')}.{key}"] = int(number)
    return values


def main(requests: int = 10_000, threads: int = 200, keepalive: int = 64, read_timeout: float = 20.0) -> None:
    with responder(delay=0.1) as url:
        client = httpx.Client(base_url=url + "/", timeout=httpx.Timeout(10.0, read=read_timeout),
                              limits=httpx.Limits(max_connections=256, max_keepalive_connections=keepalive))
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

        def one(_: int) -> tuple[float, str]:
            started = time.monotonic()
            try:
                client.post("chat/completions", json=body).raise_for_status()
                outcome = "ok"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            return time.monotonic() - started, outcome

        before = tcp_counters()
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.monotonic() - started
        after = tcp_counters()
        served = httpx.get(url + "/_stats").json()
        client.close()
    durations = [d for d, _ in results]
    slow = sorted(d for d in durations if d > 1.0)
    outcomes: dict[str, int] = {}
    for _, outcome in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    stats = summary(durations)
    print(json.dumps({"requests": requests, "threads": threads, "keepalive": keepalive, "wall_s": round(wall, 1),
                      "rate": round(requests / wall), "p50_ms": round(stats["median"] * 1000, 1),
                      "max_s": round(stats["max"], 2), "over_1s": len(slow),
                      "slowest": [round(s, 2) for s in slow[-5:]],
                      "outcomes": outcomes, "responder_answered": served["calls"],
                      "tcp": {k: after[k] - before.get(k, 0) for k in after}}))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(int(a) for a in args[:3]), *(float(a) for a in args[3:4]))
