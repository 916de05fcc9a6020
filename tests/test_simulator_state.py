"""The simulator's memory over real HTTP: files (multipart upload, bytes back), batches (JSONL in, per-line answers
out, in_progress → completed), vector stores (indexing, deterministic search), responses (background mode, input
items) and conversations. Round trips, 404s in OpenAI's shape, cursor pagination, job control, reset and bounds.

The manifests are written to a tmp dir from the spec's own routes and loaded like any manifest (the generated ones
are not needed), and every answer is checked against the spec's response schema for its operation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from actions import load_manifest
from actions.simulator import Simulator, spec

STATEFUL_OPERATIONS = (
    "createFile", "retrieveFile", "listFiles", "deleteFile", "downloadFile",
    "createBatch", "retrieveBatch", "listBatches", "cancelBatch",
    "createVectorStore", "getVectorStore", "modifyVectorStore", "listVectorStores", "deleteVectorStore",
    "createVectorStoreFile", "getVectorStoreFile", "listVectorStoreFiles", "deleteVectorStoreFile",
    "updateVectorStoreFileAttributes", "retrieveVectorStoreFileContent", "searchVectorStore",
    "createVectorStoreFileBatch", "getVectorStoreFileBatch", "cancelVectorStoreFileBatch",
    "listFilesInVectorStoreBatch",
    "createResponse", "getResponse", "deleteResponse", "cancelResponse", "listInputItems",
    "createConversation", "getConversation", "updateConversation", "deleteConversation",
    "createConversationItems", "listConversationItems", "getConversationItem", "deleteConversationItem",
    "createChatCompletion", "createModeration",
)
CHAT_LINE = {"method": "POST", "url": "/v1/chat/completions"}


def snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


def write_manifest(directory: Path, operation_id: str) -> Path:
    """A minimal pass-through manifest for one spec operation, as the generator would bind it."""
    operation = spec.operation(operation_id)
    assert operation is not None
    path_params = re.findall(r"\{([^{}/]+)\}", operation.path)
    multipart = "multipart/form-data" in operation.content_types
    manifest = {
        "name": snake(operation_id), "title": operation_id, "category": "State", "description": "Test binding.",
        "openapi": {"operationId": operation_id},
        "http": {"method": operation.method, "path": operation.path,
                 "encoding": "multipart" if multipart else "json" if operation.content_types else "none"},
        "input": {"type": "object", "additionalProperties": False,
                  "properties": {name: {"type": "string"} for name in path_params}},
        "output": {"type": "object"},
        "examples": [{"title": "Any", "input": {}, "output": {}}],
    }
    target = directory / f"{manifest['name']}.json"
    target.write_text(json.dumps(manifest), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def state_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    directory = tmp_path_factory.mktemp("manifests")
    manifests = {}
    for operation_id in STATEFUL_OPERATIONS:
        path = write_manifest(directory, operation_id)
        loaded = load_manifest(path.read_text(encoding="utf-8"), str(path))
        manifests[loaded.name] = loaded
    with Simulator(manifests=manifests) as sim:
        yield sim


@pytest.fixture
def sim(state_sim: Simulator) -> Iterator[Simulator]:
    state_sim.reset()
    yield state_sim
    state_sim.reset()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def fits(operation_id: str, body: Any) -> Any:
    """The answer, after checking it against the spec's response schema for the operation."""
    operation = spec.operation(operation_id)
    assert operation is not None and operation.response_schema is not None
    validator = Draft202012Validator({"$defs": operation.defs, "allOf": [operation.response_schema]})
    # the API sends null for an unset field (a running batch's completed_at, an empty page's first_id) even where
    # the spec types it otherwise; the simulator does the same, so a null is never a misfit here
    problems = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(body)
                if e.instance is not None]
    assert not problems, (operation_id, problems[:3])
    return body


def ok(response: httpx.Response, operation_id: str) -> Any:
    assert response.status_code == 200, response.text
    return fits(operation_id, response.json())


def upload(client: httpx.Client, sim: Simulator, name: str, content: bytes, purpose: str = "assistants") -> Any:
    return ok(client.post(f"{sim.url}/files", files={"file": (name, content, "text/plain")},
                          data={"purpose": purpose}), "createFile")


def not_found(response: httpx.Response, message: str, param: str | None = None) -> None:
    assert response.status_code == 404
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                         "code": None}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


