"""Actions against the loopback simulator: examples, auth placements, errors and retries, streaming,
create_edit, create_image, and the secret canary."""

from __future__ import annotations

import base64
import email.policy
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import actions
from actions.simulator import Simulator
from actions.spec.generate import load_overrides
from integration import errors
from integration.client import close_all_clients
from integration.model import Integration
from integration.store import IntegrationStore
from tests.conftest import CANARY_KEY, REPO_ROOT, run_cli
from workers.cli.main import main as cli_main


def _cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_PACK_HOME"] = str(home)
    return env


# ---------------------------------------------------------------- examples end to end


@pytest.mark.parametrize("name", sorted(actions.registry()))
def test_every_example_runs_end_to_end(name: str, sim_integration: Integration, simulator: Simulator,
                                       tmp_path: Path) -> None:
    manifest = actions.get(name)
    for example in manifest.examples:
        inputs = dict(example.input)
        if "save_to" in inputs:
            inputs["save_to"] = str(tmp_path / "images")
        output = actions.run(name, inputs, sim_integration)
        assert set(example.output) <= set(output) | {"usage", "system_fingerprint", "service_tier"}, (name, output)
    assert simulator.calls >= len(manifest.examples)


@pytest.mark.parametrize("name", sorted(actions.registry()))
def test_every_actions_first_example_runs_from_the_cli(name: str, simulator: Simulator, isolated_home: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`openai-pack run NAME --input EXAMPLE` in this process (a child process per action would cost ~1 s each):
    exit 0 and one JSON object on stdout, through the CLI's own input reading, integration lookup and output."""
    IntegrationStore(path=isolated_home / "integrations.json").add(
        Integration(name="sim", base_url=simulator.url, auth={"placement": "none"}), make_default=True)
    manifest = actions.get(name)
    inputs = dict(manifest.examples[0].input)
    if "save_to" in inputs:
        inputs["save_to"] = str(tmp_path / "saved")
    with pytest.raises(SystemExit) as exited:
        cli_main(["run", name, "--input", json.dumps(inputs)])
    out, err = capsys.readouterr()
    assert int(exited.value.code or 0) == 0, (name, err)
    assert isinstance(json.loads(out), dict), (name, out)
    assert simulator.calls >= 1


# ---------------------------------------------------------------- auth placements through the CLI


#: The seven hand-written seed actions (their manifests are kept whole as generator overrides).
CURATED = {op_id for op_id, (_, override) in load_overrides().items() if "manifest" in override}


def _cli_sample(part: int) -> dict[str, actions.ActionManifest]:
    """The seed actions, plus one generated action of a different binding kind per auth placement (a file
    upload, an admin call, a DELETE, a GET with query fields). Each CLI run is a process start (~1 s), so
    every action's example runs in-process above and this sample runs through the CLI here."""
    kinds = [lambda m: m.http.encoding == "multipart", lambda m: m.http.path.startswith("/organization/"),
             lambda m: m.http.method == "DELETE", lambda m: m.http.method == "GET" and bool(m.http.query)]
    registry = actions.registry()
    generated = [m for _, m in sorted(registry.items()) if m.openapi.operationId not in CURATED and not m.deprecated]
    extra = next(m for m in generated if kinds[part % len(kinds)](m))
    return {name: m for name, m in sorted(registry.items()) if m.openapi.operationId in CURATED} | {extra.name: extra}


AUTH_PLACEMENTS = [
    ({"placement": "bearer"}, ["--auth", "bearer"]),
    ({"placement": "header", "name": "X-Api-Key"}, ["--auth", "header", "--auth-name", "X-Api-Key"]),
    ({"placement": "header", "name": "X-Proxy-Auth", "prefix": "Token "},
     ["--auth", "header", "--auth-name", "X-Proxy-Auth", "--auth-prefix", "Token "]),
    ({"placement": "query", "name": "api_key"}, ["--auth", "query", "--auth-name", "api_key"]),
]


@pytest.mark.parametrize(("auth", "cli_args"), AUTH_PLACEMENTS)
def test_every_action_runs_from_the_cli_through_each_auth_placement(auth: dict[str, str], cli_args: list[str],
                                                                    tmp_path: Path) -> None:
    env = _cli_env(tmp_path / "home")
    env["CUSTOMER_KEY"] = CANARY_KEY
    env["CUSTOMER_ADMIN_KEY"] = CANARY_KEY + "-admin"  # the /organization actions send it, placed like the API key
    with Simulator(port=0, api_key=CANARY_KEY, admin_key=CANARY_KEY + "-admin", auth=auth) as sim:
        added = run_cli(env, "integrations", "add", "customer", "--key-env", "CUSTOMER_KEY", "--admin-key-env",
                        "CUSTOMER_ADMIN_KEY", "--base-url", sim.url,
                        "--org", "org-acme", "--project", "proj_1", "--default", *cli_args)
        assert added.returncode == 0, added.stderr
        check = run_cli(env, "integrations", "check", "customer")
        assert check.returncode == 0, check.stderr
        part = [placement for placement, _ in AUTH_PLACEMENTS].index(auth)
        for name, manifest in _cli_sample(part).items():
            inputs = dict(manifest.examples[0].input)
            if "save_to" in inputs:
                inputs["save_to"] = str(tmp_path / "images")
            result = run_cli(env, "run", name, "--input", json.dumps(inputs))
            assert result.returncode == 0, (name, result.stderr)
            assert isinstance(json.loads(result.stdout), dict)
            assert CANARY_KEY not in result.stdout + result.stderr
        assert sim.requests and all(r["headers"].get("openai-organization") == "org-acme"
                                    for r in sim.requests if r["path"] != "/v1/_sim/images")
        assert CANARY_KEY not in json.dumps(sim.requests)
    stored = (tmp_path / "home" / "integrations.json").read_text()
    assert CANARY_KEY not in stored


def test_wrong_key_is_an_authentication_error_exit_1(tmp_path: Path) -> None:
    env = _cli_env(tmp_path / "home")
    env["CUSTOMER_KEY"] = "sk-wrong-key-000000000000"
    with Simulator(port=0, api_key=CANARY_KEY, auth={"placement": "bearer"}) as sim:
        run_cli(env, "integrations", "add", "c", "--key-env", "CUSTOMER_KEY", "--base-url", sim.url, "--default")
        result = run_cli(env, "run", "list_models")
        assert result.returncode == 1
        error = json.loads(result.stderr)["error"]
        assert error["code"] == "authentication_failed" or error["type"] == "AuthenticationError"
        assert "sk-wrong-key" not in result.stderr
        assert sim.calls == 1


def test_bad_input_exits_2_with_the_field_named_and_sends_nothing(simulator: Simulator, tmp_path: Path) -> None:
    env = _cli_env(tmp_path / "home")
    IntegrationStore(path=tmp_path / "home" / "integrations.json").add(
        Integration(name="sim", base_url=simulator.url, auth={"placement": "none"}), make_default=True)
    result = run_cli(env, "run", "create_chat_completion", "--set", "model=gpt-4o", "--set", "temperature=hot",
                     "--input", '{"messages": [{"role": "user", "content": "hi"}]}')
    assert result.returncode == 2
    error = json.loads(result.stderr)["error"]
    assert "temperature" in json.dumps(error)
    assert simulator.calls == 0


# ---------------------------------------------------------------- errors and retries


MODERATION = {"input": "hello"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_retry_after_is_honoured_then_success(sim_integration: Integration, simulator: Simulator) -> None:
    simulator.add_fault({"path": "/moderations", "kind": "status", "status": 429, "times": 1,
                         "headers": {"Retry-After": "1"}, "error_code": "rate_limit_exceeded"})
    started = time.monotonic()
    result = actions.execute("create_moderation", MODERATION, sim_integration)
    assert time.monotonic() - started >= 1.0
    assert result.attempts == 2 and simulator.calls == 2


def test_retry_after_ms_is_honoured(sim_integration: Integration, simulator: Simulator) -> None:
    simulator.add_fault({"path": "/chat/completions", "kind": "status", "status": 429, "times": 1,
                         "headers": {"retry-after-ms": "300", "Retry-After": "30"}})
    started = time.monotonic()
    result = actions.execute("create_chat_completion", CHAT, sim_integration)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5 and result.attempts == 2


def test_server_errors_are_retried_up_to_the_limit(sim_integration: Integration, simulator: Simulator) -> None:
    simulator.add_fault({"kind": "status", "status": 503, "times": 2, "headers": {"retry-after-ms": "10"}})
    assert actions.execute("list_models", {}, sim_integration).attempts == 3
    simulator.reset()
    simulator.add_fault({"kind": "status", "status": 500, "times": -1, "headers": {"retry-after-ms": "10"}})
    with pytest.raises(errors.ServerError) as caught:
        actions.run("list_models", {}, sim_integration)
    assert simulator.calls == sim_integration.max_retries + 1
    assert caught.value.retryable and caught.value.request_id


@pytest.mark.parametrize(("status", "error_code", "cls"), [
    (400, None, errors.BadRequestError),
    (401, "invalid_api_key", errors.AuthenticationError),
    (403, None, errors.PermissionDeniedError),
    (404, None, errors.NotFoundError),
    (409, None, errors.ConflictError),
    (422, None, errors.UnprocessableEntityError),
    (429, "insufficient_quota", errors.QuotaExceededError),
])
def test_non_retryable_errors_fail_in_one_call(status: int, error_code: str | None, cls: type[errors.ApiError],
                                               sim_integration: Integration, simulator: Simulator) -> None:
    simulator.add_fault({"kind": "status", "status": status, "error_code": error_code, "times": -1})
    with pytest.raises(cls) as caught:
        actions.run("create_moderation", MODERATION, sim_integration)
    assert simulator.calls == 1
    error = caught.value
    assert not error.retryable and error.status == status and error.request_id
    assert error.to_dict()["code"]


def test_timeout_on_a_paid_call_is_not_repeated(simulator: Simulator) -> None:
    integration = Integration(name="slow", base_url=simulator.url, auth={"placement": "none"},
                              timeout={"connect": 2, "read": 0.3}, max_retries=3)
    simulator.add_fault({"path": "/chat/completions", "kind": "hang", "latency": 2, "times": 1})
    with pytest.raises(errors.NoAnswerError) as caught:
        actions.run("create_chat_completion", CHAT, integration)
    assert not caught.value.retryable and "outcome is unknown" in str(caught.value)
    assert simulator.calls == 1


def test_timeout_on_an_idempotent_call_is_retried(simulator: Simulator) -> None:
    integration = Integration(name="slow", base_url=simulator.url, auth={"placement": "none"},
                              timeout={"connect": 2, "read": 0.3}, max_retries=2)
    simulator.add_fault({"path": "/models", "kind": "hang", "latency": 1, "times": 1})
    assert actions.execute("list_models", {}, integration).attempts == 2


def test_dropped_connection_on_a_paid_call_is_outcome_unknown(sim_integration: Integration,
                                                              simulator: Simulator) -> None:
    simulator.add_fault({"path": "/images/generations", "kind": "drop", "times": 1})
    with pytest.raises(errors.NoAnswerError):
        actions.run("create_image", {"prompt": "a cat"}, sim_integration)
    assert simulator.calls == 1


def test_malformed_body_is_a_response_shape_error(sim_integration: Integration, simulator: Simulator) -> None:
    simulator.add_fault({"kind": "malformed", "times": 1})
    with pytest.raises(errors.ResponseShapeError):
        actions.run("create_moderation", MODERATION, sim_integration)


def test_connect_error_is_never_sent() -> None:
    integration = Integration(name="nowhere", base_url="http://127.0.0.1:9/v1", auth={"placement": "none"},
                              timeout={"connect": 0.5}, max_retries=0)
    with pytest.raises(errors.ConnectError) as caught:
        actions.run("create_chat_completion", CHAT, integration)
    assert caught.value.retryable


# ---------------------------------------------------------------- streaming, edit, image


def test_streamed_chat_is_assembled_into_the_plain_shape(sim_integration: Integration, simulator: Simulator) -> None:
    plain = actions.run("create_chat_completion", CHAT, sim_integration)
    streamed = actions.run("create_chat_completion", CHAT | {"stream": "true",
                                                            "stream_options": {"include_usage": True}},
                           sim_integration)
    assert streamed["object"] == "chat.completion"
    assert streamed["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    assert streamed["choices"][0]["finish_reason"] == "stop"
    assert streamed["usage"]["total_tokens"] == plain["usage"]["total_tokens"]
    assert simulator.requests[-1]["body"]["stream"] is True


def test_streamed_completion_is_assembled(sim_integration: Integration) -> None:
    inputs = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": "16"}
    plain = actions.run("create_completion", inputs, sim_integration)
    streamed = actions.run("create_completion", inputs | {"stream": True}, sim_integration)
    assert streamed["object"] == "text_completion"
    assert streamed["choices"][0]["text"] == plain["choices"][0]["text"]


def test_create_edit_runs_through_chat_completions(simulator: Simulator) -> None:
    integration = Integration(name="s", base_url=simulator.url, auth={"placement": "none"})
    output = actions.run("create_edit", {"model": "text-davinci-edit-001", "input": "What day of the wek is it?",
                                         "instruction": "Fix the spelling mistakes", "n": "1",
                                         "temperature": "0.5"}, integration)
    assert output["object"] == "edit" and output["choices"][0]["text"] and output["usage"]["total_tokens"] > 0
    body = simulator.requests[-1]["body"]
    assert simulator.requests[-1]["path"] == "/v1/chat/completions"
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.5
    assert "Fix the spelling mistakes" in json.dumps(body["messages"])


def test_create_edit_uses_the_real_endpoint_when_the_server_has_it(simulator: Simulator) -> None:
    integration = Integration(name="s", base_url=simulator.url, auth={"placement": "none"}, legacy_edits=True)
    output = actions.run("create_edit", {"model": "text-davinci-edit-001", "instruction": "Fix it",
                                         "input": "teh"}, integration)
    assert output["object"] == "edit"
    assert simulator.requests[-1]["path"] == "/v1/edits"


def test_images_saved_to_files(sim_integration: Integration, tmp_path: Path) -> None:
    for response_format in ("b64_json", "url"):
        out = actions.run("create_image", {"prompt": "a lighthouse", "n": "2", "response_format": response_format,
                                           "save_to": str(tmp_path), "file_prefix": response_format},
                          sim_integration)
        paths = [Path(item["path"]) for item in out["data"]]
        assert len(paths) == 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    assert len(list(tmp_path.iterdir())) == 4  # never overwritten


def test_image_b64_is_valid_png(sim_integration: Integration) -> None:
    out = actions.run("create_image", {"prompt": "x", "response_format": "b64_json"}, sim_integration)
    assert base64.b64decode(out["data"][0]["b64_json"]).startswith(b"\x89PNG")


def test_unwritable_save_to_fails_before_the_paid_call(sim_integration: Integration, simulator: Simulator,
                                                       tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(errors.InputError) as caught:
        actions.run("create_image", {"prompt": "x", "save_to": str(blocker / "sub")}, sim_integration)
    assert caught.value.problems[0]["field"] == "save_to"
    assert simulator.calls == 0


def test_model_options_come_from_list_models(simulator: Simulator, tmp_path: Path) -> None:
    env = _cli_env(tmp_path / "home")
    IntegrationStore(path=tmp_path / "home" / "integrations.json").add(
        Integration(name="sim", base_url=simulator.url, auth={"placement": "none"}), make_default=True)
    result = run_cli(env, "actions", "options", "create_chat_completion", "model")
    assert result.returncode == 0, result.stderr
    assert "gpt-4o-mini" in result.stdout


# ---------------------------------------------------------------- the secret canary


def test_the_key_never_appears_in_logs_errors_results_or_the_store(
        keyed_simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    store = IntegrationStore(path=tmp_path / "integrations.json")
    store.add(Integration(name="canary", api_key=CANARY_KEY, base_url=keyed_simulator.url,
                          timeout={"connect": 1, "read": 0.5}, max_retries=1), make_default=True)
    integration = store.get("canary")
    seen: list[str] = []
    outputs: list[Any] = []
    for fault in ({"kind": "status", "status": 500, "times": -1}, {"kind": "status", "status": 400, "times": 1},
                  {"kind": "drop", "times": 1}, {"kind": "hang", "latency": 1, "times": 1},
                  {"kind": "malformed", "times": 1}, None):
        keyed_simulator.reset()
        if fault:
            keyed_simulator.add_fault(fault | {"headers": {"retry-after-ms": "5"}})
        try:
            outputs.append(actions.execute("create_moderation", MODERATION, integration).record())
        except errors.PackError as exc:
            seen += [str(exc), repr(exc), json.dumps(exc.to_dict())]
    wrong = Integration(name="wrong", api_key=CANARY_KEY[::-1], base_url=keyed_simulator.url)
    with pytest.raises(errors.AuthenticationError) as caught:
        actions.run("list_models", {}, wrong)
    seen.append(str(caught.value))
    bad_url = Integration(name="bad", api_key=CANARY_KEY, auth={"placement": "query", "name": "key"},
                          base_url="http://127.0.0.1:9/v1", timeout={"connect": 0.3}, max_retries=0)
    with pytest.raises(errors.ConnectError) as connect:
        actions.run("list_models", {}, bad_url)
    seen.append(str(connect.value))
    captured = capsys.readouterr()
    haystack = "\n".join([*seen, json.dumps(outputs), caplog.text, captured.out, captured.err,
                          (tmp_path / "integrations.json").read_text(), repr(integration),
                          integration.model_dump_json(), str(integration.public_dict())])
    assert len(seen) >= 6
    assert CANARY_KEY not in haystack
    assert CANARY_KEY[::-1] not in haystack
    close_all_clients()


# ---------------------------------------------------------------- bad input from the command line (D7, D9)


def _cli_with_simulator(simulator: Simulator, tmp_path: Path) -> dict[str, str]:
    env = _cli_env(tmp_path / "home")
    IntegrationStore(path=tmp_path / "home" / "integrations.json").add(
        Integration(name="sim", base_url=simulator.url, auth={"placement": "none"}), make_default=True)
    return env


def _refused(result: Any) -> dict[str, Any]:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    return json.loads(result.stderr)["error"]  # type: ignore[no-any-return]


CHAT_TEXT = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(("args", "field"), [
    (["--input", CHAT_TEXT + ', "temperature": NaN}'], "--input"),
    (["--input", CHAT_TEXT + ', "temperature": -Infinity}'], "--input"),
    (["--input", CHAT_TEXT + "}", "--set", "temperature=NaN"], "temperature"),
    (["--input", '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}'],
     "messages[0].content"),
    (["--input", "@DEEP"], "--input"),
    (["--input", CHAT_TEXT + ', "stop": ["a", "b", "c", "d", "e"]}'], "stop"),
    (["--input", CHAT_TEXT + ', "stop": "[\\"a\\", \\"b\\", \\"c\\", \\"d\\", \\"e\\"]"}'], "stop"),
    (["--input", CHAT_TEXT + "}", "--set", 'stop=["a","b","c","d","e"]'], "stop"),
])
def test_malformed_cli_input_exits_2_naming_the_field(args: list[str], field: str, simulator: Simulator,
                                                      tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"  # 200 kB: too long for one command-line argument
    deep.write_text('{"model": "gpt-4o-mini", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    args = [f"@{deep}" if a == "@DEEP" else a for a in args]
    error = _refused(run_cli(_cli_with_simulator(simulator, tmp_path), "run", "create_chat_completion", *args))
    assert error["problems"][0]["field"] == field, error
    assert simulator.calls == 0


def test_input_files_that_are_not_utf8_are_refused(simulator: Simulator, tmp_path: Path) -> None:
    env = _cli_with_simulator(simulator, tmp_path)
    latin = tmp_path / "input.json"
    latin.write_bytes('{"input": "caf\u00e9"}'.encode("latin-1"))
    error = _refused(run_cli(env, "run", "create_moderation", "--input", f"@{latin}"))
    assert error["problems"][0]["field"] == "--input" and "not UTF-8" in error["problems"][0]["reason"]
    text = tmp_path / "text.txt"
    text.write_bytes(b"\xff\xfeh\x00i\x00")  # UTF-16, as Windows tools write it
    error = _refused(run_cli(env, "run", "create_moderation", "--set", f"input=@{text}"))
    assert error["problems"][0]["field"] == "input" and "not UTF-8" in error["problems"][0]["reason"]
    error = _refused(run_cli(env, "run", "create_moderation", "--input", f"@{tmp_path / 'missing.json'}"))
    assert error["problems"][0]["field"] == "--input"
    good = tmp_path / "good.txt"
    good.write_text("caf\u00e9", encoding="utf-8")
    assert run_cli(env, "run", "create_moderation", "--set", f"input=@{good}").returncode == 0
    assert simulator.requests[-1]["body"]["input"] == "caf\u00e9"


# ---------------------------------------------------------------- multipart bodies against a real loopback server


TRANSCRIPTION = {
    "name": "transcribe_recording", "title": "Transcribe Recording", "category": "Audio",
    "description": "Transcribe audio into the input language.",
    "openapi": {"operationId": "createTranscription"},
    "http": {"method": "POST", "path": "/audio/transcriptions", "encoding": "multipart"},
    "idempotent": False,
    "input": {
        "type": "object", "additionalProperties": False, "required": ["file", "model"],
        "properties": {
            "file": {"type": "string", "format": "binary", "x-max-bytes": 64, "description": "The audio file."},
            "model": {"type": "string", "minLength": 1, "description": "The model, e.g. whisper-1."},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1, "description": "Sampling temperature."},
            "timestamp_granularities": {"type": "array", "items": {"enum": ["word", "segment"]},
                                        "description": "Timestamp detail."},
        },
    },
    "output": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    "examples": [{"title": "Transcribe a call", "input": {"file": "call.mp3", "model": "whisper-1"},
                  "output": {"text": "Hello."}}],
}


class _FormServer(ThreadingHTTPServer):
    """Records each POST's multipart parts and answers like the API; 127.0.0.1 only."""

    def __init__(self) -> None:
        self.received: list[list[tuple[str, str | None, bytes]]] = []
        self.content_types: list[str] = []
        super().__init__(("127.0.0.1", 0), _FormHandler)


class _FormHandler(BaseHTTPRequestHandler):
    server: _FormServer

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's spelling
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.content_types.append(self.headers["Content-Type"])
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        self.server.received.append([(part.get_param("name", header="content-disposition"), part.get_filename(),
                                      part.get_payload(decode=True)) for part in message.iter_parts()])
        answer = json.dumps({"text": "Hello."}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def form_server() -> Any:
    server = _FormServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def transcription(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> actions.ActionManifest:
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "transcribe_recording.json").write_text(json.dumps(TRANSCRIPTION), encoding="utf-8")
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, str(tmp_path / "extra"))
    return actions.get("transcribe_recording")


def test_multipart_sends_files_and_form_fields(transcription: actions.ActionManifest, form_server: _FormServer,
                                               tmp_path: Path) -> None:
    integration = Integration(name="form", base_url=f"http://127.0.0.1:{form_server.server_port}/v1",
                              auth={"placement": "none"}, max_retries=0)
    audio = tmp_path / "call.mp3"
    audio.write_bytes(b"ID3\x00fake-mp3")
    output = actions.run("transcribe_recording", {"file": f"@{audio}", "model": "whisper-1", "temperature": "0.2",
                                                  "timestamp_granularities": '["word", "segment"]'}, integration)
    assert output == {"text": "Hello."}
    parts = form_server.received[-1]
    assert ("file", "call.mp3", b"ID3\x00fake-mp3") in parts
    assert ("model", None, b"whisper-1") in parts and ("temperature", None, b"0.2") in parts
    assert [p[2] for p in parts if p[0] == "timestamp_granularities[]"] == [b"word", b"segment"]
    assert transcription.file_fields == {"file"}
    encoded = base64.b64encode(b"RIFF-wav").decode()
    actions.run("transcribe_recording", {"file": f"data:audio/wav;base64,{encoded}", "model": "whisper-1"},
                integration)
    assert [p for p in form_server.received[-1] if p[0] == "file"][0][2] == b"RIFF-wav"
    actions.run("transcribe_recording", {"file": str(audio), "model": "whisper-1"}, integration)  # a plain path
    assert len(form_server.received) == 3
    assert all(content_type.startswith("multipart/form-data") for content_type in form_server.content_types)


def test_multipart_without_a_file_part_is_still_multipart(form_server: _FormServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An operation whose file is optional (a file id instead) still gets a multipart body."""
    optional = json.loads(json.dumps(TRANSCRIPTION)) | {"name": "transcribe_without_file"}
    optional["input"]["required"] = ["model"]
    (tmp_path / "transcribe_without_file.json").write_text(json.dumps(optional), encoding="utf-8")
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, str(tmp_path))
    integration = Integration(name="form", base_url=f"http://127.0.0.1:{form_server.server_port}/v1",
                              auth={"placement": "none"}, max_retries=0)
    actions.run("transcribe_without_file", {"model": "whisper-1"}, integration)
    assert form_server.content_types[-1].startswith("multipart/form-data")
    assert form_server.received[-1] == [("model", None, b"whisper-1")]


@pytest.mark.parametrize(("value", "words"), [
    ("@/nonexistent/call.mp3", "does not exist"),
    ("data:audio/wav;base64,@@@", "does not decode"),
    ("BIG", "more than the 64"),
    ("DIR", "is not a file"),
])
def test_a_bad_file_field_is_named_before_any_request(value: str, words: str, transcription: actions.ActionManifest,
                                                      form_server: _FormServer, tmp_path: Path) -> None:
    integration = Integration(name="form", base_url=f"http://127.0.0.1:{form_server.server_port}/v1",
                              auth={"placement": "none"}, max_retries=0)
    big = tmp_path / "big.mp3"
    big.write_bytes(b"x" * 65)
    value = {"BIG": str(big), "DIR": str(tmp_path)}.get(value, value)
    with pytest.raises(errors.InputError) as caught:
        actions.run("transcribe_recording", {"file": value, "model": "whisper-1"}, integration)
    assert caught.value.problems[0]["field"] == "file" and words in caught.value.problems[0]["reason"]
    assert form_server.received == []


# ---------------------------------------------------------------- a new action is one manifest file


EMBEDDING = {
    "name": "embed_text", "title": "Embed Text", "category": "Embeddings",
    "description": "Turn text into a vector of numbers that captures its meaning (for search and clustering).",
    "openapi": {"operationId": "createEmbedding", "spec": "2026-08"},
    "http": {"method": "POST", "path": "/embeddings", "encoding": "json"},
    "idempotent": False,
    "input": {
        "type": "object", "additionalProperties": False, "required": ["model", "input"],
        "properties": {
            "input": {
                "description": "Text to embed: a string, a list of strings, or token arrays.",
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string"}},
                    {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "integer"}},
                    {"type": "array", "minItems": 1, "maxItems": 2048,
                     "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}}},
                ],
            },
            "model": {"type": "string", "minLength": 1, "x-options-from": "list_models",
                      "examples": ["text-embedding-3-small"], "description": "ID of the embedding model."},
            "encoding_format": {"enum": ["float", "base64"], "default": "float",
                                "description": "Return the embeddings as floats or base64."},
            "dimensions": {"type": "integer", "minimum": 1, "description": "How many dimensions to return."},
            "user": {"type": "string", "description": "Your end user's id, for abuse monitoring."},
        },
    },
    "output": {
        "type": "object", "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"}, "model": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object", "required": ["index", "embedding", "object"],
                                                "properties": {"index": {"type": "integer"},
                                                               "object": {"const": "embedding"},
                                                               "embedding": {"type": "array",
                                                                             "items": {"type": "number"}}}}},
            "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"},
                                                       "total_tokens": {"type": "integer"}}},
        },
    },
    "examples": [{"title": "Embed a ticket subject", "input": {"model": "text-embedding-3-small",
                                                               "input": "Printer on fire"},
                  "output": {"object": "list", "model": "text-embedding-3-small",
                             "data": [{"index": 0, "object": "embedding", "embedding": [0.01, -0.02]}],
                             "usage": {"prompt_tokens": 3, "total_tokens": 3}}}],
}


@pytest.fixture
def extra_embedding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of the user's own holding one new manifest, named by OPENAI_PACK_MANIFEST_PATH."""
    extra = tmp_path / "my-actions"
    extra.mkdir()
    (extra / "embed_text.json").write_text(json.dumps(EMBEDDING, indent=2) + "\n", encoding="utf-8")
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, str(extra))
    return extra


def test_a_new_action_is_one_manifest_file(extra_embedding: Path, tmp_path: Path) -> None:
    """Written as a new contributor would: one JSON file in a directory of their own, nothing else (the
    pack ships create_embedding itself; this is the user's own variant bound to the same operation).

    The simulator is started after the directory is named, as ``openai-pack simulate`` would be.
    (The Celery task ``openai.embed_text`` is the workers' side of this proof.)
    """
    with Simulator(port=0) as simulator:
        _one_manifest_file_is_enough(extra_embedding, simulator, tmp_path)


def _one_manifest_file_is_enough(extra: Path, simulator: Simulator, tmp_path: Path) -> None:
    env = _cli_with_simulator(simulator, tmp_path) | {actions.MANIFEST_PATH_ENV: str(extra)}

    # the registry and the CLI's listing
    assert actions.get("embed_text").http.path == "/embeddings"
    listed = run_cli(env, "actions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "embed_text" in {a["name"] for a in json.loads(listed.stdout)}
    shown = run_cli(env | {"COLUMNS": "240"}, "actions", "show", "embed_text")
    assert shown.returncode == 0 and "encoding_format" in shown.stdout and "POST /embeddings" in shown.stdout
    as_json = run_cli(env, "actions", "show", "embed_text", "--json")
    assert json.loads(as_json.stdout)["input"] == EMBEDDING["input"]

    # the docs
    docs = run_cli(env, "docs", "--action", "embed_text")
    assert docs.returncode == 0 and "## Embed Text (`embed_text`)" in docs.stdout
    assert "`embed_text`" in run_cli(env, "docs").stdout

    # run against the loopback simulator, and a bad value refused naming the field
    ran = run_cli(env, "run", "embed_text", "--input", json.dumps(EMBEDDING["examples"][0]["input"]))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["data"][0]["object"] == "embedding"
    assert simulator.requests[-1]["path"] == "/v1/embeddings"
    bad = run_cli(env, "run", "embed_text", "--set", "model=text-embedding-3-small", "--set", "dimensions=0")
    assert bad.returncode == 2 and json.loads(bad.stderr)["error"]["problems"][0]["field"] == "dimensions"

    # the generated standard tests pick it up
    standard = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "embed_text",
         "tests/test_manifests.py", "tests/test_properties.py",
         "tests/test_actions.py::test_every_example_runs_end_to_end"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert standard.returncode == 0, standard.stdout[-3000:]
    summary = standard.stdout.strip().splitlines()[-1]
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|skipped)", summary)}
    assert counts.get("passed", 0) >= 8 and sum(counts.values()) >= 14, summary


def test_an_extra_manifest_is_a_celery_task_on_a_real_worker(extra_embedding: Path, redis_server: str,
                                                             worker_env: dict[str, str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers' side of the one-file proof: ``openai.create_embedding`` exists on a worker started
    with the directory named, and runs against the simulator with nothing else added."""
    import redis

    import workers.app
    from tests.conftest import WorkerProcess

    base = redis_server.rsplit("/", 1)[0]
    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": base + "/6", "OPENAI_PACK_RESULT_BACKEND": base + "/7",
                              actions.MANIFEST_PATH_ENV: str(extra_embedding)}
    for db in (6, 7):
        redis.Redis.from_url(f"{base}/{db}").flushdb()
    for key, value in env.items():
        if key.startswith("OPENAI_PACK"):
            monkeypatch.setenv(key, value)
    with Simulator(port=0) as simulator:
        store = IntegrationStore(path=Path(env["OPENAI_PACK_HOME"]) / "integrations.json")
        store.add(Integration(name="extra-actions", base_url=simulator.url, auth={"placement": "none"}),
                  replace=True)
        workers.app.reconfigure()
        worker = WorkerProcess(env, concurrency=2, name="extra")
        try:
            result = workers.app.app.send_task("openai.create_embedding",
                                               args=[EMBEDDING["examples"][0]["input"], "extra-actions"])
            output = result.get(timeout=60)
            assert output["data"][0]["object"] == "embedding"
            assert [r["path"] for r in simulator.requests] == ["/v1/embeddings"]
        finally:
            worker.stop()
            monkeypatch.undo()  # the environment as it was, then the app re-read from it
            workers.app.reconfigure()


def test_a_broken_extra_directory_is_a_json_error_not_a_traceback(tmp_path: Path) -> None:
    env = _cli_env(tmp_path / "home") | {actions.MANIFEST_PATH_ENV: str(tmp_path / "missing")}
    for args in (["actions", "list"], ["actions", "show", "list_models"], ["run", "list_models"]):
        error = _refused(run_cli(env, *args))
        assert actions.MANIFEST_PATH_ENV in error["message"] and "missing" in error["message"], args
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "broken.json").write_text("{", encoding="utf-8")
    error = _refused(run_cli(env | {actions.MANIFEST_PATH_ENV: str(tmp_path / "mine")}, "actions", "list"))
    assert "broken.json" in error["message"] and "not valid JSON" in error["message"]


# ---------------------------------------------------------------- the public surface
