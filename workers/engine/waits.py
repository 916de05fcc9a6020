"""Durable waits: a step with ``wait:`` polls the job it started until the job ends, holding no worker.

Batches, background responses, fine-tuning jobs, vector-store indexing, videos and eval runs run
for minutes to a day. A step that starts one (or retrieves one) and says ``wait:`` is run like this:

1. the call that starts the job goes through the ledger as usual; its answer is the job;
2. unless the job has already ended, the step's record becomes ``status: waiting`` with what is
   awaited (``wait.kind``, ``wait.job_id``) and how far it is (``wait.summary``, e.g.
   ``batch in_progress, 37/100``), written together with the ledger's "done" of the starting call
   (a redelivery never starts the job twice), and the task is re-queued with a countdown
   (``Requeue``): no worker thread sleeps, and the message waits in the broker;
3. each later delivery polls the job's retrieve action once (a GET, counted against the
   integration's rate budget like any call), saves the new status, and re-queues with a longer
   countdown (``interval`` × 1.5 per poll, up to ``max_interval``). A countdown longer than the
   broker allows (``max_countdown``) is covered in hops that do not poll;
4. the job ended: the step succeeds with the final object as its output (a response also gets
   ``output_text`` and ``output_parsed``), or fails with ``job_failed`` / ``wait_timeout``.

Everything lives in the run store and the broker, so a worker killed during a wait loses
nothing: the unacknowledged message comes back, and whichever worker takes it polls on.
Cancelling the run cancels the remote job where the API has a cancel operation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import actions
from integration.errors import PackError, TransportError
from workers.calls import redact
from workers.requeue import Requeue
from workers.state.kv import Op
from workers.state.runs import now_iso
from workers.workflow import Step
from workers.workflow.jobs import JobKind, job_for

if TYPE_CHECKING:
    from workers.engine.lifecycle import Engine

__all__ = ["JobFailedError", "Waits", "WaitTimeoutError"]

log = logging.getLogger("openai_pack.waits")

#: Polls that fail for a passing reason (5xx, no answer) in a row before the step fails.
MAX_POLL_ERRORS = 5
#: Each poll's interval grows by this factor, up to the step's ``max_interval``.
BACKOFF = 1.5


class JobFailedError(PackError):
    """The job ended without reaching the status the step waits for (failed, expired, cancelled…)."""

    code, category = "job_failed", "api"


class WaitTimeoutError(PackError):
    """The job did not end within the step's ``wait.timeout`` (it is cancelled where the API can)."""

    code, category = "wait_timeout", "timeout"


def _outcome(kind: JobKind, until: tuple[str, ...], status: Any) -> str:
    """``done``, ``failed`` or ``running`` for a job status, given what the step waits for."""
    if until:
        if status in until:
            return "done"
        return "failed" if status in kind.done | kind.failed else "running"
    if status in kind.done:
        return "done"
    return "failed" if status in kind.failed else "running"


def _summary(kind: JobKind, job: dict[str, Any]) -> tuple[str, str | None]:
    progress = kind.progress(job) if kind.progress else None
    return f"{kind.name} {job.get('status')}" + (f", {progress}" if progress else ""), progress


