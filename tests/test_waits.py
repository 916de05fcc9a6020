"""Durable waits (``wait:`` on a step): real redis-server, real worker processes, the simulator's job clock.

A waiting step is re-queued with a countdown between polls, so these tests check what that must
give: the record says what is awaited and how far it is, a worker killed mid-wait loses nothing,
twenty waits hold no threads, a cancelled run cancels the remote job, and time-outs and failed
jobs end the step with a typed error.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.simulator import Simulator
from integration.errors import WorkflowError
from tests.conftest import WorkerProcess, broker_of_its_own, finished_record, run_cli, steps_by_id
from workers.workflow import parse_workflow

pytestmark = pytest.mark.timeout(240)

QUICK = "{interval: 0.2, max_interval: 0.6}"


def _jsonl(lines: int) -> str:
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"item {i}"}]}}
            for i in range(lines)]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    return "data:application/jsonl;base64," + base64.b64encode(text.encode()).decode()


BATCH = f"""
name: batch-wait
inputs:
  jsonl: {{type: string, required: true}}
steps:
  - id: upload
    action: create_file
    input: {{file: "{{{{ inputs.jsonl }}}}", purpose: batch}}
  - id: batch
    action: create_batch
    input:
      input_file_id: "{{{{ steps.upload.output.id }}}}"
      endpoint: /v1/chat/completions
      completion_window: 24h
    wait: {QUICK}
output:
  status: "{{{{ steps.batch.output.status }}}}"
  output_file_id: "{{{{ steps.batch.output.output_file_id }}}}"
"""


def _start(engine: Any, text: str, inputs: dict[str, Any] | None = None) -> str:
    run_id, created = engine.start_run(parse_workflow(text, "wait.yaml"), inputs or {}, trigger={"type": "manual"})
    assert created
    return run_id


def _until(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _waiting(engine: Any, run_id: str, step: str, polls: int = 1) -> dict[str, Any] | None:
    record = engine.store.step(run_id, step) or {}
    if record.get("status") == "waiting" and record["wait"]["polls"] >= polls:
        return record
    return None


@pytest.fixture
def held_jobs(simulator: Simulator) -> Iterator[Simulator]:
    """Jobs run until the test finishes them (``complete_jobs``)."""
    simulator.configure_jobs(after_polls=None, after_seconds=3600)
    yield simulator


# ---------------------------------------------------------------- the wait itself


def test_batch_wait_shows_progress_then_succeeds(pack: Any, held_jobs: Simulator, worker_env: dict[str, str]) -> None:
    engine = pack.engine()
    run_id = _start(engine, BATCH, {"jsonl": _jsonl(100)})
    record = _until(lambda: _waiting(engine, run_id, "batch", polls=2), what="two polls")
    shown = run_cli(worker_env, "runs", "show", run_id)
    assert shown.returncode == 0 and "waiting" in shown.stdout and "batch in_progress, " in shown.stdout
    wait = record["wait"]
    assert wait["kind"] == "batch" and wait["job_id"].startswith("batch_")
    assert wait["status"] == "in_progress" and wait["summary"].startswith("batch in_progress, ")
    assert wait["summary"].endswith("/100") and wait["until"] == ["completed"]
    assert record["output"]["id"] == wait["job_id"]
    assert engine.store.header(run_id)["status"] == "running"
    held_jobs.complete_jobs()
    done = finished_record(engine, run_id)
    assert done["status"] == "succeeded", done
    step = steps_by_id(done)["batch"]
    assert step["status"] == "succeeded" and step["output"]["status"] == "completed"
    assert step["wait"]["summary"] == "batch completed, 100/100"
    assert done["output"]["output_file_id"].startswith("file-")
    routes = held_jobs.calls_by_route()
    assert routes["POST /batches"] == 1 and routes["POST /files"] == 1  # started once, however many polls
    polls = [r for r in held_jobs.requests if r["method"] == "GET" and r["path"] == f"/v1/batches/{wait['job_id']}"]
    assert len(polls) == step["wait"]["polls"] >= 3


def test_background_response_is_waited_for_and_parsed(pack: Any, simulator: Simulator) -> None:
    text = f"""
