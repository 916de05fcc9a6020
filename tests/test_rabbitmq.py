"""RabbitMQ as the broker: configuration, the consumer timeout, and a URL password that never shows.

The session's own RabbitMQ node (``tests.conftest.RabbitMQNode``) checks its consumer timeout
(20 s) every second, and its only user ``pack`` has a password: every AMQP URL of these tests
carries it, so any place that prints a broker URL would show it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actions.simulator import Simulator
from tests.conftest import (
    RABBITMQ_CONSUMER_TIMEOUT,
    RABBITMQ_PASSWORD,
    RabbitMQNode,
    WorkerProcess,
    finished_record,
    rabbitmq_of_its_own,
    redis_dump,
    run_cli,
    steps_by_id,
)
from workers.settings import Settings
from workers.workflow import parse_workflow

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(240)]


@pytest.fixture
def own_rabbitmq(worker_env: dict[str, str], redis_server: str,
                 rabbitmq_server: RabbitMQNode) -> Iterator[dict[str, str]]:
    yield from rabbitmq_of_its_own(worker_env, redis_server, rabbitmq_server)


# ---------------------------------------------------------------- settings


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("OPENAI_PACK_BROKER_URL", "OPENAI_PACK_STORE_URL", "OPENAI_PACK_CONSUMER_TIMEOUT",
                 "OPENAI_PACK_MAX_COUNTDOWN", "OPENAI_PACK_VISIBILITY_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_an_amqp_broker_needs_a_redis_store_and_bounds_countdowns_by_the_consumer_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from integration.errors import ConfigError

    broker = f"amqps://pack:{RABBITMQ_PASSWORD}@rabbit.example:5671/prod"
    for store, words in (("", "is not set"), ("sqlite:///tmp/runs.sqlite3", "got 'sqlite'")):
        with pytest.raises(ConfigError) as caught:
            _settings(monkeypatch, OPENAI_PACK_BROKER_URL=broker, OPENAI_PACK_STORE_URL=store)
        assert caught.value.details["field"] == "OPENAI_PACK_STORE_URL" and words in str(caught.value)
        assert RABBITMQ_PASSWORD not in str(caught.value)
    settings = _settings(monkeypatch, OPENAI_PACK_BROKER_URL=broker, OPENAI_PACK_STORE_URL="redis://r:6379/2")
    assert settings.amqp and settings.store_url == "redis://r:6379/2"
    assert settings.max_countdown == 300 and settings.lease_ttl == 6  # default consumer timeout 1800 s
    short = _settings(monkeypatch, OPENAI_PACK_BROKER_URL=broker, OPENAI_PACK_STORE_URL="redis://r:6379/2",
                      OPENAI_PACK_CONSUMER_TIMEOUT="60")
    assert short.max_countdown == 30  # half the consumer timeout: RabbitMQ checks it only once a minute
    redis_broker = _settings(monkeypatch, OPENAI_PACK_BROKER_URL="redis://r:6379/0", OPENAI_PACK_CONSUMER_TIMEOUT="60")
    assert not redis_broker.amqp and redis_broker.max_countdown == 60  # Redis: visibility 120 s / 2, as before

    import workers.app

    options = workers.app._transport_options(settings)
    assert options["confirm_publish"] is True and "visibility_timeout" not in options
    (queue,) = workers.app._queues(settings) or ()
    assert queue.durable and not queue.auto_delete and queue.exchange.durable
    # amqps: kombu fills server_hostname from the URL, so py-amqp checks the certificate's name too
    assert workers.app._broker_ssl(settings) == {"server_hostname": None}
    assert workers.app._broker_ssl(redis_broker) is None


def test_cli_refuses_an_amqp_broker_without_a_redis_store(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": f"amqp://pack:{RABBITMQ_PASSWORD}@127.0.0.1:1//"}
    env.pop("OPENAI_PACK_STORE_URL", None)
    workflow = tmp_path / "one.yaml"
    workflow.write_text("name: one\nsteps:\n  - id: m\n    action: create_moderation\n    input: {input: hi}\n")
    for args in (["worker"], ["workflow", "run", str(workflow)]):
        result = run_cli(env, *args, timeout=60)
        assert result.returncode == 2, result.stderr
        error = json.loads(result.stderr)
        assert "OPENAI_PACK_STORE_URL" in result.stderr and "Traceback" not in result.stderr, error
        assert RABBITMQ_PASSWORD not in result.stdout + result.stderr


def test_steps_are_published_with_confirms_as_persistent_messages_on_a_durable_queue(
        own_rabbitmq: dict[str, str], rabbitmq_server: RabbitMQNode) -> None:
    """What RabbitMQ itself reports after this process queued a step (no worker takes it)."""
    import subprocess

    import workers.app

    workers.app.app.send_task("openai_pack.ping")

    def ctl(*args: str) -> list[list[str]]:
        done = subprocess.run([str(rabbitmq_server.ctl), "-n", rabbitmq_server.node, "-q", *args,
                               "--no-table-headers"], env=rabbitmq_server.env, capture_output=True, text=True,
                              timeout=60, check=True)
        return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]

    assert ["openai_pack", "true", "1", "1"] in ctl("list_queues", "-p", "isolated", "name", "durable",
                                                     "messages", "messages_persistent")
    assert ["isolated", "true"] in [[vhost, confirm] for vhost, confirm in ctl("list_channels", "vhost", "confirm")]
    rabbitmq_server.delete_queues("isolated", "openai_pack")


# ---------------------------------------------------------------- the consumer timeout


WAIT_15S = """
name: long-wait
steps:
  - id: answer
    action: create_response
    input: {model: gpt-4o-mini, input: "summarise the backlog", background: true}
    wait: {interval: 15, max_interval: 15}