@dataclass
class Waits:
    """The wait half of the engine: it shares the engine's store, integrations and call options."""

    engine: Engine
    clock: Callable[[], float] = field(default=time.time)

    # starting ------------------------------------------------------------------------------------
    def begin(self, run_id: str, step: Step, record: dict[str, Any], full_output: Any,
              done: list[Op]) -> tuple[dict[str, Any], Any, list[Op]]:
        """After the starting call: end at once when the job already ended, else save ``waiting`` and re-queue."""
        job = job_for(step.action)
        spec = step.wait
        if job is None or spec is None or not isinstance(full_output, dict):
            return record, full_output, done
        kind = job.kind
        missing = [name for name, key in kind.ids.items() if not full_output.get(key)]
        if missing:
            error = JobFailedError(f"step {step.id!r}: the {kind.name} the API answered has no "
                                   f"{kind.ids[missing[0]]!r} to poll it by", kind=kind.name)
            return self.engine.failed(record, error), None, done
        if _outcome(kind, spec.until, full_output.get("status")) != "running":  # it ended already
            record["wait"] = {"kind": kind.name, "job_id": full_output.get("id"), "polls": 0}
            ended, output = self._conclude(step, record, full_output, {}, kind)
            return ended, output, done
        now = self.clock()
        summary, progress = _summary(kind, full_output)
        record.update(status="waiting", output=redact(full_output, step.redact), wait={
            "kind": kind.name, "job_id": full_output.get("id"), "retrieve": kind.retrieve,
            "integration": record.get("integration"),  # polls and the cancel go where the job was started
            "retrieve_input": {name: full_output[key] for name, key in kind.ids.items()},
            "status": full_output.get("status"), "progress": progress, "summary": summary,
            "until": list(spec.until) or sorted(kind.done), "polls": 0, "errors": 0, "since": now_iso(),
            "deadline": now + spec.timeout, "interval": spec.interval, "next_poll": now + spec.interval,
        })
        self.engine.store.save_waiting(run_id, step.id, record, before=done)
        log.info("step %s of run %s waits for %s %s", step.id, run_id, kind.name, full_output.get("id"))
        raise Requeue(min(spec.interval, self.engine.settings.max_countdown), f"waiting for {summary}")

    # each later delivery -------------------------------------------------------------------------
    def poll(self, run_id: str, step: Step, record: dict[str, Any], *,
             cancelled: bool) -> tuple[dict[str, Any], Any, list[Op]]:
        """Look at the job once: the final (record, output, []) when it ended, else re-queue (raises ``Requeue``)."""
        wait = record["wait"]
        job = job_for(step.action)
        spec = step.wait
        if job is None or spec is None:  # the definition is stored with the run, so this is a defect
            return self.engine.failed(record, PackError(f"step {step.id!r} waits, but has no wait option")), None, []
        kind = job.kind
        if cancelled:
            wait["cancel"] = self.cancel_remote(run_id, step, wait)
            record.update(status="cancelled", finished=now_iso())
            return record, None, []
        now = self.clock()
        if now + 0.01 < wait["next_poll"]:  # a hop of a countdown longer than the broker allows
            raise Requeue(min(wait["next_poll"] - now, self.engine.settings.max_countdown),
                          f"waiting for {wait['summary']}")
        if now >= wait["deadline"]:
            wait["cancel"] = self.cancel_remote(run_id, step, wait)
            error = WaitTimeoutError(f"step {step.id!r}: the {kind.name} {wait['job_id']} did not end within "
                                     f"{spec.timeout:g} s (last seen: {wait['summary']})", kind=kind.name,
                                     job_id=wait["job_id"], status=wait["status"])
            return self._failed(record, error), None, []
        try:
            result = actions.execute(kind.retrieve, wait["retrieve_input"],
                                     self.engine.integration_for(step, wait.get("integration")),
                                     options=self.engine.calls.options(max_retries=step.retries))
        except Requeue:
            raise  # the rate budget is spent: the poll itself waits on the queue
        except PackError as exc:
            wait["errors"] = int(wait.get("errors") or 0) + 1
            passing = exc.retryable or isinstance(exc, TransportError)  # a 5xx, a dropped connection
            if not passing or wait["errors"] > MAX_POLL_ERRORS:
                return self._failed(record, exc), None, []
            wait["last_error"] = {"code": exc.code, "message": exc.message}
            return self._again(run_id, step, record, now)
        job_object = result.output
        wait.update(polls=int(wait.get("polls") or 0) + 1, errors=0, last_poll=now_iso())
        wait.pop("last_error", None)
        if _outcome(kind, spec.until, job_object.get("status")) == "running":
            summary, progress = _summary(kind, job_object)
            wait.update(status=job_object.get("status"), summary=summary, progress=progress)
            record["output"] = redact(job_object, step.redact)
            return self._again(run_id, step, record, now)
        ended, output = self._conclude(step, record, job_object, result.usage, kind)
        return ended, output, []

    def _conclude(self, step: Step, record: dict[str, Any], job_object: dict[str, Any], poll_usage: dict[str, Any],
                  kind: JobKind) -> tuple[dict[str, Any], Any]:
        """The job ended: (the step's final record, its full output)."""
        spec = step.wait
        assert spec is not None
        wait = record["wait"]
        summary, progress = _summary(kind, job_object)
        wait.update(status=job_object.get("status"), summary=summary, progress=progress)
        record["output"] = redact(job_object, step.redact)
        if _outcome(kind, spec.until, job_object.get("status")) == "failed":
            reason = job_object.get("error") or job_object.get("last_error") or job_object.get("errors")
            error = JobFailedError(f"step {step.id!r}: the {kind.name} {wait['job_id']} ended "
                                   f"{job_object.get('status')}" + (f": {_reason(reason)}" if reason else ""),
                                   kind=kind.name, job_id=wait["job_id"], status=job_object.get("status"))
            return self._failed(record, error), None
        output: Any = job_object
        if kind.finish is not None:
            try:
                output = kind.finish(job_object)
            except PackError as exc:  # e.g. a structured answer that does not fit its schema
                return self._failed(record, exc), None
        usage = dict(record.get("usage") or {})
        for key, value in (poll_usage or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                usage[key] = usage.get(key, 0) + value
        record.update(status="succeeded", finished=now_iso(), usage=usage, output=redact(output, step.redact))
        return record, output

    def _again(self, run_id: str, step: Step, record: dict[str, Any], now: float) -> Any:
        """Save how far the job is and come back after the next (longer) interval."""
        wait, spec = record["wait"], step.wait
        assert spec is not None
        interval = min(float(wait.get("interval") or spec.interval) * BACKOFF, spec.max_interval)
        next_poll = min(now + interval, wait["deadline"])
        wait.update(interval=interval, next_poll=next_poll)
        self.engine.store.save_waiting(run_id, step.id, record)
        raise Requeue(max(0.0, min(next_poll - now, self.engine.settings.max_countdown)),
                      f"waiting for {wait['summary']}")

    def _failed(self, record: dict[str, Any], error: PackError) -> dict[str, Any]:
        record = self.engine.failed(record, error)
        record["attempts"] = max(1, int(record.get("attempts") or 1) - 1)  # a poll is not an attempt of the call
        return record

    # cancelling --------------------------------------------------------------------------------
    def cancel_remote(self, run_id: str, step: Step, wait: dict[str, Any]) -> dict[str, Any]:
        """Cancel the awaited job once per run and step, where the API has a cancel operation."""
        job = job_for(step.action)
        if job is None or job.kind.cancel is None:
            return {"sent": False, "reason": f"the API cannot cancel a {wait.get('kind')}"}
        if not self.engine.store.once(run_id, f"cancel-remote:{step.id}"):
            return {"sent": True, "by": "an earlier cancel"}
        try:
            result = actions.execute(job.kind.cancel, wait["retrieve_input"],
                                     self.engine.integration_for(step, wait.get("integration")),
                                     options=self.engine.calls.options(max_retries=step.retries))
        except PackError as exc:
            log.warning("could not cancel %s %s of run %s: %s", job.kind.name, wait.get("job_id"), run_id, exc.code)
            return {"sent": True, "error": {"code": exc.code, "message": exc.message}}
        except Requeue as wait_needed:
            return {"sent": False, "error": {"code": "rate_limited", "message": wait_needed.reason}}
        return {"sent": True, "status": result.output.get("status")}

    def cancel_run(self, run_id: str) -> list[str]:
        """The run was cancelled: cancel every job its steps wait for, and wake those steps to end now."""
        workflow = self.engine.workflow(run_id)
        woken = []
        for step_id, record in self.engine.store.steps(run_id).items():
            if record.get("status") != "waiting" or not isinstance(record.get("wait"), dict):
                continue
            if record.get("mode") == "batch":  # a with_items step in mode: batch waits for its batches
                self.engine.batches.cancel_remote(run_id, workflow.step(step_id), record["wait"])
            else:
                self.cancel_remote(run_id, workflow.step(step_id), record["wait"])
            self.engine.dispatch(run_id, step_id, None, None)
            woken.append(step_id)
        return woken


def _reason(value: Any) -> str:
    """A job's own error, shortly: ``message`` of an error object or of the first of a list."""
    if isinstance(value, dict) and isinstance(value.get("data"), list) and value["data"]:
        value = value["data"][0]
    if isinstance(value, dict):
        return str(value.get("message") or value.get("code") or value)[:300]
    return str(value)[:300]
