"""``mode: batch`` on a ``with_items`` step: the items go to OpenAI's Batch API instead of one call each.

Half the price and none of the live rate budget, for jobs that can wait (a nightly classification
of 10,000 records). The step task, from its saved state:

1. renders and checks every item's input (an item the action refuses fails alone, as in a live
   fan-out), and writes the requests as JSONL, one ``custom_id`` per item (``item-<index>``),
   split so no file passes the API's limits (50,000 requests, 200 MB);
2. uploads each file (``create_file``, purpose ``batch``) and creates its batch (24 h window), each
   call through the ledger, so a redelivered message never uploads or creates twice;
3. waits durably like a step's ``wait:`` (``workers.engine.waits``): re-queued with a backing-off
   countdown, one ``retrieve_batch`` per batch per poll, the record showing ``batch in_progress,
   37/100``; a cancelled run cancels the batches;
4. downloads the output and error files (``download_file`` with ``parse: jsonl``) and maps each line
   back to its item: the item succeeds with the body the live endpoint would have answered, or fails
   with its error. Then the step ends as a fan-out does (``FanOut.finish``): its output is the items'
   outputs in item order.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import actions
from integration.errors import ConfigError, InputError, PackError, TransportError
from workers.calls import redact
from workers.engine.waits import JobFailedError
from workers.requeue import Requeue
from workers.state.runs import FINISHED, now_iso
from workers.workflow import Step, TemplateError, Workflow, render
from workers.workflow.jobs import DOWNLOAD_ACTION
from workers.workflow.model import WaitSpec

if TYPE_CHECKING:
    from workers.engine.lifecycle import Engine

__all__ = ["BatchMode", "split_lines"]

log = logging.getLogger("openai_pack.batchmode")

#: The API's limits per batch input file.
MAX_LINES_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 190 * 1024 * 1024  # under the API's 200 MB, with room for the multipart envelope
#: Polling when the step has no ``wait:`` of its own: the batch window is 24 h.
DEFAULT_WAIT = WaitSpec(timeout=25 * 3600.0, interval=5.0, max_interval=300.0)
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class BatchMode:
    """The batch half of the fan-out; it shares the engine's store, calls and dispatch."""

    engine: Engine

    def run(self, run_id: str, workflow: Workflow, step_id: str, *, cancelled: bool) -> None:
        """One delivery of the step: start, poll, or collect; re-queues itself (``Requeue``) while batches run."""
        engine, store = self.engine, self.engine.store
        step = workflow.step(step_id)
        record = store.step(run_id, step_id) or {}
        if record.get("status") in FINISHED:
            engine.complete(run_id, workflow, step_id, record["status"], replay=True)
            return
        state = record.get("wait") if isinstance(record.get("wait"), dict) else None
        if cancelled:
            if state is not None:
                state["cancel"] = self.cancel_remote(run_id, step, state)
            store.save_step(run_id, step_id, {**record, "status": "cancelled", "finished": now_iso()})
            engine.complete(run_id, workflow, step_id, "cancelled", replay=False)
            return
        if state is None:
            record = self._start(run_id, workflow, step, record)
            if record.get("status") in FINISHED:
                return
            state = record["wait"]
        if not state["batches"]:  # every item failed before it could be sent
            engine.fanout.finish(run_id, workflow, step_id)
            return
        self._poll(run_id, workflow, step, record)

    # 1-2: build, upload, create ---------------------------------------------------------------
    def _start(self, run_id: str, workflow: Workflow, step: Step, record: dict[str, Any]) -> dict[str, Any]:
        engine, store = self.engine, self.engine.store
        if store.once(run_id, f"fanout:{step.id}"):
            try:
                items = render(step.with_items, engine.context.build(run_id, workflow), step=step.id)
                if not isinstance(items, list):
                    raise TemplateError(f"step {step.id!r}: with_items must give a list, got {type(items).__name__}",
                                        step=step.id, expression=str(step.with_items), reason="not a list")
            except PackError as exc:
                failed = engine.failed({"attempts": 0, "started": now_iso()}, exc) | {"action": step.action}
                store.save_step(run_id, step.id, failed)
                engine.complete(run_id, workflow, step.id, "failed", replay=False)
                return failed
            store.save_item_inputs(run_id, step.id, items)
        total = store.item_total(run_id, step.id)
        started = record.get("started") or now_iso()
        if DOWNLOAD_ACTION not in actions.registry():  # the results could not be read back: send nothing
            self._fail_remaining(run_id, step, ConfigError(
                f"step {step.id!r}: mode: batch needs the {DOWNLOAD_ACTION} action to read the batch's output, "
                "and this pack does not ship it yet; use mode: live", field="mode"))
            engine.fanout.finish(run_id, workflow, step.id)
            return store.step(run_id, step.id) or {"status": "failed"}
        began = time.monotonic()
        lines = self._lines(run_id, workflow, step, total)
        log.info("step %s of run %s: %d of %d items as batch requests in %.1fs", step.id, run_id, len(lines), total,
                 time.monotonic() - began)
        batches = []
        try:
            for number, (first, count, body) in enumerate(split_lines(lines)):
                batches.append(self._create(run_id, step, number, first, count, body))
        except PackError as exc:  # the upload or the create was refused: every item still waiting fails with it
            self._fail_remaining(run_id, step, exc)
            engine.fanout.finish(run_id, workflow, step.id)
            return store.step(run_id, step.id) or {"status": "failed"}
        spec = step.wait or DEFAULT_WAIT
        now = time.time()
        record = {"status": "waiting", "action": step.action, "mode": "batch", "started": started, "attempts": 0,
                  "items": {"total": total}, "wait": {
                      "kind": "batch", "job_id": batches[0]["id"] if batches else None, "batches": batches,
                      "requests": len(lines), "status": "validating", "progress": f"0/{len(lines)}",
                      "summary": f"batch validating, 0/{len(lines)}", "polls": 0, "errors": 0, "since": now_iso(),
                      "deadline": now + spec.timeout, "interval": spec.interval, "next_poll": now + spec.interval}}
        store.save_waiting(run_id, step.id, record)
        return record

    def _lines(self, run_id: str, workflow: Workflow, step: Step, total: int) -> list[tuple[int, str]]:
        """(item index, JSONL line) for every item whose input the action accepts; the others fail now."""
        engine, store = self.engine, self.engine.store
        manifest = actions.get(step.action)
        context = engine.context.build(run_id, workflow, item=None, index=0, has_item=True)
        lines: list[tuple[int, str]] = []
        chunks = zip(store.item_input_chunks(run_id, step.id, total), store.item_record_chunks(run_id, step.id, total),
                     strict=True)
        for (start, chunk), (_, records) in chunks:
            for offset, item in enumerate(chunk):
                index = start + offset
                if records[offset] is not None:
                    continue  # failed before, in an earlier delivery
                context["item"], context["index"] = item, index
                try:
                    inputs = actions.prepare(step.action, render(step.input, context, step=step.id))
                    given = sorted(set(inputs) & manifest.pack_only_fields)
                    if given:
                        raise InputError([{"field": given[0], "reason": "is a pack option, not sent in mode: batch"}],
                                         action=step.action)
                except PackError as exc:
                    failed = engine.failed({"action": step.action, "attempts": 0, "started": now_iso()}, exc)
                    store.save_item_result(run_id, step.id, index, failed)
                    continue
                lines.append((index, json.dumps({"custom_id": f"item-{index}", "method": "POST",
                                                 "url": f"/v1{manifest.http.path}", "body": inputs},
                                                separators=(",", ":"), ensure_ascii=False)))
        return lines

    def _create(self, run_id: str, step: Step, number: int, first: int, count: int, body: bytes) -> dict[str, Any]:
        """Upload one JSONL file and create its batch, each once (the ledger keeps their answers)."""
        manifest = actions.get(step.action)
        integration = self.engine.integration_for(step)
        key = f"{run_id}:{step.id}:batch{number}"
        data_url = "data:application/jsonl;base64," + base64.b64encode(body).decode("ascii")
        upload = self._call("create_file", {"file": data_url, "purpose": "batch"}, integration, f"{key}:upload", step)
        batch = self._call("create_batch", {"input_file_id": upload["id"], "endpoint": f"/v1{manifest.http.path}",
                                            "completion_window": "24h",
                                            "metadata": {"openai_pack_run": run_id, "step": step.id}},
                           integration, f"{key}:create", step)
        return {"id": batch["id"], "input_file_id": upload["id"], "first_line": first, "requests": count,
                "status": batch.get("status"), "request_counts": batch.get("request_counts")}

    def _call(self, action: str, inputs: dict[str, Any], integration: Any, key: str, step: Step) -> dict[str, Any]:
        calls, store = self.engine.calls, self.engine.store
        run_id = key.split(":", 1)[0]
        result = calls.call(action, inputs, integration, key=key, what=f"step {step.id!r} ({action})",
                            max_retries=step.retries, requeues=lambda: store.count(run_id, f"requeues:{key}"))
        if result.done_op is not None:
            self.engine.ledger.write(result.done_op)
        return result.output

    # 3: wait ----------------------------------------------------------------------------------------
    def _poll(self, run_id: str, workflow: Workflow, step: Step, record: dict[str, Any]) -> None:
        wait = record["wait"]
        spec = step.wait or DEFAULT_WAIT
        now = time.time()
        if now + 0.01 < wait["next_poll"]:
            raise Requeue(min(wait["next_poll"] - now, self.engine.settings.max_countdown), wait["summary"])
        integration = self.engine.integration_for(step)
        options = self.engine.calls.options(max_retries=step.retries)
        timed_out = now >= wait["deadline"]
        for batch in wait["batches"]:
            if batch["status"] in _ENDED:
                continue
            try:
                seen = actions.execute("retrieve_batch", {"batch_id": batch["id"]}, integration, options=options).output
            except PackError as exc:
                wait["errors"] = int(wait.get("errors") or 0) + 1
                if (exc.retryable or isinstance(exc, TransportError)) and wait["errors"] <= 5:
                    return self._again(run_id, step, record, now, spec)
                wait["poll_error"] = {"code": exc.code, "message": exc.message}
                self.engine.store.save_waiting(run_id, step.id, record)
                self._fail_remaining(run_id, step, exc)
                self.engine.fanout.finish(run_id, workflow, step.id)
                return None
            batch.update(status=seen.get("status"), request_counts=seen.get("request_counts"),
                         output_file_id=seen.get("output_file_id"), error_file_id=seen.get("error_file_id"))
        wait["polls"] = int(wait.get("polls") or 0) + 1
        wait["errors"] = 0
        done = sum(int((b.get("request_counts") or {}).get("completed") or 0)
                   + int((b.get("request_counts") or {}).get("failed") or 0) for b in wait["batches"])
        statuses = sorted({b["status"] for b in wait["batches"]})
        wait.update(status=statuses[0] if len(statuses) == 1 else "/".join(statuses),
                    progress=f"{done}/{wait['requests']}")
        wait["summary"] = f"batch {wait['status']}, {wait['progress']}"
        if not all(b["status"] in _ENDED for b in wait["batches"]):
            if timed_out:  # the results so far are collected; what did not run fails as not run
                wait["cancel"] = self.cancel_remote(run_id, step, wait)
                wait["timed_out"] = True
            else:
                return self._again(run_id, step, record, now, spec)
        self.engine.store.save_waiting(run_id, step.id, record)  # the last poll's state stays in the record
        self._collect(run_id, workflow, step, record)

    def _again(self, run_id: str, step: Step, record: dict[str, Any], now: float, spec: WaitSpec) -> None:
        wait = record["wait"]
        interval = min(float(wait.get("interval") or spec.interval) * 1.5, spec.max_interval)
        next_poll = min(now + interval, wait["deadline"])
        wait.update(interval=interval, next_poll=next_poll)
        self.engine.store.save_waiting(run_id, step.id, record)
        raise Requeue(max(0.0, min(next_poll - now, self.engine.settings.max_countdown)), wait["summary"])

    # 4: collect ---------------------------------------------------------------------------------------
    def _collect(self, run_id: str, workflow: Workflow, step: Step, record: dict[str, Any]) -> None:
        """Map every output and error line back to its item, then end the step as a fan-out ends."""
        store, engine = self.engine.store, self.engine
        integration = engine.integration_for(step)
        options = engine.calls.options(max_retries=step.retries)
        finished = now_iso()
        for batch in record["wait"]["batches"]:
            for file_key in ("output_file_id", "error_file_id"):
                file_id = batch.get(file_key)
                if not file_id:
                    continue
                content = actions.execute(DOWNLOAD_ACTION, {"file_id": file_id, "parse": "jsonl"}, integration,
                                          options=options).output
                results = []
                for line in content.get("records") or []:
                    index = _index_of(line)
                    if index is not None:
                        results.append((index, *_item_result(step, line, batch["id"], finished)))
                for start in range(0, len(results), 500):  # set-once per item: a replay changes nothing
                    store.save_item_results(run_id, step.id, results[start:start + 500])
        self._fail_remaining(run_id, step, JobFailedError(
            f"step {step.id!r}: no result for this item: the batch ended {record['wait']['status']}"
            + (" (the wait timed out)" if record["wait"].get("timed_out") else "")))
        engine.fanout.finish(run_id, workflow, step.id)

    def _fail_remaining(self, run_id: str, step: Step, error: PackError) -> None:
        """Every item without a record yet fails with ``error`` (its request never ran, or its result is lost)."""
        store = self.engine.store
        total = store.item_total(run_id, step.id)
        finished = now_iso()
        for start, chunk in store.item_record_chunks(run_id, step.id, total):
            failed = self.engine.failed({"action": step.action, "attempts": 0, "started": finished}, error)
            store.save_item_results(run_id, step.id, [(start + offset, failed, None)
                                                      for offset, entry in enumerate(chunk) if entry is None])

    # cancelling ------------------------------------------------------------------------------------------
    def cancel_remote(self, run_id: str, step: Step, wait: dict[str, Any]) -> dict[str, Any]:
        """Cancel the step's running batches, once per run."""
        if not self.engine.store.once(run_id, f"cancel-remote:{step.id}"):
            return {"sent": True, "by": "an earlier cancel"}
        integration = self.engine.integration_for(step)
        sent = []
        for batch in wait.get("batches") or []:
            if batch.get("status") in _ENDED:
                continue
            try:
                actions.execute("cancel_batch", {"batch_id": batch["id"]}, integration,
                                options=self.engine.calls.options(max_retries=step.retries))
                sent.append(batch["id"])
            except (PackError, Requeue) as exc:
                log.warning("could not cancel batch %s of run %s: %s", batch["id"], run_id, exc)
        return {"sent": bool(sent), "batches": sent}


