"""Everyday jobs: the curated create_response, and the example workflows of docs/examples run end to end.

The action is run in-process against the loopback simulator; the workflows run on the session's
real worker (real redis-server) against the same simulator.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

import actions
from actions.create_response import OutputSchemaError
from actions.simulator import Simulator
from integration.errors import InputError
from integration.model import Integration
from tests.conftest import REPO_ROOT
from workers.workflow import load_workflow, parse_workflow

pytestmark = pytest.mark.timeout(180)

ROUTE_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["team", "urgent"],
                "properties": {"team": {"type": "string", "enum": ["network", "desk"]}, "urgent": {"type": "boolean"}}}
ROUTE_FORMAT = {"format": {"type": "json_schema", "name": "route", "strict": True, "schema": ROUTE_SCHEMA}}
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def _sent(simulator: Simulator) -> dict[str, Any]:
    posts = [r for r in simulator.requests if r["method"] == "POST" and r["path"] == "/v1/responses"]
    assert posts, "no request reached the simulator"
    return posts[-1]["body"]  # type: ignore[no-any-return]


def _answer_with(simulator: Simulator, text: str) -> None:
    """The next POST /responses answers a completed response whose text is ``text``."""
    simulator.add_fault({"kind": "status", "status": 200, "path": "/responses", "method": "POST", "body": {
        "id": "resp_scripted", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-4o-mini",
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "text": ROUTE_FORMAT, "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}})


# ---------------------------------------------------------------- output_text and output_parsed


def test_output_text_is_the_answer(simulator: Simulator, sim_integration: Integration) -> None:
    result = actions.execute("create_response", {"model": "gpt-4o-mini", "input": "printer on fire",
                                                 "instructions": "Be brief.", "reasoning": {"effort": "low"},
                                                 "store": False}, sim_integration)
    assert result.output["output_text"] == "Simulated reply to: printer on fire"
    assert "output_parsed" not in result.output
    assert result.usage["total_tokens"] == result.output["usage"]["total_tokens"] > 0
    sent = _sent(simulator)
    assert sent["reasoning"] == {"effort": "low"} and sent["store"] is False and sent["instructions"] == "Be brief."


def test_output_parsed_fits_the_schema(simulator: Simulator, sim_integration: Integration) -> None:
    output = actions.run("create_response", {"model": "gpt-4o-mini", "input": "VPN down", "text": ROUTE_FORMAT},
                         sim_integration)
    assert output["output_parsed"] == json.loads(output["output_text"])
    assert output["output_parsed"]["team"] in ("network", "desk")


@pytest.mark.skipif(actions.get("create_response").http.stream is None,
                    reason="the Responses stream is assembled once the binder reads it (http.stream)")
def test_a_streamed_answer_is_assembled(simulator: Simulator, sim_integration: Integration) -> None:
    result = actions.execute("create_response", {"model": "gpt-4o-mini", "input": "VPN down", "stream": True,
                                                 "text": ROUTE_FORMAT}, sim_integration)
    assert _sent(simulator)["stream"] is True
    assert result.output["status"] == "completed" and result.output["object"] == "response"
    assert result.output["output_parsed"] == json.loads(result.output["output_text"])
    assert result.usage["total_tokens"] > 0


@pytest.mark.parametrize(("text", "words"), [
    ('{"team": "sales", "urgent": true}', "team: must be one of"),
    ('{"team": "desk"}', "urgent"),
    ("Sure! Here is the JSON you asked for", "is not JSON"),
])
def test_an_answer_that_does_not_fit_is_a_typed_error(simulator: Simulator, sim_integration: Integration,
                                                      text: str, words: str) -> None:
    _answer_with(simulator, text)
    with pytest.raises(OutputSchemaError) as caught:
        actions.run("create_response", {"model": "gpt-4o-mini", "input": "VPN down", "text": ROUTE_FORMAT},
                    sim_integration)
    assert caught.value.code == "output_schema_mismatch" and words in caught.value.message
    assert caught.value.details["schema"] == "route"


def test_a_schema_mismatch_fails_the_step_by_name(pack: Any, simulator: Simulator) -> None:
    _answer_with(simulator, '{"team": "sales", "urgent": true}')
    text = f"""
name: classify
steps:
  - id: classify_ticket
    action: create_response
    input:
      model: gpt-4o-mini
      input: "VPN down"
      text: {json.dumps(ROUTE_FORMAT)}
