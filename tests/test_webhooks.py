"""``openai-pack serve`` against real parts: uvicorn on 127.0.0.1, redis-server, the session worker, the simulator."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actions.simulator import Simulator
from tests.conftest import REPO_ROOT, run_cli
from tests.fixtures.hooks import HOOKS_DIR, SECRET, SECRET_ENV, Server, free_port
from workers.triggers.webhooks import create_app, sign

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(pack: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Server]:
    """A server over the real engine (redis + session worker); every log line and response is checked for the secret."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.delenv("UNSET_HOOK_SECRET", raising=False)
    caplog.set_level(logging.DEBUG)
    running = Server(create_app(HOOKS_DIR, engine=pack.engine(), rate_per_minute=1000))
    yield running
    running.stop()
    assert SECRET not in caplog.text
    assert not [text for text in running.responses if SECRET in text]


def _runs_with_event(pack: Any, event_id: str) -> list[dict[str, Any]]:
    return [r for r in pack.engine().store.list(200) if (r.get("trigger") or {}).get("event_id") == event_id]


def _client_from(address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z is loopback): a second sender."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


# ---------------------------------------------------------------- starting runs


def test_post_with_wait_returns_the_workflow_output(server: Server, pack: Any, caplog: pytest.LogCaptureFixture) -> None:
    response = server.post("echo", {"text": "printer jammed", "n": "2"}, query="?wait=30",
                           headers={"X-Request-Id": "evt-printer-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"run_id", "status", "created", "output", "error"}
    assert body["status"] == "succeeded" and body["error"] is None and body["created"] is True
    assert body["output"]["flagged"] is False and "printer jammed" in body["output"]["reply"]
    assert response.headers["location"] == f"/runs/{body['run_id']}"
    record = pack.engine().store.record(body["run_id"])
    assert record["inputs"] == {"text": "printer jammed", "n": 2}
    trigger = record["trigger"]
    assert {k: trigger[k] for k in ("type", "workflow", "event_id", "remote")} == {
        "type": "webhook", "workflow": "echo", "event_id": "evt-printer-1", "remote": "127.0.0.1"}
    assert SECRET not in json.dumps(record)
    assert f"POST /hooks/echo -> 200 run={body['run_id']}" in caplog.text


def test_post_without_wait_answers_202_and_the_run_is_readable(server: Server, pack: Any) -> None:
    response = server.post("mod", {"text": "hello"}, bearer=True)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"run_id": body["run_id"], "status": "running", "created": True, "output": None, "error": None}
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
    assert "UNSET_HOOK_SECRET" in response.json()["error"]["message"]
    monkeypatch.setenv("UNSET_HOOK_SECRET", "short")  # guessable: refused as configuration
    short = server.post("unset", {"text": "hello"}, secret="short")
    assert short.status_code == 503 and "shorter than 16 characters" in short.json()["error"]["message"]
    assert simulator.calls == 0


def test_hmac_signature(server: Server, simulator: Simulator) -> None:
    body = json.dumps({"text": "signed hello"}).encode()
    good = server.post("signed", body, headers={"X-Pack-Signature": sign(SECRET, body)}, query="?wait=30")
    assert good.status_code == 200 and good.json()["status"] == "succeeded", good.text
    rotated = f"t={int(time.time()) - 1},v1={'0' * 64},v1={sign(SECRET, body, int(time.time()) - 1).split('v1=')[1]}"
    assert server.post("signed", body, headers={"X-Pack-Signature": rotated}, query="?wait=30").status_code == 200
    calls = simulator.calls
    cases = {
        "missing": None,
        "other secret": sign("another-secret-entirely", body),
        "tampered body": sign(SECRET, body + b" "),
        "stale": sign(SECRET, body, int(time.time()) - 301),
        "an hour old": sign(SECRET, body, int(time.time()) - 3600),
        "future": sign(SECRET, body, int(time.time()) + 400),
        "malformed": "v1=abc",
    }
    for label, signature in cases.items():
        response = server.post("signed", body, headers={"X-Pack-Signature": signature} if signature else {})
        assert response.status_code == 401, label
        assert response.json()["error"]["code"] == "bad_signature", label
        if label in ("stale", "an hour old", "future"):
            assert "signature timestamp outside the window" in response.json()["error"]["message"]
    # The secret itself is still required, signature or not.
    assert server.post("signed", body, secret=None, headers={"X-Pack-Signature": sign(SECRET, body)}).status_code == 401
    time.sleep(0.2)
    assert simulator.calls == calls


@pytest.mark.parametrize("stamp", ["9" * 5000, "9" * 400, "1" + "0" * 20, "²", "١٧٠٠٠٠٠٠٠٠", "-5", "1e9", " "])
def test_absurd_signature_timestamps_are_401_not_500(server: Server, simulator: Simulator, stamp: str) -> None:
    """Issue 10 D10: 5,000 digits (over int()'s limit), a value too large for a float, non-ASCII digits."""
    body = json.dumps({"text": "signed hello"}).encode()
    header = f"t={stamp},v1={'ab' * 32}".encode()  # bytes: httpx sends str headers as ASCII only
    response = server.post("signed", body, headers={"X-Pack-Signature": header})  # type: ignore[dict-item]
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_signature" and "t=<unix seconds>" in error["message"]
    assert simulator.calls == 0


def test_a_replayed_signed_request_starts_no_second_run(server: Server, pack: Any, simulator: Simulator) -> None:
    """Within the 300 s window a captured signed request is the same event: the first run comes back."""
    body = json.dumps({"text": f"replay {secrets.token_hex(4)}"}).encode()
    signature = {"X-Pack-Signature": sign(SECRET, body)}
    first = server.post("signed", body, headers=signature, query="?wait=30")
    assert first.status_code == 200 and first.json()["created"] is True, first.text
    again = server.post("signed", body, headers=signature)
    # An Idempotency-Key is not signed: adding one to a captured request changes nothing either.
    rekeyed = server.post("signed", body, headers={**signature, "Idempotency-Key": "attacker-chosen"})
    junk_candidates = {"X-Pack-Signature": signature["X-Pack-Signature"] + ",v1=" + "0" * 64}
    padded = server.post("signed", body, headers=junk_candidates)
    for response in (again, rekeyed, padded):
        assert response.status_code == 200, response.text
        assert response.json()["created"] is False and response.json()["run_id"] == first.json()["run_id"]
        assert response.json()["status"] == "succeeded"
    time.sleep(0.3)
    assert simulator.calls == 1
    # The sender signing again (a new timestamp) is a new delivery: with the same Idempotency-Key it is a retry.
    retry_key = {"Idempotency-Key": f"evt-{secrets.token_hex(4)}"}
    other = json.dumps({"text": f"retried {secrets.token_hex(4)}"}).encode()
    now = int(time.time())
    one = server.post("signed", other, headers={**retry_key, "X-Pack-Signature": sign(SECRET, other, now - 2)})
    two = server.post("signed", other, headers={**retry_key, "X-Pack-Signature": sign(SECRET, other, now - 1)})
    assert one.json()["created"] is True and two.json()["created"] is False
    assert one.json()["run_id"] == two.json()["run_id"]


# ---------------------------------------------------------------- rate limits


def test_rate_limit_per_hook(pack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    limited = Server(create_app(HOOKS_DIR, engine=pack.engine(), rate_per_minute=3))
    try:
        answers = [limited.post("mod", {"txt": "no run needed"}).status_code for _ in range(3)]
        assert answers == [422, 422, 422]
        blocked = limited.post("mod", {"txt": "x"})
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert limited.post("echo", {"txt": "x"}).status_code == 422  # another hook has its own budget
    finally:
        limited.stop()


def test_wrong_secret_flood_cannot_lock_the_sender_out(pack: Any, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10 D3: unauthenticated requests are counted per address and never spend the hook's budget."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    limited = Server(create_app(HOOKS_DIR, engine=pack.engine(), rate_per_minute=5, failed_auth_per_minute=20))
    try:
        with _client_from("127.0.0.1") as attacker:
            answers = [limited.post("signed", {"text": "x"}, secret=f"guess-{i:04d}-aaaaaaaaaa", client=attacker,
                                    headers={"X-Pack-Signature": f"t={int(time.time())},v1={'0' * 64}"}).status_code
                       for i in range(300)]
        assert answers[:20] == [401] * 20 and set(answers[20:]) == {429}
        over = limited.responses[-1]
        assert "too_many_failed_attempts" in over and '"retry-after"' in over
        # The same address and another one, each with the secret and a good signature: both get through.
        body = json.dumps({"text": "after the flood"}).encode()
        good = limited.post("signed", body, headers={"X-Pack-Signature": sign(SECRET, body)}, query="?wait=30")
        assert good.status_code == 200 and good.json()["status"] == "succeeded", good.text
        with _client_from("127.0.0.2") as neighbour:
            other = limited.post("signed", {"text": "y"}, secret="wrong-secret-but-first-try", client=neighbour)
        assert other.status_code == 401  # the flood from 127.0.0.1 is not held against 127.0.0.2
        # The hook's own budget (5 a minute) is what requests with the secret spend: 1 used above.
        spent = [limited.post("signed", {"text": "unsigned"}).status_code for _ in range(5)]
        assert spent == [401, 401, 401, 401, 429]
    finally:
        limited.stop()
    assert caplog.text.count("POST /hooks/signed -> 429") <= 2  # a flood is not a log flood


# ---------------------------------------------------------------- idempotency, bodies, payloads


def test_duplicate_idempotency_key_starts_one_run(server: Server, pack: Any, simulator: Simulator) -> None:
    key = f"ticket-{time.time_ns()}"
    first = server.post("echo", {"text": "once", "n": 1}, headers={"Idempotency-Key": key}, query="?wait=30")
    second = server.post("echo", {"text": "once", "n": 1}, headers={"Idempotency-Key": key})
    # The same values, serialised differently, are the same body.
    third = server.post("echo", b'{ "n": 1,\n  "text": "once" }', headers={"Idempotency-Key": key}, query="?wait=5")
    assert first.status_code == 200 and first.json()["created"] is True
    for repeat in (second, third):
        assert repeat.status_code == 200 and repeat.json()["created"] is False, repeat.text
        assert repeat.json()["status"] == "succeeded" and repeat.json()["output"] == first.json()["output"]
    assert first.json()["run_id"] == second.json()["run_id"] == third.json()["run_id"]
    runs = _runs_with_event(pack, key)
    assert [r["id"] for r in runs] == [first.json()["run_id"]]
    assert runs[0]["idempotency_key"] == f"hook:echo:{key}"
    time.sleep(0.3)
    assert simulator.calls_by_route() == {"POST /moderations": 1, "POST /chat/completions": 1}
    assert server.post("mod", {"text": "x"}, headers={"Idempotency-Key": "has space"}).status_code == 400


def test_idempotency_key_reused_with_another_body_is_409(server: Server, pack: Any, simulator: Simulator) -> None:
    key = f"ticket-{time.time_ns()}"
    first = server.post("mod", {"text": "the first event"}, headers={"Idempotency-Key": key}, query="?wait=30")
    assert first.status_code == 200, first.text
    other = server.post("mod", {"text": "a different event"}, headers={"Idempotency-Key": key})
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["run_id"] == first.json()["run_id"]
    assert "Idempotency-Key" in error["message"] and "different body" in error["message"]
    assert [r["id"] for r in _runs_with_event(pack, key)] == [first.json()["run_id"]]
    # On a signed hook too: a fresh, valid signature does not make another body the same event.
    signed_key = {"Idempotency-Key": f"{key}-signed"}
    one, two = (json.dumps({"text": text}).encode() for text in ("signed first", "signed second"))
    started = server.post("signed", one, headers={**signed_key, "X-Pack-Signature": sign(SECRET, one)}, query="?wait=30")
    assert started.status_code == 200, started.text
    reused = server.post("signed", two, headers={**signed_key, "X-Pack-Signature": sign(SECRET, two)})
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused", reused.text
    assert reused.json()["error"]["run_id"] == started.json()["run_id"]
    time.sleep(0.2)
    assert simulator.calls == 2


def test_body_limits_and_shapes(server: Server, simulator: Simulator) -> None:
    oversized = server.post("echo", {"text": "x" * 5000})
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts while it reads
        yield b'{"text": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    streamed = httpx.post(f"{server.url}/hooks/echo", content=chunks(), timeout=10,
                          headers={"X-Pack-Secret": SECRET, "Content-Type": "application/json"})
    assert streamed.status_code == 413

    for raw, fragment in ((b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"", "empty"),
                          (b'"text"', "JSON object"), (b'{"text": NaN}', "NaN"), (b"\xff\xfe{", "UTF-8"),
                          ('{"text": "x"}'.encode("utf-16"), "UTF-8")):
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


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1", "application/jsonp"])
def test_only_json_media_types_are_accepted(server: Server, simulator: Simulator, content_type: str | None) -> None:
    headers = {"X-Pack-Secret": SECRET} | ({"Content-Type": content_type} if content_type else {})
    response = httpx.post(f"{server.url}/hooks/mod", content=b'{"text": "hello"}', headers=headers, timeout=10)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and "Content-Type" in error["message"]
    time.sleep(0.2)
    assert simulator.calls == 0


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/cloudevents+json",
                                          "Application/JSON"])
