"""Actions against the loopback simulator: examples, auth placements, errors and retries, streaming,
create_edit, create_image, and the secret canary."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

import actions
from actions.simulator import Simulator
from integration import errors
from integration.client import close_all_clients
from integration.model import Integration
from integration.store import IntegrationStore
from tests.conftest import CANARY_KEY, run_cli


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


# ---------------------------------------------------------------- auth placements through the CLI


@pytest.mark.parametrize(("auth", "cli_args"), [
    ({"placement": "bearer"}, ["--auth", "bearer"]),
    ({"placement": "header", "name": "X-Api-Key"}, ["--auth", "header", "--auth-name", "X-Api-Key"]),
    ({"placement": "header", "name": "X-Proxy-Auth", "prefix": "Token "},
     ["--auth", "header", "--auth-name", "X-Proxy-Auth", "--auth-prefix", "Token "]),
    ({"placement": "query", "name": "api_key"}, ["--auth", "query", "--auth-name", "api_key"]),
])
def test_every_action_runs_from_the_cli_through_each_auth_placement(auth: dict[str, str], cli_args: list[str],
                                                                    tmp_path: Path) -> None:
    env = _cli_env(tmp_path / "home")
    env["CUSTOMER_KEY"] = CANARY_KEY
    with Simulator(port=0, api_key=CANARY_KEY, auth=auth) as sim:
        added = run_cli(env, "integrations", "add", "customer", "--key-env", "CUSTOMER_KEY", "--base-url", sim.url,
                        "--org", "org-acme", "--project", "proj_1", "--default", *cli_args)
        assert added.returncode == 0, added.stderr
        check = run_cli(env, "integrations", "check", "customer")
        assert check.returncode == 0, check.stderr
        for name, manifest in actions.registry().items():
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
    with pytest.raises(errors.TimeoutError) as caught:
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
    with pytest.raises(errors.TimeoutError):
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
