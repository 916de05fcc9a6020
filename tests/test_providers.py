"""Providers: Azure OpenAI (dated and v1 modes, api-key and Entra ID, the environment default), OpenAI-compatible
presets under path prefixes, the generic ``openai_request`` action, and integration selection per workflow step.

Everything runs over real HTTP against the loopback simulator's fronts (``actions/simulator/azure.py``), which
check what Azure or the compatible server would check; the workflow test runs on the session's real worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import actions
from actions.simulator import Simulator
from actions.simulator.azure import AZURE_SPEC_FILE, AzureMode, Mount, extract_azure
from integration import entra
from integration.client import close_all_clients
from integration.errors import AuthenticationError, ConfigError, InputError, NoAnswerError, PackError
from integration.model import Integration, Provider
from integration.providers import PRESETS, route
from integration.store import IntegrationStore
from tests.conftest import CANARY_KEY, SHARED_OPENAPI, run_cli
from workers.workflow import parse_workflow

pytestmark = pytest.mark.timeout(180)

AZURE_KEY = "azure-canary-KEY-7c1d9e4b2a"
ENTRA_SECRET = "entra-canary-SECRET-3f8a6b"
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Summarise the ticket"}]}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(port=0) as simulator:
        yield simulator
    close_all_clients()


@pytest.fixture
def azure(sim: Simulator) -> Iterator[AzureMode]:
    """The simulator playing one Azure resource: a key, two deployments (one with periods), an Entra app."""
    sim.reset()
    mode = AzureMode(api_key=AZURE_KEY, deployments={"gpt-4.1.prod": "gpt-4o-mini", "embed.v3": "text-embedding-3-small",
                                                     "whisper": "whisper-1"},
                     tenant_id="tenant-1", client_id="client-1", client_secret=ENTRA_SECRET)
    sim.fronts.azure = mode
    yield mode
    sim.reset()
    entra.TOKEN_CACHE.clear()


def _root(sim: Simulator) -> str:
    return sim.url.removesuffix("/v1")


def _azure(sim: Simulator, **azure: Any) -> Integration:
    return Integration.build(name="contoso", provider="azure", api_key=AZURE_KEY, max_retries=0,
                             azure={"endpoint": _root(sim), "deployments": {"gpt-4.1": "gpt-4.1.prod"}, **azure})


# ---------------------------------------------------------------- Azure, dated mode


def test_dated_mode_sends_the_deployment_path_api_version_and_api_key_header(sim: Simulator, azure: AzureMode,
                                                                             tmp_path: Path) -> None:
    integration = _azure(sim, api_version="2024-10-21")
    chat = actions.run("create_chat_completion", {**CHAT, "messages": [
        {"role": "developer", "content": "Answer briefly"}, *CHAT["messages"]]}, integration)
    assert chat["object"] == "chat.completion"
    embedded = actions.run("create_embedding", {"model": "embed.v3", "input": "printer jam"}, integration)
    assert embedded["data"]
    audio = tmp_path / "call.mp3"
    audio.write_bytes(b"ID3 fake audio")
    actions.run("create_transcription", {"model": "whisper", "file": str(audio)}, integration)
    actions.run("list_files", {}, integration)
    seen = [(r["method"], r["path"], r["query"], r["auth"]) for r in sim.fronts.requests]
    assert seen == [
        ("POST", "/openai/deployments/gpt-4.1.prod/chat/completions", {"api-version": "2024-10-21"}, "api-key"),
        ("POST", "/openai/deployments/embed.v3/embeddings", {"api-version": "2024-10-21"}, "api-key"),
        ("POST", "/openai/deployments/whisper/audio/transcriptions", {"api-version": "2024-10-21"}, "api-key"),
        ("GET", "/openai/files", {"api-version": "2024-10-21"}, "api-key"),
    ]
    for request in sim.fronts.requests:  # the key went in the api-key header only, never as a bearer token
        assert request["headers"]["api-key"] == "<secret>" and "authorization" not in request["headers"]
    sent = json.loads(sim.fronts.requests[0]["body"])
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]  # 2024-10-21 has no developer role


def test_dated_mode_bodies_are_checked_against_microsofts_spec(sim: Simulator, azure: AzureMode) -> None:
    """The front validates with the 2024-10-21 spec: what the pack sends passes, what the spec refuses gets 400."""
    url = f"{_root(sim)}/openai/deployments/gpt-4.1.prod/chat/completions?api-version=2024-10-21"
    refused = httpx.post(url, headers={"api-key": AZURE_KEY},
                         json={"messages": [{"role": "developer", "content": "x"}]})
    assert refused.status_code == 400 and "messages" in refused.json()["error"]["message"]
    image = httpx.post(f"{_root(sim)}/openai/deployments/gpt-4.1.prod/images/generations?api-version=2024-10-21",
                       headers={"api-key": AZURE_KEY}, json={"prompt": "a cat", "n": 2})
    assert image.status_code == 400 and "'n'" in image.json()["error"]["message"]
    missing = httpx.post(url.replace("gpt-4.1.prod", "nope"), headers={"api-key": AZURE_KEY}, json=CHAT)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "DeploymentNotFound"
    wrong_key = httpx.post(url, headers={"api-key": "other"}, json=CHAT)
    assert wrong_key.status_code == 401


def test_committed_azure_spec_extract_matches_microsofts_file() -> None:
    source = SHARED_OPENAPI / "azure-openai-inference-2024-10-21.json"
    if not source.is_file():
        pytest.skip("the shared Azure spec is not beside the repository")
    assert json.loads(AZURE_SPEC_FILE.read_text(encoding="utf-8")) == extract_azure(source)


def test_dated_image_limits_are_refused_naming_the_fields_before_any_call(sim: Simulator, azure: AzureMode) -> None:
    with pytest.raises(InputError) as caught:
        actions.run("create_image", {"prompt": "a cat", "model": "gpt-4.1", "n": 3, "size": "512x512"},
                    _azure(sim, api_version="2024-10-21"))
    assert {p["field"] for p in caught.value.problems} == {"n", "size"}
    assert sim.fronts.requests == [] and sim.calls == 0


def test_an_action_azure_does_not_serve_fails_before_any_call(sim: Simulator, azure: AzureMode) -> None:
    for mode in ({"api_version": "2024-10-21"}, {}):
        with pytest.raises(ConfigError) as caught:
            actions.run("create_moderation", {"input": "hello"}, _azure(sim, **mode))
        assert "Azure OpenAI does not serve POST /moderations" in caught.value.message
        assert "create_moderation" in caught.value.message
    with pytest.raises(ConfigError, match="does not serve GET /organization"):
        actions.run("list_projects", {}, _azure(sim))
    assert sim.fronts.requests == [] and sim.calls == 0


def test_an_unsupported_api_version_is_azures_400(sim: Simulator, azure: AzureMode) -> None:
    with pytest.raises(PackError) as caught:
        actions.run("create_chat_completion", CHAT, _azure(sim, api_version="2023-05-15"))
    assert getattr(caught.value, "status", None) == 400 and "2023-05-15" in caught.value.message


# ---------------------------------------------------------------- Azure, v1 mode


def test_v1_mode_uses_the_openai_v1_path_with_the_deployment_as_the_model(sim: Simulator, azure: AzureMode) -> None:
    integration = _azure(sim)
    actions.run("create_chat_completion", CHAT, integration)
    actions.run("create_embedding", {"model": "embed.v3", "input": "x"}, integration)  # not in the map: as given
    actions.run("list_models", {}, integration)
    seen = [(r["path"], r["query"], r["auth"]) for r in sim.fronts.requests]
    assert seen == [("/openai/v1/chat/completions", {}, "api-key"), ("/openai/v1/embeddings", {}, "api-key"),
                    ("/openai/v1/models", {}, "api-key")]
    assert json.loads(sim.fronts.requests[0]["body"])["model"] == "gpt-4.1.prod"
    assert json.loads(sim.fronts.requests[1]["body"])["model"] == "embed.v3"


def test_endpoints_are_free_form_for_sovereign_clouds_and_gateways() -> None:
    for endpoint in ("https://contoso.openai.azure.us", "https://contoso.openai.azure.cn/",
                     "https://gateway.example.com/team-a/openai"):
        integration = Integration.build(name="gov", provider="azure", api_key="k",
                                        azure={"endpoint": endpoint, "api_version": "2024-10-21"})
        routed = route(integration, "POST", "/chat/completions", json_body={"model": "gpt-4o.mini"})
        base = endpoint.rstrip("/").removesuffix("/openai")
        assert routed.url == f"{base}/openai/deployments/gpt-4o.mini/chat/completions"
        assert routed.params == {"api-version": "2024-10-21"}


# ---------------------------------------------------------------- Entra ID


@pytest.fixture
def entra_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", "tenant-1")
    monkeypatch.setenv("AZURE_CLIENT_ID", "client-1")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", ENTRA_SECRET)


def _entra(sim: Simulator) -> Integration:
    return Integration.build(name="contoso-entra", provider="azure", max_retries=0, azure={
        "endpoint": _root(sim), "api_version": "2024-10-21", "deployments": {"gpt-4.1": "gpt-4.1.prod"},
        "entra": {"authority_host": _root(sim)}})


def test_entra_token_is_cached_refreshed_after_expiry_and_never_sent_with_a_key(
        sim: Simulator, azure: AzureMode, entra_env: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    integration = _entra(sim)
    outputs = [actions.run("create_chat_completion", CHAT, integration) for _ in range(2)]
    assert azure.token_requests == 1  # the second call reused the cached token
    first_token = next(iter(azure.tokens))
    later = entra.TOKEN_CACHE.now() + azure.token_lifetime  # the cache's clock moves past the expiry
    monkeypatch.setattr(entra.TOKEN_CACHE, "now", lambda: later)
    azure.expire_tokens()  # and the server agrees the old token is dead
    outputs.append(actions.run("create_chat_completion", CHAT, integration))
    assert azure.token_requests == 2
    azure.expire_tokens()  # revoked before the cache expected: the 401 brings one refresh, then success
    outputs.append(actions.run("create_chat_completion", CHAT, integration))
    assert azure.token_requests == 3
    api_calls = [r for r in sim.fronts.requests if r["front"] == "azure"]
    assert [r["auth"] for r in api_calls] == ["bearer"] * 5  # 4 answered + the one refused for the revoked token
    assert all("api-key" not in r["headers"] for r in api_calls)
    issued = list(azure.tokens)
    assert first_token in issued and len(issued) == 3
    visible = json.dumps(outputs) + caplog.text
    for secret in [ENTRA_SECRET, *issued]:
        assert secret not in visible


def test_entra_wrong_secret_is_an_authentication_error_without_the_secret(
        sim: Simulator, azure: AzureMode, entra_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    azure.client_secret = "the-real-one-differs"
    with pytest.raises(AuthenticationError) as caught:
        actions.run("create_chat_completion", CHAT, _entra(sim))
    text = json.dumps(caught.value.to_dict())
    assert "invalid_client" in text and ENTRA_SECRET not in text
    assert not [r for r in sim.fronts.requests if r["front"] == "azure"]  # no API call without a token
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    with pytest.raises(ConfigError, match="AZURE_CLIENT_SECRET"):
        actions.run("create_chat_completion", CHAT, _entra(sim))


# ---------------------------------------------------------------- the environment default


def test_environment_default_uses_the_sdks_azure_variables(sim: Simulator, azure: AzureMode,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", _root(sim))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    actions.run("create_chat_completion", {**CHAT, "model": "gpt-4.1.prod"})  # no stored integration at all
    monkeypatch.delenv("OPENAI_API_VERSION")
    actions.run("create_chat_completion", {**CHAT, "model": "gpt-4.1.prod"})
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    azure.tokens["static-ad-token-from-the-environment"] = float("inf")
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", "static-ad-token-from-the-environment")
    actions.run("create_chat_completion", {**CHAT, "model": "gpt-4.1.prod"})
    seen = [(r["path"], r["query"], r["auth"]) for r in sim.fronts.requests]
    assert seen == [("/openai/deployments/gpt-4.1.prod/chat/completions", {"api-version": "2024-10-21"}, "api-key"),
                    ("/openai/v1/chat/completions", {}, "api-key"), ("/openai/v1/chat/completions", {}, "bearer")]
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    with pytest.raises(ConfigError, match="never both sent"):
        Integration.from_env()


# ---------------------------------------------------------------- the CLI


def test_cli_adds_an_azure_integration_runs_it_and_checks_what_it_serves(sim: Simulator, azure: AzureMode,
                                                                         tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OPENAI_PACK_HOME": str(tmp_path / "home"), "AZ_KEY": AZURE_KEY}
    added = run_cli(env, "integrations", "add", "contoso", "--provider", "azure", "--endpoint", _root(sim),
                    "--api-version", "2024-10-21", "--key-env", "AZ_KEY", "--deployment", "gpt-4.1=gpt-4.1.prod",
                    "--label", "customer=contoso")
    assert added.returncode == 0, added.stderr
    ran = run_cli(env, "run", "create_chat_completion", "--integration", "contoso", "--input", json.dumps(CHAT))
    assert ran.returncode == 0, ran.stderr
    assert sim.fronts.requests[-1]["path"] == "/openai/deployments/gpt-4.1.prod/chat/completions"
    checked = run_cli(env, "integrations", "check", "contoso")
    assert checked.returncode == 0, checked.stderr
    groups = json.loads(checked.stdout)["groups"]
    assert groups["chat"]["answers"] is True and "create_chat_completion" in groups["chat"]["actions"]
    assert groups["moderations"]["answers"] is False and "does not serve" in groups["moderations"]["reason"]
    assert len(sim.fronts.requests) <= 2 + len(groups)  # one probe per group at most, never one per action
    stored = (tmp_path / "home" / "integrations.json").read_text()
    assert AZURE_KEY not in stored + added.stdout + ran.stdout + ran.stderr + checked.stdout
    bad = run_cli(env, "integrations", "add", "x", "--provider", "azure", "--key-env", "AZ_KEY")
    assert bad.returncode == 2 and "--endpoint" in bad.stderr


# ---------------------------------------------------------------- OpenAI-compatible presets

#: preset -> the path its real server serves the API under (mirrored on the simulator), and the key placement
COMPATIBLE = {
    Provider.ollama: "/ollama/v1",
    Provider.vllm: "/vllm/v1",
    Provider.litellm: "/litellm/v1",
    Provider.openrouter: "/openrouter/api/v1",
    Provider.groq: "/groq/openai/v1",
    Provider.pienteger: "/pienteger/oaiv1",
}


@pytest.mark.parametrize("provider", list(COMPATIBLE), ids=[p.value for p in COMPATIBLE])
def test_each_compatible_preset_runs_a_chat_completion_under_its_path_prefix(sim: Simulator, provider: Provider,
                                                                             tmp_path: Path) -> None:
    sim.reset()
    preset = PRESETS[provider]
    auth = preset.get("auth", {"placement": "bearer"})
    prefix = COMPATIBLE[provider]
    assert preset["base_url"].endswith("/" + prefix.split("/", 2)[2])  # the mount mirrors the real server's path
    required = tuple(preset.get("extra_headers", {}))
    sim.fronts.mounts = [Mount(prefix, api_key=None if auth["placement"] == "none" else CANARY_KEY,
                               auth=auth, required_headers=required)]
    env = {"PATH": "/usr/bin:/bin", "OPENAI_PACK_HOME": str(tmp_path / "home"), "KEY": CANARY_KEY}
    key = [] if auth["placement"] == "none" else ["--key-env", "KEY"]
    added = run_cli(env, "integrations", "add", provider.value, "--provider", provider.value, "--base-url",
                    _root(sim) + prefix, *key)
    assert added.returncode == 0, added.stderr
    stored = json.loads((tmp_path / "home" / "integrations.json").read_text())["integrations"][provider.value]
    assert stored["auth"]["placement"] == auth["placement"] and stored["extra_headers"] == preset.get("extra_headers",
                                                                                                      {})
    output = actions.run("create_chat_completion", {**CHAT, "model": "gpt-4o-mini"},
                         IntegrationStore(path=tmp_path / "home" / "integrations.json").get(provider.value))
    assert output["choices"]
    request = sim.fronts.requests[-1]
    assert request["path"] == prefix + "/chat/completions" and request["auth"] == auth["placement"]
    if auth.get("name"):
        assert request["headers"][auth["name"].lower()] == "<secret>"
    for header in required:
        assert header.lower() in request["headers"]
    sim.reset()


# ---------------------------------------------------------------- openai_request


def _keyed(sim: Simulator) -> Integration:
    return Integration(name="proxy", base_url=sim.url, api_key=CANARY_KEY,
                       auth={"placement": "header", "name": "X-Api-Key"}, max_retries=1,
                       timeout={"connect": 2, "read": 5})


def test_openai_request_reaches_a_path_no_manifest_covers_and_uploads_a_multipart_file(tmp_path: Path) -> None:
    widgets = actions.ActionManifest.model_validate({
        "name": "list_widgets", "title": "List Widgets", "category": "Acme", "description": "A server's own route.",
        "openapi": {"operationId": "listWidgets"}, "http": {"method": "GET", "path": "/acme/widgets"},
        "input": {"type": "object", "additionalProperties": False, "properties": {}},
        "output": {"type": "object"},
        "examples": [{"title": "all", "input": {}, "output": {"object": "list", "data": [{"id": "w1"}]}}]})
    shipped = {m.http.path for m in actions.registry().values()}
    assert "/acme/widgets" not in shipped  # a compatible server's own route: no action of the pack has it
    with Simulator(port=0, api_key=CANARY_KEY, auth={"placement": "header", "name": "X-Api-Key"},
                   manifests={**actions.registry(), "list_widgets": widgets}) as server:
        integration = _keyed(server)
        listed = actions.run("openai_request", {"method": "GET", "path": "acme/widgets", "query": {"limit": 2}},
                             integration)
        assert listed["status"] == 200 and listed["body"]["data"] == [{"id": "w1"}]
        assert listed["headers"]["content-type"].startswith("application/json")
        upload = tmp_path / "notes.txt"
        upload.write_bytes(b"ticket 4411: printer jam")
        sent = actions.run("openai_request", {"method": "POST", "path": "/files", "form": {"purpose": "assistants"},
                                              "files": {"file": str(upload)}}, integration)
        assert sent["body"]["filename"] == "notes.txt" and sent["body"]["bytes"] == upload.stat().st_size
        kept = server.requests[-1]
        assert kept["headers"]["content-type"].startswith("multipart/form-data")
        assert kept["body"] == {"purpose": "assistants", "file": "notes.txt"}
        content = actions.run("openai_request", {"method": "GET", "path": f"/files/{sent['body']['id']}/content",
                                                 "save_to": str(tmp_path / "out")}, integration)
        assert content["status"] == 200
        saved = content.get("path")
        body = Path(saved).read_bytes() if saved else (content.get("body") or "").encode()
        assert body == upload.read_bytes()  # a text answer comes back as text, a binary one is saved
        assert server.requests[0]["query"] == {"limit": "2"}
        assert CANARY_KEY not in json.dumps([listed, sent, content])
    close_all_clients()


@pytest.mark.parametrize(("change", "field"), [
    ({"path": "https://attacker.example/collect"}, "path"),
    ({"path": "//attacker.example/collect"}, "path"),
    ({"path": "/models/../../../collect"}, "path"),
    ({"path": "/models/%2e%2e/collect"}, "path"),
    ({"path": "/models?next=https://attacker.example"}, "path"),
    ({"path": "/models\\..\\x"}, "path"),
    ({"headers": {"Authorization": "Bearer mine"}}, "headers.Authorization"),
    ({"headers": {"api-key": "mine"}}, "headers.api-key"),
    ({"headers": {"x-api-key": "copy"}}, "headers.x-api-key"),  # the integration's own key header, any case
    ({"headers": {"Host": "attacker.example"}}, "headers.Host"),
    ({"headers": {"X-Note": "a\r\nAuthorization: x"}}, "headers.X-Note"),
])
def test_openai_request_refuses_key_exfiltration_with_nothing_sent(simulator: Simulator, change: dict[str, Any],
                                                                   field: str) -> None:
    with pytest.raises(InputError) as caught:
        actions.run("openai_request", {"method": "GET", "path": "/models", **change},
                    Integration(name="p", base_url=simulator.url, api_key=CANARY_KEY,
                                auth={"placement": "header", "name": "X-Api-Key"}))
    assert caught.value.problems[0]["field"] == field
    assert CANARY_KEY not in json.dumps(caught.value.to_dict())
    assert simulator.calls == 0


def test_openai_request_repeats_only_repeat_safe_methods(simulator: Simulator) -> None:
    assert actions.repeat_safe("openai_request", {"method": "GET", "path": "/x"})
    assert not actions.repeat_safe("openai_request", {"method": "POST", "path": "/x"})
    assert actions.repeat_safe("openai_request", {"method": "POST", "path": "/x", "repeat_safe": True})
    integration = Integration(name="p", base_url=simulator.url, auth={"placement": "none"}, max_retries=2,
                              timeout={"connect": 2, "read": 5})
    simulator.add_fault({"kind": "drop", "times": 1})
    assert actions.run("openai_request", {"method": "GET", "path": "/models"}, integration)["status"] == 200
    assert simulator.calls == 2  # the dropped GET was sent again
    simulator.add_fault({"kind": "drop", "times": 1})
    with pytest.raises(NoAnswerError):
        actions.run("openai_request", {"method": "POST", "path": "/chat/completions", "body": CHAT}, integration)
    assert simulator.calls == 3  # a POST whose answer was lost is never repeated: it may have been billed


# ---------------------------------------------------------------- integration selection per step

MSP = """
name: msp-triage
inputs:
  customers: {type: array, required: true}
  customer: {type: string, required: true}
