"""``make bench``: every row of docs/performance.md, each with its reference measured in the same run.

``python -m bench`` runs them all; ``python -m bench call step drain latency a b d sequence fanout budget``
runs a subset; ``BENCH_SCALE=0.1`` shrinks the item counts for a quick look. Rows a and b run each
candidate I/O model of issue 15 (``BENCH_EXECUTORS`` picks some: "event loop (chosen)", "threads",
"gevent pool"), c is read from row a, d runs the chosen one only.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import REPO, Worker, ms, pack_env, redis_server, responder, summary, table, wait_ready

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
MESSAGES = [{"role": "system", "content": "Classify the ticket."},
            {"role": "user", "content": "The VPN drops every ten minutes since this morning."}]


def scaled(n: int) -> int:
    return max(10, int(n * SCALE))


# ---------------------------------------------------------------- 1: one call in-process


def bench_call(url: str, rounds: int = 7, calls: int = 300) -> None:
    import httpx
    import openai

    import actions
    from integration.model import Integration

    integration = Integration(name="bench", base_url=url, auth={"placement": "none"}, max_retries=0)
    inputs = {"model": "gpt-4o-mini", "temperature": "0.2", "messages": MESSAGES}
    body = {"model": "gpt-4o-mini", "temperature": 0.2, "messages": MESSAGES}
    raw = httpx.Client(base_url=url + "/", headers={"Authorization": "Bearer sk-bench"})
    sdk = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)

    def ours() -> None:
        actions.execute("create_chat_completion", inputs, integration).record()

    def plain() -> None:
        raw.post("chat/completions", json=body).json()

    def official() -> None:
        sdk.chat.completions.create(model="gpt-4o-mini", temperature=0.2, messages=MESSAGES)  # type: ignore[arg-type]

    samples: dict[str, list[float]] = {"pack": [], "httpx": [], "sdk": []}
    for fn in (ours, plain, official):  # warm-up: imports, connection pools, validator caches
        for _ in range(50):
            fn()
    for _ in range(rounds):
        for name, fn in (("pack", ours), ("httpx", plain), ("sdk", official)):
            for _ in range(calls):
                started = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - started)
    stats = {k: summary(v) for k, v in samples.items()}
    rows = [[name, ms(s["median"]), ms(s["p99"]), f"{ms(s['min'])} – {ms(s['max'])}",
             f"{s['median'] / stats['httpx']['median']:.2f}×", f"{s['median'] / stats['sdk']['median']:.2f}×"]
            for name, s in stats.items()]
    table(f"1. one create_chat_completion in-process ({rounds}×{calls} calls each, interleaved rounds)",
          ["client", "median", "p99", "min – max", "÷ raw httpx", "÷ openai SDK"], rows)
    print(f"targets: pack ≤ 1.10× raw httpx ({stats['pack']['median'] / stats['httpx']['median']:.2f}×), "
          f"≤ 0.70× SDK ({stats['pack']['median'] / stats['sdk']['median']:.2f}×)")


# ---------------------------------------------------------------- worker-side helpers


def _workflow(text: str) -> Any:
    from workers.workflow import parse_workflow

    return parse_workflow(text, "bench.yaml")


def _one_step() -> Any:
    return _workflow("""
name: one-step
steps:
  - id: call
    action: create_chat_completion
    input: {model: gpt-4o-mini, messages: [{role: user, content: hello}]}
""")


def _fanout(concurrency: int, integration: str | None = None) -> Any:
    extra = f"\n    integration: {integration}" if integration else ""
    return _workflow(f"""
name: fanout
inputs:
  records: {{type: array}}
steps:
  - id: classify
    action: create_chat_completion
    with_items: "{{{{ inputs.records }}}}"
    concurrency: {concurrency}{extra}
    input: {{model: gpt-4o-mini, messages: [{{role: user, content: "{{{{ item }}}}"}}]}}
