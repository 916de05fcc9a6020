"""``openai-pack serve`` against real parts: uvicorn on 127.0.0.1, redis-server, the session worker, the simulator."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from actions.simulator import Simulator
from tests.conftest import REPO_ROOT
from workers.triggers.webhooks import create_app, sign

pytestmark = pytest.mark.timeout(60)

SECRET = "whk-secret-7c41e9a0d25b83f6"
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
webhook: {secret_env: WEBHOOK_TEST_SECRET, max_body_bytes: 4096}
"""
MOD = """
name: mod
inputs:
  text: {type: string, required: true}
steps:
  - id: moderate
    action: create_moderation
    input: {input: "{{ inputs.text }}"}
output:
  flagged: "{{ steps.moderate.output.results[0].flagged }}"
webhook: {secret_env: WEBHOOK_TEST_SECRET}
"""
SIGNED = MOD.replace("name: mod", "name: signed").replace(
    "webhook: {secret_env: WEBHOOK_TEST_SECRET}", "webhook: {secret_env: WEBHOOK_TEST_SECRET, signature: hmac-sha256}")
UNSET = MOD.replace("name: mod", "name: unset").replace("WEBHOOK_TEST_SECRET", "WEBHOOK_TEST_UNSET_SECRET")
PRIVATE = MOD.replace("name: mod", "name: private").replace("webhook: {secret_env: WEBHOOK_TEST_SECRET}", "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The app on uvicorn in a thread of this process, on a free port of 127.0.0.1."""

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
        self.responses: list[str] = []

    def post(self, hook: str, body: Any, *, secret: str | None = SECRET, query: str = "",
             headers: dict[str, str] | None = None, bearer: bool = False) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if secret is not None:
            sent["Authorization" if bearer else "X-Pack-Secret"] = f"Bearer {secret}" if bearer else secret
        response = httpx.post(f"{self.url}/hooks/{hook}{query}", content=raw, headers=sent, timeout=45)
        self.responses.append(response.text + json.dumps(dict(response.headers)))
        return response

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        response = httpx.get(f"{self.url}{path}", headers=headers or {}, timeout=10)
        self.responses.append(response.text + json.dumps(dict(response.headers)))
        return response

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _write_workflows(directory: Path) -> Path:
    for name, text in (("echo.yaml", ECHO), ("mod.yaml", MOD), ("signed.yaml", SIGNED), ("unset.yaml", UNSET),
                       ("private.yaml", PRIVATE)):
        (directory / name).write_text(text)
    return directory


@pytest.fixture
def server(pack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    """A server over the real engine (redis + session worker); every log line and response is checked for the secret."""
    monkeypatch.setenv("WEBHOOK_TEST_SECRET", SECRET)
    monkeypatch.delenv("WEBHOOK_TEST_UNSET_SECRET", raising=False)
    caplog.set_level(logging.DEBUG)
    running = Server(create_app(_write_workflows(tmp_path), engine=pack.engine(), rate_per_minute=1000))
    yield running
    running.stop()
    assert SECRET not in caplog.text
    assert not [text for text in running.responses if SECRET in text]


def _runs_with_event(pack: Any, event_id: str) -> list[dict[str, Any]]:
    return [r for r in pack.engine().store.list(200) if (r.get("trigger") or {}).get("event_id") == event_id]


# ---------------------------------------------------------------- starting runs


def test_post_with_wait_returns_the_workflow_output(server: Server, pack: Any, caplog: pytest.LogCaptureFixture) -> None:
    response = server.post("echo", {"text": "printer jammed", "n": "2"}, query="?wait=30",
                           headers={"X-Request-Id": "evt-printer-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["error"] is None and body["created"] is True
    assert body["output"]["flagged"] is False and "printer jammed" in body["output"]["reply"]
    assert response.headers["location"] == f"/runs/{body['run_id']}"
    record = pack.engine().store.record(body["run_id"])
    assert record["inputs"] == {"text": "printer jammed", "n": 2}
    assert record["trigger"] == {"type": "webhook", "workflow": "echo", "event_id": "evt-printer-1",
                                 "remote": "127.0.0.1"}
    assert f"POST /hooks/echo -> 200 run={body['run_id']}" in caplog.text


def test_post_without_wait_answers_202_and_the_run_is_readable(server: Server, pack: Any) -> None:
    response = server.post("mod", {"text": "hello"}, bearer=True)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"run_id", "status", "created"} and body["created"] is True
    assert pack.engine().wait(body["run_id"], 30)["status"] == "succeeded"
    fetched = server.get(f"/runs/{body['run_id']}", {"X-Pack-Secret": SECRET})
    assert fetched.status_code == 200 and fetched.json()["status"] == "succeeded"
    assert fetched.json()["steps"][0]["id"] == "moderate"
    assert server.get(f"/runs/{body['run_id']}", {"Authorization": f"Bearer {SECRET}"}).status_code == 200
    assert server.get(f"/runs/{body['run_id']}").status_code == 401
    assert server.get(f"/runs/{body['run_id']}", {"X-Pack-Secret": "nope"}).status_code == 401
    unknown = server.get("/runs/20260101000000-000000000000", {"X-Pack-Secret": SECRET})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_wait_until_deadline_answers_202_while_the_run_goes_on(server: Server, pack: Any,
                                                               simulator: Simulator) -> None:
    simulator.add_fault({"path": "/moderations", "kind": "latency", "latency": 1.5})
    response = server.post("mod", {"text": "slow"}, query="?wait=0.2")
    assert response.status_code == 202 and response.json()["status"] == "running"
    assert pack.engine().wait(response.json()["run_id"], 30)["status"] == "succeeded"
    assert server.post("mod", {"text": "x"}, query="?wait=soon").status_code == 400


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize(("secret", "bearer"), [(None, False), ("wrong", False), (SECRET + "x", False),
                                                ("", False), ("wrong", True), (SECRET[:-1], True)])
def test_wrong_or_missing_secret_is_401_and_starts_nothing(server: Server, simulator: Simulator,
                                                           secret: str | None, bearer: bool) -> None:
    response = server.post("mod", {"text": "hello"}, secret=secret, bearer=bearer)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    time.sleep(0.2)
    assert simulator.calls == 0


def test_unset_secret_variable_is_503_naming_the_variable(server: Server, simulator: Simulator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    response = server.post("unset", {"text": "hello"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "config_invalid"
    assert "WEBHOOK_TEST_UNSET_SECRET" in response.json()["error"]["message"]
    monkeypatch.setenv("WEBHOOK_TEST_UNSET_SECRET", "short")  # guessable: refused as configuration
    short = server.post("unset", {"text": "hello"}, secret="short")
    assert short.status_code == 503 and "shorter than 16 characters" in short.json()["error"]["message"]
    assert simulator.calls == 0


def test_hmac_signature(server: Server, simulator: Simulator) -> None:
    body = json.dumps({"text": "signed hello"}).encode()
    good = server.post("signed", body, headers={"X-Pack-Signature": sign(SECRET, body)}, query="?wait=30")
    assert good.status_code == 200 and good.json()["status"] == "succeeded", good.text
    rotated = f"t={int(time.time())},v1={'0' * 64},v1={sign(SECRET, body).split('v1=')[1]}"
    assert server.post("signed", body, headers={"X-Pack-Signature": rotated}, query="?wait=30").status_code == 200
    calls = simulator.calls
    cases = {
        "missing": None,
        "other secret": sign("another-secret-entirely", body),
        "tampered body": sign(SECRET, body + b" "),
        "stale": sign(SECRET, body, int(time.time()) - 301),
        "future": sign(SECRET, body, int(time.time()) + 400),
        "malformed": "v1=abc",
    }
    for label, signature in cases.items():
        response = server.post("signed", body, headers={"X-Pack-Signature": signature} if signature else {})
        assert response.status_code == 401, label
        assert response.json()["error"]["code"] == "bad_signature", label
        if label in ("stale", "future"):
            assert "signature timestamp outside the window" in response.json()["error"]["message"]
    # The secret itself is still required, signature or not.
    assert server.post("signed", body, secret=None, headers={"X-Pack-Signature": sign(SECRET, body)}).status_code == 401
    time.sleep(0.2)
    assert simulator.calls == calls


# ---------------------------------------------------------------- idempotency, bodies, payloads


def test_duplicate_idempotency_key_starts_one_run(server: Server, pack: Any, simulator: Simulator) -> None:
    key = f"ticket-{time.time_ns()}"
    first = server.post("mod", {"text": "once"}, headers={"Idempotency-Key": key}, query="?wait=30")
    second = server.post("mod", {"text": "once"}, headers={"Idempotency-Key": key})
    third = server.post("mod", {"text": "once more"}, headers={"Idempotency-Key": key}, query="?wait=5")
    assert first.status_code == 200 and first.json()["created"] is True
    assert second.status_code == 200 and second.json()["created"] is False
    assert third.status_code == 200 and third.json()["created"] is False and third.json()["status"] == "succeeded"
    assert first.json()["run_id"] == second.json()["run_id"] == third.json()["run_id"]
    runs = _runs_with_event(pack, key)
    assert [r["id"] for r in runs] == [first.json()["run_id"]]
    assert runs[0]["idempotency_key"] == f"hook:mod:{key}"
    time.sleep(0.3)
    assert simulator.calls == 1
    assert server.post("mod", {"text": "x"}, headers={"Idempotency-Key": "has space"}).status_code == 400


def test_body_limits_and_shapes(server: Server, simulator: Simulator) -> None:
    oversized = server.post("echo", {"text": "x" * 5000})
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts while it reads
        yield b'{"text": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    streamed = httpx.post(f"{server.url}/hooks/echo", content=chunks(), headers={"X-Pack-Secret": SECRET}, timeout=10)
    assert streamed.status_code == 413

    for raw, fragment in ((b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"", "empty"),
                          (b'"text"', "JSON object"), (b'{"text": NaN}', "NaN"), (b"\xff\xfe{", "")):
        response = server.post("echo", raw)
        assert response.status_code == 400, raw
        assert response.json()["error"]["code"] == "invalid_json" and fragment in response.json()["error"]["message"]

    missing = server.post("echo", {"txt": "typo"})
    assert missing.status_code == 422
    error = missing.json()["error"]
    assert error["code"] == "invalid_input" and "text" in error["message"]
    assert any(p["field"] == "text" for p in error["problems"])
    wrong_type = server.post("echo", {"text": "ok", "n": "many"})
    assert wrong_type.status_code == 422 and any(p["field"] == "n" for p in wrong_type.json()["error"]["problems"])

    for hook in ("nope", "private"):
        response = server.post(hook, {"text": "x"})
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert server.get("/hooks/mod").status_code == 405 and server.get("/hooks/mod").json()["error"]
    time.sleep(0.2)
    assert simulator.calls == 0


def test_payload_templates_are_data(server: Server, pack: Any, simulator: Simulator) -> None:
    text = "{{ 7*7 }} {{ ''.__class__.__mro__ }}"
    response = server.post("echo", {"text": text}, query="?wait=30")
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    assert response.json()["output"]["text"] == text
    assert pack.engine().store.record(response.json()["run_id"])["inputs"]["text"] == text
    sent = {r["path"]: r["body"] for r in simulator.requests}
    assert sent["/v1/moderations"]["input"] == text
    assert sent["/v1/chat/completions"]["messages"][0]["content"] == text
    assert "49" not in json.dumps(sent["/v1/moderations"])


def test_rate_limit_per_hook(pack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_TEST_SECRET", SECRET)
    limited = Server(create_app(_write_workflows(tmp_path), engine=pack.engine(), rate_per_minute=3))
    try:
        answers = [limited.post("mod", {"txt": "no run needed"}).status_code for _ in range(3)]
        assert answers == [422, 422, 422]
        blocked = limited.post("mod", {"txt": "x"})
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert limited.post("echo", {"txt": "x"}).status_code == 422  # another hook has its own budget
    finally:
        limited.stop()


# ---------------------------------------------------------------- the store


def test_store_unreachable_is_503_never_202(pack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.engine import Engine
    from workers.state.kv import RedisKV
    from workers.state.ledger import Ledger
    from workers.state.runs import RunStore

    monkeypatch.setenv("WEBHOOK_TEST_SECRET", SECRET)
    dead = RedisKV(f"redis://127.0.0.1:{_free_port()}/0")
    engine = Engine(RunStore(dead), Ledger(dead), pack.settings, lambda *a: None)
    down = Server(create_app(_write_workflows(tmp_path), engine=engine))
    up = Server(create_app(tmp_path, engine=pack.engine()))
    try:
        response = down.post("mod", {"text": "hello"}, headers={"Idempotency-Key": "lost-1"})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "store_unavailable" and response.headers["retry-after"]
        assert down.get("/runs/x-1", {"X-Pack-Secret": SECRET}).status_code == 503
        assert down.get("/healthz").status_code == 503
        healthy = up.get("/healthz")
        assert healthy.status_code == 200 and healthy.json()["ok"] is True
    finally:
        down.stop()
        up.stop()


# ---------------------------------------------------------------- the command


def test_serve_command_runs_hooks_and_logs_no_secret(pack: Any, worker_env: dict[str, str], tmp_path: Path) -> None:
    port = _free_port()
    env = {**worker_env, "WEBHOOK_TEST_SECRET": SECRET}
    env.pop("WEBHOOK_TEST_UNSET_SECRET", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.serve", "serve", "--workflows", str(_write_workflows(tmp_path)),
         "--port", str(port), "--max-wait", "20"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "serve did not start"
            time.sleep(0.1)
        ok = httpx.post(f"{url}/hooks/mod?wait=60", json={"text": "from the command"},
                        headers={"X-Pack-Secret": SECRET}, timeout=30)
        assert ok.status_code == 200 and ok.json()["status"] == "succeeded", ok.text
        denied = httpx.post(f"{url}/hooks/mod", json={"text": "x"}, headers={"X-Pack-Secret": SECRET + "-guess"})
        assert denied.status_code == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert f"POST /hooks/mod -> 200 run={ok.json()['run_id']}" in output, output
    assert "POST /hooks/mod -> 401" in output
    assert SECRET not in output and SECRET not in ok.text + denied.text