name: background-answer
steps:
  - id: answer
    action: create_response
    input:
      model: gpt-4o-mini
      input: "Route this ticket: VPN down"
      background: true
      text:
        format:
          type: json_schema
          name: route
          strict: true
          schema:
            type: object
            additionalProperties: false
            required: [team, urgent]
            properties:
              team: {{type: string, enum: [network, desk]}}
              urgent: {{type: boolean}}
    wait: {QUICK}
output:
  team: "{{{{ steps.answer.output.output_parsed.team }}}}"
"""
    engine = pack.engine()
    done = finished_record(engine, _start(engine, text))
    assert done["status"] == "succeeded", done
    step = steps_by_id(done)["answer"]
    assert step["output"]["status"] == "completed" and step["wait"]["kind"] == "response"
    assert step["output"]["output_parsed"] == json.loads(step["output"]["output_text"])
    assert done["output"]["team"] in ("network", "desk")
    assert step["usage"]["total_tokens"] > 0  # counted when the answer came, not at the create
    gets = [r for r in simulator.requests if r["method"] == "GET" and r["path"].startswith("/v1/responses/")]
    assert len(gets) == step["wait"]["polls"] >= 1


def test_a_poll_that_fails_for_a_passing_reason_is_tried_again(pack: Any, simulator: Simulator) -> None:
    simulator.add_fault({"kind": "status", "status": 503, "method": "GET", "path": "/responses", "times": 3})
    engine = pack.engine()
    done = finished_record(engine, _start(engine, BACKGROUND))
    assert done["status"] == "succeeded", done
    step = steps_by_id(done)["batch"]
    assert step["wait"]["errors"] == 0 and "last_error" not in step["wait"]
    gets = [r for r in simulator.requests if r["method"] == "GET" and r["path"].startswith("/v1/responses/")]
    assert len(gets) == step["wait"]["polls"] + 3  # one poll's three tries failed, the next poll went on


def test_a_poll_refused_for_good_fails_the_step(pack: Any, simulator: Simulator) -> None:
    simulator.add_fault({"kind": "status", "status": 404, "method": "GET", "path": "/responses", "times": 1})
    engine = pack.engine()
    done = finished_record(engine, _start(engine, BACKGROUND))
    step = steps_by_id(done)["batch"]
    assert done["status"] == "failed" and step["error"]["code"] == "not_found" and step["status"] == "failed"


def test_cancelling_the_run_cancels_the_remote_batch(pack: Any, held_jobs: Simulator) -> None:
    engine = pack.engine()
    run_id = _start(engine, BATCH, {"jsonl": _jsonl(5)})
    record = _until(lambda: _waiting(engine, run_id, "batch"), what="the wait")
    batch_id = record["wait"]["job_id"]
    assert engine.cancel(run_id)
    done = finished_record(engine, run_id)
    assert done["status"] == "cancelled"
    assert steps_by_id(done)["batch"]["status"] == "cancelled"
    cancels = [r for r in held_jobs.requests if r["path"] == f"/v1/batches/{batch_id}/cancel"]
    assert len(cancels) == 1
    assert steps_by_id(done)["batch"]["wait"]["cancel"] == {"sent": True, "by": "an earlier cancel"}


def test_a_failed_job_fails_the_step_with_a_typed_error(pack: Any, held_jobs: Simulator) -> None:
    engine = pack.engine()
    run_id = _start(engine, BATCH, {"jsonl": _jsonl(3)})
    batch_id = _until(lambda: _waiting(engine, run_id, "batch"), what="the wait")["wait"]["job_id"]
    held_jobs.complete_jobs(batch_id, outcome="expired")
    done = finished_record(engine, run_id)
    assert done["status"] == "failed"
    error = steps_by_id(done)["batch"]["error"]
    assert error["code"] == "job_failed" and error["status"] == "expired" and error["job_id"] == batch_id
    assert done["error"]["step"] == "batch"


def test_a_wait_past_its_timeout_fails_and_cancels_the_job(pack: Any, held_jobs: Simulator) -> None:
    engine = pack.engine()
    text = BATCH.replace(QUICK, "{interval: 0.2, max_interval: 0.3, timeout: 1}")
    done = finished_record(engine, _start(engine, text, {"jsonl": _jsonl(3)}))
    step = steps_by_id(done)["batch"]
    assert done["status"] == "failed" and step["error"]["code"] == "wait_timeout"
    assert "did not end within 1 s" in step["error"]["message"]
    assert step["wait"]["cancel"]["sent"] is True
    assert any(r["path"].endswith("/cancel") for r in held_jobs.requests)


def test_a_job_that_already_ended_needs_no_poll(pack: Any, simulator: Simulator) -> None:
    simulator.configure_jobs(after_polls=0)
    engine = pack.engine()
    done = finished_record(engine, _start(engine, BATCH, {"jsonl": _jsonl(2)}))
    step = steps_by_id(done)["batch"]
    assert done["status"] == "succeeded" and step["wait"]["polls"] == 0
    assert not any(r["method"] == "GET" and r["path"].startswith("/v1/batches/") for r in simulator.requests)


def test_waiting_on_a_retrieve_action_and_until(pack: Any, held_jobs: Simulator) -> None:
    """A job started elsewhere (another run, a person) is waited for by its retrieve action; ``until``
    can stop at an earlier status."""
    engine = pack.engine()
    run_id = _start(engine, BATCH, {"jsonl": _jsonl(2)})
    batch_id = _until(lambda: _waiting(engine, run_id, "batch"), what="the wait")["wait"]["job_id"]
    text = """