def test_json_media_types_with_parameters_or_suffixes_are_accepted(server: Server, content_type: str) -> None:
    response = server.post("mod", {"text": "hello"}, headers={"Content-Type": content_type}, query="?wait=30")
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text


@pytest.mark.parametrize(("raw", "where"), [
    (b'{"text": "\\ud800"}', "text"),
    (b'{"text": "ok", "meta": {"tags": ["a", "x\\uDC00y"]}}', "meta.tags[1]"),
    (b'{"text": "ok", "\\ud83d": 1}', "a key of the body"),
    (b'{"text": "\xed\xa0\x80"}', "UTF-8"),  # the surrogate encoded as bytes (CESU-8), not escaped
])
def test_lone_surrogates_are_refused_at_the_door(server: Server, pack: Any, worker_env: dict[str, str],
                                                 simulator: Simulator, raw: bytes, where: str) -> None:
    """Issue 10 D8: refused with 400 naming where, so no run record ever holds one."""
    event = f"evt-{secrets.token_hex(6)}"
    response = server.post("mod", raw, headers={"X-Request-Id": event})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and where in error["message"]
    assert _runs_with_event(pack, event) == []
    time.sleep(0.2)
    assert simulator.calls == 0


def test_a_valid_surrogate_pair_is_text_and_the_run_reads_back(server: Server, pack: Any,
                                                               worker_env: dict[str, str]) -> None:
    response = server.post("mod", b'{"text": "smile \\ud83d\\ude00"}', query="?wait=30")
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    run_id = response.json()["run_id"]
    assert pack.engine().store.record(run_id)["inputs"]["text"] == "smile \U0001f600"
    fetched = server.get(f"/runs/{run_id}", {"X-Pack-Secret": SECRET})
    assert fetched.status_code == 200 and fetched.json()["inputs"]["text"] == "smile \U0001f600"
    shown = run_cli(worker_env, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["inputs"]["text"] == "smile \U0001f600"


def test_a_record_holding_a_lone_surrogate_still_reads_back(server: Server, pack: Any) -> None:
    """Defence in depth for D8: text from elsewhere (an API answer, an older run) never makes GET /runs/<id> 500."""
    response = server.post("mod", {"text": "fine"}, query="?wait=30")
    run_id = response.json()["run_id"]
    pack.engine().store.update(run_id, output={"note": "bad \ud800 text"})
    try:
        fetched = server.get(f"/runs/{run_id}", {"X-Pack-Secret": SECRET})
    finally:  # the session's store is shared: `runs list --json` in later tests still trips over such a record
        pack.engine().store.update(run_id, output={"note": "repaired"})
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["output"] == {"note": "bad \ud800 text"}


def test_payload_templates_are_data(server: Server, pack: Any, simulator: Simulator) -> None:
    text = "{{ 7*7 }} {% for x in range(3) %}{{ x }}{% endfor %} {{ ''.__class__.__mro__[1].__subclasses__() }}"
    response = server.post("echo", {"text": text}, query="?wait=30")
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    assert response.json()["output"]["text"] == text
    assert pack.engine().store.record(response.json()["run_id"])["inputs"]["text"] == text
    sent = {r["path"]: r["body"] for r in simulator.requests}
    assert sent["/v1/moderations"]["input"] == text
    assert sent["/v1/chat/completions"]["messages"][0]["content"] == text
    assert "49" not in json.dumps(sent["/v1/moderations"])


# ---------------------------------------------------------------- the store


def test_store_unreachable_is_503_never_202(pack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.engine import Engine
    from workers.state.kv import RedisKV
    from workers.state.ledger import Ledger
    from workers.state.runs import RunStore

    monkeypatch.setenv(SECRET_ENV, SECRET)
    dead = RedisKV(f"redis://127.0.0.1:{free_port()}/0")
    engine = Engine(RunStore(dead), Ledger(dead), pack.settings, lambda *a: None)
    down = Server(create_app(HOOKS_DIR, engine=engine))
    up = Server(create_app(HOOKS_DIR, engine=pack.engine()))
    try:
        response = down.post("mod", {"text": "hello"}, headers={"Idempotency-Key": "lost-1"})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "store_unavailable" and response.headers["retry-after"]
        body = json.dumps({"text": "signed"}).encode()
        signed = down.post("signed", body, headers={"X-Pack-Signature": sign(SECRET, body)})
        assert signed.status_code == 503 and signed.json()["error"]["code"] == "store_unavailable"
        assert down.get("/runs/x-1", {"X-Pack-Secret": SECRET}).status_code == 503
        assert down.get("/healthz").status_code == 503
        healthy = up.get("/healthz")
        assert healthy.status_code == 200 and healthy.json()["ok"] is True
    finally:
        down.stop()
        up.stop()


# ---------------------------------------------------------------- the command


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.serve", "serve", "--workflows", str(HOOKS_DIR), "--port", str(port),
         "--max-wait", "20"], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError("serve did not start:\n" + process.communicate(timeout=10)[0])
        time.sleep(0.1)


def test_serve_command_runs_hooks_and_logs_no_secret(pack: Any, worker_env: dict[str, str]) -> None:
    port = free_port()
    env = {**worker_env, SECRET_ENV: SECRET}
    env.pop("UNSET_HOOK_SECRET", None)
    process = _serve(env, port)
    url = f"http://127.0.0.1:{port}"
    try:
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


def test_an_api_key_pasted_into_a_payload_is_scrubbed(pack: Any, worker_env: dict[str, str],
                                                      simulator: Simulator, tmp_path: Path) -> None:
    """Issue 10 D12: `serve` knows the stored integrations' keys, so a pasted key never reaches a run record."""
    home = tmp_path / "serve-home"  # its own store: the steps run on the session worker, with its own
    home.mkdir()
    env = {**worker_env, "OPENAI_PACK_HOME": str(home), SECRET_ENV: SECRET}
    key = f"sk-proj-{secrets.token_hex(20)}"  # new to every process: only the store can teach it
    added = run_cli(env, "integrations", "add", "customer", "--key-stdin", "--base-url", simulator.url,
                    input_text=key + "\n")
    assert added.returncode == 0, added.stderr
    port = free_port()
    process = _serve(env, port)
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/hooks/mod?wait=30", timeout=30,
                            json={"text": f"our key is {key}, please rotate it"}, headers={"X-Pack-Secret": SECRET})
        assert answer.status_code == 200, answer.text
        run_id = answer.json()["run_id"]
        fetched = httpx.get(f"http://127.0.0.1:{port}/runs/{run_id}", headers={"X-Pack-Secret": SECRET})
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    record = pack.engine().store.record(run_id)
    assert record["inputs"]["text"] == "our key is [REDACTED], please rotate it"
    shown = run_cli(env, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    for text in (json.dumps(record), fetched.text, answer.text, shown.stdout, output):
        assert key not in text


@pytest.mark.parametrize(("option", "value"), [("--rate-per-minute", "0"), ("--max-wait", "-1"),
                                               ("--failed-auth-per-minute", "0")])
def test_serve_options_out_of_range_exit_2_naming_the_option(worker_env: dict[str, str], option: str,
                                                              value: str) -> None:
    result = run_cli(worker_env, "serve", "--workflows", str(HOOKS_DIR), option, value, timeout=60)
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stderr)["error"]
    assert error["field"] == option and option in error["message"]
