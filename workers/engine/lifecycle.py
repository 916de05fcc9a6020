"""A run's lifecycle: start it, run each step task (single steps here, fan-outs in ``fanout``), end it.

A step task holds the step's lease (kept alive by a heartbeat while it runs), calls through the
ledger (``workers.calls``), saves the record, evaluates the transitions and dispatches what comes
next. A redelivered message that finds the lease live re-queues itself; one that finds the step
finished replays the bookkeeping, guarded by set-once flags.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from integration.errors import PackError, StoreError
from integration.model import Integration
from integration.redact import scrub_data
from workers.calls import CallResult, LedgeredCalls, redact
from workers.engine.batchmode import BatchMode
from workers.engine.context import TemplateContext
from workers.engine.fanout import FanOut, SlotDispatch
from workers.engine.selection import select_integration
from workers.engine.waits import Waits
from workers.observe import run_started, step_scope
from workers.requeue import Requeue
from workers.settings import Settings
from workers.state.kv import Op
from workers.state.ledger import Ledger
from workers.state.runs import FINISHED, OpenedStep, RunStore, now_iso
from workers.workflow import Step, Workflow, render

if TYPE_CHECKING:
    from workers.state.budget import Budget

__all__ = ["Dispatch", "Engine"]

log = logging.getLogger("openai_pack.engine")

#: dispatch(run_id, step_id, item_index or None, countdown seconds or None)
Dispatch = Callable[[str, str, int | None, float | None], None]


class Engine:
    """Run state in a ``RunStore``, calls through ``LedgeredCalls``, next steps through ``dispatch``."""

    def __init__(self, store: RunStore, ledger: Ledger, settings: Settings, dispatch: Dispatch,
                 budget: Budget | None = None, dispatch_slot: SlotDispatch | None = None) -> None:
        self.store = store
        self.budget = budget
        self.ledger = ledger
        self.settings = settings
        self.dispatch = dispatch
        #: sends a fan-out slot message (several item chains run on the event loop); None: per-item messages
        self.dispatch_slot = dispatch_slot
        self.calls = LedgeredCalls(ledger, settings, budget, store)
        self.context = TemplateContext(store)
        self.fanout = FanOut(self)
        self.waits = Waits(self)
        self.batches = BatchMode(self)

    # starting ------------------------------------------------------------------------------
    def start_run(self, workflow: Workflow, raw_inputs: Any, *, trigger: dict[str, Any],
                  idempotency_key: str | None = None, integration: str | None = None) -> tuple[str, bool]:
        """Validate inputs, save the run and dispatch its first step: (run id, newly created).

        ``integration`` overrides the workflow's own default for this run (steps naming one keep theirs);
        it is stored in the run's copy of the definition, so every worker sees it.
        """
        inputs = workflow.coerce_inputs(raw_inputs)
        definition = workflow.to_dict()
        if integration is not None:
            definition["integration"] = integration
            trigger = {**trigger, "integration": integration}
        run_id, created = self.store.create(workflow=definition, inputs=inputs, trigger=trigger,
                                            idempotency_key=idempotency_key)
        if created:
            try:
                with run_started(run_id, workflow.name):  # the trace every step joins
                    self.activate(run_id, [workflow.start])
            except Exception as exc:
                if idempotency_key:  # let the sender's retry start the run afresh
                    self.store.forget_idempotency_key(idempotency_key)
                self.store.update(run_id, status="failed", finished=now_iso(),
                                  error={"code": "dispatch_failed",
                                         "message": f"could not queue the first step: {exc}"})
                raise
        return run_id, created

    def abandon(self, run_id: str, step_id: str, item: int | None, reason: str) -> None:
        """Record a step (or item) that kept failing for infrastructure reasons, so the run ends loudly."""
        record = {"status": "failed", "finished": now_iso(), "attempts": 0,
                  "error": {"type": "PackError", "code": "internal_error", "retryable": False,
                            "message": f"gave up after repeated internal errors: {reason}"}}
        if item is None:
            self.store.save_step_result(run_id, step_id, record)  # unless the step ended meanwhile
        else:
            self.store.save_item_result(run_id, step_id, item, record)
        self.run_step(run_id, step_id, item, owner=f"abandon-{step_id}")  # replays the bookkeeping

    def cancel(self, run_id: str) -> bool:
        """Stop dispatching: steps already calling finish, nothing new starts."""
        status = self.store.status(run_id)
        if status is None or status in FINISHED:
            return False
        self.store.update(run_id, status="cancelled", cancelled=now_iso())
        self.waits.cancel_run(run_id)  # remote jobs the run waits for are cancelled now, not at the next poll
        return True

    def workflow(self, run_id: str) -> Workflow:
        return self.context.workflow(run_id)

    # the step task -----------------------------------------------------------------------------
    def run_status(self, run_id: str) -> str | None:
        """The run's status (None: no such run); the first read in this process also caches what never changes."""
        if self.context.known(run_id):
            return self.store.status(run_id)
        # first step of this run seen by this process: everything immutable in one round trip
        header = self.store.fields(run_id, ["status", "definition", "inputs", "trigger"])
        status = header["status"]
        if status is not None:
            self.context.remember(run_id, header)
        return status  # type: ignore[no-any-return]

    def run_step(self, run_id: str, step_id: str, item: int | None, owner: str) -> None:
        """Execute (or replay) one step or one fan-out item. Raises ``Requeue`` to come back later.

        The lease, the run's status (and, the first time this process sees the run, what never changes),
        the step's record and the run's variables come in one round trip."""
        lease_key = f"{run_id}:{step_id}:{'' if item is None else item}"
        leases, known = self.store.leases, self.context.known(run_id)
        opened = self.store.open_step(run_id, step_id, ["status"] if known else ["status", "definition", "inputs",
                                                                                   "trigger"],
                                      lease=leases.acquire_op(lease_key, owner, self.settings.lease_ttl))
        status = opened.header["status"]
        if status is None:
            if opened.leased:
                leases.release(lease_key, owner)
            log.warning("run %s does not exist; dropping step %s", run_id, step_id)
            return
        if not known:
            self.context.remember(run_id, opened.header)
        if not opened.leased:
            # Another delivery is running this step (a slow call outliving the visibility timeout, or a
            # duplicate): neither call again nor fail it; look again later.
            raise Requeue(min(2.0, self.settings.max_countdown), "another delivery of this step is running")
        leases.hold(lease_key, owner, self.settings.lease_ttl)
        workflow = self.workflow(run_id)
        step = workflow.step(step_id)
        cancelled = status == "cancelled"
        following = None
        try:
            if step.with_items is not None and item is None:
                self.fanout.start(run_id, workflow, step_id, cancelled=cancelled)
            elif item is None:
                self._run_single(run_id, workflow, step_id, opened, cancelled=cancelled)
            else:
                following = self.fanout.run_item(run_id, workflow, step_id, item, cancelled=cancelled)
        finally:
            leases.release(lease_key, owner)
        if following is not None:
            self.fanout.continue_slot(run_id, workflow, step_id, following, owner, cancelled=cancelled)

    # single steps ----------------------------------------------------------------------------
    def _run_single(self, run_id: str, workflow: Workflow, step_id: str, opened: OpenedStep, *,
                    cancelled: bool) -> None:
        record = opened.record or {}
        replay = record.get("status") in FINISHED
        if not replay:
            step = workflow.step(step_id)
            if record.get("status") == "waiting":  # a durable wait: poll the job once (or re-queue)
                record, full_output, done = self.waits.poll(run_id, step, record, cancelled=cancelled)
            elif cancelled:
                record, full_output, done = {"status": "cancelled", "finished": now_iso()}, None, []
            else:
                record, full_output, done = self.execute(run_id, workflow, step_id, record, None, None,
                                                         variables=opened.variables)
                if step.wait is not None and record["status"] == "succeeded":
                    record, full_output, done = self.waits.begin(run_id, step, record, full_output, done)
            # ledger "done", full output, record: in this order, one round trip; the first final record wins
            if not self.store.save_step_result(run_id, step_id, record, full_output, before=done):
                log.warning("step %s of run %s was ended by another delivery meanwhile; its record stands "
                            "(this answer is kept in the ledger)", step_id, run_id)
                record, replay = self.store.step(run_id, step_id) or record, True
        self.complete(run_id, workflow, step_id, record["status"], replay=replay)

    def execute(self, run_id: str, workflow: Workflow, step_id: str, record: dict[str, Any],
                item: Any, index: int | None, *, variables: dict[str, Any] | None = None,
                ) -> tuple[dict[str, Any], Any, list[Op]]:
        """Render and call through the ledger: (the record, redacted; the full output; writes to make first).

        ``variables``: the run's published variables, when the caller read them with the item."""
        step = workflow.step(step_id)
        record = {"status": "running", "action": step.action, "attempts": int(record.get("attempts") or 0),
                  "started": record.get("started") or now_iso(), "requeues": int(record.get("requeues") or 0)}
        ledger_key = f"{run_id}:{step_id}:{'' if index is None else index}"
        try:
            with step_scope(run_id, step_id, index):  # the step's span; the run id as the Reconify session
                context = self.context.build(run_id, workflow, item=item, index=index, has_item=index is not None,
                                             variables=variables)
                inputs = render(step.input, context, step=step_id)
                integration = self._integration(workflow.integration_for(step), step.timeout, context, step_id)
                record["integration"] = integration.name  # the run record says which integration each step used
                result: CallResult = self.calls.call(
                    step.action, inputs, integration, key=ledger_key,
                    what=f"step {step_id!r}", max_retries=step.retries, redact_paths=tuple(step.redact),
                    requeues=lambda: self.store.count(run_id, f"requeues:{ledger_key}"))
        except (Requeue, StoreError, OSError, ConnectionError):
            raise  # waits go back to the queue; an unreachable store makes the task retry (the ledger guards the call)
        except PackError as exc:
            return self.failed(record, exc), None, []
        except Exception as exc:  # a bug must still end the step, not wedge the run
            log.exception("step %s of run %s raised unexpectedly", step_id, run_id)
            return self.failed(record, PackError(f"internal error: {type(exc).__name__}: {exc}")), None, []
        record.update(status="succeeded", finished=now_iso(), output=redact(result.output, step.redact),
                      usage=result.usage, attempts=record["attempts"] + result.attempts,
                      request_ids=result.request_ids, replayed=result.replayed, cost=result.cost)
        return record, result.output, [op for op in (result.done_op, result.cost_op) if op]

    def call_options(self, *, max_retries: int | None = None) -> Any:
        """Kept for callers outside the engine (the CLI): see ``LedgeredCalls.options``."""
        return self.calls.options(max_retries=max_retries)

    @staticmethod
    def failed(record: dict[str, Any], error: PackError) -> dict[str, Any]:
        record.update(status="failed", finished=now_iso(), error=scrub_data(error.to_dict()),
                      attempts=record.get("attempts", 0) + int(error.details.get("attempts") or 1))
        return record

    def integration_for(self, step: Step, chosen: str | None = None) -> Integration:
        """The integration of a step's later calls (a wait's polls and cancel, batch mode), its timeout applied:
        ``chosen`` is the name the step's selection gave when it ran (kept in its record), else its own setting."""
        return self._integration(chosen or step.integration, step.timeout, {}, step.id)

    @staticmethod
    def _integration(spec: str | dict[str, Any] | None, timeout: float | None, context: Any,
                     step_id: str) -> Integration:
        integration = select_integration(spec, context, step=step_id)
        if timeout is not None:
            integration = integration.model_copy(
                update={"timeout": integration.timeout.model_copy(update={"read": float(timeout)})})
        return integration

    def integration_health(self, name: str) -> dict[str, Any] | None:
        return self.store.integration_health(name)

    # after a step -----------------------------------------------------------------------------
    def complete(self, run_id: str, workflow: Workflow, step_id: str, status: str, *, replay: bool) -> None:
        """Transitions, published variables, next steps; then the run ends when nothing is active."""
        if status != "cancelled":
            run_status, variables = self.store.status_and_variables(run_id)
            if run_status != "cancelled":
                step = workflow.step(step_id)
                try:
                    targets, published = workflow.next_steps(step_id, status,
                                                             self.context.build(run_id, workflow, variables=variables))
                except PackError as exc:
                    self.store.note_unhandled(run_id, step_id, exc.to_dict(), replace=True)
                    targets, published = [], {}
                if published:
                    self.store.publish(run_id, published)
                if status == "failed" and not any(t.when in ("failure", "always") for t in (step.on or ())):
                    self.store.note_unhandled(run_id, step_id, {"code": "step_failed",
                                                                "message": f"step {step_id!r} failed"})
                self.activate(run_id, targets, replay=replay)
        _, ends_run = self.store.end_step(run_id, step_id)  # the last active step's first delivery ends the run
        if ends_run:
            self._finish_run(run_id, workflow)

    def activate(self, run_id: str, targets: list[str], *, replay: bool = False) -> None:
        for target in targets:
            if self.store.once(run_id, f"activated:{target}"):
                self.store.count(run_id, "active", 1)
                self.dispatch(run_id, target, None, None)
            elif replay:
                self.dispatch(run_id, target, None, None)

    def _finish_run(self, run_id: str, workflow: Workflow) -> None:
        """The run's status follows from its steps: failed when a step failed with nothing to handle it.

        Called once per run, by the delivery that took its ``finished`` flag (``RunStore.end_step``)."""
        status, unhandled = self.store.ending(run_id)
        output = None
        error = None
        if status != "cancelled":
            if unhandled:
                first_step, first_error = next(iter(unhandled.items()))
                steps = self.store.steps(run_id)
                step_error = (steps.get(first_step) or {}).get("error") or first_error
                error = {"step": first_step, **step_error} if isinstance(step_error, dict) else first_error
                status = "failed"
            else:
                status = "succeeded"
                if workflow.output:
                    try:
                        output = render(workflow.output, self.context.build(run_id, workflow), step="output")
                    except PackError as exc:
                        status, error = "failed", {"step": "output", **exc.to_dict()}
        # Full outputs were kept only for templates; the step and item records keep them, redacted as the
        # workflow asked, so a failed run's paid results stay readable with `runs show`.
        self.store.close(run_id, [s.id for s in workflow.steps if s.with_items is not None], status=status,
                         finished=now_iso(), output=output, error=error)
        self.context.forget(run_id)

    # progress --------------------------------------------------------------------------------------
    def progress(self, run_id: str) -> dict[str, dict[str, int]]:
        """Fan-out steps' done/total, for progress bars."""
        out = {}
        for step_id, record in self.store.steps(run_id).items():
            items = record.get("items")
            if items is not None:
                out[step_id] = {"done": self.store.counter(run_id, f"done:{step_id}"), "total": items["total"]}
        return out

    def wait(self, run_id: str, timeout: float, *, poll: float = 0.05,
             on_progress: Callable[[dict[str, dict[str, int]]], None] | None = None) -> dict[str, Any] | None:
        """Poll until the run ends or ``timeout`` passes; returns the header (None when unknown)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.store.status(run_id)
            if status is None:
                return None
            if on_progress is not None:
                on_progress(self.progress(run_id))
            if status in FINISHED and self.store.flag(run_id, "finished") or time.monotonic() >= deadline:
                return self.store.header(run_id)
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            poll = min(poll * 1.5, 0.5)