"""


def test_a_wait_longer_than_the_consumer_timeout_hops_and_completes(rabbitmq_pack: Any,
                                                                    rabbitmq_session_worker: WorkerProcess,
                                                                    rabbitmq_server: RabbitMQNode,
                                                                    simulator: Simulator) -> None:
    """A 15 s poll interval with a 12 s consumer timeout: held as one countdown, RabbitMQ would close
    the worker's channel (and Celery stop the worker); covered in hops of 6 s, nothing is held that long."""
    settings = rabbitmq_pack.settings
    assert settings.consumer_timeout == RABBITMQ_CONSUMER_TIMEOUT
    assert settings.max_countdown == RABBITMQ_CONSUMER_TIMEOUT / 2
    simulator.configure_jobs(after_polls=None, after_seconds=1)
    hop = f"re-queued for {settings.max_countdown:.1f}s: waiting for response"
    before = rabbitmq_session_worker.output.count(hop)
    engine = rabbitmq_pack.engine()
    run_id, _ = engine.start_run(parse_workflow(WAIT_15S, "wait.yaml"), {}, trigger={"type": "manual"})
    done = finished_record(engine, run_id, timeout=90)
    step = steps_by_id(done)["answer"]
    assert done["status"] == "succeeded", done
    assert step["wait"]["polls"] == 1 and step["output"]["status"] == "completed"
    hops = rabbitmq_session_worker.output.count(hop) - before
    assert hops >= 2, rabbitmq_session_worker.output[-3000:]
    assert "PRECONDITION_FAILED" not in rabbitmq_session_worker.output
    assert "Unrecoverable error" not in rabbitmq_session_worker.output
    assert "acknowledgement" not in rabbitmq_server.log_text()  # RabbitMQ closed no channel for a timeout
    print(f"\n[rabbitmq] a 15 s wait with a {RABBITMQ_CONSUMER_TIMEOUT} s consumer timeout: {hops} hops of "
          f"{settings.max_countdown:g} s and 1 poll; run succeeded in {done['totals']['duration']:.1f}s, no channel closed")


# ---------------------------------------------------------------- the URL password never shows