# ---------------------------------------------------------------- files


def test_file_round_trip_upload_retrieve_list_download_delete(sim: Simulator, client: httpx.Client) -> None:
    content = b"Ticket 4411: printer on floor 2 is jammed.\n"
    created = upload(client, sim, "ticket.txt", content)
    assert created["object"] == "file" and created["filename"] == "ticket.txt"
    assert created["bytes"] == len(content) and created["purpose"] == "assistants"
    assert created["id"].startswith("file-")
    assert ok(client.get(f"{sim.url}/files/{created['id']}"), "retrieveFile") == created
    download = client.get(f"{sim.url}/files/{created['id']}/content")
    assert download.status_code == 200 and download.content == content
    assert download.headers["content-type"] == "application/octet-stream"
    listed = ok(client.get(f"{sim.url}/files"), "listFiles")
    assert [f["id"] for f in listed["data"]] == [created["id"]]
    deleted = client.delete(f"{sim.url}/files/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}
    fits("deleteFile", deleted.json())
    not_found(client.get(f"{sim.url}/files/{created['id']}"), f"No such File object: {created['id']}", "id")
    not_found(client.get(f"{sim.url}/files/{created['id']}/content"), f"No such File object: {created['id']}", "id")
    not_found(client.delete(f"{sim.url}/files/{created['id']}"), f"No such File object: {created['id']}", "id")
    assert ok(client.get(f"{sim.url}/files"), "listFiles")["data"] == []


def test_binary_upload_comes_back_byte_for_byte(sim: Simulator, client: httpx.Client) -> None:
    content = bytes(range(256)) * 40
    created = upload(client, sim, "blob.bin", content, purpose="user_data")
    assert client.get(f"{sim.url}/files/{created['id']}/content").content == content


def test_lists_paginate_with_after_limit_and_has_more(sim: Simulator, client: httpx.Client) -> None:
    ids = [upload(client, sim, f"f{n}.txt", f"file {n}".encode())["id"] for n in range(5)]
    newest_first = list(reversed(ids))
    first = ok(client.get(f"{sim.url}/files", params={"limit": 2}), "listFiles")
    assert [f["id"] for f in first["data"]] == newest_first[:2]
    assert first["has_more"] is True and first["first_id"] == newest_first[0] and first["last_id"] == newest_first[1]
    seen, after = [f["id"] for f in first["data"]], first["last_id"]
    for _ in range(5):  # bounded: 5 files, 2 a page
        page = ok(client.get(f"{sim.url}/files", params={"limit": 2, "after": after}), "listFiles")
        seen += [f["id"] for f in page["data"]]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert seen == newest_first
    ascending = ok(client.get(f"{sim.url}/files", params={"order": "asc", "limit": 3}), "listFiles")
    assert [f["id"] for f in ascending["data"]] == ids[:3]
    only_batch = ok(client.get(f"{sim.url}/files", params={"purpose": "batch"}), "listFiles")
    assert only_batch["data"] == [] and only_batch["first_id"] is None and only_batch["has_more"] is False
    bad = client.get(f"{sim.url}/files", params={"limit": "0"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    unknown_cursor = ok(client.get(f"{sim.url}/files", params={"after": "file-nope"}), "listFiles")
    assert unknown_cursor["data"] == [] and unknown_cursor["has_more"] is False
    bad_order = client.get(f"{sim.url}/files", params={"order": "sideways"})
    assert bad_order.status_code == 400 and bad_order.json()["error"]["param"] == "order"


def test_a_file_upload_without_a_file_part_is_refused(sim: Simulator, client: httpx.Client) -> None:
    refused = client.post(f"{sim.url}/files", files={"purpose": (None, "assistants")})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "file"
    assert ok(client.get(f"{sim.url}/files"), "listFiles")["data"] == []


def test_a_batch_file_that_is_not_jsonl_is_refused_at_upload(sim: Simulator, client: httpx.Client) -> None:
    refused = client.post(f"{sim.url}/files", files={"file": ("in.jsonl", b'{"custom_id": "a"}\nnot json\n')},
                          data={"purpose": "batch"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "file" and "Line 2" in refused.json()["error"]["message"]


# ---------------------------------------------------------------- batches


def batch_input(client: httpx.Client, sim: Simulator) -> str:
    lines = [
        CHAT_LINE | {"custom_id": "ticket-1", "body": {"model": "gpt-4o-mini",
                                                       "messages": [{"role": "user", "content": "Reset my password"}]}},
        CHAT_LINE | {"custom_id": "ticket-2", "body": {"messages": [{"role": "user", "content": "No model here"}]}},
        CHAT_LINE | {"custom_id": "ticket-3", "body": {"model": "gpt-4o-mini",
                                                       "messages": [{"role": "user", "content": "VPN is down"}]}},
    ]
    return str(upload(client, sim, "requests.jsonl", jsonl(lines), purpose="batch")["id"])


def create_batch(client: httpx.Client, sim: Simulator, input_file_id: str) -> Any:
    return ok(client.post(f"{sim.url}/batches", json={"input_file_id": input_file_id, "endpoint": "/v1/chat/completions",
                                                      "completion_window": "24h", "metadata": {"job": "nightly"}}),
              "createBatch")


def test_batch_goes_in_progress_then_completes_with_per_line_answers(sim: Simulator, client: httpx.Client) -> None:
    input_file_id = batch_input(client, sim)
    batch = create_batch(client, sim, input_file_id)
    assert batch["status"] == "validating" and batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert batch["id"].startswith("batch_") and batch["metadata"] == {"job": "nightly"}
    polled = ok(client.get(f"{sim.url}/batches/{batch['id']}"), "retrieveBatch")
    assert polled["status"] == "in_progress" and polled["in_progress_at"] is not None
    assert 0 <= polled["request_counts"]["completed"] < 3 and polled["output_file_id"] is None
    done = ok(client.get(f"{sim.url}/batches/{batch['id']}"), "retrieveBatch")
    assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert done["completed_at"] is not None
    output = client.get(f"{sim.url}/files/{done['output_file_id']}/content")
    lines = [json.loads(line) for line in output.text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["ticket-1", "ticket-3"]
    live = client.post(f"{sim.url}/chat/completions",
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Reset my password"}]})
    first = lines[0]["response"]
    assert first["status_code"] == 200 and lines[0]["error"] is None
    assert first["body"]["choices"][0]["message"]["content"] == live.json()["choices"][0]["message"]["content"]
    assert first["body"]["object"] == "chat.completion"
    errors = client.get(f"{sim.url}/files/{done['error_file_id']}/content").text.splitlines()
    failed = json.loads(errors[0])
    assert failed["custom_id"] == "ticket-2" and failed["response"]["status_code"] == 400
    assert failed["response"]["body"]["error"]["param"] == "model"
    output_meta = ok(client.get(f"{sim.url}/files/{done['output_file_id']}"), "retrieveFile")
    assert output_meta["purpose"] == "batch_output" and output_meta["filename"].endswith("_output.jsonl")
    assert ok(client.get(f"{sim.url}/batches/{batch['id']}"), "retrieveBatch") == done  # finished stays finished
    listed = ok(client.get(f"{sim.url}/batches"), "listBatches")
    assert [b["id"] for b in listed["data"]] == [batch["id"]]


def test_batch_input_must_exist_and_have_purpose_batch(sim: Simulator, client: httpx.Client) -> None:
    missing = client.post(f"{sim.url}/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/chat/completions",
                                                      "completion_window": "24h"})
    not_found(missing, "No such File object: file-nope", "input_file_id")
    other = upload(client, sim, "notes.txt", b"hello")
    wrong = client.post(f"{sim.url}/batches", json={"input_file_id": other["id"], "endpoint": "/v1/chat/completions",
                                                    "completion_window": "24h"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "input_file_id"
    assert ok(client.get(f"{sim.url}/batches"), "listBatches")["data"] == []
    not_found(client.get(f"{sim.url}/batches/batch_nope"), "No batch found with id 'batch_nope'.")


def test_a_batch_whose_lines_do_not_fit_fails_with_line_numbers(sim: Simulator, client: httpx.Client) -> None:
    lines = [CHAT_LINE | {"custom_id": "a", "body": {}}, {"custom_id": "b", "method": "POST", "url": "/v1/embeddings",
                                                        "body": {}}, {"custom_id": "c"}]
    file_id = upload(client, sim, "bad.jsonl", jsonl(lines), purpose="batch")["id"]
    sim.configure_jobs(after_polls=0)
    batch = create_batch(client, sim, file_id)
    assert batch["status"] == "failed" and batch["failed_at"] is not None
    assert [(e["code"], e["line"]) for e in batch["errors"]["data"]] == [("mismatched_endpoint", 2),
                                                                         ("missing_required_parameter", 3)]


def test_batch_jobs_wait_for_the_control_route_and_can_be_cancelled(sim: Simulator, client: httpx.Client) -> None:
    settings = client.post(f"{sim.url}/_sim/jobs", json={"after_polls": None, "after_seconds": 3600})
    assert settings.json() == {"after_polls": None, "after_seconds": 3600, "running": []}
    input_file_id = batch_input(client, sim)
    waiting, cancelled = create_batch(client, sim, input_file_id), create_batch(client, sim, input_file_id)
    for _ in range(5):
        assert client.get(f"{sim.url}/batches/{waiting['id']}").json()["status"] == "in_progress"
    running = client.get(f"{sim.url}/_sim/jobs").json()["running"]
    assert {job["id"] for job in running} == {waiting["id"], cancelled["id"]}
    assert ok(client.post(f"{sim.url}/batches/{cancelled['id']}/cancel"), "cancelBatch")["status"] == "cancelling"
    done = client.post(f"{sim.url}/_sim/jobs/complete", json={"id": waiting["id"]})
    assert done.json() == {"completed": [waiting["id"]]}
    assert client.get(f"{sim.url}/batches/{waiting['id']}").json()["status"] == "completed"
    assert client.get(f"{sim.url}/batches/{cancelled['id']}").json()["status"] == "cancelling"
    assert client.post(f"{sim.url}/_sim/jobs/complete", json={}).json() == {"completed": [cancelled["id"]]}
    final = ok(client.get(f"{sim.url}/batches/{cancelled['id']}"), "retrieveBatch")
    assert final["status"] == "cancelled" and final["cancelled_at"] is not None and final["output_file_id"] is None
    again = client.post(f"{sim.url}/batches/{cancelled['id']}/cancel")
    assert again.status_code == 400 and "cancelled" in again.json()["error"]["message"]


def test_job_control_refuses_bad_settings_by_name(sim: Simulator, client: httpx.Client) -> None:
    for body, word in (({"after_polls": -1}, "after_polls"), ({"after_seconds": "soon"}, "after_seconds"),
                       ({"speed": 2}, "after_polls")):
        refused = client.post(f"{sim.url}/_sim/jobs", json=body)
        assert refused.status_code == 400 and word in refused.json()["error"]["message"]
    refused = client.post(f"{sim.url}/_sim/jobs/complete", json={"outcome": "exploded"})
    assert refused.status_code == 400 and "outcome" in refused.json()["error"]["message"]
    with pytest.raises(ValueError, match="after_polls"):
        sim.configure_jobs(after_polls=True)  # type: ignore[arg-type]
    assert client.get(f"{sim.url}/_sim/jobs").json()["after_polls"] == 2  # unchanged


def test_a_job_past_its_delay_completes_at_its_next_look(sim: Simulator, client: httpx.Client) -> None:
    sim.configure_jobs(after_polls=None, after_seconds=0)
    batch = create_batch(client, sim, batch_input(client, sim))
    assert batch["status"] == "completed"  # due at once: the create answer shows the result


# ---------------------------------------------------------------- vector stores

MANUAL = ("VPN setup\n\nInstall the client, then sign in with your company account. The VPN gateway is vpn.example.\n\n"
          "Printer jams\n\nOpen tray 2 and remove the stuck paper before restarting the printer.")
POLICY = "Password policy\n\nPasswords rotate every 90 days and need 14 characters."


def test_vector_store_indexes_files_and_search_is_deterministic(sim: Simulator, client: httpx.Client) -> None:
    manual, policy = upload(client, sim, "manual.txt", MANUAL.encode()), upload(client, sim, "policy.txt",
                                                                                 POLICY.encode())
    store = ok(client.post(f"{sim.url}/vector_stores", json={"name": "kb", "file_ids": [manual["id"]],
                                                             "metadata": {"team": "msp"}}), "createVectorStore")
    assert store["status"] == "in_progress" and store["file_counts"]["in_progress"] == 1
    search = {"query": "printer paper stuck"}
    early = ok(client.post(f"{sim.url}/vector_stores/{store['id']}/search", json=search), "searchVectorStore")
    assert early["data"] == []  # not indexed yet, as in the API
    added = ok(client.post(f"{sim.url}/vector_stores/{store['id']}/files",
                           json={"file_id": policy["id"], "attributes": {"kind": "policy"}}), "createVectorStoreFile")
    assert added["status"] == "in_progress" and added["vector_store_id"] == store["id"]
    for _ in range(2):
        polled = ok(client.get(f"{sim.url}/vector_stores/{store['id']}"), "getVectorStore")
    assert polled["status"] == "completed" and polled["file_counts"]["completed"] == 2
    assert polled["usage_bytes"] == len(MANUAL) + len(POLICY)
    found = ok(client.post(f"{sim.url}/vector_stores/{store['id']}/search", json=search), "searchVectorStore")
    assert found["search_query"] == ["printer paper stuck"]
    best = found["data"][0]
    assert best["file_id"] == manual["id"] and best["filename"] == "manual.txt" and best["score"] == 1.0
    assert "tray 2" in best["content"][0]["text"]
    assert client.post(f"{sim.url}/vector_stores/{store['id']}/search", json=search).json() == found
    filtered = client.post(f"{sim.url}/vector_stores/{store['id']}/search", json={
        "query": "passwords printer", "filters": {"type": "eq", "key": "kind", "value": "policy"}}).json()
    assert {hit["file_id"] for hit in filtered["data"]} == {policy["id"]}
    content = ok(client.get(f"{sim.url}/vector_stores/{store['id']}/files/{policy['id']}/content"),
                 "retrieveVectorStoreFileContent")
    assert content["data"][0]["text"] == "Password policy"
    files = ok(client.get(f"{sim.url}/vector_stores/{store['id']}/files", params={"limit": 1}), "listVectorStoreFiles")
    assert files["has_more"] is True and files["data"][0]["id"] == policy["id"]
    updated = ok(client.post(f"{sim.url}/vector_stores/{store['id']}/files/{policy['id']}",
                             json={"attributes": {"kind": "old"}}), "updateVectorStoreFileAttributes")
    assert updated["attributes"] == {"kind": "old"}
    removed = ok(client.delete(f"{sim.url}/vector_stores/{store['id']}/files/{policy['id']}"),
                 "deleteVectorStoreFile")
    assert removed == {"id": policy["id"], "object": "vector_store.file.deleted", "deleted": True}
    not_found(client.get(f"{sim.url}/vector_stores/{store['id']}/files/{policy['id']}"),
              f"No file found with id '{policy['id']}' in vector store '{store['id']}'.")
    renamed = ok(client.post(f"{sim.url}/vector_stores/{store['id']}", json={"name": "kb2"}), "modifyVectorStore")
    assert renamed["name"] == "kb2" and renamed["file_counts"]["total"] == 1
    assert [s["id"] for s in ok(client.get(f"{sim.url}/vector_stores"), "listVectorStores")["data"]] == [store["id"]]
    gone = ok(client.delete(f"{sim.url}/vector_stores/{store['id']}"), "deleteVectorStore")
    assert gone == {"id": store["id"], "object": "vector_store.deleted", "deleted": True}
    not_found(client.get(f"{sim.url}/vector_stores/{store['id']}"), f"No vector store found with id '{store['id']}'.")


def test_vector_store_file_batch_waits_until_indexed(sim: Simulator, client: httpx.Client) -> None:
    ids = [upload(client, sim, f"doc{n}.txt", f"document number {n}".encode())["id"] for n in range(3)]
    store = ok(client.post(f"{sim.url}/vector_stores", json={"name": "docs"}), "createVectorStore")
    batch = ok(client.post(f"{sim.url}/vector_stores/{store['id']}/file_batches", json={"file_ids": ids}),
               "createVectorStoreFileBatch")
    assert batch["status"] == "in_progress" and batch["file_counts"]["total"] == 3
    first = ok(client.get(f"{sim.url}/vector_stores/{store['id']}/file_batches/{batch['id']}"),
               "getVectorStoreFileBatch")
    assert first["status"] == "in_progress"
    second = client.get(f"{sim.url}/vector_stores/{store['id']}/file_batches/{batch['id']}").json()
    assert second["status"] == "completed" and second["file_counts"]["completed"] == 3
    listed = ok(client.get(f"{sim.url}/vector_stores/{store['id']}/file_batches/{batch['id']}/files",
                           params={"filter": "completed"}), "listFilesInVectorStoreBatch")
    assert sorted(f["id"] for f in listed["data"]) == sorted(ids)
    other = ok(client.post(f"{sim.url}/vector_stores/{store['id']}/file_batches", json={"file_ids": ids[:1]}),
               "createVectorStoreFileBatch")
    cancelled = ok(client.post(f"{sim.url}/vector_stores/{store['id']}/file_batches/{other['id']}/cancel"),
                   "cancelVectorStoreFileBatch")
    assert cancelled["status"] == "cancelled"
    missing = client.post(f"{sim.url}/vector_stores/{store['id']}/file_batches", json={"file_ids": ["file-nope"]})
    not_found(missing, "No such File object: file-nope", "file_ids")


def test_a_file_that_is_not_text_fails_to_index(sim: Simulator, client: httpx.Client) -> None:
    sim.configure_jobs(after_polls=0)
    binary = upload(client, sim, "image.bin", b"\xff\xfe\x00garbage")
    store = ok(client.post(f"{sim.url}/vector_stores", json={"file_ids": [binary["id"]]}), "createVectorStore")
    assert store["file_counts"]["failed"] == 1
    vs_file = ok(client.get(f"{sim.url}/vector_stores/{store['id']}/files/{binary['id']}"), "getVectorStoreFile")
    assert vs_file["status"] == "failed" and vs_file["last_error"]["code"] == "unsupported_file"


# ---------------------------------------------------------------- responses


def test_response_round_trip_with_input_items(sim: Simulator, client: httpx.Client) -> None:
    created = ok(client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "Summarise ticket 4411"}),
                 "createResponse")
    assert created["status"] == "completed" and created["id"].startswith("resp_")
    message = created["output"][-1]
    assert message["content"][0]["text"] == "Simulated reply to: Summarise ticket 4411"
    assert created["usage"]["total_tokens"] == created["usage"]["input_tokens"] + created["usage"]["output_tokens"]
    assert ok(client.get(f"{sim.url}/responses/{created['id']}"), "getResponse") == created
    items = ok(client.get(f"{sim.url}/responses/{created['id']}/input_items"), "listInputItems")
    assert items["data"][0]["role"] == "user"
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "Summarise ticket 4411"}]
    follow = ok(client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "And then?",
                                                          "previous_response_id": created["id"]}), "createResponse")
    assert follow["previous_response_id"] == created["id"]
    deleted = client.delete(f"{sim.url}/responses/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "response", "deleted": True}
    not_found(client.get(f"{sim.url}/responses/{created['id']}"), f"Response with id '{created['id']}' not found.")
    not_found(client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "x",
                                                        "previous_response_id": created["id"]}),
              f"Previous response with id '{created['id']}' not found.", "previous_response_id")
    unstored = client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "x", "store": False}).json()
    assert unstored["store"] is False
    not_found(client.get(f"{sim.url}/responses/{unstored['id']}"), f"Response with id '{unstored['id']}' not found.")


