"""The fault suite: real redis-server, real worker processes, the loopback simulator playing faults.

Each scenario prints the figure it measured (run with ``-s`` to see them; docs/reliability.md
quotes them).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actions.simulator import Simulator
from integration.model import Integration
from integration.store import IntegrationStore
from tests.conftest import CANARY_KEY, WorkerProcess, broker_of_its_own, run_cli
from workers.workflow import parse_workflow

pytestmark = pytest.mark.timeout(300)


def _wait(pack: Any, text: str, inputs: dict[str, Any] | None = None, timeout: float = 90) -> dict[str, Any]:
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(text, "fault.yaml"), inputs or {}, trigger={"type": "manual"})
    engine.wait(run_id, timeout)
    record = engine.store.record(run_id)
    assert record is not None
    return record


def _one_step(action: str, inputs: str, *, retries: int | None = None, timeout: float | None = None,
              integration: str | None = None) -> str:
    extra = ""
    if retries is not None:
        extra += f"\n    retries: {retries}"
    if timeout is not None:
        extra += f"\n    timeout: {timeout}"
    if integration is not None:
        extra += f"\n    integration: {integration}"
    return f"""
name: one-step
steps:
  - id: call
    action: {action}
    input: {inputs}{extra}
"""


CHAT = '{model: gpt-4o-mini, messages: [{role: user, content: "hello"}]}'
MODERATION = '{input: "hello"}'


# 1 ---------------------------------------------------------------- 429 with Retry-After


@pytest.mark.parametrize(("headers", "delay"), [
    ({"retry-after-ms": "800"}, 0.8),      # below the inline limit (2 s in tests): slept in the client
    ({"Retry-After": "3"}, 3.0),           # above it: the step is re-queued with a countdown, not slept
])
def test_1_rate_limited_step_waits_at_least_retry_after_then_succeeds(pack: Any, simulator: Simulator,
                                                                     headers: dict[str, str], delay: float) -> None:
    simulator.add_fault({"path": "/chat/completions", "kind": "status", "status": 429, "times": 1,
                         "headers": headers, "error_code": "rate_limit_exceeded"})
    record = _wait(pack, _one_step("create_chat_completion", CHAT))
    assert record["status"] == "succeeded", record["error"]
    assert simulator.calls == 2
    assert record["totals"]["duration"] >= delay
    print(f"\n[scenario 1] {headers}: run took {record['totals']['duration']:.2f}s (>= {delay}s), 2 calls")


# 2 ---------------------------------------------------------------- non-retryable errors


@pytest.mark.parametrize(("status", "error_code", "code"), [
    (429, "insufficient_quota", "insufficient_quota"), (400, None, "bad_request"), (401, "invalid_api_key", None),
    (403, None, None), (404, None, "not_found"), (422, None, None),
])
def test_2_non_retryable_errors_cost_exactly_one_call(pack: Any, simulator: Simulator, status: int,
                                                      error_code: str | None, code: str | None) -> None:
    simulator.add_fault({"kind": "status", "status": status, "error_code": error_code, "times": -1})
    record = _wait(pack, _one_step("create_chat_completion", CHAT))
    assert record["status"] == "failed"
    error = record["steps"][0]["error"]
    assert error["status"] == status and error["retryable"] is False
    if code:
        assert error["code"] == code
    assert simulator.calls == 1
    if status == 401:
        health = pack.engine().integration_health("sim")
        assert health is not None and health["ok"] is False
        pack.engine().store.clear_integration_health("sim")


# 3 ---------------------------------------------------------------- 5xx


def test_3_server_errors_retry_then_succeed_or_fail_at_the_limit(pack: Any, simulator: Simulator) -> None:
    simulator.add_fault({"kind": "status", "status": 503, "times": 2, "headers": {"retry-after-ms": "20"}})
    record = _wait(pack, _one_step("create_chat_completion", CHAT))
    assert record["status"] == "succeeded" and record["steps"][0]["attempts"] == 3
    simulator.reset()
    simulator.add_fault({"kind": "status", "status": 500, "times": -1, "headers": {"retry-after-ms": "20"}})
    record = _wait(pack, _one_step("create_chat_completion", CHAT, retries=4))
    step = record["steps"][0]
    assert record["status"] == "failed" and step["error"]["code"] == "server_error"
    assert simulator.calls == 5 and step["attempts"] == 5  # retries: 4 → 5 attempts, no Celery-level multiplying


# 4 ---------------------------------------------------------------- timeout on a paid POST


def test_4_timed_out_paid_call_is_outcome_unknown_and_sent_once(pack: Any, simulator: Simulator) -> None:
    simulator.add_fault({"path": "/images/generations", "kind": "hang", "latency": 3, "times": -1})
    record = _wait(pack, _one_step("create_image", '{prompt: "a red fox"}', timeout=0.5, retries=3))
    step = record["steps"][0]
    assert record["status"] == "failed"
    assert step["error"]["code"] == "outcome_unknown", step["error"]
    time.sleep(0.5)
    assert simulator.calls_by_route() == {"POST /images/generations": 1}
    print(f"\n[scenario 4] paid POST timed out: {simulator.calls} call at the server, step {step['error']['code']}")


# 5 ---------------------------------------------------------------- SIGKILL mid fan-out


@pytest.fixture
def isolated_broker(worker_env: dict[str, str], redis_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        dict[str, str]]:
    """Workers of their own on another Redis database, so the session worker takes none of these tasks."""
    yield from broker_of_its_own(worker_env, redis_server, monkeypatch, db=3)


FANOUT = """
name: fanout
inputs:
  records: {type: array, items: {type: string}}
