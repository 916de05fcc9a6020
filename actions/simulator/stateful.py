"""Behaviours that remember: files (with their bytes), batches, vector stores and their files, responses and
conversations. Registered in the one registry (``behaviours.BEHAVIOURS``) by operationId like every other answer.

What they keep lives in ``Context.store`` (``store.py``): bounded, cleared by ``/v1/_sim/reset``. Long jobs
(batches, background responses, vector-store file indexing) advance when looked at or when their delay passes
(``store.JobClock``); a batch's output file is made when it completes, by running each JSONL line through the
behaviour registered for its ``url`` (or the spec's synthesized answer), validated like a live request.

Unknown ids answer 404 in OpenAI's error shape, with the API's wording for each kind.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import re
import struct
import time
from typing import Any

from actions.simulator.behaviours import BEHAVIOURS, Call, Context, Download, Reply, behaviour, tokens
from actions.simulator.spec import operations, sample_for, validate_request
from actions.simulator.state import error_body
from actions.simulator.store import Job, Store, page

__all__ = ["chunks_of", "search_chunks"]

FILE = "file"
BATCH = "batch"
VECTOR_STORE = "vector_store"
FILE_BATCH = "vector_store.file_batch"
RESPONSE = "response"
CONVERSATION = "conversation"
BATCH_EXPIRY_SECONDS = 30 * 24 * 3600
MAX_ITEMS_PER_CONVERSATION = 2_000
CHUNK_WORDS = 120
DEFAULT_CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}
_WORD = re.compile(r"[a-z0-9]+")


# ---------------------------------------------------------------- helpers


def _now() -> int:
    return int(time.time())


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API shows it: internal ``_`` keys dropped, copied (a job may change it later)."""
    return copy.deepcopy({key: value for key, value in obj.items() if not key.startswith("_")})


def _not_found(message: str, param: str | None = None) -> Reply:
    return Reply(404, error_body(message, "invalid_request_error", param))


def _invalid(message: str, param: str | None = None) -> Reply:
    return Reply(400, error_body(message, "invalid_request_error", param))


def _listed(items: list[dict[str, Any]], query: dict[str, str], **options: Any) -> Any:
    """A page of public objects, or the API's 400 naming the bad query parameter."""
    result = page(items, query, **options)
    if isinstance(result, str):
        return _invalid(f"Invalid value for '{result}': {query.get(result)!r}.", result)
    result["data"] = [_public(item) for item in result["data"]]
    return result


def _progress(store: Store, job: Job | None) -> float:
    """How far a running job is, in [0, 1): from its looks, or its age against the delay."""
    clock = store.clock
    if job is None:
        return 0.0
    if clock.after_polls:
        return min(job.looks / clock.after_polls, 0.99)
    if clock.after_seconds:
        return min((time.monotonic() - job.created) / clock.after_seconds, 0.99)
    return 0.0


# ---------------------------------------------------------------- files


def add_file(store: Store, filename: str, content: bytes, purpose: str,
             expires_after: dict[str, Any] | None = None) -> dict[str, Any]:
    created = _now()
    expires_at = None
    if isinstance(expires_after, dict) and isinstance(expires_after.get("seconds"), int):
        expires_at = created + expires_after["seconds"]
    elif purpose == "batch":
        expires_at = created + BATCH_EXPIRY_SECONDS
    file_id = store.new_id("file-")
    store.keep_content(file_id, content)
    return store.put(FILE, {"id": file_id, "object": "file", "bytes": len(content), "created_at": created,
                            "expires_at": expires_at, "filename": filename, "purpose": purpose,
                            "status": "processed", "status_details": None})


def _file_or_404(store: Store, file_id: str, param: str = "id") -> dict[str, Any] | Reply:
    found = store.get(FILE, file_id)
    return found if found is not None else _not_found(f"No such File object: {file_id}", param)


@behaviour("createFile")
def create_file(context: Context, call: Call) -> Any:
    upload = call.uploads.get("file")
    if upload is None:
        return _invalid("Missing required parameter: 'file' (send it as a file part of the form).", "file")
    purpose = str(call.body.get("purpose"))
    if purpose == "batch":
        problem = _jsonl_problem(upload.content)
        if problem is not None:
            return _invalid(f"Invalid file format for Batch API. {problem}", "file")
    return _public(add_file(context.store, upload.filename, upload.content, purpose, call.body.get("expires_after")))


@behaviour("retrieveFile")
def retrieve_file(context: Context, call: Call) -> Any:
    found = _file_or_404(context.store, call.params["file_id"])
    return found if isinstance(found, Reply) else _public(found)


@behaviour("listFiles")
def list_files(context: Context, call: Call) -> Any:
    purpose = call.query.get("purpose")
    files = context.store.all(FILE, (lambda f: f["purpose"] == purpose) if purpose else None)
    return _listed(files, call.query, default_limit=10_000, max_limit=10_000)


@behaviour("deleteFile")
def delete_file(context: Context, call: Call) -> Any:
    file_id = call.params["file_id"]
    if context.store.remove(FILE, file_id) is None:
        return _not_found(f"No such File object: {file_id}", "id")
    return {"id": file_id, "object": "file", "deleted": True}


