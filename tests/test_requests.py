"""The request half of the binder: query lists and objects, headers, pagination (``fetch_all``) and the Admin API key.

Everything runs against the real loopback simulator; what was sent is read back from its request log
(``/v1/_sim/requests``), so the wire form is checked, not the builder's intent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

import actions
from actions import CallOptions
from actions.simulator import Simulator
from integration import errors
from integration.client import ApiResponse, close_all_clients
from integration.model import Integration
from integration.redact import scrub
from integration.store import IntegrationStore, register_store_secrets
from tests.conftest import run_cli

API_KEY = "sk-proj-REQ-canary-7d1b3a5c8e0f6d4f9c2e"
ADMIN_KEY = "sk-admin-REQ-canary-0f6d4f9c2e7d1b3a5c8e"
TEXT_FILE = "data:text/plain;base64,SGVsbG8gZnJvbSB0aGUgcGFjaw=="
FERNET_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def keyed() -> Iterator[Simulator]:
    """A simulator that wants the API key on API routes and the admin key on /organization routes."""
    with Simulator(port=0, api_key=API_KEY, admin_key=ADMIN_KEY) as sim:
        yield sim
    close_all_clients()


@pytest.fixture
def sim(keyed: Simulator) -> Iterator[Simulator]:
    keyed.reset()
    yield keyed
    keyed.reset()


@pytest.fixture
def account(sim: Simulator) -> Integration:
    return Integration(name="acct", base_url=sim.url, api_key=API_KEY, admin_key=ADMIN_KEY,
                       timeout={"connect": 2, "read": 5}, max_retries=2)


def _cli_env(sim: Simulator, home: Path, *, admin: bool) -> dict[str, str]:
    """The CLI's default integration from the environment: OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_ADMIN_KEY."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_PACK_HOME=str(home), OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=sim.url)
    if admin:
        env["OPENAI_ADMIN_KEY"] = ADMIN_KEY
    return env


def _sent(sim: Simulator, path: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests if r["path"] == "/v1" + path]


def _make_files(account: Integration, count: int) -> list[str]:
    return [actions.run("create_file", {"file": TEXT_FILE, "purpose": "assistants"}, account)["id"]
            for _ in range(count)]