steps:
  - id: classify
    action: create_chat_completion
    with_items: "{{ inputs.records }}"
    concurrency: 8
    input:
      model: gpt-4o-mini
      messages: [{role: user, content: "item {{ index }}"}]
"""


def test_5_sigkill_mid_fanout_loses_nothing_and_pays_once(isolated_broker: dict[str, str],
                                                          simulator: Simulator) -> None:
    import workers.app

    simulator.add_fault({"kind": "latency", "latency": 0.05, "times": -1})
    first = WorkerProcess(isolated_broker, concurrency=8, name="doomed")
    engine = workers.app.engine()
    run_id, _ = engine.start_run(parse_workflow(FANOUT, "fanout.yaml"),
                                 {"records": [str(i) for i in range(500)]}, trigger={"type": "manual"})
    deadline = time.monotonic() + 60
    while engine.store.counter(run_id, "done:classify") < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    done_at_kill = engine.store.counter(run_id, "done:classify")
    first.kill()
    second = WorkerProcess(isolated_broker, concurrency=8, name="rescuer")
    try:
        header = engine.wait(run_id, 120)
    finally:
        second.stop()
    assert header is not None and header["status"] in ("succeeded", "failed"), header
    record = engine.store.record(run_id)
    assert record is not None
    items = record["steps"][0]["item_results"]
    assert len(items) == 500
    contents = Counter(json.dumps(r["body"]["messages"]) for r in simulator.requests
                       if r["path"] == "/v1/chat/completions")
    worst = max(contents.values())
    unknown = [i for i, r in enumerate(items) if r["status"] != "succeeded"]
    assert worst == 1, "a paid call was made twice"
    assert all(items[i]["error"]["code"] == "outcome_unknown" for i in unknown)
    assert len(unknown) <= 8  # only what was in flight at the kill
    assert len(contents) == 500 - len(unknown) or len(contents) <= 500
    print(f"\n[scenario 5] killed at {done_at_kill}/500 items; after recovery {500 - len(unknown)} succeeded, "
          f"{len(unknown)} outcome unknown (in flight at the kill), max calls per item = {worst}, "
          f"calls at server = {sum(contents.values())}")


# 8 ---------------------------------------------------------------- shared rate budget


def test_8_shared_rate_budget_over_two_workers(isolated_broker: dict[str, str], simulator_session: Simulator,
                                               tmp_path: Path) -> None:
    """Scaled: 3,000 requests/minute (50/s) for 1,000 items, so the suite stays fast; bench/ runs 600/min."""
    import workers.app

    rpm = 3000
    with Simulator(port=0, rate_limit_rpm=rpm) as limited:
        store = IntegrationStore(path=Path(isolated_broker["OPENAI_PACK_HOME"]) / "integrations.json")
        store.add(Integration(name="budgeted", base_url=limited.url, auth={"placement": "none"},
                              rate_limits={"requests_per_minute": rpm}, max_retries=0), replace=True)
        text = FANOUT.replace("concurrency: 8", "concurrency: 40").replace(
            "    action: create_chat_completion", "    action: create_chat_completion\n    integration: budgeted")
        workers_ = [WorkerProcess(isolated_broker, concurrency=20, name=f"budget{i}") for i in range(2)]
        try:
            engine = workers.app.engine()
            started = time.monotonic()
            run_id, _ = engine.start_run(parse_workflow(text, "budget.yaml"),
                                         {"records": [str(i) for i in range(1000)]}, trigger={"type": "manual"})
            header = engine.wait(run_id, 120)
            elapsed = time.monotonic() - started
        finally:
            for worker in workers_:
                worker.stop()
        record = engine.store.record(run_id)
        assert header is not None and record is not None
        failed = record["steps"][0]["items"]["failed"]
        rate = limited.calls / elapsed * 60
        print(f"\n[scenario 8] {limited.calls} calls in {elapsed:.1f}s over 2 workers = {rate:.0f}/min "
              f"({rate / rpm:.0%} of the {rpm}/min budget), failed steps {failed}")
        errors = [i.get("error") for i in record["steps"][0]["item_results"] if i.get("status") != "succeeded"]
        assert failed == 0 and header["status"] == "succeeded", errors[:3]
        assert limited.calls == 1000  # no 429 from the server: the budget held
        assert 0.9 * rpm <= rate <= 1.1 * rpm


# 9 ---------------------------------------------------------------- leak canary


def test_9_leak_canary_in_logs_redis_store_and_cli(worker_env: dict[str, str], redis_server: str,
                                                   pack: Any, tmp_path: Path) -> None:
    hook_secret = "whsec-canary-HOOK-7d1e0c9b3a"
    env = dict(worker_env) | {"TEST_WORKER_LOGLEVEL": "DEBUG", "CANARY_HOOK_SECRET": hook_secret}
    with Simulator(port=0, api_key=CANARY_KEY, auth={"placement": "bearer"}) as keyed:
        store = IntegrationStore(path=Path(worker_env["OPENAI_PACK_HOME"]) / "integrations.json")
        store.add(Integration(name="canary", api_key=CANARY_KEY, base_url=keyed.url, max_retries=1,
                              timeout={"connect": 1, "read": 0.5}), replace=True)
        store.add(Integration(name="canary-wrong", api_key=CANARY_KEY[::-1], base_url=keyed.url), replace=True)
        worker = WorkerProcess(env, concurrency=4, name="canary")
        try:
            for fault in ({"kind": "status", "status": 500, "times": -1, "headers": {"retry-after-ms": "5"}},
                          {"kind": "status", "status": 400, "times": 1}, {"kind": "drop", "times": 1},
                          {"kind": "hang", "latency": 1, "times": 1}, {"kind": "malformed", "times": 1}, None):
                keyed.reset()
                if fault:
                    keyed.add_fault(fault)
                _wait(pack, _one_step("create_chat_completion", CHAT, integration="canary"))
            record = _wait(pack, _one_step("list_models", "{}", integration="canary-wrong"))
            assert record["status"] == "failed"
            cli = run_cli(env, "runs", "list", "--json")
            shown = [run_cli(env, "runs", "show", r["id"], "--json").stdout for r in json.loads(cli.stdout)[:8]]
        finally:
            worker.stop()
    dump = []
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value: Any = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                      "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda k: b"")(key)
        dump.append(f"{key!r} {value!r}")
    home = Path(worker_env["OPENAI_PACK_HOME"])
    files = "\n".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file() and p.suffix != ".key")
    haystack = "\n".join([worker.output, cli.stdout, cli.stderr, *shown, *dump, files])
    assert "DEBUG" in worker.output and len(dump) > 5
    for secret in (CANARY_KEY, CANARY_KEY[::-1], hook_secret):
        assert secret not in haystack, f"secret found ({haystack.index(secret)})"
    print(f"\n[scenario 9] scanned {len(worker.lines)} log lines, {len(dump)} Redis keys, "
          f"{len(files)} bytes of store files: 0 occurrences of the key or webhook secret")
    assert os.environ.get("OPENAI_API_KEY") is None


# 6 ---------------------------------------------------------------- Redis restarted mid-workflow


class RestartableRedis:
    """A redis-server with an append-only file, so a restart keeps the queue and the run state."""

    def __init__(self, workdir: Path) -> None:
        import shutil
        import socket

        self.binary = shutil.which("redis-server") or "redis-server"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Any = None

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return
            except redis.exceptions.RedisError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def test_6_redis_restart_mid_workflow(worker_env: dict[str, str], simulator: Simulator, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    import workers.app
    from tests.fixtures.hooks import ECHO, SECRET, Server
    from tests.fixtures.hooks import post_hook as _post
    from workers.triggers.webhooks import create_app

    server = RestartableRedis(tmp_path)
    server.start()
    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": server.url, "OPENAI_PACK_VISIBILITY_TIMEOUT": "6"}
    for key, value in env.items():
        if key.startswith("OPENAI_PACK"):
            monkeypatch.setenv(key, value)
    workers.app.reconfigure()
    simulator.add_fault({"kind": "latency", "latency": 0.15, "times": -1})
    steps = "\n".join(f"  - id: s{i}\n    action: create_moderation\n    input: {{input: 'step {i}'}}"
                      for i in range(20))
    worker = WorkerProcess(env, concurrency=4, name="restart")
    monkeypatch.setenv("ECHO_HOOK_SECRET", SECRET)
    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir()
    (hooks_dir / "echo.yaml").write_text(ECHO)
    hooks = Server(create_app(hooks_dir, engine=workers.app.engine()))
    try:
        engine = workers.app.engine()
        run_id, _ = engine.start_run(parse_workflow(f"name: twenty\nsteps:\n{steps}\n", "twenty.yaml"), {},
                                     trigger={"type": "manual"})
        deadline = time.monotonic() + 30
        while len(engine.store.steps(run_id)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
        during = _post(hooks, "echo", {"text": "while redis is away"})
        assert during.status_code == 503, during.text  # not accepted and lost
        assert httpx.get(f"{hooks.url}/healthz").status_code == 503
        time.sleep(2)
        server.start()
        # kombu's Redis transport can crash the worker on a lost connection ("Unrecoverable error:
        # AttributeError ... 'hostname'", celery/celery#10205): a supervisor (systemd, Kubernetes)
        # restarts it, and so do we. Everything it held is in Redis and replays safely.
        seen = len(engine.store.steps(run_id))
        deadline = time.monotonic() + 20
        while (worker.process.poll() is None and len(engine.store.steps(run_id)) <= seen + 1
               and time.monotonic() < deadline):
            time.sleep(0.2)
        replaced = worker.process.poll() is not None or "Unrecoverable error" in worker.output
        if replaced:
            worker.stop()
            worker = WorkerProcess(env, concurrency=4, name="restart2")
        header = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                header = engine.wait(run_id, 5)
            except redis.exceptions.RedisError:
                time.sleep(0.5)
                continue
            if header and header["status"] in ("succeeded", "failed"):
                break
        record = engine.store.record(run_id)
    finally:
        hooks.stop()
        worker.stop()
        server.stop()
        workers.app.reconfigure()
    assert header is not None and record is not None
    done = [s for s in record["steps"] if s["status"] == "succeeded"]
    print(f"\n[scenario 6] Redis stopped after ~6 of 20 steps and restarted 2 s later: run {header['status']}, "
          f"{len(done)}/20 steps succeeded, webhook answered 503 meanwhile; moderation calls at the server: "
          f"{simulator.calls_by_route().get('POST /moderations', 0)}; worker process "
          f"{'exited and was restarted' if replaced else 'survived'}")
    if header["status"] == "failed":
        assert header["error"]["step"]  # failed loudly, with the step named
    else:
        assert len(done) == 20, worker.output[-2000:]


# 11 --------------------------------------------------------------- a paid step slower than the visibility timeout


def test_11_paid_step_slower_than_the_visibility_timeout_succeeds_once(isolated_broker: dict[str, str],
                                                                      simulator: Simulator) -> None:
    """Visibility 8 s, the answer after 15 s: the message is redelivered while the call runs.

    The redelivery must find the running step's lease alive (its heartbeat keeps it), wait, and
    neither call again nor fail the step; the run ends succeeded and never looked failed.
    """
    import workers.app

    simulator.add_fault({"path": "/chat/completions", "kind": "latency", "latency": 15, "times": 1})
    worker = WorkerProcess(isolated_broker, concurrency=4, name="slow")
    try:
        engine = workers.app.engine()
        run_id, _ = engine.start_run(parse_workflow(_one_step("create_chat_completion", CHAT, timeout=60), "slow.yaml"),
                                     {}, trigger={"type": "manual"})
        seen: set[tuple[str | None, str | None]] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = engine.store.status(run_id)
            step = engine.store.step(run_id, "call") or {}
            seen.add((status, step.get("status")))
            if status in ("succeeded", "failed") and engine.store.flag(run_id, "finished"):
                break
            time.sleep(0.25)
        record = engine.store.record(run_id)
    finally:
        worker.stop()
    assert record is not None
    assert all(run != "failed" and step != "failed" for run, step in seen), seen
    assert record["status"] == "succeeded", record["error"]
    assert record["steps"][0]["status"] == "succeeded"
    assert simulator.calls_by_route() == {"POST /chat/completions": 1}
    redelivered = worker.output.count("another delivery of this step is running")
    assert redelivered >= 1, "the message was never redelivered: the scenario did not happen"
    print(f"\n[scenario 11] visibility 8 s, answer after 15 s: {redelivered} redelivered look(s) waited on the live "
          f"lease; 1 call at the server; run {record['status']} in {record['totals']['duration']:.1f}s, "
          f"never failed on the way (states seen: {sorted(seen, key=str)})")


# 5b -------------------------------------------------------------- how soon a SIGKILLed worker's step comes back


def test_5b_redelivery_after_sigkill_within_visibility_timeout_plus_restore_interval(
        isolated_broker: dict[str, str], simulator: Simulator) -> None:
    """The promise in docs/reliability.md: back on the queue within visibility timeout + restore interval.

    kombu scans for unacknowledged messages only on every ``unacked_restore_throttle``-th check
    (default 10); without setting it the redelivery came 20 s or more later than this bound.
    """
    import workers.app

    settings = workers.app.settings
    simulator.add_fault({"path": "/moderations", "kind": "hang", "latency": 30, "times": 1})
    first = WorkerProcess(isolated_broker, concurrency=2, name="killed")
    engine = workers.app.engine()
    run_id, _ = engine.start_run(parse_workflow(_one_step("create_moderation", MODERATION), "kill.yaml"), {},
                                 trigger={"type": "manual"})
    deadline = time.monotonic() + 30
    while simulator.calls < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert simulator.calls == 1, "the first call never arrived"
    first.kill()
    killed_at = time.monotonic()
    second = WorkerProcess(isolated_broker, concurrency=2, name="rescuer")
    try:
        deadline = killed_at + 60
        while simulator.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        redelivered_after = time.monotonic() - killed_at
        header = engine.wait(run_id, 30)
    finally:
        second.stop()
    bound = settings.visibility_timeout + settings.restore_interval
    assert header is not None and header["status"] == "succeeded", header
    assert simulator.calls == 2  # the repeat-safe call was made again by the redelivered message
    # generous: worker start-up and polling included; the unthrottled default missed it by 10 s or more
    assert redelivered_after <= bound + 5, f"redelivered {redelivered_after:.1f}s after the kill (bound {bound:g}s)"
    print(f"\n[scenario 5b] visibility {settings.visibility_timeout:g}s, restore interval "
          f"{settings.restore_interval:g}s: redelivered {redelivered_after:.1f}s after SIGKILL (bound {bound:g}s + 5)")


# 12 --------------------------------------------------------------- one policy: the same faults through both entry points


@pytest.fixture
def task_broker(worker_env: dict[str, str], redis_server: str, monkeypatch: pytest.MonkeyPatch,
                simulator: Simulator) -> Iterator[dict[str, str]]:
    """A broker of its own plus a result backend, so the test can read an ``openai.<name>`` task's outcome."""
    base = redis_server.rsplit("/", 1)[0]
    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": base + "/4", "OPENAI_PACK_RESULT_BACKEND": base + "/5"}
    for db in (4, 5):
        redis.Redis.from_url(f"{base}/{db}").flushdb()
    for key, value in env.items():
        if key.startswith("OPENAI_PACK"):
            monkeypatch.setenv(key, value)
    store = IntegrationStore(path=Path(env["OPENAI_PACK_HOME"]) / "integrations.json")
    store.add(Integration(name="short", base_url=simulator.url, auth={"placement": "none"},
                          timeout={"connect": 2, "read": 1}, max_retries=2), replace=True)
    import workers.app

    workers.app.reconfigure()
    worker = WorkerProcess(env, concurrency=4, name="both")
    yield env
    worker.stop()
    monkeypatch.delenv("OPENAI_PACK_RESULT_BACKEND")
    workers.app.reconfigure()


