"""The generator (manifests from OpenAI's spec) and the drift check (``spec diff``).

The checked-in manifests and docs/coverage.md must be exactly what ``make generate`` writes, so a
second run is a no-op; the seven seed actions keep their curated manifests; every operation of the
spec is accounted for. These read ../shared/openapi (skipped, with the reason, when it is absent).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import actions
from actions.spec import action_name, build, default_spec_path, diff_spec, differences, main, write
from actions.spec.generate import COVERAGE_FILE, MANIFEST_DIR, OVERRIDE_DIR, Plan

SPEC_DIR = default_spec_path().parent
SPEC_2026 = SPEC_DIR / "openai-2026-08.yaml"
SPEC_2023 = SPEC_DIR / "openai-2023-12.yaml"
SEEDS = ("create_chat_completion", "create_completion", "create_edit", "create_image", "create_moderation",
         "list_models", "retrieve_model")

pytestmark = pytest.mark.skipif(not SPEC_2026.is_file(), reason=f"OpenAI's spec is not at {SPEC_2026}")


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build(SPEC_2026)


def test_the_checked_in_manifests_are_what_the_generator_writes(plan: Plan) -> None:
    assert differences(plan) == [], "run `make generate` and commit the result"


def test_a_second_run_changes_nothing(plan: Plan, tmp_path: Path) -> None:
    manifests, coverage = tmp_path / "manifests", tmp_path / "docs" / "coverage.md"
    manifests.mkdir()
    coverage.parent.mkdir()
    (manifests / "stale_action.json").write_text("{}", encoding="utf-8")
    first = write(plan, manifests, coverage)
    assert "manifests/stale_action.json (removed)" in first and len(first) == len(plan.files) + 2
    again = build(SPEC_2026)
    assert again.files == plan.files and again.coverage == plan.coverage
    assert write(again, manifests, coverage) == []


def test_the_seed_actions_keep_their_curated_manifests(plan: Plan) -> None:
    for name in SEEDS:
        override = json.loads((OVERRIDE_DIR / f"{name}.json").read_text(encoding="utf-8"))
        assert json.loads(plan.files[f"{name}.json"]) == override["manifest"], name
        assert name in actions.registry()
    assert actions.get("retrieve_model").aliases == {"model_id": "model"}


def test_every_operation_is_accounted_for(plan: Plan) -> None:
    statuses = [entry.status for entry in plan.entries]
    assert len(plan.entries) == 288
    assert statuses.count("folded") == 7
    assert statuses.count("covered") >= 250
    for entry in plan.entries:
        assert entry.status in ("covered", "folded", "excluded")
        if entry.status == "excluded":  # "not yet: needs <feature>", or why it is not a workflow step at all
            assert entry.reason.startswith(("not yet: needs", "excluded: ")), entry.reason
        row = f"| `{entry.operation.operation_id}` | {entry.status} |"
        assert row in plan.coverage, row
    covered = {entry.name for entry in plan.entries if entry.status == "covered"}
    assert covered <= set(actions.registry())
    assert "POST | `/realtime/calls` | `create-realtime-call` | excluded | excluded: an SDP offer" in plan.coverage


def test_generated_manifests_follow_the_conventions(plan: Plan) -> None:
    for entry in plan.entries:
        if entry.status != "covered" or entry.reason == "curated":
            continue
        manifest = entry.manifest
        assert manifest is not None
        assert manifest["idempotent"] == (manifest["http"]["method"] in ("GET", "DELETE")) or \
            manifest["openapi"]["operationId"] in {"Getinputtokencounts", "searchVectorStore", "validateGrader",
                                                   "runGrader"}, entry.name
        if "model" in manifest["input"]["properties"]:
            assert manifest["input"]["properties"]["model"]["x-options-from"] == "list_models"
        assert manifest["examples"], entry.name


#: The operations the binder reads as "no body" and as "bytes" (issue 11's lists), and how each streams.
EMPTY_ANSWERS = {"DeleteContainer", "DeleteContainerFile", "deleteResponse", "accept-realtime-call",
                 "hangup-realtime-call", "refer-realtime-call", "reject-realtime-call"}
BINARY_ANSWERS = {"createSpeech", "downloadFile", "RetrieveContainerFileContent", "RetrieveVideoContent",
                  "GetSkillContent", "GetSkillVersionContent"}
ASSEMBLED = {"createChatCompletion": "chat_completion", "createCompletion": "completion",
             "createResponse": "response", "getResponse": "response", "createTranscription": "transcription",
             "createImageEdit": "image", "createThreadAndRun": "run", "createRun": "run",
             "submitToolOuputsToRun": "run"}


def test_answers_are_classified_and_coverage_reaches_the_issues_bar(plan: Plan) -> None:
    covered = {entry.operation.operation_id: entry.manifest for entry in plan.entries if entry.status == "covered"}
    assert len(covered) >= 274
    kinds = {op: manifest["http"].get("answer", "json") for op, manifest in covered.items() if manifest}
    assert {op for op, kind in kinds.items() if kind == "empty"} == EMPTY_ANSWERS
    assert {op for op, kind in kinds.items() if kind == "binary"} == BINARY_ANSWERS
    for op in BINARY_ANSWERS:
        properties = covered[op]["input"]["properties"]  # type: ignore[index]
        assert properties["save_to"]["x-pack-only"] and covered[op]["output"]["required"] == [  # type: ignore[index]
            "content_type", "bytes", "sha256"]
        assert ("parse" in properties) == (op in {"downloadFile", "RetrieveContainerFileContent"})
    assert "stream_format" not in covered["createSpeech"]["input"]["properties"]  # type: ignore[index]
    streams = {op: manifest["http"]["stream"]["assemble"] for op, manifest in covered.items()
               if manifest and "stream" in manifest["http"]}
    assert streams == ASSEMBLED
    batch = covered["createVectorStoreFileBatch"]
    assert batch is not None and batch["input"]["oneOf"] == [{"required": ["file_ids"]}, {"required": ["files"]}]
    assert "stream` not offered" not in plan.coverage


def test_names_ids_links_and_deprecations() -> None:
    assert action_name("createChatCompletion") == "create_chat_completion"
    assert action_name("ListContainers") == "list_containers"
    assert action_name("admin-api-keys-list") == "admin_api_keys_list"
    registry = actions.registry()
    assert registry["get_organization_spend_limit"].openapi.operationId == "Getorganizationspendlimit"
    assert registry["count_input_tokens"].is_idempotent and registry["search_vector_store"].is_idempotent
    assert not registry["create_batch"].is_idempotent
    assert registry["retrieve_file"].properties["file_id"]["x-options-from"] == "list_files"
    assert registry["retrieve_batch"].properties["batch_id"]["x-options-from"] == "list_batches"
    assert registry["retrieve_project"].properties["project_id"]["x-options-from"] == "list_projects"
    assert registry["get_vector_store"].properties["vector_store_id"]["x-options-from"] == "list_vector_stores"
    assistant = registry["create_assistant"]
    assert assistant.deprecated and "2026-08-26" in assistant.deprecated and assistant.replaced_by == "create_response"
    assert registry["list_videos"].deprecated
    big = json.dumps(registry["create_response"].input)
    assert '"$defs"' in big and '"$ref": "#/$defs/' in big  # shared shapes by reference, not inlined


def test_an_override_can_exclude_an_operation(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides"
    shutil.copytree(OVERRIDE_DIR, overrides)
    (overrides / "list_batches.json").write_text(json.dumps({"operationId": "listBatches",
                                                             "exclude": "not wanted here"}), encoding="utf-8")
    plan = build(SPEC_2026, overrides)
    assert "list_batches.json" not in plan.files
    assert "| `listBatches` | excluded | not wanted here |" in plan.coverage


def test_an_unknown_override_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"operationId": "listBatches", "sett": {}}), encoding="utf-8")
    with pytest.raises(ValueError, match="sett"):
        build(SPEC_2026, tmp_path)


def test_generate_check_exits_0_when_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert MANIFEST_DIR.is_dir() and COVERAGE_FILE.is_file()


def test_diff_against_the_manifests_own_spec_finds_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(SPEC_2026)]) == 0
    assert "no differences" in capsys.readouterr().out


@pytest.mark.skipif(not SPEC_2023.is_file(), reason="the 2023-12 spec is absent")
def test_diff_against_the_2023_spec_reports_operations_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(SPEC_2023)]) == 1
    out = capsys.readouterr().out
    assert "+ GET /fine-tunes listFineTunes" in out
    assert "- POST /responses createResponse (action create_response)" in out
    assert "createEdit" not in out  # bound by create_edit, from the 2023 spec itself
    result = diff_spec(SPEC_2023)
    assert "- max_completion_tokens (body)" in result.changed["create_chat_completion"]
    assert result.as_dict()["differs"] is True


def test_a_bad_spec_file_is_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("paths: [unclosed\n", encoding="utf-8")
    assert main(["diff", str(broken)]) == 2
    assert main(["diff", str(tmp_path / "missing.yaml")]) == 2
    (tmp_path / "plain.yaml").write_text("a: 1\n", encoding="utf-8")
    assert main(["diff", str(tmp_path / "plain.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "not an OpenAPI document" in err and "Traceback" not in err


# ---------------------------------------------------------------- the CLI: openai-pack spec, actions list


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``openai-pack ARGS`` in-process through the CLI's error boundary: (exit code, stdout, stderr)."""
    from workers.cli.main import main as cli_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli_main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_cli_spec_diff_exits_1_on_drift_and_0_without(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "spec", "diff", str(SPEC_2026))
    assert code == 0 and "no differences" in out
    if SPEC_2023.is_file():
        code, out, _ = _cli(capsys, "spec", "diff", str(SPEC_2023), "--json")
        result = json.loads(out)
        assert code == 1 and result["differs"] and "GET /fine-tunes listFineTunes" in result["added"]