steps:
  - id: per_customer
    action: create_chat_completion
    with_items: "{{ inputs.customers }}"
    integration: "cust-{{ item }}"
    input:
      model: gpt-4o-mini
      messages: [{role: user, content: "Triage for {{ item }}"}]
  - id: by_label
    action: create_moderation
    integration: {labels: {customer: "{{ inputs.customer }}"}}
    input: {input: "printer on fire"}
  - id: by_pattern
    action: create_moderation
    integration: {match: "nobody-*", fallback: default}
    input: {input: "hello"}
"""


@pytest.fixture
def customers(worker_env: dict[str, str], pack: Any, simulator: Simulator) -> Iterator[dict[str, str]]:
    """Three customers' integrations in the workers' store, each on its own base URL with its own key."""
    keys = {c: f"sk-{c}-canary-{c * 6}" for c in ("a", "b", "c")}
    store = IntegrationStore(path=Path(worker_env["OPENAI_PACK_HOME"]) / "integrations.json")
    root = simulator.url.removesuffix("/v1")
    for customer, key in keys.items():
        store.add(Integration(name=f"cust-{customer}", base_url=f"{root}/tenant-{customer}/v1", api_key=key,
                              labels={"customer": customer}, timeout={"connect": 2, "read": 10}), replace=True)
    simulator.fronts.mounts = [Mount(f"/tenant-{c}/v1", api_key=k) for c, k in keys.items()]
    yield keys
    for customer in keys:
        store.remove(f"cust-{customer}")


def test_one_step_runs_for_three_customers_on_three_integrations_chosen_by_template(
        pack: Any, simulator: Simulator, customers: dict[str, str], session_worker: Any) -> None:
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(MSP, "msp.yaml"), {"customers": ["a", "b", "c"], "customer": "b"},
                                 trigger={"type": "manual"})
    header = engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert header is not None and header["status"] == "succeeded", record
    by_front = sorted((r["front"], r["auth"]) for r in simulator.fronts.requests)
    assert by_front == [("/tenant-a/v1", "bearer"), ("/tenant-b/v1", "bearer"), ("/tenant-b/v1", "bearer"),
                        ("/tenant-c/v1", "bearer")]  # each mount checked its own customer's key
    steps = {s["id"]: s for s in record["steps"]}
    assert [i["integration"] for i in steps["per_customer"]["item_results"]] == ["cust-a", "cust-b", "cust-c"]
    assert steps["by_label"]["integration"] == "cust-b"
    assert steps["by_pattern"]["integration"] == "sim"  # nothing matched: the fallback, the default integration
    visible = json.dumps(record) + session_worker.output
    assert not [k for k in customers.values() if k in visible]


def test_selection_errors_name_the_step_and_what_was_looked_up(pack: Any, simulator: Simulator,
                                                               customers: dict[str, str]) -> None:
    text = MSP.replace('integration: "cust-{{ item }}"', 'integration: "cust-{{ item }}-x"')
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(text, "msp.yaml"), {"customers": ["a"], "customer": "zz"},
                                 trigger={"type": "manual"})
    engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert record["status"] == "failed"
    text_of_record = json.dumps(record)
    assert "step 'per_customer'" in text_of_record and "'cust-a-x'" in text_of_record
    assert simulator.fronts.requests == []


def test_a_run_level_integration_overrides_the_workflow_default(pack: Any, simulator: Simulator,
                                                                customers: dict[str, str], worker_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text("name: one\nintegration: cust-a\nsteps:\n  - id: moderate\n    action: create_moderation\n"
                    "    input: {input: hi}\n")
    done = run_cli(worker_env, "workflow", "run", str(path), "--integration", "cust-c", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert {s["id"]: s["integration"] for s in record["steps"]} == {"moderate": "cust-c"}
    assert [r["front"] for r in simulator.fronts.requests] == ["/tenant-c/v1"]
    missing = run_cli(worker_env, "workflow", "run", str(path), "--integration", "nobody")
    assert missing.returncode == 2 and "--integration" in missing.stderr


def test_a_selection_matching_two_integrations_fails_instead_of_guessing(customers: dict[str, str],
                                                                         worker_env: dict[str, str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.engine.selection import select_integration

    store = IntegrationStore(path=Path(worker_env["OPENAI_PACK_HOME"]) / "integrations.json")
    with pytest.raises(ConfigError, match=r"step 'triage': 3 integrations have name matching 'cust-\*'"):
        select_integration({"match": "cust-*"}, {}, step="triage", store=store)
    with pytest.raises(ConfigError, match="fallback: fail"):
        select_integration({"labels": {"customer": "{{ inputs.c }}"}}, {"inputs": {"c": "q"}}, step="t", store=store)
    assert select_integration({"match": "cust-?", "labels": {"customer": "c"}}, {}, step="t", store=store).name == \
        "cust-c"