"""
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(text, "classify.yaml"), {}, trigger={"type": "manual"})
    engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert record is not None and record["status"] == "failed"
    assert record["error"]["step"] == "classify_ticket" and record["error"]["code"] == "output_schema_mismatch"
    assert record["error"]["type"] == "OutputSchemaError"


# ---------------------------------------------------------------- files and images


def test_files_become_parts_of_the_last_user_message(simulator: Simulator, sim_integration: Integration,
                                                     tmp_path: Path) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(b"%PDF-1.4 invoice 42")
    image = tmp_path / "screen.png"
    image.write_bytes(PNG)
    actions.run("create_response", {
        "model": "gpt-4o-mini", "files": [str(pdf), f"@{image}"], "file_ids": ["file-abc"],
        "image_file_ids": ["file-img"],
        "input": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                  {"role": "user", "content": "What is due?"}]}, sim_integration)
    sent = _sent(simulator)["input"]
    assert sent[:2] == [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}]
    parts = sent[2]["content"]
    assert parts[0] == {"type": "input_text", "text": "What is due?"}
    assert parts[1] == {"type": "input_file", "filename": "invoice.pdf",
                        "file_data": "data:application/pdf;base64," + base64.b64encode(pdf.read_bytes()).decode()}
    assert parts[2]["type"] == "input_image" and parts[2]["image_url"].startswith("data:image/png;base64,")
    assert parts[3:] == [{"type": "input_file", "file_id": "file-abc"},
                         {"type": "input_image", "file_id": "file-img", "detail": "auto"}]


def test_text_input_with_a_file_becomes_one_message(simulator: Simulator, sim_integration: Integration) -> None:
    actions.run("create_response", {"model": "gpt-4o-mini", "input": "Summarise",
                                    "files": ["data:text/plain;base64," + base64.b64encode(b"notes").decode()]},
                sim_integration)
    assert _sent(simulator)["input"] == [{"role": "user", "content": [
        {"type": "input_text", "text": "Summarise"},
        {"type": "input_file", "filename": "upload.txt", "file_data": "data:text/plain;base64,bm90ZXM="}]}]


def test_bad_files_are_refused_before_anything_is_sent(simulator: Simulator, sim_integration: Integration,
                                                       tmp_path: Path) -> None:
    big = tmp_path / "huge.pdf"
    with big.open("wb") as handle:  # sparse: 50 MB + 1 byte without writing them
        handle.truncate(50 * 1024 * 1024 + 1)
    cases = [
        ({"files": [str(tmp_path / "missing.pdf")]}, "files[0]", "does not exist"),
        ({"files": [str(tmp_path), str(big)]}, "files[0]", "is not a file"),
        ({"files": ["x.txt", str(big)][1:]}, "files[0]", "more than the 52428800"),
        ({"files": ["data:text/plain;base64,@@@"]}, "files[0]", "does not decode"),
        ({"files": ["x"] * 21}, "files", "at most 20"),
    ]
    for extra, field, words in cases:
        with pytest.raises(InputError) as caught:
            actions.run("create_response", {"model": "gpt-4o-mini", **extra}, sim_integration)
        problem = caught.value.details["problems"][0]
        assert problem["field"] == field and words in problem["reason"], (extra, problem)
    assert simulator.calls == 0


# ---------------------------------------------------------------- multi-turn across steps, tools


MULTI_TURN = """
name: multi-turn
steps:
  - id: conversation
    action: create_conversation
    input: {}
  - id: first
    action: create_response
    input:
      model: gpt-4o-mini
      input: "The printer in room 4 is on fire"
      conversation: "{{ steps.conversation.output.id }}"
  - id: second
    action: create_response
    input:
      model: gpt-4o-mini
      input: "Which room was it?"
      previous_response_id: "{{ steps.first.output.id }}"
      tools:
        - type: function
          name: open_ticket
          strict: true
          parameters: {type: object, properties: {room: {type: integer}}, required: [room], additionalProperties: false}
output:
  first: "{{ steps.first.output.output_text }}"
  call: "{{ steps.second.output.output[0].name }}"