@behaviour("downloadFile")
def download_file(context: Context, call: Call) -> Any:
    file_id = call.params["file_id"]
    content = context.store.content(file_id)
    if content is None or context.store.get(FILE, file_id) is None:
        return _not_found(f"No such File object: {file_id}", "id")
    return Download(content)


# ---------------------------------------------------------------- batches


def _jsonl_problem(content: bytes) -> str | None:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return "The file is not UTF-8 text."
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            return f"Line {number} is not valid JSON."
        if not isinstance(value, dict):
            return f"Line {number} is not a JSON object."
    return None


def _batch_lines(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(requests, problems): the JSONL input's lines, and the validation errors the API would list in ``errors``."""
    requests: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                             "param": None, "line": number})
            continue
        missing = [key for key in ("custom_id", "method", "url", "body")
                   if not isinstance(entry, dict) or key not in entry]
        if missing:
            problems.append({"code": "missing_required_parameter", "message": f"Missing required parameter: "
                             f"'{missing[0]}'.", "param": missing[0], "line": number})
            continue
        if entry["url"] != endpoint:
            problems.append({"code": "mismatched_endpoint", "message": f"The URL provided for this request does not "
                             f"match the batch endpoint {endpoint}.", "param": "url", "line": number})
            continue
        if str(entry["custom_id"]) in seen:
            problems.append({"code": "duplicate_custom_id", "message": "The custom_id for this request is a duplicate "
                             "of another request. The custom_id parameter must be unique for each request in a batch.",
                             "param": "custom_id", "line": number})
            continue
        seen.add(str(entry["custom_id"]))
        requests.append(entry)
    return requests, problems


def _operation_for(method: str, url: str) -> str | None:
    path = url.removeprefix("/v1")
    return next((op.operation_id for op in operations().values()
                 if op.method == method.upper() and op.path == path and op.spec == "2026-08"), None)


def _run_line(context: Context, entry: dict[str, Any]) -> tuple[int, Any]:
    """(status, body) of one batch request, answered as the live endpoint would answer it."""
    operation_id = _operation_for(str(entry["method"]), str(entry["url"]))
    if operation_id is None:
        return 404, error_body(f"Invalid URL ({entry['method']} {entry['url']})", "invalid_request_error", None,
                               "unknown_url")
    body = entry["body"]
    invalid = validate_request(operation_id, body)
    if invalid is not None:
        message, param, code = invalid
        return 400, error_body(message, "invalid_request_error", param, code)
    answer_of = BEHAVIOURS.get(operation_id)
    if answer_of is None:
        return 200, operations()[operation_id].synthesized_answer()
    answer = answer_of(context, Call(body=body if isinstance(body, dict) else {}))
    if isinstance(answer, Reply):
        return answer.status, answer.body
    return 200, answer


def _finish_batch(context: Context, batch_id: str, outcome: str) -> None:
    store = context.store
    batch = store.get(BATCH, batch_id)
    if batch is None:
        return
    now = _now()
    batch["in_progress_at"] = batch["in_progress_at"] or now
    if outcome == "cancelling":
        batch.update(status="cancelling", cancelling_at=now)
        store.start_job(BATCH, batch_id, lambda result: _finish_batch(
            context, batch_id, "cancelled" if result == "completed" else result))
        return
    if outcome in ("cancelled", "expired"):
        batch.update({"status": outcome, f"{outcome}_at": now})
        return
    problems = batch.pop("_problems", [])
    if outcome == "failed" or problems:
        batch.update(status="failed", failed_at=now, in_progress_at=None,
                     errors={"object": "list", "data": problems or [
                         {"code": "simulated_failure", "message": "The batch was failed from the simulator's control "
                          "route.", "param": None, "line": None}]})
        return
    outputs: list[str] = []
    errors: list[str] = []
    for number, entry in enumerate(batch.pop("_requests", []), 1):
        status, body = _run_line(context, entry)
        line = json.dumps({"id": f"batch_req_sim{number:06d}", "custom_id": entry["custom_id"],
                           "response": {"status_code": status, "request_id": f"req_sim_{batch_id}_{number}",
                                        "body": body}, "error": None})
        (outputs if status == 200 else errors).append(line)
    if outputs:
        batch["output_file_id"] = add_file(store, f"{batch_id}_output.jsonl",
                                           ("\n".join(outputs) + "\n").encode(), "batch_output")["id"]
    if errors:
        batch["error_file_id"] = add_file(store, f"{batch_id}_error.jsonl",
                                          ("\n".join(errors) + "\n").encode(), "batch_output")["id"]
    batch.update(status="completed", finalizing_at=now, completed_at=now,
                 request_counts={"total": len(outputs) + len(errors), "completed": len(outputs),
                                 "failed": len(errors)})


def _show_batch(context: Context, batch: dict[str, Any]) -> dict[str, Any]:
    """A look at a batch: it advances, and a running one shows in_progress with a share of its requests done."""
    store = context.store
    if store.look(batch["id"]) and batch["status"] in ("validating", "in_progress"):
        if batch.get("_problems"):
            return _public(batch)  # still validating: it will fail
        total = batch["request_counts"]["total"]
        batch.update(status="in_progress", in_progress_at=batch["in_progress_at"] or _now())
        batch["request_counts"] = {"total": total, "failed": 0,
                                   "completed": int(total * _progress(store, store.running(batch["id"])))}
    return _public(batch)