def split_lines(lines: list[tuple[int, str]], max_lines: int = MAX_LINES_PER_FILE,
           max_bytes: int = MAX_BYTES_PER_FILE) -> list[tuple[int, int, bytes]]:
    """(first line, lines, JSONL bytes) per file, each within the API's per-file limits."""
    files: list[tuple[int, int, bytes]] = []
    current: list[bytes] = []
    size = 0
    first = 0
    for position, (_, line) in enumerate(lines):
        encoded = line.encode("utf-8") + b"\n"
        if current and (len(current) >= max_lines or size + len(encoded) > max_bytes):
            files.append((first, len(current), b"".join(current)))
            current, size, first = [], 0, position
        current.append(encoded)
        size += len(encoded)
    if current:
        files.append((first, len(current), b"".join(current)))
    return files


def _index_of(line: Any) -> int | None:
    custom_id = line.get("custom_id") if isinstance(line, dict) else None
    if isinstance(custom_id, str) and custom_id.startswith("item-") and custom_id[5:].isdigit():
        return int(custom_id[5:])
    return None


def _item_result(step: Step, line: dict[str, Any], batch_id: str, finished: str) -> tuple[dict[str, Any], Any]:
    """One item's record and full output from its batch line."""
    response = line.get("response") or {}
    body = response.get("body")
    status_code = response.get("status_code")
    record: dict[str, Any] = {"action": step.action, "attempts": 1, "started": finished, "finished": finished,
                              "batch_id": batch_id, "request_ids": [response["request_id"]]
                              if response.get("request_id") else []}
    if status_code == 200 and isinstance(body, dict):
        usage = {k: v for k, v in (body.get("usage") or {}).items() if isinstance(v, int) and not isinstance(v, bool)}
        record.update(status="succeeded", output=redact(body, step.redact), usage=usage)
        return record, body
    error = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
    record.update(status="failed", error={"type": "ApiError", "code": "api_error", "category": "api",
                                          "retryable": False, "status": status_code,
                                          "error_code": error.get("code"), "param": error.get("param"),
                                          "message": f"batch request failed: {error.get('message', status_code)}"})
    return record, None