def _serve_one_hook(env: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    """``openai-pack serve`` on the broker of ``env``: one signed POST; (run id, everything it printed)."""
    import subprocess
    import sys

    import httpx

    from tests.conftest import REPO_ROOT
    from tests.fixtures.hooks import ECHO, SECRET, SECRET_ENV, free_port

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "echo.yaml").write_text(ECHO)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "serve", "--workflows", str(hooks),
                                "--port", str(port), "--log-level", "debug"], env=env | {SECRET_ENV: SECRET},
                               cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "serve did not start"
            time.sleep(0.1)
        answer = httpx.post(f"http://127.0.0.1:{port}/hooks/echo", json={"text": "from a webhook"},
                            headers={"X-Pack-Secret": SECRET}, timeout=30)
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    return run_id, output + answer.text


def _beat_until_it_fires(env: dict[str, str], tmp_path: Path, engine: Any) -> tuple[list[dict[str, Any]], str]:
    """``openai-pack beat`` on the broker of ``env`` with an every-second schedule until runs start
    (at most 20 s): (those runs, what beat printed)."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "moderate.yaml").write_text(MODERATE)
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text('schedules:\n  - name: every-second\n    cron: "* * * * * *"\n'
                         "    workflow: flows/moderate.yaml\n")
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "beat", "--schedules", str(schedules),
                                "--schedule", str(tmp_path / "beat-state"), "--loglevel", "DEBUG"], env=env,
                               cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    runs: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 20
        while len(runs) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            runs = [r for r in engine.store.list(50) if (r.get("trigger") or {}).get("schedule") == "every-second"]
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    return runs, output


MODERATE = "name: moderate\nsteps:\n  - id: m\n    action: create_moderation\n    input: {input: hi}\n"


def test_worker_cli_serve_and_beat_work_on_rabbitmq_and_never_print_its_password(
        own_rabbitmq: dict[str, str], rabbitmq_server: RabbitMQNode, simulator: Simulator, tmp_path: Path) -> None:
    """A DEBUG worker runs what the CLI, a webhook (``serve``) and ``beat`` send through RabbitMQ; then a
    worker and a CLI with a wrong password. No log line, stdout, stderr, error, run record or Redis key
    holds either password."""
    import workers.app

    wrong = "wrong-PW-canary-5e8a1c"
    env = own_rabbitmq | {"TEST_WORKER_LOGLEVEL": "DEBUG"}
    workflow = tmp_path / "moderate.yaml"
    workflow.write_text(MODERATE)
    worker = WorkerProcess(env, concurrency=4, name="secretive")
    try:
        ran = run_cli(env, "workflow", "run", str(workflow), "--wait", "--json", "--timeout", "60")
        hooked, served = _serve_one_hook(env, tmp_path)
        engine = workers.app.engine()
        scheduled, beaten = _beat_until_it_fires(env, tmp_path, engine)
        assert finished_record(engine, hooked)["status"] == "succeeded"
        assert scheduled, beaten[-3000:]
        assert all(finished_record(engine, r["id"])["status"] == "succeeded" for r in scheduled)
    finally:
        worker.stop()
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["id"]
    shown = run_cli(env, "runs", "show", run_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "succeeded"

    bad = env | {"OPENAI_PACK_BROKER_URL": rabbitmq_server.url("isolated", password=wrong)}
    refused = run_cli(bad, "workflow", "run", str(workflow), "--timeout", "5", timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    error = json.loads(refused.stderr)["error"]
    assert error["code"] == "broker_unavailable" and "ACCESS_REFUSED" in error["message"], error
    lost = WorkerProcessNeverReady(bad)
    outputs = [worker.output, ran.stdout, ran.stderr, shown.stdout, shown.stderr, refused.stdout, refused.stderr,
               lost.output, served, beaten, "\n".join(redis_dump(redis.Redis.from_url(env["OPENAI_PACK_STORE_URL"])))]
    haystack = "\n".join(outputs)
    assert "DEBUG" in worker.output and "amqp://pack:**@127.0.0.1" in worker.output  # Celery's banner, masked
    assert "amqp://pack:**@127.0.0.1" in beaten  # beat's banner, masked the same way
    assert "ACCESS_REFUSED" in lost.output or "AccessRefused" in lost.output, lost.output[-2000:]
    for secret in (RABBITMQ_PASSWORD, wrong):
        assert secret not in haystack, f"password found: ...{haystack[haystack.index(secret) - 200:][:400]}"
    print(f"\n[rabbitmq] {len(scheduled)} beat runs, 1 webhook run, 1 CLI run; scanned {len(worker.lines) + len(lost.lines)} "
          f"worker log lines, serve's and beat's output, 4 CLI commands (one refused: exit {refused.returncode}) "
          f"and the Redis store: 0 occurrences of either password")


class WorkerProcessNeverReady:
    """A worker whose broker refuses its password: run it for a few seconds, keep what it printed."""

    def __init__(self, env: dict[str, str], seconds: float = 4) -> None:
        import subprocess
        import sys

        from tests.conftest import REPO_ROOT

        process = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "-c", "1", "--loglevel", "DEBUG",
                                    "-n", "refused@%h"], env=env, cwd=REPO_ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(seconds)
        process.terminate()
        try:
            out, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate(timeout=10)
        self.lines = out.splitlines(keepends=True)
        self.output = out


def test_queue_depth_metric_reads_rabbitmq_and_survives_a_refused_login(rabbitmq_server: RabbitMQNode) -> None:
    """``/metrics`` reports the ready messages of the AMQP queue; a broker that refuses the login
    leaves the gauge out instead of failing the scrape."""
    import amqp

    from workers.observe.metrics import exposition

    rabbitmq_server.delete_queues("isolated", "openai_pack")
    with rabbitmq_server.connection("isolated") as connection:
        channel = connection.channel()
        channel.queue_declare("openai_pack", durable=True, auto_delete=False)
        for number in range(3):
            channel.basic_publish(amqp.Message(f"m{number}"), routing_key="openai_pack")
    text = exposition(rabbitmq_server.url("isolated")).decode()
    assert 'openai_pack_queue_depth{queue="openai_pack"} 3.0' in text
    refused = exposition(rabbitmq_server.url("isolated", password="wrong-PW-canary-5e8a1c")).decode()
    assert "openai_pack_queue_depth{" not in refused and "wrong-PW" not in refused
    rabbitmq_server.delete_queues("isolated", "openai_pack")


# ---------------------------------------------------------------- amqps://


def test_amqps_verifies_the_broker_certificate_and_runs_a_workflow(own_rabbitmq: dict[str, str],
                                                                  rabbitmq_server: RabbitMQNode,
                                                                  simulator: Simulator, tmp_path: Path) -> None:
    """``amqps://`` to the node's TLS listener: with the test CA (``SSL_CERT_FILE``) a worker and the CLI
    run a workflow; without it the certificate is refused, and the CLI says so without the password."""
    tls = own_rabbitmq | {"OPENAI_PACK_BROKER_URL": rabbitmq_server.url("isolated", tls=True),
                          "SSL_CERT_FILE": str(rabbitmq_server.ca_file)}
    workflow = tmp_path / "moderate.yaml"
    workflow.write_text(MODERATE)
    worker = WorkerProcess(tls, concurrency=2, name="tls")
    try:
        ran = run_cli(tls, "workflow", "run", str(workflow), "--wait", "--json", "--timeout", "60")
    finally:
        worker.stop()
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
    assert f"amqps://pack:**@127.0.0.1:{rabbitmq_server.tls_port}" in worker.output
    untrusted = {k: v for k, v in tls.items() if k != "SSL_CERT_FILE"}
    refused = run_cli(untrusted, "workflow", "run", str(workflow), "--timeout", "5", timeout=120)
    assert refused.returncode == 1, refused.stderr
    error = json.loads(refused.stderr)["error"]
    assert error["code"] == "broker_unavailable" and "CERTIFICATE_VERIFY_FAILED" in error["message"], error
    for output in (worker.output, ran.stdout, ran.stderr, refused.stdout, refused.stderr):
        assert RABBITMQ_PASSWORD not in output
