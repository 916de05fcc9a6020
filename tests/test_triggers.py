"""Webhooks and schedules against real parts: uvicorn on 127.0.0.1, redis-server, a worker process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from actions.simulator import Simulator
from tests.conftest import REPO_ROOT, run_cli
from workers.triggers.webhooks import create_app, sign

pytestmark = pytest.mark.timeout(120)

SECRET = "whsec-test-3b9f8e2a71"
ECHO = """
name: echo
inputs:
  text: {type: string, required: true}
  n: {type: integer, default: 1}
steps:
  - id: moderate
    action: create_moderation
    input: {input: "{{ inputs.text }}"}
  - id: reply
    action: create_chat_completion
    input: {model: gpt-4o-mini, messages: [{role: user, content: "{{ inputs.text }}"}]}
output:
  flagged: "{{ steps.moderate.output.results[0].flagged }}"
  reply: "{{ steps.reply.output.choices[0].message.content }}"
  text: "{{ inputs.text }}"
webhook: {secret_env: ECHO_HOOK_SECRET, max_body_bytes: 2048}
"""
SIGNED = ECHO.replace("name: echo", "name: signed").replace(
    "webhook: {secret_env: ECHO_HOOK_SECRET, max_body_bytes: 2048}",
    "webhook: {secret_env: ECHO_HOOK_SECRET, signature: hmac-sha256}")
NO_HOOK = ECHO.replace("name: echo", "name: private").replace(
    "webhook: {secret_env: ECHO_HOOK_SECRET, max_body_bytes: 2048}", "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """uvicorn in a thread on 127.0.0.1, stopped by the fixture."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def hooks(pack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("ECHO_HOOK_SECRET", SECRET)
    for name, text in (("echo.yaml", ECHO), ("signed.yaml", SIGNED), ("private.yaml", NO_HOOK)):
        (tmp_path / name).write_text(text)
    server = Server(create_app(tmp_path, engine=pack.engine(), rate_per_minute=1000))
    yield server
    server.stop()


def _post(server: Server, hook: str, body: Any, *, secret: str | None = SECRET, query: str = "",
          headers: dict[str, str] | None = None) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        all_headers["X-Pack-Secret"] = secret
    return httpx.post(f"{server.url}/hooks/{hook}{query}", content=raw, headers=all_headers, timeout=60)


def test_webhook_starts_a_run_and_waits_for_its_output(hooks: Server, pack: Any, simulator: Simulator) -> None:
    response = _post(hooks, "echo", {"text": "printer jammed", "n": "2"}, query="?wait=30")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["output"]["flagged"] is False and "printer jammed" in body["output"]["reply"]
    record = pack.engine().store.record(body["run_id"])
    assert record["trigger"]["type"] == "webhook" and record["inputs"] == {"text": "printer jammed", "n": 2}
    fetched = httpx.get(f"{hooks.url}/runs/{body['run_id']}", headers={"X-Pack-Secret": SECRET})
    assert fetched.status_code == 200 and fetched.json()["status"] == "succeeded"
    assert httpx.get(f"{hooks.url}/runs/{body['run_id']}").status_code == 401
    assert SECRET not in response.text + fetched.text + json.dumps(record)


def test_without_wait_answers_202_with_the_run_id(hooks: Server, pack: Any) -> None:
    response = _post(hooks, "echo", {"text": "hello"})
    assert response.status_code == 202
    assert response.headers["location"] == f"/runs/{response.json()['run_id']}"
    assert pack.engine().wait(response.json()["run_id"], 30)["status"] == "succeeded"


@pytest.mark.parametrize("secret", [None, "wrong", SECRET + "x", ""])
def test_wrong_or_missing_secret_is_401_and_starts_nothing(hooks: Server, simulator: Simulator,
                                                           secret: str | None) -> None:
    response = _post(hooks, "echo", {"text": "hello"}, secret=secret)
    assert response.status_code == 401
    assert simulator.calls == 0


def test_hmac_signature(hooks: Server) -> None:
    body = json.dumps({"text": "signed hello"}).encode()
    good = _post(hooks, "signed", body, headers={"X-Pack-Signature": sign(SECRET, body)}, query="?wait=30")
    assert good.status_code == 200 and good.json()["status"] == "succeeded"
    bad = _post(hooks, "signed", body, headers={"X-Pack-Signature": sign("other", body)})
    assert bad.status_code == 401
    stale = _post(hooks, "signed", body, headers={"X-Pack-Signature": sign(SECRET, body, int(time.time()) - 3600)})
    assert stale.status_code == 401 and "window" in stale.text
    tampered = _post(hooks, "signed", body + b" ", headers={"X-Pack-Signature": sign(SECRET, body)})
    assert tampered.status_code == 401


def test_duplicate_idempotency_key_starts_no_second_run(hooks: Server, pack: Any, simulator: Simulator) -> None:
    key = {"Idempotency-Key": f"ticket-{time.time_ns()}"}
    first = _post(hooks, "echo", {"text": "once"}, headers=key, query="?wait=30")
    second = _post(hooks, "echo", {"text": "once"}, headers=key)
    assert first.json()["created"] is True and second.json()["created"] is False
    assert first.json()["run_id"] == second.json()["run_id"] and second.status_code == 200
    assert simulator.calls_by_route() == {"POST /moderations": 1, "POST /chat/completions": 1}
    runs = [r for r in pack.engine().store.list(50) if (r["trigger"] or {}).get("event_id") == key["Idempotency-Key"]]
    assert len(runs) == 1