"""


def test_conversation_and_previous_response_across_steps(pack: Any, simulator: Simulator) -> None:
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(MULTI_TURN, "multi.yaml"), {}, trigger={"type": "manual"})
    engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert record is not None and record["status"] == "succeeded", record
    assert record["output"] == {"first": "Simulated reply to: The printer in room 4 is on fire",
                                "call": "open_ticket"}
    posts = [r["body"] for r in simulator.requests if r["path"] == "/v1/responses"]
    assert posts[0]["conversation"].startswith("conv_") and posts[1]["previous_response_id"].startswith("resp_")


# ---------------------------------------------------------------- the example workflows


def _example(pack: Any, name: str, inputs: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    workflow = load_workflow(REPO_ROOT / "docs" / "examples" / f"{name}.yaml")
    engine = pack.engine()
    run_id, _ = engine.start_run(workflow, inputs, trigger={"type": "manual"})
    header = engine.wait(run_id, timeout)
    assert header is not None and header["status"] == "succeeded", engine.store.record(run_id)
    record = engine.store.record(run_id)
    assert record is not None
    return record


def test_example_knowledge_base_answer(pack: Any, simulator: Simulator, tmp_path: Path) -> None:
    docs = []
    for name, text in (("vpn.md", "To reset the VPN token, open the portal and choose Reset token."),
                       ("printer.md", "Printer jams: open tray 2 and remove the paper.")):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        docs.append(str(path))
    record = _example(pack, "knowledge-base-answer", {"documents": docs, "customer": "acme",
                                                      "question": "How do I reset the VPN token?"})
    steps = {s["id"]: s for s in record["steps"]}
    assert steps["index"]["wait"]["kind"] == "vector_store"
    assert steps["index"]["output"]["file_counts"]["completed"] == 2
    assert "open the portal and choose Reset token" in record["output"]["answer"]
    assert record["output"]["sources"] == ["vpn.md"]
    uploaded = [item["output"]["filename"] for item in steps["upload"]["item_results"]]
    assert uploaded == [os.path.basename(d) for d in docs]


SOLVED = [{"text": "Printer on floor 2 jams when printing labels", "team": "desk"},
          {"text": "VPN tunnel drops every hour for remote staff", "team": "network"},
          {"text": "New laptop needs Office licence", "team": "procurement"}]


@pytest.mark.parametrize(("ticket", "team"), [
    ("Remote staff say the VPN tunnel drops again", "network"),
    ("The label printer jams on floor 2", "desk"),
    ("Coffee machine is broken", "triage"),
])
def test_example_similar_ticket_routing(pack: Any, simulator: Simulator, ticket: str, team: str) -> None:
    record = _example(pack, "similar-ticket-routing", {"ticket": ticket, "solved": SOLVED})
    output = record["output"]
    assert output["team"] == team
    assert output["note"]["priority"] in ("low", "normal", "high")
    best = record["variables"]["best"]
    assert output["similarity"] == best["score"]
    assert (output["similar_to"] == SOLVED[best["index"]]["text"]) == (team != "triage")
    embeds = [r for r in simulator.requests if r["path"] == "/v1/embeddings"]
    assert len(embeds) == 1 and len(embeds[0]["body"]["input"]) == 4  # one call for all four texts


def test_similarity_filters_refuse_what_is_not_a_vector() -> None:
    from integration.errors import TemplateError
    from workers.workflow import render

    assert render("{{ [1, 0] | cosine([1, 0]) }}", {}) == 1.0
    assert render("{{ ([[0, 1], [1, 1], [1, 0]] | top_k([1, 0], 2)) | map(attribute='index') | list }}", {}) == [2, 1]
    for text, words in (("{{ [1, 0] | cosine([1, 0, 0]) }}", "different lengths"),
                        ("{{ 'abc' | cosine([1]) }}", "must be a non-empty list of numbers"),
                        ("{{ [[1]] | top_k([1], 0) }}", "k must be a whole number"),
                        ("{{ [[1, 'x']] | top_k([1, 1]) }}", "only finite numbers")):
        with pytest.raises(TemplateError) as caught:
            render(text, {}, step="route")
        assert words in caught.value.message and "step 'route'" in caught.value.message


def test_example_voicemail_to_ticket(pack: Any, simulator: Simulator, tmp_path: Path) -> None:
    recording = tmp_path / "voicemail.mp3"
    recording.write_bytes(b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 8)
    record = _example(pack, "voicemail-to-ticket", {"recording": str(recording), "boards": ["network", "billing"]})
    ticket = record["output"]["ticket"]
    steps = {s["id"]: s for s in record["steps"]}
    transcript = steps["transcribe"]["output"]["text"]
    assert ticket["body"].endswith(transcript) and transcript
    assert ticket["priority"] in ("low", "normal", "high") and ticket["board"] in ("network", "billing")
    assert ticket["title"] == steps["summarise"]["output"]["output_parsed"]["title"]
    upload = next(r for r in simulator.requests if r["path"] == "/v1/audio/transcriptions")
    assert upload["body"]["file"] == "voicemail.mp3"  # the simulator keeps a multipart file as its name
    classify = [r["body"] for r in simulator.requests if r["path"] == "/v1/responses"][-1]
    assert classify["text"]["format"]["schema"]["properties"]["board"]["enum"] == ["network", "billing"]


def test_example_voicemail_with_a_missing_recording_sends_nothing(pack: Any, simulator: Simulator,
                                                                  tmp_path: Path) -> None:
    workflow = load_workflow(REPO_ROOT / "docs" / "examples" / "voicemail-to-ticket.yaml")
    engine = pack.engine()
    run_id, _ = engine.start_run(workflow, {"recording": str(tmp_path / "gone.mp3")}, trigger={"type": "manual"})
    engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert record is not None and record["status"] == "failed"
    assert record["error"]["step"] == "transcribe" and record["error"]["code"] == "invalid_input"
    assert "file:" in record["error"]["message"] and "does not exist" in record["error"]["message"]
    assert simulator.calls == 0


# ---------------------------------------------------------------- mode: batch

needs_download = pytest.mark.skipif("download_file" not in actions.registry(),
                                    reason="mode: batch reads the batch's output with download_file (binary outputs)")

CLASSIFY = """
name: classify-{mode}
inputs:
  records: {{type: array, items: {{type: string}}}}
