"""Issue 14 with real parts: `openai-pack worker` processes on their own Redis database, the simulator, a
loopback Reconify sink, a loopback OTLP collector, and `openai-pack serve` scraped for /metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import actions
from actions.simulator import Simulator
from integration.client import close_all_clients
from integration.model import Integration
from integration.store import IntegrationStore
from tests.conftest import REPO_ROOT, WorkerProcess, run_cli
from tests.test_observe import API_CANARY, APP_CANARY, Sink
from workers.observe import cost as costs
from workers.observe import reconify

OTEL_CANARY = "otel-hdr-CANARY-9a7c5e3b1d"

CHAT_AND_COMPLETION = """
name: observed
inputs:
  text: {type: string, required: true}
steps:
  - id: chat
    action: create_chat_completion
    input:
      model: gpt-4o-mini
      temperature: "0.5"
      max_tokens: "12"
      user: customer-42
      messages: [{role: user, content: "{{ inputs.text }}"}]
  - id: complete
    action: create_completion
    input: {model: gpt-3.5-turbo-instruct, prompt: "{{ inputs.text }}", max_tokens: "7", n: "1"}
output:
  reply: "{{ steps.chat.output.choices[0].message.content }}"
"""

FAN_OUT = """
name: capped-fanout
inputs:
  tickets: {type: array, required: true}
steps:
  - id: each
    action: create_chat_completion
    integration: capped
    with_items: "{{ inputs.tickets }}"
    concurrency: 1
    input: {model: gpt-4o, max_tokens: 20, messages: [{role: user, content: "{{ item }}"}]}
"""

THREE_STEPS = """
name: traced
steps:
  - id: first
    action: create_chat_completion
    input: {model: gpt-4o-mini, max_tokens: 5, messages: [{role: user, content: prompt-alpha}]}
    on: [{when: success, do: [left, right]}]
  - id: left
    action: create_chat_completion
    input: {model: gpt-4o-mini, max_tokens: 5, messages: [{role: user, content: prompt-beta}]}
    on: []
  - id: right
    action: create_completion
    input: {model: gpt-3.5-turbo-instruct, max_tokens: 5, prompt: prompt-gamma}
    on: []
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as running:
        yield running