name: watch
inputs:
  batch: {type: string}
steps:
  - id: watch
    action: retrieve_batch
    input: {batch_id: "{{ inputs.batch }}"}
    wait: {until: completed, interval: 0.2, max_interval: 0.4}
"""
    watcher = _start(engine, text, {"batch": batch_id})
    _until(lambda: _waiting(engine, watcher, "watch"), what="the watcher's wait")
    held_jobs.complete_jobs(batch_id)
    assert finished_record(engine, watcher)["status"] == "succeeded"
    assert finished_record(engine, run_id)["status"] == "succeeded"


# ---------------------------------------------------------------- load-time checks


@pytest.mark.parametrize(("step", "field", "words"), [
    ("action: create_moderation\n    input: {input: hi}\n    wait: true", "wait", "starts no job to wait for"),
    ("action: create_batch\n    input: {input_file_id: f, endpoint: /v1/embeddings, completion_window: 24h}\n"
     "    wait: {until: done}", "wait.until", "'done' is not a status of a batch"),
    ("action: create_batch\n    input: {input_file_id: f, endpoint: /v1/embeddings, completion_window: 24h}\n"
     "    wait: {timeout: 40d}", "wait.timeout", "must be a duration"),
    ("action: create_batch\n    input: {input_file_id: f, endpoint: /v1/embeddings, completion_window: 24h}\n"
     "    wait: {interval: 10, max_interval: 5}", "wait.max_interval", "at least wait.interval"),
    ("action: create_response\n    with_items: [1, 2]\n    input: {model: m, input: x}\n    wait: true",
     "wait", "a with_items step cannot wait yet"),
])
def test_wait_options_are_checked_when_the_file_loads(step: str, field: str, words: str) -> None:
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(f"name: w\nsteps:\n  - id: s\n    {step}\n", "w.yaml")
    assert caught.value.details.get("field") == field, caught.value.to_dict()
    assert words in caught.value.message


def test_wait_durations_accept_units_and_round_trip() -> None:
    workflow = parse_workflow("""
name: w
steps:
  - id: s
    action: create_batch
    input: {input_file_id: f, endpoint: /v1/embeddings, completion_window: 24h}
    wait: {timeout: 24h, interval: 30s, max_interval: 10m, until: [completed, failed]}
""", "w.yaml")
    wait = workflow.steps[0].wait
    assert wait is not None and (wait.timeout, wait.interval, wait.max_interval) == (86400, 30, 600)
    assert wait.until == ("completed", "failed")
    from workers.workflow import workflow_from_dict

    assert workflow_from_dict(workflow.to_dict()).steps[0].wait == wait


# ---------------------------------------------------------------- durability: real workers killed and counted


@pytest.fixture
def own_broker(worker_env: dict[str, str], redis_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        dict[str, str]]:
    """Workers of this test's own on another Redis database, so the session worker takes none of its tasks."""
    yield from broker_of_its_own(worker_env, redis_server, monkeypatch, db=5)