""")


def _sequence(steps: int) -> Any:
    body = "\n".join(f"""  - id: s{i}
    action: create_moderation
    input: {{input: "step {i}"}}""" for i in range(steps))
    return _workflow(f"name: sequence\nsteps:\n{body}\n")


def _finish(engine: Any, run_id: str, timeout: float = 3600, poll: float = 0.0005) -> float:
    deadline = time.monotonic() + timeout
    while not engine.store.flag(run_id, "finished"):
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not finish")
        time.sleep(poll)
    return time.monotonic()


def _drain_noop(count: int) -> float:
    """Celery's own floor: ``count`` no-op tasks (each counts itself in Redis) through the same worker."""
    import workers.app as worker_app

    counter = f"bench:drain:{time.time_ns()}"
    started = time.monotonic()
    for _ in range(count):
        worker_app.ping.apply_async(args=[counter])
    while int(worker_app.kv().get(counter) or 0) < count:
        time.sleep(0.005)
    return count / (time.monotonic() - started)


class Stack:
    """redis-server + responder + integration + worker(s), with this process configured like them."""

    def __init__(self, broker: str, url: str, workers: int = 1, concurrency: int = 16, pool: str = "threads",
                 slot_width: int | None = None, env: dict[str, str] | None = None) -> None:
        from integration.model import Integration
        from integration.store import IntegrationStore

        self.home = tempfile.mkdtemp(prefix="bench-home-")
        extra = {"OPENAI_PACK_SLOT_WIDTH": str(slot_width)} if slot_width else {}
        extra |= env or {}
        self.env = pack_env(broker, self.home, OPENAI_PACK_VISIBILITY_TIMEOUT="600", **extra)
        store = IntegrationStore(path=__import__("pathlib").Path(self.home) / "integrations.json")
        store.add(Integration(name="bench", base_url=url, auth={"placement": "none"}, max_retries=0,
                              timeout={"read": 60}), make_default=True)
        self.store = store
        for key, value in self.env.items():
            if key.startswith("OPENAI_PACK"):
                os.environ[key] = value
        import workers.app as worker_app

        worker_app.reconfigure()
        self.app = worker_app
        self.workers = [Worker(self.env, concurrency, f"bench{i}", pool) for i in range(workers)]
        wait_ready(worker_app)

    @property
    def engine(self) -> Any:
        return self.app.engine()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


# ---------------------------------------------------------------- 2: one step through a worker


def bench_step(broker: str, url: str, runs: int = 600) -> None:
    import workers.app as worker_app

    stack = Stack(broker, url, concurrency=8)
    try:
        workflow = _one_step()
        engine = stack.engine
        step: list[float] = []
        noop: list[float] = []
        for _ in range(20):
            _finish(engine, engine.start_run(workflow, {}, trigger={"type": "bench"})[0])
        for i in range(runs):
            started = time.monotonic()
            run_id, _ = engine.start_run(workflow, {}, trigger={"type": "bench"})
            step.append(_finish(engine, run_id) - started)
            counter = f"bench:noop:{i}:{time.time_ns()}"
            started = time.monotonic()
            worker_app.ping.apply_async(args=[counter])
            while not worker_app.kv().get(counter):
                time.sleep(0.0005)
            noop.append(time.monotonic() - started)
    finally:
        stack.stop()
    s, n = summary(step), summary(noop)
    table(f"2. one step through a real worker and Redis, dispatch to recorded result ({runs} runs, interleaved)",
          ["path", "p50", "p99", "min – max"],
          [["workflow step (chat completion)", ms(s["median"]), ms(s["p99"]), f"{ms(s['min'])} – {ms(s['max'])}"],
           ["no-op Celery task round trip", ms(n["median"]), ms(n["p99"]), f"{ms(n['min'])} – {ms(n['max'])}"],
           ["ratio", f"{s['median'] / n['median']:.2f}×", f"{s['p99'] / n['p99']:.2f}×", ""]])
    print("targets: p50 ≤ 2.0×, p99 ≤ 2.5×")