def test_cli_spec_diff_of_a_bad_file_is_a_json_error_exit_2(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("paths: [unclosed\n", encoding="utf-8")
    for target in (broken, tmp_path / "missing.yaml"):
        code, out, err = _cli(capsys, "spec", "diff", str(target))
        error = json.loads(err)["error"]
        assert code == 2 and out == "" and target.name in error["message"] and "Traceback" not in err


def test_cli_spec_generate_check_reports_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "spec", "generate", "--check")
    report = json.loads(out)
    assert code == 0 and report["operations"] == 288 and report["checked"] == []


def test_cli_actions_list_filters(capsys: pytest.CaptureFixture[str]) -> None:
    def listed(*options: str) -> list[dict[str, object]]:
        code, out, err = _cli(capsys, "actions", "list", "--json", *options)
        assert code == 0, err
        return json.loads(out)  # type: ignore[no-any-return]

    everything, shown = listed("--all"), listed()
    names = {a["name"] for a in shown}
    assert len(everything) == len(actions.registry()) > len(shown)
    assert "create_assistant" not in names and "create_assistant" in {a["name"] for a in everything}
    assert all(not a["deprecated"] for a in shown)
    stores = listed("--category", "vector STORES")
    assert stores and {a["category"] for a in stores} == {"Vector stores"}
    found = {a["name"] for a in listed("--search", "Transcription")}
    assert "create_transcription" in found and "list_models" not in found
    assert listed("--search", "no-such-word-anywhere") == []
    code, _, err = _cli(capsys, "actions", "list", "--category", "Nope")
    assert code == 2 and json.loads(err)["error"]["problems"][0]["field"] == "--category"
    code, out, _ = _cli(capsys, "actions", "list", "--category", "Models")
    assert code == 0 and "retrieve_model" in out and "create_file" not in out