def test_background_response_is_queued_then_in_progress_then_completed(sim: Simulator, client: httpx.Client) -> None:
    created = ok(client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "Long job",
                                                           "background": True}), "createResponse")
    assert created["status"] == "queued" and created["background"] is True and created["output"] == []
    polled = ok(client.get(f"{sim.url}/responses/{created['id']}"), "getResponse")
    assert polled["status"] == "in_progress"
    done = ok(client.get(f"{sim.url}/responses/{created['id']}"), "getResponse")
    assert done["status"] == "completed" and done["output"][-1]["content"][0]["text"] == "Simulated reply to: Long job"
    other = client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "x", "background": True}).json()
    cancelled = ok(client.post(f"{sim.url}/responses/{other['id']}/cancel"), "cancelResponse")
    assert cancelled["status"] == "cancelled"
    refused = client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "x", "background": True,
                                                        "store": False})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "background"
    sync = client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "x"}).json()
    assert client.post(f"{sim.url}/responses/{sync['id']}/cancel").status_code == 400


def test_response_structured_output_tools_and_file_search(sim: Simulator, client: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"priority": {"type": "string", "enum": ["low", "high"]}},
              "required": ["priority"], "additionalProperties": False}
    structured = ok(client.post(f"{sim.url}/responses", json={
        "model": "gpt-4.1", "input": "Classify",
        "text": {"format": {"type": "json_schema", "name": "ticket", "schema": schema, "strict": True}}}),
        "createResponse")
    assert json.loads(structured["output"][-1]["content"][0]["text"]) == {"priority": "low"}
    tool = {"type": "function", "name": "open_ticket", "strict": True, "parameters": {
        "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}
    called = ok(client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "Open one", "tools": [tool]}),
                "createResponse")
    assert called["output"][0]["type"] == "function_call" and called["output"][0]["name"] == "open_ticket"
    assert json.loads(called["output"][0]["arguments"]) == {"title": "simulated"}
    sim.configure_jobs(after_polls=0)
    manual = upload(client, sim, "manual.txt", MANUAL.encode())
    store = client.post(f"{sim.url}/vector_stores", json={"file_ids": [manual["id"]]}).json()
    answered = ok(client.post(f"{sim.url}/responses", json={
        "model": "gpt-4.1", "input": "What about stuck paper in the printer?",
        "tools": [{"type": "file_search", "vector_store_ids": [store["id"]]}]}), "createResponse")
    assert answered["output"][0]["type"] == "file_search_call"
    part = answered["output"][-1]["content"][0]
    assert "tray 2" in part["text"] and part["annotations"][0]["file_id"] == manual["id"]