@behaviour("createBatch")
def create_batch(context: Context, call: Call) -> Any:
    store, body = context.store, call.body
    input_file_id = str(body["input_file_id"])
    found = _file_or_404(store, input_file_id, "input_file_id")
    if isinstance(found, Reply):
        return found
    if found["purpose"] != "batch":
        return _invalid(f"Invalid 'input_file_id': file {input_file_id} has purpose '{found['purpose']}'; a batch "
                        "input file must have purpose 'batch'.", "input_file_id")
    requests, problems = _batch_lines(store.content(input_file_id) or b"", str(body["endpoint"]))
    if not requests and not problems:
        problems = [{"code": "empty_file", "message": "The input file is empty.", "param": None, "line": None}]
    created = _now()
    batch_id = store.new_id("batch_")
    store.put(BATCH, {
        "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
        "input_file_id": input_file_id, "completion_window": body["completion_window"], "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": created, "in_progress_at": None,
        "expires_at": created + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": len(requests), "completed": 0, "failed": 0},
        "metadata": body.get("metadata"), "_requests": requests, "_problems": problems,
    })
    answer = _public(store.get(BATCH, batch_id) or {})  # what the create returns: before the job can move
    store.start_job(BATCH, batch_id, lambda outcome: _finish_batch(context, batch_id, outcome))
    return answer if store.running(batch_id) else _public(store.get(BATCH, batch_id) or answer)


def _batch_or_404(context: Context, batch_id: str) -> dict[str, Any] | Reply:
    found = context.store.get(BATCH, batch_id)
    return found if found is not None else _not_found(f"No batch found with id '{batch_id}'.")


@behaviour("retrieveBatch")
def retrieve_batch(context: Context, call: Call) -> Any:
    found = _batch_or_404(context, call.params["batch_id"])
    return found if isinstance(found, Reply) else _show_batch(context, found)


@behaviour("listBatches")
def list_batches(context: Context, call: Call) -> Any:
    batches = context.store.all(BATCH)
    listed = _listed(batches, call.query, default_order="desc")
    if isinstance(listed, dict):
        listed["data"] = [_show_batch(context, context.store.get(BATCH, item["id"]) or item)
                          for item in listed["data"]]
    return listed


@behaviour("cancelBatch")
def cancel_batch(context: Context, call: Call) -> Any:
    found = _batch_or_404(context, call.params["batch_id"])
    if isinstance(found, Reply):
        return found
    if context.store.running(found["id"]) is None or found["status"] == "cancelling":
        return _invalid(f"Cannot cancel a batch with status '{found['status']}'.")
    context.store.complete(found["id"], "cancelling")
    return _public(found)


# ---------------------------------------------------------------- vector stores


def chunks_of(text: str) -> list[str]:
    """A file's text in search chunks: paragraphs, long ones cut every CHUNK_WORDS words."""
    found: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        for start in range(0, len(words), CHUNK_WORDS):
            found.append(" ".join(words[start:start + CHUNK_WORDS]))
    return found


def search_chunks(context: Context, vector_store_ids: list[str], queries: list[str],
                  filters: Any = None) -> list[dict[str, Any]]:
    """Deterministic search: a chunk's score is the share of the query's words it contains; best first, ties in
    upload order. Only indexed (completed) files are searched, as in the API."""
    wanted = {word for query in queries for word in _WORD.findall(query.lower())}
    hits: list[tuple[float, int, dict[str, Any]]] = []
    order = 0
    for vector_store_id in vector_store_ids:
        for vs_file in context.store.all(_files_kind(vector_store_id), lambda f: f["status"] == "completed"):
            if filters and not _matches(filters, vs_file.get("attributes") or {}):
                continue
            meta = context.store.get(FILE, vs_file["id"]) or {}
            text = (context.store.content(vs_file["id"]) or b"").decode("utf-8", "replace")
            for chunk in chunks_of(text):
                order += 1
                words = set(_WORD.findall(chunk.lower()))
                score = round(len(wanted & words) / len(wanted), 4) if wanted else 0.0
                if score > 0:
                    hits.append((score, order, {"file_id": vs_file["id"], "filename": meta.get("filename", ""),
                                                "score": score, "attributes": vs_file.get("attributes") or {},
                                                "content": [{"type": "text", "text": chunk}]}))
    hits.sort(key=lambda hit: (-hit[0], hit[1]))
    return [hit[2] for hit in hits]


_COMPARE = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
            "in": lambda a, b: a in b, "nin": lambda a, b: a not in b}


def _matches(condition: dict[str, Any], attributes: dict[str, Any]) -> bool:
    """The API's attribute filters: comparison (eq, ne, gt, gte, lt, lte, in, nin) and compound (and, or)."""
    kind = condition.get("type")
    if kind in ("and", "or"):
        results = [_matches(sub, attributes) for sub in condition.get("filters") or [] if isinstance(sub, dict)]
        return all(results) if kind == "and" else any(results)
    compare = _COMPARE.get(str(kind))
    key = condition.get("key")
    if compare is None or key not in attributes:
        return False
    try:
        return bool(compare(attributes[key], condition.get("value")))
    except TypeError:
        return False