BACKGROUND = f"""
name: background
steps:
  - id: batch
    action: create_response
    input: {{model: gpt-4o-mini, input: "Summarise the night's alerts", background: true}}
    wait: {QUICK}
"""


@pytest.mark.parametrize(("text", "created"), [(BATCH, "POST /batches"), (BACKGROUND, "POST /responses")],
                         ids=["batch", "background-response"])
def test_killing_the_worker_mid_wait_loses_nothing(own_broker: dict[str, str], held_jobs: Simulator, text: str,
                                                   created: str) -> None:
    import workers.app

    engine = workers.app.engine()
    first = WorkerProcess(own_broker, concurrency=2, name="waiter")
    try:
        run_id = _start(engine, text, {"jsonl": _jsonl(10)} if text is BATCH else {})
        record = _until(lambda: _waiting(engine, run_id, "batch", polls=2), what="two polls")
    finally:
        first.kill()
    polls_at_kill = record["wait"]["polls"]
    held_jobs.complete_jobs(record["wait"]["job_id"])
    second = WorkerProcess(own_broker, concurrency=2, name="after")
    try:
        done = finished_record(engine, run_id, timeout=90)
    finally:
        second.stop()
    assert done["status"] == "succeeded", done
    step = steps_by_id(done)["batch"]
    assert step["wait"]["polls"] > polls_at_kill
    assert held_jobs.calls_by_route()[created] == 1
    print(f"\n[waits] {record['wait']['kind']}: worker killed after {polls_at_kill} polls; the next worker "
          f"finished the wait ({step['wait']['polls']} polls in all, one job created)")


def test_polls_are_counted_against_the_rate_budget(pack: Any, worker_env: dict[str, str],
                                                   simulator: Simulator) -> None:
    from integration.model import Integration
    from integration.store import IntegrationStore
    from workers.state.budget import window_for

    name = f"budgeted-{os.getpid()}-{time.monotonic_ns()}"  # a fresh budget window of its own
    IntegrationStore(path=Path(worker_env["OPENAI_PACK_HOME"]) / "integrations.json").add(
        Integration(name=name, base_url=simulator.url, auth={"placement": "none"},
                    rate_limits={"requests_per_minute": 59}))
    text = BATCH.replace("    wait:", f"    integration: {name}\n    wait:").replace(
        "    action: create_file\n", f"    action: create_file\n    integration: {name}\n")
    engine = pack.engine()
    done = finished_record(engine, _start(engine, text, {"jsonl": _jsonl(2)}))
    assert done["status"] == "succeeded", done
    polls = steps_by_id(done)["batch"]["wait"]["polls"]
    stats = engine.budget.limiter.get_window_stats(window_for(59), "openai-pack", name, "requests")
    assert polls >= 1 and 59 - stats.remaining == 2 + polls  # upload, create, and every poll


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_twenty_waiting_batch_steps_hold_no_threads(own_broker: dict[str, str], held_jobs: Simulator) -> None:
    import workers.app

    engine = workers.app.engine()
    worker = WorkerProcess(own_broker, concurrency=4, name="threads")
    try:
        warm = [_start(engine, BATCH, {"jsonl": _jsonl(1)}) for _ in range(4)]
        for run_id in warm:
            _until(lambda run_id=run_id: _waiting(engine, run_id, "batch", polls=2), what="warm-up waits")
        baseline = _threads(worker.process.pid)
        runs = [_start(engine, BATCH, {"jsonl": _jsonl(1)}) for _ in range(16)]
        for run_id in runs:
            _until(lambda run_id=run_id: _waiting(engine, run_id, "batch", polls=2), what="all twenty waiting")
        during = _threads(worker.process.pid)
        held_jobs.complete_jobs()
        for run_id in warm + runs:
            assert finished_record(engine, run_id)["status"] == "succeeded"
    finally:
        worker.stop()
    assert during <= baseline, f"threads grew from {baseline} to {during} while 20 steps waited"
    print(f"\n[waits] worker threads with 4 waiting steps: {baseline}; with 20: {during}")