# ---------------------------------------------------------------- conversations


def test_conversation_round_trip_with_items_and_responses(sim: Simulator, client: httpx.Client) -> None:
    created = ok(client.post(f"{sim.url}/conversations", json={
        "metadata": {"ticket": "4411"}, "items": [{"type": "message", "role": "user", "content": "Hello"}]}),
        "createConversation")
    conversation_id = created["id"]
    assert created["object"] == "conversation" and created["metadata"] == {"ticket": "4411"}
    added = ok(client.post(f"{sim.url}/conversations/{conversation_id}/items", json={
        "items": [{"type": "message", "role": "assistant", "content": "Hi"},
                  {"type": "message", "role": "user", "content": "Printer?"}]}), "createConversationItems")
    assert len(added["data"]) == 2 and added["first_id"] == added["data"][0]["id"]
    response = ok(client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "Still jammed",
                                                            "conversation": conversation_id}), "createResponse")
    assert response["conversation"] == {"id": conversation_id}
    page = ok(client.get(f"{sim.url}/conversations/{conversation_id}/items", params={"limit": 2}),
              "listConversationItems")
    assert page["has_more"] is True and page["data"][0]["role"] == "assistant"  # newest first: the reply
    everything = client.get(f"{sim.url}/conversations/{conversation_id}/items",
                            params={"order": "asc", "limit": 100}).json()["data"]
    assert [item["content"][0]["text"] for item in everything][:4] == ["Hello", "Hi", "Printer?", "Still jammed"]
    first = everything[0]
    assert ok(client.get(f"{sim.url}/conversations/{conversation_id}/items/{first['id']}"),
              "getConversationItem") == first
    after_delete = ok(client.delete(f"{sim.url}/conversations/{conversation_id}/items/{first['id']}"),
                      "deleteConversationItem")
    assert after_delete["id"] == conversation_id
    not_found(client.get(f"{sim.url}/conversations/{conversation_id}/items/{first['id']}"),
              f"Item with id '{first['id']}' not found.")
    updated = ok(client.post(f"{sim.url}/conversations/{conversation_id}", json={"metadata": {"ticket": "9"}}),
                 "updateConversation")
    assert updated["metadata"] == {"ticket": "9"}
    assert ok(client.get(f"{sim.url}/conversations/{conversation_id}"), "getConversation") == updated
    deleted = ok(client.delete(f"{sim.url}/conversations/{conversation_id}"), "deleteConversation")
    assert deleted == {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
    not_found(client.get(f"{sim.url}/conversations/{conversation_id}"),
              f"Conversation with id '{conversation_id}' not found.")
    not_found(client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "x",
                                                        "conversation": conversation_id}),
              f"Conversation with id '{conversation_id}' not found.", "conversation")