def _files_kind(vector_store_id: str) -> str:
    return f"vector_store.file:{vector_store_id}"


def _job_key(vector_store_id: str, file_id: str) -> str:
    return f"{vector_store_id}/{file_id}"


def _file_counts(files: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
    for vs_file in files:
        counts[vs_file["status"]] = counts.get(vs_file["status"], 0) + 1
    return counts | {"total": len(files)}


def _look_at_files(context: Context, vector_store_id: str, file_ids: list[str] | None = None) -> None:
    for vs_file in context.store.all(_files_kind(vector_store_id)):
        if file_ids is None or vs_file["id"] in file_ids:
            context.store.look(_job_key(vector_store_id, vs_file["id"]))


def _show_vector_store(context: Context, vector_store: dict[str, Any], look: bool = True) -> dict[str, Any]:
    if look:
        _look_at_files(context, vector_store["id"])
    files = context.store.all(_files_kind(vector_store["id"]))
    counts = _file_counts(files)
    vector_store.update(file_counts=counts, status="in_progress" if counts["in_progress"] else "completed",
                        usage_bytes=sum(f["usage_bytes"] for f in files if f["status"] == "completed"))
    return _public(vector_store)


def _vector_store_or_404(context: Context, vector_store_id: str) -> dict[str, Any] | Reply:
    found = context.store.get(VECTOR_STORE, vector_store_id)
    return found if found is not None else _not_found(f"No vector store found with id '{vector_store_id}'.")


def _index_file(context: Context, vector_store_id: str, file_id: str, attributes: Any,
                chunking: Any) -> dict[str, Any] | Reply:
    """Add a file to a vector store; indexing is a job (in_progress, then completed, or failed if not text)."""
    store = context.store
    found = _file_or_404(store, file_id, "file_id")
    if isinstance(found, Reply):
        return found
    vs_file = store.put(_files_kind(vector_store_id), {
        "id": file_id, "object": "vector_store.file", "usage_bytes": 0, "created_at": _now(),
        "vector_store_id": vector_store_id, "status": "in_progress", "last_error": None,
        "chunking_strategy": chunking if isinstance(chunking, dict) else DEFAULT_CHUNKING,
        "attributes": attributes if isinstance(attributes, dict) else {}})

    def finish(outcome: str) -> None:
        content = store.content(file_id) or b""
        if outcome == "completed":
            try:
                content.decode("utf-8")
                vs_file.update(status="completed", usage_bytes=len(content))
            except UnicodeDecodeError:
                vs_file.update(status="failed", last_error={"code": "unsupported_file",
                                                            "message": "The file is not text the simulator can index."})
        elif outcome == "cancelled":
            vs_file["status"] = "cancelled"
        else:
            vs_file.update(status="failed", last_error={"code": "server_error",
                                                        "message": "Indexing was failed from the simulator's control "
                                                                   "route."})

    store.start_job("vector_store.file", _job_key(vector_store_id, file_id), finish)
    return vs_file


@behaviour("createVectorStore")
def create_vector_store(context: Context, call: Call) -> Any:
    body, created = call.body, _now()
    vector_store = context.store.put(VECTOR_STORE, {
        "id": context.store.new_id("vs_"), "object": "vector_store", "created_at": created,
        "name": body.get("name") or "", "usage_bytes": 0, "file_counts": _file_counts([]), "status": "completed",
        "expires_after": body.get("expires_after"), "expires_at": None, "last_active_at": created,
        "metadata": body.get("metadata") or {}})
    for file_id in body.get("file_ids") or []:
        added = _index_file(context, vector_store["id"], str(file_id), None, body.get("chunking_strategy"))
        if isinstance(added, Reply):
            context.store.remove(VECTOR_STORE, vector_store["id"])
            return added
    return _show_vector_store(context, vector_store, look=False)


@behaviour("getVectorStore")
def get_vector_store(context: Context, call: Call) -> Any:
    found = _vector_store_or_404(context, call.params["vector_store_id"])
    return found if isinstance(found, Reply) else _show_vector_store(context, found)


@behaviour("modifyVectorStore")
def modify_vector_store(context: Context, call: Call) -> Any:
    found = _vector_store_or_404(context, call.params["vector_store_id"])
    if isinstance(found, Reply):
        return found
    for key in ("name", "expires_after", "metadata"):
        if key in call.body:
            found[key] = call.body[key] if call.body[key] is not None or key != "metadata" else {}
    return _show_vector_store(context, found, look=False)


@behaviour("listVectorStores")
def list_vector_stores(context: Context, call: Call) -> Any:
    stores = [context.store.get(VECTOR_STORE, vs["id"]) or vs for vs in context.store.all(VECTOR_STORE)]
    for vector_store in stores:
        _show_vector_store(context, vector_store, look=False)
    return _listed(stores, call.query)


@behaviour("deleteVectorStore")
def delete_vector_store(context: Context, call: Call) -> Any:
    vector_store_id = call.params["vector_store_id"]
    if context.store.remove(VECTOR_STORE, vector_store_id) is None:
        return _not_found(f"No vector store found with id '{vector_store_id}'.")
    context.store.drop_kind(_files_kind(vector_store_id))
    return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}


