"""The API objects the simulator has issued (files and their bytes, batches, vector stores and their files,
responses, conversations and items), so create → retrieve → list → delete round trips work, and the clock of
its long jobs (batches, background responses, file indexing).

Why bounded: a ``simulate`` session may run for days; each kind keeps at most ``MAX_OBJECTS`` objects and file
bytes at most ``MAX_FILE_BYTES`` in all, the oldest dropped first (a dropped id then answers 404, as a deleted
one does).

Why jobs are lazy: a job advances when it is looked at (retrieved, listed, or its parent retrieved), or when its
delay has passed, checked at that same moment. No thread ticks, so a test decides exactly what a poller sees:
``after_polls`` looks (default 2: the first look shows ``in_progress``, the second the result), or
``after_seconds`` since creation, or ``complete()`` now.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_AFTER_POLLS", "MAX_FILE_BYTES", "MAX_OBJECTS", "Job", "JobClock", "Store", "page"]

MAX_OBJECTS = 2_000
MAX_FILE_BYTES = 256 * 1024 * 1024
DEFAULT_AFTER_POLLS = 2


@dataclass
class Job:
    """A long job's clock: how often it was looked at, when it began, and what finishing it does."""

    kind: str
    object_id: str
    finish: Callable[[str], None]  # called once, with "completed" (or a forced outcome)
    created: float = field(default_factory=time.monotonic)
    looks: int = 0
    done: bool = False


class JobClock:
    """When jobs finish: after ``after_polls`` looks (None: never by looks), after ``after_seconds`` (None: never by
    time), whichever comes first, or when told to (``complete``)."""

    def __init__(self, after_polls: int | None = DEFAULT_AFTER_POLLS, after_seconds: float | None = None) -> None:
        self.after_polls = after_polls
        self.after_seconds = after_seconds
        self.configure(after_polls, after_seconds)

    def configure(self, after_polls: int | None, after_seconds: float | None) -> None:
        """Check and set the clock; ValueError names the bad setting."""
        if after_polls is not None and (isinstance(after_polls, bool) or not isinstance(after_polls, int)
                                        or after_polls < 0):
            raise ValueError("after_polls must be an integer >= 0, or null (never by polls)")
        if after_seconds is not None and (isinstance(after_seconds, bool) or not isinstance(after_seconds, int | float)
                                          or not 0 <= after_seconds < float("inf")):
            raise ValueError("after_seconds must be a number of seconds >= 0, or null (never by time)")
        self.after_polls, self.after_seconds = after_polls, after_seconds

    def settings(self) -> dict[str, Any]:
        return {"after_polls": self.after_polls, "after_seconds": self.after_seconds}

    def due(self, job: Job) -> bool:
        if self.after_polls is not None and job.looks >= self.after_polls:
            return True
        return self.after_seconds is not None and time.monotonic() - job.created >= self.after_seconds