def test_an_override_of_an_unknown_operation_is_refused(tmp_path: Path) -> None:
    (tmp_path / "typo.json").write_text(json.dumps({"operationId": "listBatchez", "set": {"title": "x"}}),
                                        encoding="utf-8")
    with pytest.raises(ValueError, match="listBatchez"):
        build(SPEC_2026, tmp_path)


# ---------------------------------------------------------------- a hostile spec file for spec diff

_LAUGHS = "a: &a [" + ", ".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
) + "paths: {}\n"


@pytest.mark.parametrize(("content", "reason"), [
    (_LAUGHS.encode(), "aliases expand to more than"),
    (b"openapi: 3.0.0\npaths: {}\ninfo: {title: \xff\xfe}\n", "not UTF-8"),
    (("paths: " + "[" * 300 + "]" * 300 + "\n").encode(), "nested more than"),
])
def test_cli_spec_diff_refuses_a_hostile_spec_naming_new_spec(content: bytes, reason: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    hostile = tmp_path / "hostile.yaml"
    hostile.write_bytes(content)
    code, out, err = _cli(capsys, "spec", "diff", str(hostile))
    error = json.loads(err)["error"]
    assert code == 2 and out == "" and "Traceback" not in err
    assert error["field"] == "NEW_SPEC" and reason in error["message"] and "hostile.yaml" in error["message"]


def test_spec_diff_refuses_a_spec_file_over_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import actions.spec.diff as drift

    monkeypatch.setattr(drift, "MAX_SPEC_BYTES", 1024)
    big = tmp_path / "big.yaml"
    big.write_text("paths: {}\n" + "# padding\n" * 200, encoding="utf-8")
    code, _, err = _cli(capsys, "spec", "diff", str(big))
    assert code == 2 and "at most 1,024 bytes" in json.loads(err)["error"]["message"]
    assert main(["diff", str(big)]) == 2