@behaviour("createVectorStoreFile")
def create_vector_store_file(context: Context, call: Call) -> Any:
    found = _vector_store_or_404(context, call.params["vector_store_id"])
    if isinstance(found, Reply):
        return found
    added = _index_file(context, found["id"], str(call.body["file_id"]), call.body.get("attributes"),
                        call.body.get("chunking_strategy"))
    return added if isinstance(added, Reply) else _public(added)


def _vs_file_or_404(context: Context, call: Call) -> dict[str, Any] | Reply:
    vector_store_id, file_id = call.params["vector_store_id"], call.params["file_id"]
    found = _vector_store_or_404(context, vector_store_id)
    if isinstance(found, Reply):
        return found
    vs_file = context.store.get(_files_kind(vector_store_id), file_id)
    if vs_file is None:
        return _not_found(f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
    return vs_file


@behaviour("getVectorStoreFile")
def get_vector_store_file(context: Context, call: Call) -> Any:
    found = _vs_file_or_404(context, call)
    if isinstance(found, Reply):
        return found
    context.store.look(_job_key(found["vector_store_id"], found["id"]))
    return _public(found)


@behaviour("updateVectorStoreFileAttributes")
def update_vector_store_file_attributes(context: Context, call: Call) -> Any:
    found = _vs_file_or_404(context, call)
    if isinstance(found, Reply):
        return found
    found["attributes"] = call.body.get("attributes") or {}
    return _public(found)


@behaviour("deleteVectorStoreFile")
def delete_vector_store_file(context: Context, call: Call) -> Any:
    found = _vs_file_or_404(context, call)
    if isinstance(found, Reply):
        return found
    context.store.remove(_files_kind(found["vector_store_id"]), found["id"])
    context.store.jobs.pop(_job_key(found["vector_store_id"], found["id"]), None)
    return {"id": found["id"], "object": "vector_store.file.deleted", "deleted": True}


@behaviour("listVectorStoreFiles")
def list_vector_store_files(context: Context, call: Call) -> Any:
    found = _vector_store_or_404(context, call.params["vector_store_id"])
    if isinstance(found, Reply):
        return found
    _look_at_files(context, found["id"])
    wanted = call.query.get("filter")
    return _listed(context.store.all(_files_kind(found["id"]), (lambda f: f["status"] == wanted) if wanted else None),
                   call.query)


@behaviour("retrieveVectorStoreFileContent")
def retrieve_vector_store_file_content(context: Context, call: Call) -> Any:
    found = _vs_file_or_404(context, call)
    if isinstance(found, Reply):
        return found
    text = (context.store.content(found["id"]) or b"").decode("utf-8", "replace")
    return {"object": "vector_store.file_content.page", "data": [{"type": "text", "text": chunk}
                                                                 for chunk in chunks_of(text)],
            "has_more": False, "next_page": None}


@behaviour("searchVectorStore")
def search_vector_store(context: Context, call: Call) -> Any:
    found = _vector_store_or_404(context, call.params["vector_store_id"])
    if isinstance(found, Reply):
        return found
    query = call.body["query"]
    queries = [query] if isinstance(query, str) else [str(q) for q in query]
    limit = int(call.body.get("max_num_results") or 10)
    threshold = float((call.body.get("ranking_options") or {}).get("score_threshold") or 0)
    hits = [hit for hit in search_chunks(context, [found["id"]], queries, call.body.get("filters"))
            if hit["score"] >= threshold]
    return {"object": "vector_store.search_results.page", "search_query": queries, "data": hits[:limit],
            "has_more": False, "next_page": None}


def _show_file_batch(context: Context, file_batch: dict[str, Any], look: bool = True) -> dict[str, Any]:
    vector_store_id, file_ids = file_batch["vector_store_id"], file_batch["_file_ids"]
    if look:
        _look_at_files(context, vector_store_id, file_ids)
    files = [f for f in context.store.all(_files_kind(vector_store_id)) if f["id"] in file_ids]
    counts = _file_counts(files)
    status = "in_progress" if counts["in_progress"] else "cancelled" if counts["cancelled"] else "completed"
    file_batch.update(file_counts=counts, status=status)
    return _public(file_batch)


@behaviour("createVectorStoreFileBatch")
def create_vector_store_file_batch(context: Context, call: Call) -> Any:
    found = _vector_store_or_404(context, call.params["vector_store_id"])
    if isinstance(found, Reply):
        return found
    entries = [{"file_id": str(file_id), "attributes": call.body.get("attributes"),
                "chunking_strategy": call.body.get("chunking_strategy")} for file_id in call.body.get("file_ids") or []]
    entries += [entry for entry in call.body.get("files") or [] if isinstance(entry, dict)]
    if not entries:
        return _invalid("Missing required parameter: 'file_ids' (or 'files').", "file_ids")
    missing = next((entry["file_id"] for entry in entries if context.store.get(FILE, str(entry["file_id"])) is None),
                   None)
    if missing is not None:
        return _not_found(f"No such File object: {missing}", "file_ids")
    for entry in entries:
        _index_file(context, found["id"], str(entry["file_id"]), entry.get("attributes"),
                    entry.get("chunking_strategy"))
    file_batch = context.store.put(FILE_BATCH, {
        "id": context.store.new_id("vsfb_"), "object": "vector_store.files_batch", "created_at": _now(),
        "vector_store_id": found["id"], "status": "in_progress", "file_counts": _file_counts([]),
        "_file_ids": [str(entry["file_id"]) for entry in entries]})
    return _show_file_batch(context, file_batch, look=False)


def _file_batch_or_404(context: Context, call: Call) -> dict[str, Any] | Reply:
    batch_id = call.params["batch_id"]
    found = context.store.get(FILE_BATCH, batch_id)
    if found is None or found["vector_store_id"] != call.params["vector_store_id"]:
        return _not_found(f"No file batch found with id '{batch_id}' in vector store "
                          f"'{call.params['vector_store_id']}'.")
    return found


@behaviour("getVectorStoreFileBatch")
def get_vector_store_file_batch(context: Context, call: Call) -> Any:
    found = _file_batch_or_404(context, call)
    return found if isinstance(found, Reply) else _show_file_batch(context, found)


@behaviour("cancelVectorStoreFileBatch")
def cancel_vector_store_file_batch(context: Context, call: Call) -> Any:
    found = _file_batch_or_404(context, call)
    if isinstance(found, Reply):
        return found
    for file_id in found["_file_ids"]:
        context.store.complete(_job_key(found["vector_store_id"], file_id), "cancelled")
    return _show_file_batch(context, found, look=False)


@behaviour("listFilesInVectorStoreBatch")
def list_files_in_vector_store_batch(context: Context, call: Call) -> Any:
    found = _file_batch_or_404(context, call)
    if isinstance(found, Reply):
        return found
    _look_at_files(context, found["vector_store_id"], found["_file_ids"])
    wanted = call.query.get("filter")
    files = [f for f in context.store.all(_files_kind(found["vector_store_id"]))
             if f["id"] in found["_file_ids"] and (not wanted or f["status"] == wanted)]
    return _listed(files, call.query)


# ---------------------------------------------------------------- conversation items


def _item(store: Store, raw: Any, role: str = "user") -> dict[str, Any]:
    """An input item as the API stores it: an id, and a message's text content as parts."""
    if isinstance(raw, str):
        raw = {"type": "message", "role": role, "content": raw}
    item = dict(raw) if isinstance(raw, dict) else {"type": "message", "role": role, "content": str(raw)}
    if item.get("type") is None and "role" in item:
        item["type"] = "message"
    if item.get("type") == "message":
        part_type = "output_text" if item.get("role") == "assistant" else "input_text"
        if isinstance(item.get("content"), str):
            item["content"] = [{"type": part_type, "text": item["content"]}]
        if part_type == "output_text":  # the API's output text parts always carry these
            item["content"] = [part | {"annotations": part.get("annotations", []), "logprobs": part.get("logprobs", [])}
                               if isinstance(part, dict) else part for part in item.get("content") or []]
        item.setdefault("status", "completed")
        item.setdefault("id", store.new_id("msg_"))
    else:
        item.setdefault("id", store.new_id("item_"))
    return item


def _text_in(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return " ".join(str(part.get("text", "")) for part in item.get("content") or [] if isinstance(part, dict))
    return ""


def _append_items(conversation: dict[str, Any], items: list[dict[str, Any]]) -> None:
    kept = conversation.setdefault("_items", [])
    kept.extend(items)
    del kept[:max(0, len(kept) - MAX_ITEMS_PER_CONVERSATION)]


def _conversation_or_404(context: Context, conversation_id: str, param: str | None = None) -> dict[str, Any] | Reply:
    found = context.store.get(CONVERSATION, conversation_id)
    return found if found is not None else _not_found(f"Conversation with id '{conversation_id}' not found.", param)


@behaviour("createConversation")
def create_conversation(context: Context, call: Call) -> Any:
    conversation = context.store.put(CONVERSATION, {
        "id": context.store.new_id("conv_"), "object": "conversation", "created_at": _now(),
        "metadata": call.body.get("metadata") or {}})
    _append_items(conversation, [_item(context.store, raw) for raw in call.body.get("items") or []])
    return _public(conversation)


@behaviour("getConversation")
def get_conversation(context: Context, call: Call) -> Any:
    found = _conversation_or_404(context, call.params["conversation_id"])
    return found if isinstance(found, Reply) else _public(found)


@behaviour("updateConversation")
def update_conversation(context: Context, call: Call) -> Any:
    found = _conversation_or_404(context, call.params["conversation_id"])
    if isinstance(found, Reply):
        return found
    found["metadata"] = call.body.get("metadata") or {}
    return _public(found)


@behaviour("deleteConversation")
def delete_conversation(context: Context, call: Call) -> Any:
    conversation_id = call.params["conversation_id"]
    if context.store.remove(CONVERSATION, conversation_id) is None:
        return _not_found(f"Conversation with id '{conversation_id}' not found.")
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@behaviour("createConversationItems")
def create_conversation_items(context: Context, call: Call) -> Any:
    found = _conversation_or_404(context, call.params["conversation_id"])
    if isinstance(found, Reply):
        return found
    items = [_item(context.store, raw) for raw in call.body.get("items") or []]
    _append_items(found, items)
    return {"object": "list", "data": copy.deepcopy(items), "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}


@behaviour("listConversationItems")
def list_conversation_items(context: Context, call: Call) -> Any:
    found = _conversation_or_404(context, call.params["conversation_id"])
    return found if isinstance(found, Reply) else _listed(found.get("_items", []), call.query)


def _conversation_item(context: Context, call: Call) -> tuple[dict[str, Any], dict[str, Any]] | Reply:
    found = _conversation_or_404(context, call.params["conversation_id"])
    if isinstance(found, Reply):
        return found
    item = next((i for i in found.get("_items", []) if i["id"] == call.params["item_id"]), None)
    if item is None:
        return _not_found(f"Item with id '{call.params['item_id']}' not found.")
    return found, item


@behaviour("getConversationItem")
def get_conversation_item(context: Context, call: Call) -> Any:
    found = _conversation_item(context, call)
    return found if isinstance(found, Reply) else copy.deepcopy(found[1])


@behaviour("deleteConversationItem")
def delete_conversation_item(context: Context, call: Call) -> Any:
    found = _conversation_item(context, call)
    if isinstance(found, Reply):
        return found
    conversation, item = found
    conversation["_items"] = [i for i in conversation["_items"] if i is not item]
    return _public(conversation)


# ---------------------------------------------------------------- responses


def _response_output(context: Context, body: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the model "says": a function call when function tools are offered (until a tool result came back), a
    file-search answer citing the best chunk when file_search is offered, text fitting a JSON-schema format, else
    ``Simulated reply to: <last user text>``."""
    store = context.store
    question = _text_in(items)
    reply = f"Simulated reply to: {question[:60]}"
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    functions = [tool for tool in tools if tool.get("type") == "function"]
    answered = bool(items) and items[-1].get("type") == "function_call_output"
    choice = body.get("tool_choice", "auto")
    if functions and choice not in ("none",) and not answered:
        function = functions[0]
        if isinstance(choice, dict) and choice.get("name"):
            function = next((f for f in functions if f.get("name") == choice["name"]), function)
        arguments = sample_for(function.get("parameters") or {"type": "object", "properties": {}})
        return [{"type": "function_call", "id": store.new_id("fc_"), "call_id": store.new_id("call_"),
                 "name": function.get("name"), "arguments": json.dumps(arguments), "status": "completed"}]
    output: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    searching = next((tool for tool in tools if tool.get("type") == "file_search"), None)
    if searching is not None:
        hits = search_chunks(context, [str(v) for v in searching.get("vector_store_ids") or []], [question],
                             searching.get("filters"))
        output.append({"type": "file_search_call", "id": store.new_id("fs_"), "status": "completed",
                       "queries": [question], "results": None})
        if hits:
            best = hits[0]
            reply += f" From {best['filename']}: {best['content'][0]['text'][:200]}"
            annotations.append({"type": "file_citation", "file_id": best["file_id"], "filename": best["filename"],
                                "index": len(reply)})
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_schema":
        reply = json.dumps(sample_for(text_format.get("schema") or {"type": "object"}))
    elif text_format.get("type") == "json_object":
        reply = json.dumps({"result": reply})
    output.append({"type": "message", "id": store.new_id("msg_"), "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": reply, "annotations": annotations, "logprobs": []}]})
    return output


def _usage_of(items: list[dict[str, Any]], output: list[dict[str, Any]], instructions: Any) -> dict[str, Any]:
    used_in = tokens(f"{instructions or ''} {json.dumps(items)}")
    used_out = tokens(json.dumps(output))
    return {"input_tokens": used_in, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": used_out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": used_in + used_out}


def _finish_response(context: Context, response: dict[str, Any], outcome: str) -> None:
    if outcome == "completed":
        items = response.get("_input_items", [])
        output = _response_output(context, response["_request"], items)
        texts = [part.get("text", "") for item in output if item.get("type") == "message"
                 for part in item.get("content") or [] if part.get("type") == "output_text"]
        response.update(status="completed", output=output, completed_at=_now(), output_text="".join(texts),
                         usage=_usage_of(items, output, response.get("instructions")))
        conversation = context.store.get(CONVERSATION, (response.get("conversation") or {}).get("id", ""))
        if conversation is not None:
            _append_items(conversation, [*copy.deepcopy(items), *copy.deepcopy(output)])
    elif outcome == "failed":
        response.update(status="failed", error={"code": "server_error", "message": "The response was failed from "
                                                                                   "the simulator's control route."})
    else:
        response["status"] = "cancelled"


@behaviour("createResponse")
def create_response(context: Context, call: Call) -> Any:
    store, body = context.store, call.body
    keep, background = body.get("store", True) is not False, body.get("background") is True
    if background and not keep:
        return _invalid("Background mode requires 'store' to be true.", "background")
    previous_id = body.get("previous_response_id")
    conversation_ref = body.get("conversation")
    conversation_id = conversation_ref.get("id") if isinstance(conversation_ref, dict) else conversation_ref
    if previous_id and conversation_id:
        return _invalid("Mutually exclusive parameters: 'previous_response_id' and 'conversation'. Provide at most "
                        "one of them.", "conversation")
    if previous_id and store.get(RESPONSE, str(previous_id)) is None:
        return _not_found(f"Previous response with id '{previous_id}' not found.", "previous_response_id")
    if conversation_id:
        found = _conversation_or_404(context, str(conversation_id), "conversation")
        if isinstance(found, Reply):
            return found
    raw_input = body.get("input")
    items = [_item(store, raw) for raw in ([raw_input] if isinstance(raw_input, str) else raw_input or [])]
    text_format = (body.get("text") or {}).get("format") or {"type": "text"}
    response: dict[str, Any] = {
        "id": store.new_id("resp_"), "object": "response", "created_at": _now(), "status": "queued",
        "background": background, "completed_at": None, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"), "output": [], "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": previous_id, "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"),
                                                           "summary": None},
        "store": keep, "temperature": body.get("temperature", 1.0), "text": {"format": text_format},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation") or "disabled", "usage": None,
        "metadata": body.get("metadata") or {},
        "conversation": {"id": str(conversation_id)} if conversation_id else None,
        "max_tool_calls": body.get("max_tool_calls"), "moderation": None, "output_text": None,
        "prompt": body.get("prompt"), "prompt_cache_key": body.get("prompt_cache_key"),
        "prompt_cache_options": body.get("prompt_cache_options"),
        "prompt_cache_retention": body.get("prompt_cache_retention"),
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default", "top_logprobs": body.get("top_logprobs", 0), "user": body.get("user"),
        "_request": body, "_input_items": items,
    }
    if not background:
        _finish_response(context, response, "completed")
        if keep:
            store.put(RESPONSE, response)
        return _public(response)
    store.put(RESPONSE, response)
    answer = _public(response)
    store.start_job(RESPONSE, response["id"], lambda outcome: _finish_response(context, response, outcome))
    return answer if store.running(response["id"]) else _public(response)


def _response_or_404(context: Context, response_id: str) -> dict[str, Any] | Reply:
    found = context.store.get(RESPONSE, response_id)
    return found if found is not None else _not_found(f"Response with id '{response_id}' not found.")


@behaviour("getResponse")
def get_response(context: Context, call: Call) -> Any:
    found = _response_or_404(context, call.params["response_id"])
    if isinstance(found, Reply):
        return found
    if context.store.look(found["id"]):
        found["status"] = "in_progress"
    return _public(found)


@behaviour("cancelResponse")
def cancel_response(context: Context, call: Call) -> Any:
    found = _response_or_404(context, call.params["response_id"])
    if isinstance(found, Reply):
        return found
    if not found["background"]:
        return _invalid("Only responses created with background set to true can be cancelled.")
    context.store.complete(found["id"], "cancelled")
    return _public(found)


@behaviour("deleteResponse")
def delete_response(context: Context, call: Call) -> Any:
    response_id = call.params["response_id"]
    if context.store.remove(RESPONSE, response_id) is None:
        return _not_found(f"Response with id '{response_id}' not found.")
    return {"id": response_id, "object": "response", "deleted": True}


@behaviour("listInputItems")
def list_input_items(context: Context, call: Call) -> Any:
    found = _response_or_404(context, call.params["response_id"])
    return found if isinstance(found, Reply) else _listed(found.get("_input_items", []), call.query)


# ---------------------------------------------------------------- embeddings

#: Output size of each embedding model when ``dimensions`` is not given.
EMBEDDING_SIZES = {"text-embedding-3-large": 3072}
DEFAULT_EMBEDDING_SIZE = 1536


def embedding_of(text: str, size: int) -> list[float]:
    """A unit vector from the text's words (each hashed to a position and sign): texts that share words are
    close by cosine, the same text always gives the same vector."""
    vector = [0.0] * size
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        position = int.from_bytes(digest[:4], "big") % size
        vector[position] += 1.0 if digest[4] % 2 == 0 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0
    return [round(v / norm, 6) for v in vector]


@behaviour("createEmbedding")
def create_embedding(context: Context, call: Call) -> Any:  # noqa: ARG001 - the registry's signature
    body = call.body
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)) else raw
    size = int(body.get("dimensions") or EMBEDDING_SIZES.get(str(body.get("model")), DEFAULT_EMBEDDING_SIZE))
    data = []
    for index, text in enumerate(texts or []):
        vector = embedding_of(text if isinstance(text, str) else " ".join(str(t) for t in text), size)
        value: Any = vector
        if body.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": value})
    used = sum(tokens(t if isinstance(t, str) else " ".join(map(str, t))) for t in texts or [])
    return {"object": "list", "data": data, "model": body.get("model"),
            "usage": {"prompt_tokens": used, "total_tokens": used}}