def _in_process_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``openai-pack ARGS`` in this process (the console script's own ``main``): (exit code, stdout, stderr)."""
    from workers.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


# ---------------------------------------------------------------- query lists, objects, headers, path


def test_list_and_object_query_fields_go_in_the_sdks_brackets_form(sim: Simulator, account: Integration) -> None:
    actions.run("list_audit_logs", {"project_ids": ["proj_1", "proj_2"], "actor_emails": ["a@b.c"], "limit": 2},
                account)
    actions.run("list_fine_tuning_jobs", {"metadata": {"team": "msp", "tier": "gold"}, "limit": 1}, account)
    actions.run("usage_completions", {"start_time": 1_700_000_000, "end_time": 1_700_086_400,
                                      "group_by": ["model", "project_id"], "batch": True}, account)
    audit, = _sent(sim, "/organization/audit_logs")
    assert audit["query_pairs"] == [["project_ids[]", "proj_1"], ["project_ids[]", "proj_2"],
                                    ["actor_emails[]", "a@b.c"], ["limit", "2"]]
    jobs, = _sent(sim, "/fine_tuning/jobs")
    assert sorted(jobs["query_pairs"]) == [["limit", "1"], ["metadata[team]", "msp"], ["metadata[tier]", "gold"]]
    usage, = _sent(sim, "/organization/usage/completions")
    assert ["group_by[]", "model"] in usage["query_pairs"] and ["group_by[]", "project_id"] in usage["query_pairs"]
    assert ["batch", "true"] in usage["query_pairs"]


def test_a_null_query_field_is_not_sent(sim: Simulator, account: Integration) -> None:
    actions.run("list_fine_tuning_jobs", {"metadata": None, "limit": 1}, account)
    jobs, = _sent(sim, "/fine_tuning/jobs")
    assert jobs["query_pairs"] == [["limit", "1"]]


def test_bracketed_spec_names_are_offered_without_the_brackets() -> None:
    audit = actions.get("list_audit_logs")
    assert {"project_ids", "event_types", "actor_ids", "actor_emails", "resource_ids"} <= set(audit.http.query)
    assert not any("[" in name for m in actions.registry().values() for name in m.properties)
    coverage = (Path(__file__).resolve().parents[1] / "docs" / "coverage.md").read_text(encoding="utf-8")
    assert "bracketed or deepObject" not in coverage


def test_path_fields_are_escaped_so_an_id_cannot_reach_another_route(sim: Simulator, account: Integration) -> None:
    with pytest.raises(errors.NotFoundError):
        actions.run("retrieve_file", {"file_id": "x?purpose=batch#frag"}, account)
    with pytest.raises(errors.NotFoundError):  # unescaped, this would be GET /models: a 200
        actions.run("retrieve_file", {"file_id": "../models"}, account)
    first, second = sim.requests
    assert first["path"] == "/v1/files/x?purpose=batch#frag" and first["query"] == {}, \
        "the ? and # of the id stayed in the path (the log shows it decoded), never a query or fragment"
    assert second["path"] == "/v1/files/../models"
    assert "GET /models" not in sim.calls_by_route()


def test_actions_whose_spec_examples_send_openai_beta_send_it(sim: Simulator, account: Integration) -> None:
    actions.run("list_assistants", {}, account)
    actions.run("list_vector_stores", {}, account)
    actions.run("list_files", {}, account)
    by_path = {r["path"]: r["headers"] for r in sim.requests}
    assert by_path["/v1/assistants"]["openai-beta"] == "assistants=v2"
    assert by_path["/v1/vector_stores"]["openai-beta"] == "assistants=v2"
    assert "openai-beta" not in by_path["/v1/files"]
    beta = [m for m in actions.registry().values() if "OpenAI-Beta" in m.http.headers]
    assert len(beta) >= 38 and {m.http.headers["OpenAI-Beta"] for m in beta} == {"assistants=v2", "chatkit_beta=v1"}


def _manifest_with_headers() -> actions.ActionManifest:
    manifest = actions.get("list_files").model_dump(mode="json")
    manifest["name"] = "list_files_traced"
    manifest["http"]["header_params"] = {"trace": "X-Trace-Id"}
    manifest["http"]["headers"] = {"X-Constant": "yes"}
    manifest["input"]["properties"]["trace"] = {"type": ["string", "array"], "items": {"type": "string"},
                                                "description": "A trace id header."}
    return actions.load_manifest(json.dumps(manifest))


def test_header_fields_are_sent_as_their_header(sim: Simulator, account: Integration) -> None:
    manifest = _manifest_with_headers()
    actions.Call(manifest, {"trace": "abc-1", "limit": 2}, account).default()
    actions.Call(manifest, {"trace": ["a", "b"]}, account).default()
    first, second = sim.requests
    assert first["headers"]["x-trace-id"] == "abc-1" and first["headers"]["x-constant"] == "yes"
    assert first["query_pairs"] == [["limit", "2"]], "a header field is not also a query parameter"
    assert second["headers"]["x-trace-id"] == "a,b"


def test_a_header_value_with_a_line_break_is_refused_naming_the_field(sim: Simulator, account: Integration) -> None:
    with pytest.raises(errors.InputError) as refused:
        actions.Call(_manifest_with_headers(), {"trace": "abc\r\nX-Evil: 1"}, account).default()
    assert refused.value.field == "trace"
    assert sim.calls == 0


@pytest.mark.parametrize(("change", "reason"), [
    (lambda m: m["http"].update(headers={"Authorization": "x"}), "set by the integration"),
    (lambda m: m["http"].update(headers={"Bad Header": "x"}), "not a valid HTTP header name"),
    (lambda m: m["http"].update(header_params={"nope": "X-Nope"}), "'nope'"),
    (lambda m: m["input"]["properties"].pop("fetch_all"), "fetch_all"),
    (lambda m: m["http"]["pagination"].update(param="order2"), "pagination.param"),
])
def test_the_manifest_schema_refuses_bad_headers_and_pagination(change: Any, reason: str) -> None:
    manifest = actions.get("list_files").model_dump(mode="json")
    change(manifest)
    with pytest.raises(errors.ManifestError) as refused:
        actions.load_manifest(json.dumps(manifest))
    assert reason in str(refused.value)


# ---------------------------------------------------------------- pagination


def test_every_list_action_is_marked_with_its_pagination_style() -> None:
    styles = {m.name: m.http.pagination.style for m in actions.registry().values() if m.http.pagination}
    assert sum(style == "page" for style in styles.values()) == 11
    assert sum(style == "cursor" for style in styles.values()) >= 48
    assert styles["list_files"] == "cursor" and styles["usage_costs"] == "page"
    for name in styles:
        manifest = actions.get(name)
        assert {"fetch_all", "max_items"} <= manifest.pack_only_fields
    assert "list_models" not in styles, "a seed action without pages is unchanged"


def test_fetch_all_over_three_pages_from_the_cli(sim: Simulator, account: Integration, tmp_path: Path) -> None:
    made = _make_files(account, 7)
    before = len(sim.requests)
    result = run_cli(_cli_env(sim, tmp_path, admin=False), "run", "list_files", "--input",
                     json.dumps({"limit": 3, "order": "asc", "fetch_all": True}))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert [item["id"] for item in output["data"]] == made, "every item, once, in order"
    assert output["has_more"] is False and output["last_id"] == made[-1] and output["first_id"] == made[0]
    pages = sim.requests[before:]
    assert [dict(r["query_pairs"]).get("after") for r in pages] == [None, made[2], made[5]]
    assert all(dict(r["query_pairs"])["limit"] == "3" for r in pages)
    assert not any("fetch_all" in json.dumps(r["query_pairs"]) or "max_items" in json.dumps(r["query_pairs"])
                   for r in pages), "pack-only inputs are never sent"


def test_max_items_stops_early_and_says_where_to_go_on(sim: Simulator, account: Integration) -> None:
    made = _make_files(account, 7)
    before = len(sim.requests)
    output = actions.run("list_files", {"limit": 3, "order": "asc", "fetch_all": True, "max_items": 5}, account)
    assert [item["id"] for item in output["data"]] == made[:5]
    assert output["has_more"] is True and output["last_id"] == made[4]
    assert len(sim.requests) - before == 2
    rest = actions.run("list_files", {"limit": 3, "order": "asc", "fetch_all": True, "after": output["last_id"]},
                       account)
    assert [item["id"] for item in rest["data"]] == made[5:]


def test_without_fetch_all_one_page_comes_back(sim: Simulator, account: Integration) -> None:
    _make_files(account, 4)
    before = len(sim.requests)
    output = actions.run("list_files", {"limit": 3}, account)
    assert len(output["data"]) == 3 and output["has_more"] is True
    assert len(sim.requests) - before == 1


def test_a_failed_page_is_retried_on_its_own(sim: Simulator, account: Integration) -> None:
    made = _make_files(account, 7)
    before = len(sim.requests)
    answered: list[int] = []

    def fail_the_third_page_once(_call: actions.Call, _response: ApiResponse) -> None:
        answered.append(1)
        if len(answered) == 2:  # pages 1 and 2 are in: the next request (page 3) gets a 500, then succeeds
            sim.add_fault({"method": "GET", "path": "/files", "kind": "status", "status": 500, "times": 1,
                           "headers": {"retry-after-ms": "1"}})

    result = actions.execute("list_files", {"limit": 3, "order": "asc", "fetch_all": True}, account,
                             options=CallOptions(after_response=fail_the_third_page_once))
    assert [item["id"] for item in result.output["data"]] == made
    cursors = [dict(r["query_pairs"]).get("after") for r in sim.requests[before:]]
    assert cursors == [None, made[2], made[5], made[5]], "page 3 was asked twice, pages 1 and 2 once"
    assert result.attempts == 4 and len(result.request_ids) == 3


def test_the_walk_is_bounded_by_the_page_cap(sim: Simulator, account: Integration) -> None:
    made = _make_files(account, 5)
    output = actions.execute("list_files", {"limit": 1, "order": "asc", "fetch_all": True}, account,
                             options=CallOptions(max_pages=2)).output
    assert [item["id"] for item in output["data"]] == made[:2]
    assert output["has_more"] is True and output["last_id"] == made[1]


def test_page_style_fetch_all_of_a_usage_report_from_the_cli(sim: Simulator, tmp_path: Path) -> None:
    start = (int(time.time()) // 86400 - 10) * 86400
    end = start + 8 * 86400
    result = run_cli(_cli_env(sim, tmp_path, admin=True), "run", "usage_completions", "--input",
                     json.dumps({"start_time": start, "end_time": end, "limit": 3, "fetch_all": True}))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert [bucket["start_time"] for bucket in output["data"]] == [start + day * 86400 for day in range(8)]
    assert output["has_more"] is False and output["next_page"] is None
    pages = _sent(sim, "/organization/usage/completions")
    assert [dict(r["query_pairs"]).get("page") for r in pages] == [None, "page_sim_3", "page_sim_6"]
    assert all(r["headers"]["authorization"] == "Bearer <admin-key>" for r in pages)


def test_page_style_max_items_cut_inside_a_page_resumes_at_that_page(sim: Simulator, account: Integration) -> None:
    start = 1_700_006_400
    output = actions.run("usage_costs", {"start_time": start, "end_time": start + 8 * 86400, "limit": 3,
                                         "fetch_all": True, "max_items": 4}, account)
    assert len(output["data"]) == 4 and output["has_more"] is True
    assert output["next_page"] == "page_sim_3", "going on repeats the cut page rather than skip its last items"


# ---------------------------------------------------------------- the Admin API key


def test_an_admin_action_sends_the_admin_key_and_others_the_api_key(sim: Simulator, account: Integration) -> None:
    actions.run("list_projects", {}, account)
    actions.run("list_files", {}, account)
    projects, = _sent(sim, "/organization/projects")
    files, = _sent(sim, "/files")
    assert projects["headers"]["authorization"] == "Bearer <admin-key>"
    assert files["headers"]["authorization"] == "Bearer <api-key>"
    assert {m.http.key for m in actions.registry().values() if m.http.path.startswith("/organization/")} == {"admin"}
    assert {m.http.key for m in actions.registry().values() if not m.http.path.startswith("/organization/")} == {"api"}


def test_the_simulator_refuses_the_api_key_on_admin_routes(sim: Simulator) -> None:
    answer = httpx.get(f"{sim.url}/organization/projects", headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 401 and "Admin API key" in answer.json()["error"]["message"]
    assert API_KEY not in answer.text


def test_an_admin_action_from_the_cli_with_and_without_an_admin_key(sim: Simulator, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    worked = run_cli(_cli_env(sim, tmp_path / "a", admin=True), "run", "list_projects", "--input", '{"limit": 2}')
    assert worked.returncode == 0, worked.stderr
    assert json.loads(worked.stdout)["object"] == "list"
    calls = len(sim.requests)
    for name, value in _cli_env(sim, tmp_path / "b", admin=False).items():  # the same CLI, in this process
        if name.startswith("OPENAI_"):
            monkeypatch.setenv(name, value)
    code, out, err = _in_process_cli(capsys, "run", "list_projects")
    assert code == 2 and out == "" and "Traceback" not in err
    error = json.loads(err)["error"]
    assert error["type"] == "ConfigError" and error["field"] == "admin_key" and "OPENAI_ADMIN_KEY" in error["message"]
    log = httpx.get(f"{sim.url}/_sim/requests").json()["data"]
    assert len(log) == calls, "no call was made without the admin key"
    for text in (worked.stdout, worked.stderr, err, json.dumps(log)):
        assert ADMIN_KEY not in text and API_KEY not in text
    close_all_clients()


def test_a_keyless_local_server_needs_no_admin_key(simulator: Simulator, sim_integration: Integration) -> None:
    assert actions.run("list_projects", {}, sim_integration)["object"] == "list"


def test_the_admin_key_is_stored_sealed_and_used_from_the_cli(sim: Simulator, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_PACK_HOME", str(tmp_path))
    monkeypatch.setenv("CUSTOMER_KEY", API_KEY)
    monkeypatch.setenv("CUSTOMER_ADMIN_KEY", ADMIN_KEY)
    added = _in_process_cli(capsys, "integrations", "add", "msp", "--key-env", "CUSTOMER_KEY", "--admin-key-env",
                            "CUSTOMER_ADMIN_KEY", "--base-url", sim.url, "--default")
    assert added[0] == 0, added
    stored = (tmp_path / "integrations.json").read_text(encoding="utf-8")
    assert ADMIN_KEY not in stored and json.loads(stored)["integrations"]["msp"]["admin_key_sealed"].startswith("gAAAA")
    listed = _in_process_cli(capsys, "integrations", "list", "--json")
    assert json.loads(listed[1])[0]["has_admin_key"] is True
    ran = _in_process_cli(capsys, "run", "list_projects")
    assert ran[0] == 0 and json.loads(ran[1])["object"] == "list"
    assert _sent(sim, "/organization/projects")[0]["headers"]["authorization"] == "Bearer <admin-key>"
    monkeypatch.setenv("CUSTOMER_ADMIN_KEY", "")
    empty = _in_process_cli(capsys, "integrations", "add", "other", "--key-env", "CUSTOMER_KEY", "--admin-key-env",
                            "CUSTOMER_ADMIN_KEY", "--base-url", sim.url)
    assert empty[0] == 2 and json.loads(empty[2])["error"]["field"] == "admin_key"
    for text in (*added, *listed, *ran, *empty):
        assert ADMIN_KEY not in str(text)
    close_all_clients()


def test_the_admin_key_is_redacted_everywhere(sim: Simulator, account: Integration, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = IntegrationStore(path=tmp_path / "integrations.json", fernet_keys=FERNET_KEY)
    store.add(account, make_default=True)
    loaded = store.get("acct")
    assert loaded.admin_key is not None and loaded.admin_key.get_secret_value() == ADMIN_KEY
    sim.add_fault({"method": "GET", "path": "/organization/projects", "kind": "status", "status": 400, "times": 1,
                   "body": json.dumps({"error": {"message": f"bad key {ADMIN_KEY}", "type": "invalid_request_error"}})})
    with pytest.raises(errors.ApiError) as failed:
        actions.run("list_projects", {}, loaded)
    seen = [str(failed.value), json.dumps(failed.value.to_dict()), repr(loaded), loaded.model_dump_json(),
            json.dumps(loaded.public_dict()), (tmp_path / "integrations.json").read_text(encoding="utf-8")]
    assert not any(ADMIN_KEY in text for text in seen)
    assert loaded.public_dict()["has_admin_key"] is True
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-ENV-only-5c8e0f6d4f9c2e7d1b3a")
    register_store_secrets(IntegrationStore(path=tmp_path / "integrations.json", fernet_keys=FERNET_KEY))
    assert "sk-admin-ENV-only-5c8e0f6d4f9c2e7d1b3a" not in scrub("env: sk-admin-ENV-only-5c8e0f6d4f9c2e7d1b3a")


def test_the_admin_key_comes_from_openai_admin_key_by_default() -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_ADMIN_KEY": ADMIN_KEY}
    integration = Integration.from_env(env)
    assert integration is not None and integration.admin_key is not None
    assert integration.admin_key.get_secret_value() == ADMIN_KEY
    plain = Integration.from_env({"OPENAI_API_KEY": API_KEY})
    assert plain is not None and plain.admin_key is None
    with pytest.raises(errors.ConfigError) as bad:
        Integration.from_env({"OPENAI_API_KEY": API_KEY, "OPENAI_ADMIN_KEY": "sk-admin with space"})
    assert bad.value.field == "OPENAI_ADMIN_KEY"


def test_store_rotation_reseals_admin_keys(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    path = tmp_path / "integrations.json"
    IntegrationStore(path=path, fernet_keys=old).add(Integration(name="a", api_key=API_KEY, admin_key=ADMIN_KEY))
    assert IntegrationStore(path=path, fernet_keys=f"{new},{old}").rotate() == 2
    rotated = IntegrationStore(path=path, fernet_keys=new).get("a")
    assert rotated.admin_key is not None and rotated.admin_key.get_secret_value() == ADMIN_KEY