@pytest.fixture(scope="module")
def obs_env(redis_server: str, simulator_session: Simulator, sink: Sink,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Workers of this module only: their own Redis database (broker and store), home and Reconify sink."""
    url = redis_server.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    home = tmp_path_factory.mktemp("obs-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CELERY", "OTEL_", "RECONIFY"))}
    env.update(OPENAI_PACK_HOME=str(home), OPENAI_PACK_BROKER_URL=url, PYTHONUNBUFFERED="1",
               OPENAI_PACK_VISIBILITY_TIMEOUT="20", OPENAI_PACK_MAX_INLINE_WAIT="2",
               OPENAI_PACK_RECONIFY_URL=sink.url, RECONIFY_APP_KEY=APP_CANARY, RECONIFY_API_KEY=API_CANARY,
               OPENAI_PACK_RECONIFY_MAX_ATTEMPTS="2", OPENAI_PACK_RECONIFY_RETRY_DELAY="0.1",
               OPENAI_PACK_RECONIFY_TIMEOUT="1")
    store = IntegrationStore(path=home / "integrations.json")
    plain = {"base_url": simulator_session.url, "auth": {"placement": "none"}, "timeout": {"connect": 2, "read": 10}}
    store.add(Integration(name="sim", **plain), make_default=True)
    store.add(Integration(name="capped", spend_caps={"daily_usd": 0.0005}, **plain))
    return env


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def obs_worker(obs_env: dict[str, str], metrics_port: int) -> Iterator[WorkerProcess]:
    """The module's worker; it serves its own /metrics on 127.0.0.1:``metrics_port``."""
    worker = WorkerProcess({**obs_env, "OPENAI_PACK_METRICS_PORT": str(metrics_port)}, concurrency=4, name="obs")
    yield worker
    worker.stop()


@pytest.fixture
def obs(obs_env: dict[str, str], obs_worker: WorkerProcess, simulator: Simulator, sink: Sink) -> Iterator[Any]:
    """This process configured like the module's workers; the sink answers 200 again."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in obs_env.items() if k.startswith(("OPENAI_PACK", "RECONIFY"))})
    import workers.app

    workers.app.reconfigure()
    sink.status, sink.hang = 200, False
    sink.received.clear()
    try:
        yield workers.app
    finally:
        os.environ.clear()
        os.environ.update(saved)
        workers.app.reconfigure()
        close_all_clients()


def _run(app: Any, tmp_path: Path, text: str, inputs: dict[str, Any]) -> dict[str, Any]:
    from workers.workflow import load_workflow

    path = tmp_path / "workflow.yaml"
    path.write_text(text)
    run_id, _ = app.engine().start_run(load_workflow(path), inputs, trigger={"type": "test"})
    header = app.engine().wait(run_id, 60)
    assert header is not None and header["status"] in ("succeeded", "failed"), header
    record = app.engine().store.record(run_id)
    assert record is not None
    return record


def _outbox(app: Any) -> reconify.Outbox:
    return reconify.Outbox(app.kv())


def _all_keys_dump(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    parts = []
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        value = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                 "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda _k: "")(key)
        parts.append(f"{key}={value}")
    return "\n".join(parts)


# ---------------------------------------------------------------- Reconify


def test_reconify_copies_arrive_in_the_seed_shape_with_typed_numbers_and_costs_are_recorded(
        obs: Any, simulator: Simulator, sink: Sink, tmp_path: Path, obs_env: dict[str, str],
        obs_worker: WorkerProcess, metrics_port: int) -> None:
    record = _run(obs, tmp_path, CHAT_AND_COMPLETION, {"text": "tell a cat joke"})
    assert record["status"] == "succeeded", record
    _wait_for(lambda: len(sink.received) >= 2, "two Reconify copies")
    by_type = {copy["reconify"]["type"]: copy for copy in sink.received}
    sent = {r["path"]: r["body"] for r in simulator.requests}
    steps = {s["id"]: s for s in record["steps"]}
    for kind, path, step in (("chat", "/v1/chat/completions", "chat"), ("completion", "/v1/completions", "complete")):
        copy = by_type[kind]
        assert set(copy) == {"reconify", "timestamps", "session", "request", "response"} | (
            {"user"} if kind == "chat" else set())
        assert copy["reconify"] == {"format": "openai", "type": kind, "version": "1.0.0", "appKey": APP_CANARY,
                                    "apiKey": API_CANARY}
        assert copy["request"] == sent[path]  # exactly the body the API received
        assert copy["response"] == steps[step]["output"]  # exactly the body that came back
        assert copy["session"] == record["id"]
        stamps = copy["timestamps"]
        assert isinstance(stamps["request"], int) and stamps["request"] <= stamps["response"]
    chat_request = by_type["chat"]["request"]
    assert chat_request["temperature"] == 0.5 and chat_request["max_tokens"] == 12  # numbers, though given as text
    assert by_type["completion"]["request"]["max_tokens"] == 7
    assert by_type["chat"]["user"] == {"userId": "customer-42"}

    # costs in the records match the price table for the simulator's usage numbers
    table = costs.prices().data["tokens_per_million"]
    total = 0.0
    for step_id, model in (("chat", "gpt-4o-mini"), ("complete", "gpt-3.5-turbo-instruct")):
        usage = steps[step_id]["output"]["usage"]
        expected = (usage["prompt_tokens"] * table[model]["input"]
                    + usage["completion_tokens"] * table[model]["output"]) / 1e6
        assert steps[step_id]["cost"]["usd"] == pytest.approx(expected, abs=1e-10)
        assert steps[step_id]["cost"]["model"] == model and steps[step_id]["cost"]["integration"] == "sim"
        total += expected
    assert record["totals"]["cost"] == {"usd": pytest.approx(total, abs=1e-9), "unpriced": 0}
    listed = obs.engine().store.list(5)
    assert listed[0]["id"] == record["id"] and listed[0]["cost"]["usd"] == pytest.approx(total, abs=1e-9)

    shown = run_cli(obs_env, "runs", "show", record["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"${total:.6f}" in shown.stdout
    listing = run_cli(obs_env, "runs", "list")
    assert f"${total:.6f}" in listing.stdout
    report = run_cli(obs_env, "usage", "--since", "1d", "--by", "model", "--compare-org", "sim", "--json")
    assert report.returncode == 0, report.stderr
    groups = {g["model"]: g for g in json.loads(report.stdout)["groups"]}
    assert groups["gpt-4o-mini"]["usd"] == pytest.approx(steps["chat"]["cost"]["usd"], abs=1e-10)
    org_answer = actions.run("usage_costs", {"start_time": int(time.time()) - 86400, "bucket_width": "1d"}, "sim")
    billed = sum(r["amount"]["value"] for b in org_answer["data"] for r in b["results"])
    assert json.loads(report.stdout)["organization"]["usd"] == pytest.approx(billed)
    bad = run_cli(obs_env, "usage", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr

    # the worker's own /metrics counted the steps and the copies it delivered
    _wait_for(lambda: not _outbox(obs).pending(), "the outbox to empty")
    worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    samples = _samples(worker_metrics)
    assert samples[("openai_pack_steps_total", (("action", "create_completion"), ("code", ""),
                                                ("status", "succeeded")))] >= 1
    assert samples[("openai_pack_reconify_copies_total", (("outcome", "delivered"),))] >= 2

    # the canary: the Reconify keys reach the sink and nothing else
    leaks = {"worker log": obs_worker.output, "run record": json.dumps(record), "cli": shown.stdout + shown.stderr,
             "store": _all_keys_dump(obs_env["OPENAI_PACK_BROKER_URL"]), "metrics": worker_metrics}
    for where, text in leaks.items():
        assert APP_CANARY not in text and API_CANARY not in text, where


@pytest.mark.parametrize("fault", ["answers-500", "hangs"])
def test_a_failing_or_hanging_sink_costs_the_steps_nothing(obs: Any, sink: Sink, tmp_path: Path,
                                                           obs_worker: WorkerProcess, fault: str) -> None:
    baseline = _run(obs, tmp_path, CHAT_AND_COMPLETION, {"text": "same words"})
    _wait_for(lambda: len(sink.received) >= 2 and not _outbox(obs).pending(), "the baseline copies")
    before = _outbox(obs).totals()
    sink.status, sink.hang = 500, fault == "hangs"
    record = _run(obs, tmp_path, CHAT_AND_COMPLETION, {"text": "same words"})
    assert record["status"] == "succeeded", record
    for old, new in zip(baseline["steps"], record["steps"], strict=True):
        assert new["status"] == "succeeded" and new["attempts"] == old["attempts"]
        same = {k: v for k, v in new["output"].items() if k not in ("id", "created")}
        assert same == {k: v for k, v in old["output"].items() if k not in ("id", "created")}
    assert record["output"] == baseline["output"]
    # both copies are tried twice (the cap), then dropped and counted; the outbox ends empty
    _wait_for(lambda: _outbox(obs).totals()["dropped"] - before["dropped"] >= 2, "two dropped copies", timeout=90)
    after = _outbox(obs).totals()
    assert after["failed"] - before["failed"] == 4 and after["delivered"] == before["delivered"]
    _wait_for(lambda: not _outbox(obs).pending(), "the outbox to empty")
    assert APP_CANARY not in obs_worker.output and API_CANARY not in obs_worker.output


# ---------------------------------------------------------------- spend caps


def test_a_spend_cap_stops_a_fan_out_before_the_cap_is_crossed(obs: Any, simulator: Simulator,
                                                               tmp_path: Path) -> None:
    record = _run(obs, tmp_path, FAN_OUT, {"tickets": [f"ticket {i}" for i in range(10)]})
    step = record["steps"][0]
    assert "item_results" in step, json.dumps(record)[:3000]
    items = step["item_results"]
    called = [i for i in items if i["status"] == "succeeded"]
    refused = [i for i in items if i["status"] == "failed"]
    assert called and refused, step  # the cap lets some through and stops the rest
    assert simulator.calls == len(called)  # the refused items never reached the API
    for item in refused:
        error = item["error"]
        assert error["code"] == "budget_exceeded" and error["cap"] == "daily" and error["called"] is False
        assert "not called" in error["message"] and "capped" in error["message"]
    spent_usd = sum(i["cost"]["usd"] for i in called)
    assert spent_usd <= 0.0005
    assert step["error"]["code"] == "items_failed" and step["items"]["failed"] == len(refused)
    assert step["cost"]["usd"] == pytest.approx(spent_usd, abs=1e-9)


# ---------------------------------------------------------------- traces


class Collector:
    """A loopback OTLP/HTTP collector: keeps the spans of every ExportTraceServiceRequest it receives."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                collector.raw.append(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    service = next((a.value.string_value for a in resource.resource.attributes
                                    if a.key == "service.name"), "")
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            collector.spans.append({
                                "name": span.name, "trace_id": span.trace_id.hex(), "service": service,
                                "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                "attributes": {a.key: a.value for a in span.attributes}})
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_one_trace_follows_a_run_across_two_worker_processes(obs_env: dict[str, str], simulator: Simulator,
                                                             tmp_path: Path) -> None:
    collector = Collector()
    url = obs_env["OPENAI_PACK_BROKER_URL"].rsplit("/", 1)[0] + "/8"
    redis.Redis.from_url(url).flushdb()
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-canary={OTEL_CANARY}"}
    # no Reconify copies here: each worker runs one task at a time, and a drain task must not take a step's turn
    env = {k: v for k, v in {**obs_env, **otel, "OPENAI_PACK_BROKER_URL": url}.items()
           if k != "OPENAI_PACK_RECONIFY_URL"}
    simulator.latency = 0.4  # the two parallel steps overlap, so each worker takes one
    workers_started = [WorkerProcess({**env, "OTEL_SERVICE_NAME": f"worker-{n}"}, concurrency=1, name=f"otel{n}")
                       for n in (1, 2)]
    saved = dict(os.environ)
    import workers.app
    from workers.observe import tracing

    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith(("OPENAI_PACK", "OTEL_"))})
        os.environ.pop("OPENAI_PACK_RECONIFY_URL", None)
        os.environ["OTEL_SERVICE_NAME"] = "starter"
        workers.app.reconfigure()
        tracing.reset()
        record = _run(workers.app, tmp_path, THREE_STEPS, {})
        assert record["status"] == "succeeded", record
        tracing.flush()
    finally:
        simulator.latency = 0.0
        for worker in workers_started:
            worker.stop()  # a worker flushes its spans as it exits
        os.environ.clear()
        os.environ.update(saved)
        tracing.reset()
        workers.app.reconfigure()
        close_all_clients()
        collector.stop()
    spans = collector.spans
    assert {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}, spans  # one trace id for the whole run
    names = {s["name"] for s in spans}
    assert {"workflow.run traced", "workflow.step first", "workflow.step left", "workflow.step right",
            "chat gpt-4o-mini", "text_completion gpt-3.5-turbo-instruct"} <= names, names
    assert {s["service"] for s in spans if s["name"].startswith("workflow.step")} == {"worker-1", "worker-2"}
    root = next(s for s in spans if s["name"] == "workflow.run traced")
    for step in (s for s in spans if s["name"].startswith("workflow.step")):
        assert step["parent"] == root["span_id"]  # every step is the run's child, whichever process ran it
    call = next(s for s in spans if s["name"] == "chat gpt-4o-mini")
    attributes = call["attributes"]
    assert attributes["gen_ai.operation.name"].string_value == "chat"
    assert attributes["gen_ai.request.model"].string_value == "gpt-4o-mini"
    assert attributes["gen_ai.usage.input_tokens"].int_value > 0
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0
    assert attributes["gen_ai.response.id"].string_value.startswith("chatcmpl")
    assert attributes["server.address"].string_value == "127.0.0.1"
    everything = b"".join(collector.raw)
    for secret in (APP_CANARY, API_CANARY, OTEL_CANARY):
        assert secret.encode() not in everything
    assert b"prompt-" not in everything  # no prompt in a span without the opt-in