# ---------------------------------------------------------------- 3 and 4: 10,000-item fan-out


def bench_drain(broker: str, url: str, items: int, concurrency: int, label: str, latency: float) -> float:
    stack = Stack(broker, url, concurrency=concurrency, slot_width=1)
    try:
        noop_rate = _drain_noop(items)
        engine = stack.engine
        started = time.monotonic()
        run_id, _ = engine.start_run(_fanout(concurrency), {"records": [f"r{i}" for i in range(items)]},
                                     trigger={"type": "bench"})
        rate = items / (_finish(engine, run_id, poll=0.01) - started)
        record = engine.store.step(run_id, "classify")
        if record.get("error"):
            print(f"failed items: {record['error']}")
    finally:
        stack.stop()
    reference = noop_rate if not latency else min(noop_rate, concurrency / latency)
    table(f"{label}: {items:,}-item with_items, one worker (a step message per chain on {concurrency} threads), "
          f"server answering after {latency * 1000:.0f} ms",
          ["path", "items/s", "share of reference"],
          [["no-op Celery drain", f"{noop_rate:,.0f}", ""],
           ["reference" + (f" = min(no-op, {concurrency}/{latency:g}s)" if latency else " = no-op drain"),
            f"{reference:,.0f}", "100%"],
           ["with_items step", f"{rate:,.0f}", f"{rate / reference:.0%}"]])
    print(f"items: {record['items']}; target ≥ {'60' if latency else '70'}% of the reference")
    return noop_rate


# ---------------------------------------------------------------- a-d: calls in flight (issue 15)