# ---------------------------------------------------------------- reset and bounds


def test_reset_forgets_every_object_and_restores_job_settings(sim: Simulator, client: httpx.Client) -> None:
    file_id = upload(client, sim, "a.txt", b"a")["id"]
    conversation_id = client.post(f"{sim.url}/conversations", json={}).json()["id"]
    client.post(f"{sim.url}/_sim/jobs", json={"after_polls": 7})
    assert client.post(f"{sim.url}/_sim/reset").json() == {"ok": True}
    not_found(client.get(f"{sim.url}/files/{file_id}"), f"No such File object: {file_id}", "id")
    not_found(client.get(f"{sim.url}/conversations/{conversation_id}"),
              f"Conversation with id '{conversation_id}' not found.")
    assert client.get(f"{sim.url}/_sim/jobs").json() == {"after_polls": 2, "after_seconds": None, "running": []}
    assert upload(client, sim, "b.txt", b"b")["id"] != file_id  # ids are never reused


def test_kept_objects_are_bounded_oldest_dropped(sim: Simulator, client: httpx.Client,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actions.simulator.store.MAX_OBJECTS", 3)
    ids = [upload(client, sim, f"{n}.txt", b"x")["id"] for n in range(5)]
    listed = client.get(f"{sim.url}/files", params={"order": "asc"}).json()
    assert [f["id"] for f in listed["data"]] == ids[2:]
    not_found(client.get(f"{sim.url}/files/{ids[0]}/content"), f"No such File object: {ids[0]}", "id")


def test_kept_file_bytes_are_bounded(sim: Simulator, client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actions.simulator.store.MAX_FILE_BYTES", 25)
    ids = [upload(client, sim, f"{n}.txt", b"0123456789")["id"] for n in range(3)]
    assert client.get(f"{sim.url}/files/{ids[0]}").status_code == 404
    assert client.get(f"{sim.url}/files/{ids[2]}/content").content == b"0123456789"


def test_jobs_can_be_failed_or_expired_from_python(sim: Simulator, client: httpx.Client) -> None:
    sim.configure_jobs(after_polls=None)
    response = client.post(f"{sim.url}/responses", json={"model": "gpt-4.1", "input": "x", "background": True}).json()
    batch = create_batch(client, sim, batch_input(client, sim))
    assert sim.complete_jobs(response["id"], "failed") == [response["id"]]
    failed = ok(client.get(f"{sim.url}/responses/{response['id']}"), "getResponse")
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert sim.complete_jobs(outcome="expired") == [batch["id"]]
    expired = ok(client.get(f"{sim.url}/batches/{batch['id']}"), "retrieveBatch")
    assert expired["status"] == "expired" and expired["expired_at"] is not None
    assert sim.jobs()["running"] == []
    with pytest.raises(ValueError, match="outcome"):
        sim.complete_jobs(outcome="exploded")


def test_a_batch_file_that_is_not_utf8_is_refused_at_upload(sim: Simulator, client: httpx.Client) -> None:
    refused = client.post(f"{sim.url}/files", files={"file": ("in.jsonl", b"\xff\xfe{}\n")}, data={"purpose": "batch"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "file"
    assert "UTF-8" in refused.json()["error"]["message"]


def test_wrong_body_values_are_refused_before_any_state_changes(sim: Simulator, client: httpx.Client) -> None:
    refused = client.post(f"{sim.url}/batches", json={"input_file_id": "file-x", "endpoint": "/v1/nowhere",
                                                      "completion_window": "24h"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "endpoint"
    refused = client.post(f"{sim.url}/vector_stores/vs_x/search", json={"query": 5})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "query"
    assert sim.jobs()["running"] == [] and client.get(f"{sim.url}/batches").json()["data"] == []


def test_a_manifest_example_with_made_up_ids_answers_its_example_output(tmp_path: Path,
                                                                         client: httpx.Client) -> None:
    """Generated examples name ids like file_abc123: those requests answer the example; other unknown ids 404."""
    path = write_manifest(tmp_path, "retrieveFile")
    raw = json.loads(path.read_text(encoding="utf-8"))
    example_output = {"id": "file_abc123", "object": "file", "bytes": 1, "created_at": 1, "filename": "a.txt",
                      "purpose": "assistants", "status": "processed"}
    raw["examples"] = [{"title": "One", "input": {"file_id": "file_abc123"}, "output": example_output}]
    raw["input"]["required"] = ["file_id"]
    manifest = load_manifest(json.dumps(raw), str(path))
    with Simulator(manifests={manifest.name: manifest}) as sim:
        assert client.get(f"{sim.url}/files/file_abc123").json() == example_output
        not_found(client.get(f"{sim.url}/files/file_abc999"), "No such File object: file_abc999", "id")