FAULTS = {
    "429 Retry-After 3 s (re-queued)": {"kind": "status", "status": 429, "times": 1, "headers": {"Retry-After": "3"},
                                        "error_code": "rate_limit_exceeded"},
    "500 every time": {"kind": "status", "status": 500, "times": -1, "headers": {"retry-after-ms": "20"}},
    "paid call hangs past the read timeout": {"kind": "hang", "latency": 3, "times": -1},
    "connection dropped": {"kind": "drop", "times": -1},
    "400": {"kind": "status", "status": 400, "times": -1},
    "401": {"kind": "status", "status": 401, "error_code": "invalid_api_key", "times": -1},
}


def test_12_same_faults_same_outcomes_through_the_task_and_a_workflow_step(task_broker: dict[str, str],
                                                                         simulator: Simulator) -> None:
    """``openai.create_chat_completion`` on a real worker and a one-step workflow share one ledgered call."""
    import workers.app

    engine = workers.app.engine()
    inputs = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    outcomes: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, fault in FAULTS.items():
        simulator.reset()
        simulator.add_fault(fault)
        result = workers.app.app.send_task("openai.create_chat_completion", args=[inputs, "short"])
        result.get(timeout=60, propagate=False)
        task_error = result.result if result.state == "FAILURE" else None
        time.sleep(0.2)
        via_task = (result.state == "SUCCESS", getattr(task_error, "code", None), simulator.calls,
                    engine.ledger.state(f"task:{result.id}"), engine.store.integration_health("short") is not None)
        engine.store.clear_integration_health("short")

        simulator.reset()
        simulator.add_fault(fault)
        record = _wait(workers.app, _one_step("create_chat_completion", CHAT, integration="short"), timeout=60)
        step = record["steps"][0]
        time.sleep(0.2)
        via_step = (step["status"] == "succeeded", (step.get("error") or {}).get("code"), simulator.calls,
                    engine.ledger.state(f"{record['id']}:call:"), engine.store.integration_health("short") is not None)
        outcomes[name] = {"task": via_task, "step": via_step}
        engine.store.clear_integration_health("short")
    for name, both in outcomes.items():
        print(f"\n[scenario 12] {name}: (succeeded, code, calls, ledger, marked failing) task {both['task']} / step {both['step']}")
    assert all(both["task"] == both["step"] for both in outcomes.values()), outcomes
    assert outcomes["429 Retry-After 3 s (re-queued)"]["task"] == (True, None, 2, "done", False)
    assert outcomes["500 every time"]["task"] == (False, "server_error", 3, None, False)
    assert outcomes["paid call hangs past the read timeout"]["task"] == (False, "outcome_unknown", 1, "claimed", False)
    assert outcomes["connection dropped"]["task"] == (False, "outcome_unknown", 1, "claimed", False)
    assert outcomes["400"]["task"] == (False, "bad_request", 1, None, False)
    assert outcomes["401"]["task"] == (False, "authentication_failed", 1, None, True)