class Store:
    """Objects by kind and id, in creation order, file bytes beside them, and the jobs; one lock for all (the
    server's event loop writes, a test thread may complete jobs)."""

    def __init__(self, clock: JobClock | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock or JobClock()
        self._n = 0
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.objects: dict[str, OrderedDict[str, dict[str, Any]]] = {}
            self.contents: OrderedDict[str, bytes] = OrderedDict()
            self.jobs: OrderedDict[str, Job] = OrderedDict()

    def new_id(self, prefix: str) -> str:
        """Unique per server (a reset does not reuse ids, so a stale id never finds a new object)."""
        with self.lock:
            self._n += 1
            return f"{prefix}sim{self._n:06d}"

    # objects ------------------------------------------------------------------------------------
    def put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            table = self.objects.setdefault(kind, OrderedDict())
            table[obj["id"]] = obj
            while len(table) > MAX_OBJECTS:
                dropped, _ = table.popitem(last=False)
                self.contents.pop(dropped, None)
                self.jobs.pop(dropped, None)
            return obj

    def get(self, kind: str, object_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self.objects.get(kind, OrderedDict()).get(object_id)

    def remove(self, kind: str, object_id: str) -> dict[str, Any] | None:
        with self.lock:
            self.contents.pop(object_id, None)
            self.jobs.pop(object_id, None)
            return self.objects.get(kind, OrderedDict()).pop(object_id, None)

    def drop_kind(self, kind: str) -> None:
        """Forget every object of a kind (a deleted vector store's files)."""
        with self.lock:
            self.objects.pop(kind, None)

    def all(self, kind: str, where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """Objects of a kind, oldest first."""
        with self.lock:
            return [obj for obj in self.objects.get(kind, OrderedDict()).values() if where is None or where(obj)]

    def keep_content(self, file_id: str, content: bytes) -> None:
        with self.lock:
            self.contents[file_id] = content
            total = sum(len(data) for data in self.contents.values())
            while total > MAX_FILE_BYTES and len(self.contents) > 1:
                dropped, data = self.contents.popitem(last=False)
                total -= len(data)
                self.objects.get("file", OrderedDict()).pop(dropped, None)

    def content(self, file_id: str) -> bytes | None:
        with self.lock:
            return self.contents.get(file_id)

    # jobs ---------------------------------------------------------------------------------------
    def start_job(self, kind: str, object_id: str, finish: Callable[[str], None]) -> Job:
        """Register a long job; with ``after_polls`` 0 it finishes at once (the create answer shows the result)."""
        with self.lock:
            job = Job(kind, object_id, finish)
            self.jobs[object_id] = job
            while len(self.jobs) > MAX_OBJECTS:
                self.jobs.popitem(last=False)
            self._settle(job)
            return job

    def look(self, object_id: str) -> bool:
        """One poll of a job's object: counts a look and finishes the job when due. True while it is running
        after the look (the caller shows it in progress)."""
        with self.lock:
            job = self.jobs.get(object_id)
            if job is None or job.done:
                return False
            job.looks += 1
            self._settle(job)
            return not job.done

    def running(self, object_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(object_id)
            return job if job is not None and not job.done else None

    def complete(self, object_id: str | None = None, outcome: str = "completed") -> list[str]:
        """Finish running jobs now (one, or all); the ids finished."""
        with self.lock:
            chosen = [job for job in self.jobs.values()
                      if not job.done and (object_id is None or job.object_id == object_id)]
            for job in chosen:
                self._finish(job, outcome)
            return [job.object_id for job in chosen]

    def pending(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"id": job.object_id, "kind": job.kind, "looks": job.looks,
                     "age_seconds": round(time.monotonic() - job.created, 3)}
                    for job in self.jobs.values() if not job.done]

    def _settle(self, job: Job) -> None:
        if not job.done and self.clock.due(job):
            self._finish(job, "completed")

    def _finish(self, job: Job, outcome: str) -> None:
        job.done = True
        job.finish(outcome)


def page(items: list[dict[str, Any]], query: dict[str, str], *, default_limit: int = 20, max_limit: int = 100,
         default_order: str | None = "desc") -> dict[str, Any] | str:
    """One page of a list in the API's cursor style (``after``/``before``/``limit``/``order``), or the name of the
    query parameter that is wrong (``limit`` outside 1..max_limit, an unknown ``order``); an unknown cursor gives
    an empty page. ``items`` are oldest first; ``order`` desc (the API's default) is newest first."""
    limit_text = query.get("limit")
    limit = default_limit
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= max_limit:
            return "limit"
        limit = int(limit_text)
    order = query.get("order") or default_order or "desc"
    if order not in ("asc", "desc"):
        return "order"
    ordered = list(reversed(items)) if order == "desc" else list(items)
    ids = [item["id"] for item in ordered]
    start, stop = 0, len(ordered)
    if query.get("after"):  # a cursor it never issued (or since dropped) pages past the end: an empty page
        start = ids.index(query["after"]) + 1 if query["after"] in ids else len(ordered)
    if query.get("before"):
        stop = ids.index(query["before"]) if query["before"] in ids else 0
    window = ordered[start:stop]
    chosen = window[:limit]
    return {"object": "list", "data": chosen, "first_id": chosen[0]["id"] if chosen else None,
            "last_id": chosen[-1]["id"] if chosen else None, "has_more": len(window) > limit}