steps:
  - id: classify
    action: create_chat_completion
    with_items: "{{{{ inputs.records }}}}"
    concurrency: 20
    mode: {mode}{wait}
    input:
      model: gpt-4o-mini
      messages:
        - {{role: system, content: "One label: billing, outage, other."}}
        - {{role: user, content: "{{{{ item }}}}"}}
"""


BATCH_WAIT = "\n    wait: {interval: 0.2, max_interval: 0.5}"


@pytest.mark.parametrize(("step", "field", "words"), [
    ("action: create_image\n    with_items: [a]\n    mode: batch\n    input: {prompt: '{{ item }}'}", "mode",
     "'create_image' cannot run in mode: batch: /v1/batches accepts only"),
    ("action: create_embedding\n    mode: batch\n    input: {model: m, input: x}", "mode",
     "mode: batch applies to a step with with_items"),
    ("action: create_embedding\n    with_items: [a]\n    mode: batch\n    wait: {until: completed}\n"
     "    input: {model: m, input: '{{ item }}'}", "wait.until", "until does not apply"),
    ("action: create_embedding\n    with_items: [a]\n    mode: nightly\n    input: {model: m, input: x}", "mode",
     "must be one of"),
])
def test_mode_batch_is_checked_when_the_file_loads(step: str, field: str, words: str) -> None:
    from integration.errors import WorkflowError

    with pytest.raises(WorkflowError) as caught:
        parse_workflow(f"name: w\nsteps:\n  - id: s\n    {step}\n", "w.yaml")
    assert caught.value.details.get("field") == field and words in caught.value.message, caught.value.to_dict()


@pytest.mark.skipif("download_file" in actions.registry(), reason="this pack reads batch output files")
def test_batch_mode_without_download_file_fails_before_sending(pack: Any, simulator: Simulator) -> None:
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(CLASSIFY.format(mode="batch", wait=BATCH_WAIT), "b.yaml"),
                                 {"records": ["a", "b"]}, trigger={"type": "manual"})
    engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert record is not None and record["status"] == "failed"
    errors = [item["error"] for item in record["steps"][0]["item_results"]]
    assert [e["code"] for e in errors] == ["config_invalid"] * 2 and "download_file" in errors[0]["message"]
    assert simulator.calls == 0


def test_a_batch_over_the_file_limits_is_split() -> None:
    from workers.engine.batchmode import split_lines

    lines = [(i, json.dumps({"custom_id": f"item-{i}", "pad": "x" * (i % 7)})) for i in range(25)]
    files = split_lines(lines, max_lines=10, max_bytes=10_000)
    assert [(first, count) for first, count, _ in files] == [(0, 10), (10, 10), (20, 5)]
    assert b"".join(body for _, _, body in files).decode().splitlines() == [line for _, line in lines]
    by_size = split_lines(lines, max_lines=1000, max_bytes=200)
    assert all(len(body) <= 200 for _, _, body in by_size) and sum(c for _, c, _ in by_size) == 25


@needs_download
def test_batch_mode_gives_the_same_items_as_live(pack: Any, simulator: Simulator) -> None:
    records = [f"ticket {i}: {'printer jam' if i % 3 else 'invoice wrong'}" for i in range(1000)]
    engine = pack.engine()
    results = {}
    for mode in ("live", "batch"):
        simulator.reset()
        run_id, _ = engine.start_run(parse_workflow(CLASSIFY.format(mode=mode, wait=BATCH_WAIT if mode == "batch" else ""), f"{mode}.yaml"),
                                     {"records": records}, trigger={"type": "manual"})
        engine.wait(run_id, 150)
        record = engine.store.record(run_id)
        assert record is not None and record["status"] == "succeeded", record.get("error") if record else None
        results[mode] = (record, simulator.calls_by_route(), list(simulator.requests))
    live, batch = results["live"][0]["steps"][0], results["batch"][0]["steps"][0]
    assert len(live["item_results"]) == len(batch["item_results"]) == 1000
    for index, (a, b) in enumerate(zip(live["item_results"], batch["item_results"], strict=True)):
        assert a["status"] == b["status"] == "succeeded", index
        assert a["output"]["choices"] == b["output"]["choices"], index
        assert a["usage"] == b["usage"], index
    routes, requests = results["batch"][1], results["batch"][2]
    assert routes.get("POST /chat/completions") is None and routes["POST /files"] == 1
    assert routes["POST /batches"] == 1
    downloads = [r for r in requests if r["path"].endswith("/content")]
    assert 1 <= len(downloads) <= 2  # the output file, and the error file when there is one
    polls = [r for r in requests if r["method"] == "GET" and r["path"].startswith("/v1/batches/")]
    assert len(polls) == batch["wait"]["polls"] >= 1
    assert batch["items"] == {"total": 1000, "succeeded": 1000, "failed": 0}
    print(f"\n[batch] 1000 items: live made {results['live'][1]['POST /chat/completions']} calls; batch made "
          f"1 upload, 1 create, {len(polls)} polls, {len(downloads)} downloads")


@needs_download
def test_batch_mode_items_fail_alone(pack: Any, simulator: Simulator) -> None:
    """An item the action refuses fails before the upload; the others still run in the batch."""
    text = CLASSIFY.format(mode="batch", wait=BATCH_WAIT).replace("model: gpt-4o-mini",
                                                                  'model: gpt-4o-mini\n      temperature: "{{ item }}"')
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(text, "b.yaml"), {"records": ["0.5", "hot", "1"]},
                                 trigger={"type": "manual"})
    engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert record is not None and record["status"] == "failed"
    step = record["steps"][0]
    assert step["items"] == {"total": 3, "succeeded": 2, "failed": 1}
    assert step["error"]["failed_items"] == [1]
    assert "temperature" in step["item_results"][1]["error"]["message"]
    assert [r["output"]["object"] for r in step["item_results"][::2]] == ["chat.completion"] * 2
    assert simulator.calls_by_route()["POST /files"] == 1


@needs_download
def test_example_nightly_batch_classification(pack: Any, simulator: Simulator) -> None:
    records = [f"record {i}: {'the server is down' if i % 2 else 'please fix my bill'}" for i in range(10_000)]
    record = _example(pack, "nightly-batch-classification", {"records": records}, timeout=170)
    labels = record["output"]["labels"]
    assert len(labels) == 10_000 and all(isinstance(label, str) and label for label in labels)
    routes = simulator.calls_by_route()
    assert routes["POST /batches"] == 1 and "POST /chat/completions" not in routes
    assert record["steps"][0]["wait"]["summary"] == "batch completed, 10000/10000"


def test_migration_guide_maps_every_assistants_action() -> None:
    """docs/migration.md lists each deprecated Assistants action with the replaced_by its manifest names."""
    text = (REPO_ROOT / "docs" / "migration.md").read_text(encoding="utf-8")
    assistants = {name: m for name, m in actions.registry().items()
                  if m.deprecated and "Assistants" in m.deprecated}
    assert len(assistants) >= 20
    for name, manifest in assistants.items():
        assert manifest.replaced_by in actions.registry(), name
        assert f"| `{name}` | `{manifest.replaced_by}` |" in text, f"docs/migration.md: {name} -> {manifest.replaced_by}"


@needs_download
def test_batch_mode_a_refused_batch_fails_every_item_with_its_error(pack: Any, simulator: Simulator) -> None:
    simulator.add_fault({"kind": "status", "status": 400, "method": "POST", "path": "/batches"})
    engine = pack.engine()
    run_id, _ = engine.start_run(parse_workflow(CLASSIFY.format(mode="batch", wait=BATCH_WAIT), "b.yaml"),
                                 {"records": ["a", "b", "c"]}, trigger={"type": "manual"})
    engine.wait(run_id, 60)
    record = engine.store.record(run_id)
    assert record is not None and record["status"] == "failed"
    step = record["steps"][0]
    assert step["items"] == {"total": 3, "succeeded": 0, "failed": 3}
    assert {item["error"]["code"] for item in step["item_results"]} == {"bad_request"}
    assert "POST /chat/completions" not in simulator.calls_by_route()