def test_bad_bodies(hooks: Server, simulator: Simulator) -> None:
    assert _post(hooks, "echo", b"{not json").status_code == 400
    assert _post(hooks, "echo", [1, 2]).status_code == 400
    oversized = _post(hooks, "echo", {"text": "x" * 5000})
    assert oversized.status_code == 413
    missing = _post(hooks, "echo", {"txt": "typo"})
    assert missing.status_code == 422 and "text" in missing.text
    assert _post(hooks, "nope", {"text": "x"}).status_code == 404
    assert _post(hooks, "private", {"text": "x"}).status_code == 404
    assert simulator.calls == 0


def test_payload_templates_stay_literal(hooks: Server, pack: Any, simulator: Simulator) -> None:
    nasty = "{{ 7*7 }} {% for x in range(3) %}{{ x }}{% endfor %} {{ ''.__class__.__mro__[1].__subclasses__() }}"
    response = _post(hooks, "echo", {"text": nasty}, query="?wait=30")
    assert response.json()["status"] == "succeeded", response.text
    assert response.json()["output"]["text"] == nasty
    sent = [r["body"] for r in simulator.requests if r["path"] == "/v1/chat/completions"][0]
    assert sent["messages"][0]["content"] == nasty
    assert pack.engine().store.record(response.json()["run_id"])["inputs"]["text"] == nasty


def test_store_unavailable_is_503_not_202(pack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.engine import Engine
    from workers.state.kv import RedisKV
    from workers.state.ledger import Ledger
    from workers.state.runs import RunStore

    monkeypatch.setenv("ECHO_HOOK_SECRET", SECRET)
    (tmp_path / "echo.yaml").write_text(ECHO)
    dead = RedisKV(f"redis://127.0.0.1:{_free_port()}/0")
    engine = Engine(RunStore(dead), Ledger(dead), pack.settings, lambda *a: None)
    server = Server(create_app(tmp_path, engine=engine))
    try:
        response = _post(server, "echo", {"text": "hello"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"
        assert httpx.get(f"{server.url}/healthz").status_code == 503
    finally:
        server.stop()


# ---------------------------------------------------------------- schedules


def _schedules(tmp_path: Path, cron: str) -> Path:
    (tmp_path / "echo.yaml").write_text(ECHO)
    path = tmp_path / "schedules.yaml"
    path.write_text(f"""
schedules:
  - name: every-two-seconds
    cron: "{cron}"
    timezone: Europe/Paris
    workflow: echo.yaml
    inputs: {{text: scheduled}}
""")
    return path


@pytest.mark.parametrize(("entry", "field"), [
    ("cron: 'every day'", "cron"), ("timezone: Mars/Olympus", "timezone"), ("workflow: missing.yaml", "workflow"),
    ("inputs: {nope: 1}", "inputs"),
])
def test_schedule_file_errors_name_the_entry_and_field(tmp_path: Path, entry: str, field: str) -> None:
    from workers.triggers.beat import load_schedules
    from workers.workflow import WorkflowError

    path = _schedules(tmp_path, "0 2 * * *")
    key = entry.split(":")[0]
    text = "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith(key + ":"))
    path.write_text(text + f"\n    {entry}\n")
    with pytest.raises(WorkflowError) as caught:
        load_schedules(path)
    assert f"schedules[0] (every-two-seconds).{field}" in str(caught.value)


def test_two_fires_of_the_same_tick_start_one_run(pack: Any, tmp_path: Path) -> None:
    from workers.triggers.beat import fire_schedule

    path = _schedules(tmp_path, "0 2 * * *")
    moment = datetime(2026, 11, 23, 3, 0, 5, tzinfo=UTC).isoformat()
    first = fire_schedule("every-two-seconds", str(path), moment)
    second = fire_schedule("every-two-seconds", str(path), moment)
    assert first["created"] is True and second["created"] is False
    assert first["run_id"] == second["run_id"] and first["tick"] == "2026-11-23T02:00:00+01:00"
    assert pack.engine().wait(first["run_id"], 30)["status"] == "succeeded"


def test_beat_process_fires_a_schedule(pack: Any, worker_env: dict[str, str], tmp_path: Path) -> None:
    path = _schedules(tmp_path, "* * * * * */2")
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "beat", "--schedules", str(path)],
                               env=worker_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + 30
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not runs:
            runs = [r for r in pack.engine().store.list(20)
                    if (r.get("trigger") or {}).get("schedule") == "every-two-seconds"]
            time.sleep(0.2)
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert runs, output
    assert pack.engine().wait(runs[0]["id"], 30)["status"] == "succeeded"
    ticks = [r["trigger"]["tick"] for r in pack.engine().store.list(50)
             if (r.get("trigger") or {}).get("schedule") == "every-two-seconds"]
    assert len(ticks) == len(set(ticks))  # one run per tick
    checked = run_cli(worker_env, "beat", "--schedules", str(path), "--check")
    assert checked.returncode == 0 and "every-two-seconds" in checked.stdout
