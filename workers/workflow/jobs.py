"""The long jobs a step can wait for (``wait:``) and the actions ``mode: batch`` accepts: data, no engine.

Both the load-time checks (``workers.workflow.checks``) and the engine (``workers.engine.waits``,
``workers.engine.batchmode``) read these tables, so they live below both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import actions
from actions.create_response import finish as finish_response

__all__ = ["BATCH_ENDPOINTS", "DOWNLOAD_ACTION", "Job", "JobKind", "batch_problem", "job_for", "waitable_actions"]

#: What ``/v1/batches`` accepts (the spec's ``endpoint`` enum), as the actions' paths.
BATCH_ENDPOINTS = frozenset({"/responses", "/chat/completions", "/embeddings", "/completions", "/moderations"})
#: The action that reads a batch's output and error files.
DOWNLOAD_ACTION = "download_file"


def _counts(name: str, done_keys: tuple[str, ...]) -> Callable[[dict[str, Any]], str | None]:
    """Progress from a counts object: ``37/100`` (and ``, 2 failed``)."""

    def progress(job: dict[str, Any]) -> str | None:
        counts = job.get(name)
        if not isinstance(counts, dict) or not isinstance(counts.get("total"), int):
            return None
        done = sum(int(counts.get(key) or 0) for key in done_keys)
        failed = int(counts.get("failed") or 0)
        return f"{done}/{counts['total']}" + (f", {failed} failed" if failed else "")

    return progress


def _percent(job: dict[str, Any]) -> str | None:
    value = job.get("progress")
    return f"{value}%" if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class JobKind:
    """One kind of long job: how to retrieve it, which statuses end it, how to cancel it."""

    name: str
    retrieve: str
    #: retrieve action's input field -> the job object's field holding it
    ids: dict[str, str]
    done: frozenset[str]
    failed: frozenset[str]
    running: frozenset[str]
    cancel: str | None = None
    progress: Callable[[dict[str, Any]], str | None] | None = None
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def statuses(self) -> frozenset[str]:
        return self.done | self.failed | self.running


@dataclass(frozen=True)
class Job:
    """An action that starts (or retrieves) a job of ``kind``."""

    kind: JobKind
    action: str


_KINDS = (
    (JobKind("batch", "retrieve_batch", {"batch_id": "id"}, frozenset({"completed"}),
             frozenset({"failed", "expired", "cancelled"}),
             frozenset({"validating", "in_progress", "finalizing", "cancelling"}), cancel="cancel_batch",
             progress=_counts("request_counts", ("completed", "failed"))),
     ("create_batch",)),
    (JobKind("response", "get_response", {"response_id": "id"}, frozenset({"completed"}),
             frozenset({"failed", "cancelled", "incomplete"}), frozenset({"queued", "in_progress"}),
             cancel="cancel_response", finish=finish_response),
     ("create_response",)),
    (JobKind("fine_tuning_job", "retrieve_fine_tuning_job", {"fine_tuning_job_id": "id"}, frozenset({"succeeded"}),
             frozenset({"failed", "cancelled"}), frozenset({"validating_files", "queued", "running"}),
             cancel="cancel_fine_tuning_job"),
     ("create_fine_tuning_job",)),
    (JobKind("vector_store", "get_vector_store", {"vector_store_id": "id"}, frozenset({"completed"}),
             frozenset({"expired"}), frozenset({"in_progress"}),
             progress=_counts("file_counts", ("completed", "failed", "cancelled"))),
     ("create_vector_store",)),
    (JobKind("vector_store_file", "get_vector_store_file", {"vector_store_id": "vector_store_id", "file_id": "id"},
             frozenset({"completed"}), frozenset({"failed", "cancelled"}), frozenset({"in_progress"})),
     ("create_vector_store_file",)),
    (JobKind("vector_store_file_batch", "get_vector_store_file_batch",
             {"vector_store_id": "vector_store_id", "batch_id": "id"}, frozenset({"completed"}),
             frozenset({"failed", "cancelled"}), frozenset({"in_progress"}), cancel="cancel_vector_store_file_batch",
             progress=_counts("file_counts", ("completed", "failed", "cancelled"))),
     ("create_vector_store_file_batch",)),
    (JobKind("video", "get_video", {"video_id": "id"}, frozenset({"completed"}), frozenset({"failed"}),
             frozenset({"queued", "in_progress"}), progress=_percent),
     ("create_video", "create_video_remix", "create_video_edit", "create_video_extend")),
    (JobKind("eval_run", "get_eval_run", {"eval_id": "eval_id", "run_id": "id"}, frozenset({"completed"}),
             frozenset({"failed", "canceled"}), frozenset({"queued", "in_progress"}), cancel="cancel_eval_run",
             progress=_counts("result_counts", ("passed", "failed", "errored"))),
     ("create_eval_run",)),
)

#: Every action a step may wait on: those that start a job, and the job's own retrieve action.
_JOBS: dict[str, Job] = {}
for _kind, _creators in _KINDS:
    for _action in (*_creators, _kind.retrieve):
        _JOBS[_action] = Job(_kind, _action)


def job_for(action: str) -> Job | None:
    """The job an action starts or retrieves, when the pack knows how to wait for it."""
    job = _JOBS.get(action)
    return job if job is not None and job.kind.retrieve in actions.registry() else None


def waitable_actions() -> list[str]:
    return sorted(name for name in _JOBS if job_for(name) is not None)


def batch_problem(action: str) -> str | None:
    """Why ``action`` cannot run in ``mode: batch`` (None when it can); checked when the file loads."""
    manifest = actions.get(action)
    if manifest.http.method != "POST" or manifest.http.path not in BATCH_ENDPOINTS or manifest.http.encoding != "json":
        return (f"{action!r} cannot run in mode: batch: /v1/batches accepts only "
                + ", ".join(f"/v1{p}" for p in sorted(BATCH_ENDPOINTS)) + f" (it calls {manifest.http.method} "
                f"/v1{manifest.http.path})")
    return None