# ---------------------------------------------------------------- /metrics on serve


def test_metrics_are_scraped_from_serve(obs_env: dict[str, str], simulator_session: Simulator,
                                        tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "observed.yaml").write_text(CHAT_AND_COMPLETION + "webhook: {secret_env: OBS_HOOK_SECRET}\n")
    port = _free_port()
    env = {k: v for k, v in obs_env.items() if k != "OPENAI_PACK_BROKER_URL"}  # embedded: serve runs the steps
    env.update(OBS_HOOK_SECRET="obs-hook-secret-123456", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    (tmp_path / "prom").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.serve", "serve", "--workflows", str(hooks), "--port", str(port)],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _answers(f"{base}/healthz"), "serve to start", timeout=30)
        run = httpx.post(f"{base}/hooks/observed?wait=60", json={"text": "count me"},
                         headers={"X-Pack-Secret": "obs-hook-secret-123456"}, timeout=70)
        assert run.status_code == 200 and run.json()["status"] == "succeeded", run.text
        scraped = httpx.get(f"{base}/metrics", timeout=10)
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    samples = _samples(text)
    assert samples[('openai_pack_steps_total', (('action', 'create_chat_completion'), ('code', ''),
                                                 ('status', 'succeeded')))] == 1.0
    assert samples[('openai_pack_api_call_seconds_count', (('action', 'create_completion'),
                                                           ('integration', 'sim')))] == 1.0
    tokens = [v for (name, labels), v in samples.items() if name == "openai_pack_tokens_total"
              and ("model", "gpt-4o-mini") in labels]
    assert tokens and all(v > 0 for v in tokens)
    assert any(name == "openai_pack_cost_usd_total" and v > 0 for (name, _), v in samples.items())
    assert "openai_pack_reconify_copies_total" in text
    for secret in (APP_CANARY, API_CANARY, "obs-hook-secret-123456"):
        assert secret not in text and secret not in output


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out