#: how each candidate I/O model runs a fan-out of ``concurrency`` chains in one worker process
EXECUTORS: dict[str, dict[str, Any]] = {
    "event loop (chosen)": {"pool": "threads", "slot_width": 250, "threads": lambda c: max(4, -(-c // 250) + 2)},
    "event loop without gate": {"pool": "threads", "slot_width": 250, "threads": lambda c: max(4, -(-c // 250) + 2),
                            "env": {"OPENAI_PACK_INFLIGHT_WORKING": "0"}},
    "eight event loops": {"pool": "threads", "slot_width": 250, "threads": lambda c: max(4, -(-c // 250) + 2),
                          "env": {"OPENAI_PACK_INFLIGHT_LOOPS": "8"}},
    "threads": {"pool": "threads", "slot_width": 1, "threads": lambda c: c + 2},
    "gevent pool": {"pool": "gevent", "slot_width": 1, "threads": lambda c: c + 2},
}


def bench_inflight(broker: str, url: str, *, items: int, concurrency: int, executor: str,
                   workers: int = 1, runs: int = 1) -> dict[str, Any]:
    """One wide fan-out: rate, the no-op drain on the same worker(s), RSS growth and calls in flight."""
    import httpx

    shape = EXECUTORS[executor]
    threads = shape["threads"](concurrency * runs // workers)
    stack = Stack(broker, url, workers=workers, concurrency=threads, pool=shape["pool"],
                  slot_width=shape["slot_width"], env=shape.get("env"))
    try:
        noop_rate = _drain_noop(scaled(5_000)) if workers == 1 else float("nan")
        engine = stack.engine
        before = [worker.rss_mb() for worker in stack.workers]
        peak = list(before)
        cpu_before = sum(worker.cpu_seconds() for worker in stack.workers)
        started = time.monotonic()
        run_ids = [engine.start_run(_fanout(concurrency), {"records": [f"r{i}" for i in range(items // runs)]},
                                    trigger={"type": "bench"})[0] for _ in range(runs)]
        # bounded: a run that stalls is reported as such instead of holding the benchmark forever
        deadline = started + max(180.0, 20 * items / concurrency)
        while not all(engine.store.flag(run_id, "finished") for run_id in run_ids):
            if time.monotonic() > deadline:
                print(f"{executor}: STALLED — the run did not finish within {deadline - started:.0f} s")
                break
            time.sleep(0.05)
            peak = [max(p, worker.rss_mb()) for p, worker in zip(peak, stack.workers, strict=True)]
        elapsed = time.monotonic() - started
        cpu = sum(worker.cpu_seconds() for worker in stack.workers) - cpu_before
        steps = [engine.store.step(run_id, "classify") or {} for run_id in run_ids]
        for step in steps:
            if step.get("error"):
                print(f"failed items: {step['error']['message'][:300]}")
        hwm = [w.peak_rss_mb() for w in stack.workers]
        record = {"items": {k: sum((step.get("items") or {}).get(k, 0) for step in steps)
                            for k in ("total", "succeeded", "failed")}}
        # a stalled run's unfinished items count as failed in the table
        record["items"]["failed"] = items - record["items"]["succeeded"]
        served = httpx.get(url + "/_stats").json()
    finally:
        stack.stop()
    growth = sum(p - b for p, b in zip(peak, before, strict=True))
    return {"executor": executor, "threads": threads, "rate": items / elapsed, "noop": noop_rate,
            "items": record["items"], "max_in_flight": served["max_in_flight"],
            "kb_per_call": growth * 1024 / max(1, served["max_in_flight"]), "rss_before": before,
            "cpu_ms_per_item": cpu * 1000 / items, "cpu_share": cpu / elapsed / len(stack.workers),
            "rss_peak": peak, "peak_hwm": hwm, "seconds": elapsed}


def _inflight_rows(results: list[dict[str, Any]], cap: float) -> list[list[str]]:
    rows = []
    for r in results:
        reference = min(r["noop"], cap)
        rows.append([r["executor"], str(r["threads"]), f"{r['rate']:,.0f}", f"{r['noop']:,.0f}",
                     f"{r['rate'] / reference:.0%}", f"{r['max_in_flight']:,}", f"{r['kb_per_call']:.1f} KB",
                     f"{max(r['rss_peak']):.0f} MB", f"{r['cpu_ms_per_item']:.2f} ms ({r['cpu_share']:.0%})",
                     f"{r['items']['failed']}"])
    return rows


INFLIGHT_HEADER = ["executor", "pool threads", "items/s", "no-op drain/s", "share of reference", "max in flight",
                   "RSS growth per call in flight", "peak RSS", "worker CPU per item (busy)", "failed"]


def _inflight_table(broker: str, executors: list[str], *, title: str, items: int, concurrency: int,
                    latency: float, target: str) -> None:
    """One row of issue 15: every executor on the same fan-out, each with its own responder and reference."""
    results = []
    for executor in executors:
        with responder(delay=latency) as url:
            results.append(bench_inflight(broker, url, items=items, concurrency=concurrency, executor=executor))
    table(f"{title}. {items:,}-item with_items, answers after {latency * 1000:,.0f} ms, concurrency {concurrency}, "
          f"one worker process; reference = min(no-op drain, {concurrency / latency:,.0f}/s)", INFLIGHT_HEADER,
          _inflight_rows(results, concurrency / latency))
    print(target)


def bench_rows_a_c(broker: str, executors: list[str]) -> None:
    _inflight_table(broker, executors, title="a/c", items=scaled(20_000), concurrency=1000, latency=1.0,
                    target="targets: a ≥ 80% of the reference; c ≤ 50 KB per call in flight")


def bench_row_b(broker: str, executors: list[str]) -> None:
    _inflight_table(broker, executors, title="b", items=scaled(10_000), concurrency=200, latency=0.1,
                    target="target: ≥ 70% of the reference, no failed item (no stall)")


def bench_row_d(broker: str) -> None:
    """A step's concurrency stops at 1,000, so 5,000 in flight are five such fan-outs at once."""
    items, concurrency, runs = max(5_000, scaled(10_000)), 1000, 5
    with responder(delay=10.0) as url:
        r = bench_inflight(broker, url, items=items, concurrency=concurrency, executor="event loop (chosen)",
                           workers=2, runs=runs)
    concurrency *= runs
    table(f"d. {runs} runs of {items // runs:,}-item with_items at concurrency 1,000 at once, answers after 10 s, "
          f"two workers",
          ["measure", "value"],
          [["items", json.dumps(r["items"])], ["max calls in flight at the server", f"{r['max_in_flight']:,}"],
           ["wall time", f"{r['seconds']:.1f} s ({r['rate']:,.0f} items/s; ideal {concurrency / 10:,.0f}/s)"],
           ["peak RSS per worker", ", ".join(f"{m:.0f} MB" for m in r["peak_hwm"])],
           ["RSS growth per call in flight", f"{r['kb_per_call']:.1f} KB"]])
    print("target: every item succeeds; peak RSS reported")


# ---------------------------------------------------------------- 5: sequential workflows


def bench_sequence(broker: str, url: str, long: int = 500, short: int = 10, repeats: int = 3) -> None:
    stack = Stack(broker, url, concurrency=8)
    try:
        engine = stack.engine
        per_step: dict[int, list[float]] = {long: [], short: []}
        for _ in range(repeats):
            for steps in (short, long):
                workflow = _sequence(steps)
                started = time.monotonic()
                run_id, _ = engine.start_run(workflow, {}, trigger={"type": "bench"})
                per_step[steps].append((_finish(engine, run_id, poll=0.002) - started) / steps)
    finally:
        stack.stop()
    a, b = summary(per_step[long]), summary(per_step[short])
    table(f"5. per-step cost of a sequential workflow (median of {repeats})", ["workflow", "per step", "ratio"],
          [[f"{short} steps", ms(b["median"]), "1.00×"], [f"{long} steps", ms(a["median"]),
                                                           f"{a['median'] / b['median']:.2f}×"]])
    print("target: ≤ 1.5×")


# ---------------------------------------------------------------- 6: 100,000-item fan-out memory


def fanout_dispatch(items: int, concurrency: int) -> None:
    """Run in its own process (``python -m bench fanout-dispatch N C``): start the run, wait, report RSS."""
    import workers.app as worker_app

    worker_app.reconfigure()
    engine = worker_app.engine()
    started = time.monotonic()
    run_id, _ = engine.start_run(_fanout(concurrency), {"records": [f"record-{i:06d}" for i in range(items)]},
                                 trigger={"type": "bench"})
    finished = _finish(engine, run_id, poll=0.05)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"run_id": run_id, "seconds": finished - started, "rss_mb": rss}))


def bench_fanout(broker: str, url: str, items: int, concurrency: int = 32, workers: int = 2) -> None:
    import redis

    stack = Stack(broker, url, workers=workers, concurrency=concurrency)
    client = redis.Redis.from_url(broker)
    try:
        before = int(client.info("memory")["used_memory"])
        out = subprocess.run([sys.executable, "-m", "bench", "fanout-dispatch", str(items), str(concurrency * workers)],
                             env=stack.env, cwd=REPO, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        after = int(client.info("memory")["used_memory"])
        worker_rss = max(worker.peak_rss_mb() for worker in stack.workers)
    finally:
        stack.stop()
    table(f"6. a {items:,}-item fan-out ({workers} workers × {concurrency} threads)", ["measure", "value", "target"],
          [["dispatching process peak RSS", f"{result['rss_mb']:.0f} MB", "≤ 300 MB"],
           ["worker peak RSS (largest of the workers)", f"{worker_rss:.0f} MB", "≤ 300 MB"],
           ["Redis memory per finished item", f"{(after - before) / items:,.0f} bytes", "reported"],
           ["wall time", f"{result['seconds']:.1f} s ({items / result['seconds']:,.0f} items/s)", ""]])


# ---------------------------------------------------------------- 7: rate budget


def bench_budget(broker: str, url: str, items: int, rpm: int = 600) -> None:
    import httpx

    from integration.model import Integration

    stack = Stack(broker, url, workers=2, concurrency=16)
    try:
        stack.store.add(Integration(name="budgeted", base_url=url, auth={"placement": "none"}, max_retries=0,
                                    rate_limits={"requests_per_minute": rpm}))
        engine = stack.engine
        started = time.monotonic()
        run_id, _ = engine.start_run(_fanout(32, "budgeted"), {"records": [str(i) for i in range(items)]},
                                     trigger={"type": "bench"})
        elapsed = _finish(engine, run_id, poll=0.05) - started
        step = engine.store.step(run_id, "classify")
        stats = httpx.get(url + "/_stats").json()
    finally:
        stack.stop()
    rate = items / elapsed * 60
    table(f"7. {items:,} items under a {rpm}/minute budget enforced by the server, two workers",
          ["measure", "value"],
          [["wall time", f"{elapsed:.1f} s"], ["achieved rate", f"{rate:,.0f}/min = {rate / rpm:.0%} of the budget"],
           ["failed steps", str(step["items"]["failed"])], ["429 answers from the server", str(stats["limited"])]])
    print("target: ≥ 90% of the budget, no failed step")


# ---------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    if argv[:1] == ["fanout-dispatch"]:
        fanout_dispatch(int(argv[1]), int(argv[2]))
        return 0
    rows = {"call", "step", "drain", "latency", "a", "b", "d", "sequence", "fanout", "budget"}
    wanted = set(argv) or rows
    executors = os.environ.get("BENCH_EXECUTORS", ",".join(EXECUTORS)).split(",")
    unknown = wanted - rows - {"alternatives"}
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if not os.environ.get("BENCH_QUIET"):
        print(f"# openai-pack benchmarks — {time.strftime('%Y-%m-%d %H:%M')} — {platform.platform()}, "
              f"Python {platform.python_version()}, {os.cpu_count()} CPUs; BENCH_SCALE={SCALE:g}")
        print("Loopback server: bench/responder.py (asyncio, canned answers, own process), not the simulator.")
    started = time.monotonic()
    background: subprocess.Popen[str] | None = None
    alongside = "budget" in wanted and len(wanted) > 1
    if alongside:
        wanted.discard("budget")

    def start_budget() -> subprocess.Popen[str]:
        """The budget row is ~200 s of mostly waiting (10 requests/s): it runs alongside the throughput
        rows, in its own process with its own Redis, and prints at the end."""
        return subprocess.Popen([sys.executable, "-m", "bench", "budget"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "BENCH_QUIET": "1"})

    with redis_server() as broker:
        if "call" in wanted:
            with responder() as url:
                bench_call(url)
        if "step" in wanted:
            with responder() as url:
                bench_step(broker, url)
        if alongside:  # after the latency rows, which it would disturb
            background = start_budget()
        if "drain" in wanted:
            with responder() as url:
                bench_drain(broker, url, scaled(10_000), 16, "3", 0.0)
        if "latency" in wanted:
            with responder(delay=0.1) as url:
                bench_drain(broker, url, scaled(10_000), 200, "4", 0.1)
        if "a" in wanted:
            bench_rows_a_c(broker, executors)
        if "b" in wanted:
            bench_row_b(broker, executors)
        if "d" in wanted:
            bench_row_d(broker)
        if "sequence" in wanted:
            with responder() as url:
                bench_sequence(broker, url, long=max(20, int(500 * min(1.0, SCALE * 2))))
        if "fanout" in wanted:
            with responder() as url:
                bench_fanout(broker, url, scaled(100_000))
        if "budget" in wanted:
            with responder(rpm=600) as url:
                bench_budget(broker, url, scaled(2_000))
    if background is not None:
        print(background.communicate()[0], end="")
    if not os.environ.get("BENCH_QUIET"):
        print(f"\ntotal bench time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
