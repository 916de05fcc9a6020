"""The workflow engine: each step is dispatched from saved run state as the one before it finishes.

No Celery chain is compiled: a step task loads the run, renders its inputs, calls the action
through the ledger, saves the result, evaluates transitions and dispatches what comes next.
Every write after the call is either idempotent or guarded by a set-once flag, so a message
delivered twice (worker crash, broker restore) replays the bookkeeping without calling again.

Fan-out (``with_items``) starts ``concurrency`` item tasks; each finishing item claims the next
index, so no more than ``concurrency`` calls of that step are ever in flight.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import actions
from actions import CallOptions
from integration.errors import AuthenticationError, OutcomeUnknownError, PackError, RateLimitedError
from integration.errors import TimeoutError as NoAnswer
from integration.model import Integration
from integration.redact import scrub_data
from integration.store import resolve
from workers.requeue import Requeue
from workers.settings import Settings
from workers.state.kv import StoreError
from workers.state.ledger import Ledger
from workers.state.runs import FINISHED, RunStore, now_iso
from workers.workflow import TemplateError, Workflow, render

if TYPE_CHECKING:
    from workers.state.budget import Budget

__all__ = ["Engine", "Requeue"]

log = logging.getLogger("openai_pack.engine")

#: dispatch(run_id, step_id, item_index or None, countdown seconds or None)
Dispatch = Callable[[str, str, int | None, float | None], None]
REDACTED = "[redacted]"


def _redact(value: Any, paths: tuple[str, ...]) -> Any:
    """Replace each dotted path of the output by a marker (lists are walked element-wise)."""
    if not paths:
        return value

    def walk(node: Any, parts: list[str]) -> Any:
        if isinstance(node, list):
            return [walk(v, parts) for v in node]
        if not isinstance(node, dict) or not parts:
            return node
        head, rest = parts[0], parts[1:]
        if head not in node:
            return node
        return {**node, head: REDACTED if not rest else walk(node[head], rest)}

    for path in paths:
        value = walk(value, path.split("."))
    return value


class Engine:
    """Run state in a ``RunStore``, calls through the ``Ledger``, next steps through ``dispatch``."""

    def __init__(self, store: RunStore, ledger: Ledger, settings: Settings, dispatch: Dispatch,
                 budget: Budget | None = None) -> None:
        self.store = store
        self.budget = budget
        self.ledger = ledger
        self.settings = settings
        self.dispatch = dispatch
        self._workflows: dict[str, Workflow] = {}
        self._fixed: dict[str, tuple[Any, Any]] = {}
        self._steps_seen: dict[tuple[str, str], dict[str, Any]] = {}

    # starting ------------------------------------------------------------------------------
    def start_run(self, workflow: Workflow, raw_inputs: Any, *, trigger: dict[str, Any],
                  idempotency_key: str | None = None) -> tuple[str, bool]:
        """Validate inputs, save the run and dispatch its first step: (run id, newly created)."""
        inputs = workflow.coerce_inputs(raw_inputs)
        run_id, created = self.store.create(workflow=workflow.to_dict(), inputs=inputs, trigger=trigger,
                                            idempotency_key=idempotency_key)
        if created:
            try:
                self._activate(run_id, [workflow.start])
            except Exception as exc:
                if idempotency_key:  # let the sender's retry start the run afresh
                    self.store.kv.delete(f"opk:idem:{idempotency_key}")
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
            if (self.store.step(run_id, step_id) or {}).get("status") not in FINISHED:
                self.store.save_step(run_id, step_id, record)
        elif (self.store.item(run_id, step_id, item) or {}).get("status") not in FINISHED:
            self.store.save_item(run_id, step_id, item, record)
        self.run_step(run_id, step_id, item, owner=f"abandon-{step_id}")  # replays the bookkeeping

    def cancel(self, run_id: str) -> bool:
        """Stop dispatching: steps already calling finish, nothing new starts."""
        status = self.store.status(run_id)
        if status is None or status in FINISHED:
            return False
        self.store.update(run_id, status="cancelled", cancelled=now_iso())
        return True

    def _remember(self, run_id: str, header: dict[str, Any]) -> None:
        if len(self._workflows) > 512:
            self._workflows.clear()
        if len(self._fixed) > 256:
            self._fixed.clear()
        self._workflows[run_id] = Workflow.from_dict(header["definition"] or {})
        self._fixed[run_id] = (header["inputs"] or {}, header["trigger"])

    def workflow(self, run_id: str) -> Workflow:
        cached = self._workflows.get(run_id)
        if cached is None:
            cached = Workflow.from_dict(self.store.definition(run_id))
            if len(self._workflows) > 512:
                self._workflows.clear()
            self._workflows[run_id] = cached
        return cached

    # the step task -----------------------------------------------------------------------------
    def run_step(self, run_id: str, step_id: str, item: int | None, owner: str) -> None:
        """Execute (or replay) one step or one fan-out item. Raises ``Requeue`` to come back later."""
        if run_id in self._workflows and run_id in self._fixed:
            status = self.store.status(run_id)
        else:  # first step of this run seen by this process: everything immutable in one round trip
            header = self.store.fields(run_id, ["status", "definition", "inputs", "trigger"])
            status = header["status"]
            if status is not None:
                self._remember(run_id, header)
        if status is None:
            log.warning("run %s does not exist; dropping step %s", run_id, step_id)
            return
        workflow = self.workflow(run_id)
        step = workflow.step(step_id)
        lease_key = f"{run_id}:{step_id}:{'' if item is None else item}"
        if not self.store.lease(lease_key, owner, ttl=self.settings.visibility_timeout):
            raise Requeue(min(2.0, self.settings.max_countdown), "another delivery of this step is running")
        following = None
        try:
            if step.with_items is not None and item is None:
                self._start_fanout(run_id, workflow, step_id, cancelled=status == "cancelled")
            elif item is None:
                self._run_single(run_id, workflow, step_id, cancelled=status == "cancelled")
            else:
                following = self._run_item(run_id, workflow, step_id, item, cancelled=status == "cancelled")
        finally:
            self.store.release(lease_key, owner)
        if following is not None:
            self._continue_slot(run_id, workflow, step_id, following, owner, cancelled=status == "cancelled")

    def _continue_slot(self, run_id: str, workflow: Workflow, step_id: str, index: int | None, owner: str, *,
                       cancelled: bool) -> None:
        """Keep a fan-out slot busy: run the next claimed item in this task instead of a new message.

        A message per item costs Celery's own overhead (publish, receive, ack) on every item; a slot
        that carries on saves it. The loop is bounded to a quarter of the visibility timeout, so the
        message it started from is acknowledged long before it could be redelivered; then the next
        item goes back to the queue. After a crash the redelivered message replays the slot's chain
        (finished items are skipped through the ledger and their records) up to where it stopped.
        """
        deadline = time.monotonic() + min(30.0, self.settings.visibility_timeout / 4)
        done_here = 0
        while index is not None:
            if time.monotonic() > deadline:
                self.dispatch(run_id, step_id, index, None)
                return
            lease_key = f"{run_id}:{step_id}:{index}"
            if not self.store.lease(lease_key, owner, ttl=self.settings.visibility_timeout):
                return  # another delivery is running this item; it carries the chain on
            try:
                done_here += 1
                if not cancelled and done_here % 20 == 0:
                    cancelled = self.store.status(run_id) == "cancelled"
                index = self._run_item(run_id, workflow, step_id, index, cancelled=cancelled)
            except Requeue as wait:  # this item must wait (rate budget): it waits on the queue, alone
                self.dispatch(run_id, step_id, index, min(wait.countdown, self.settings.max_countdown))
                return
            finally:
                self.store.release(lease_key, owner)

    # single steps ----------------------------------------------------------------------------
    def _run_single(self, run_id: str, workflow: Workflow, step_id: str, *, cancelled: bool) -> None:
        record = self.store.step(run_id, step_id) or {}
        replay = record.get("status") in FINISHED
        if not replay:
            ops: list[Any] = []
            if cancelled:
                record = {"status": "cancelled", "finished": now_iso()}
            else:
                record, full_output, ops = self._execute(run_id, workflow, step_id, record, None, None)
                if full_output is not None:
                    ops.append(("hset", (self.store._run(run_id, "ctx"), {step_id: _json(full_output)}), {}))
            ops.append(self.store.save_step_op(run_id, step_id, record))
            self.store.kv.batch(ops)  # ledger "done", full output, record: in this order, one round trip
        self._complete(run_id, workflow, step_id, record["status"], replay=replay)

    def _execute(self, run_id: str, workflow: Workflow, step_id: str, record: dict[str, Any],
                 item: Any, index: int | None) -> tuple[dict[str, Any], Any, list[Any]]:
        """Render, call through the ledger, and build the record (redacted) plus the full output."""
        step = workflow.step(step_id)
        record = {"status": "running", "action": step.action, "attempts": int(record.get("attempts") or 0),
                  "started": record.get("started") or now_iso(), "requeues": int(record.get("requeues") or 0)}
        ledger_key = f"{run_id}:{step_id}:{'' if index is None else index}"
        try:
            context = self.context(run_id, workflow, item=item, index=index, has_item=index is not None)
            inputs = render(step.input, context, step=step_id)
            integration = self._integration(step.integration, step.timeout)
            options = self.call_options(max_retries=step.retries)
            result = self._call(step.action, inputs, integration, options, ledger_key, step_id)
        except Requeue:
            raise
        except RateLimitedError as exc:
            requeues = self._requeue_count(run_id, ledger_key)
            if exc.retryable and exc.retry_after is not None and requeues <= self.settings.max_requeues:
                raise Requeue(min(exc.retry_after, self.settings.max_countdown),
                              f"rate limited; retry after {exc.retry_after:g}s") from None
            return self._failed(record, exc), None, []
        except PackError as exc:
            return self._failed(record, exc), None, []
        except (OSError, ConnectionError, *StoreError):
            raise  # the store is unreachable: the task retries; the call itself is covered by the ledger
        except Exception as exc:  # a bug must still end the step, not wedge the run
            log.exception("step %s of run %s raised unexpectedly", step_id, run_id)
            return self._failed(record, PackError(f"internal error: {type(exc).__name__}: {exc}")), None, []
        record.update(status="succeeded", finished=now_iso(), output=_redact(result["output"], step.redact),
                      usage=result.get("usage") or {}, attempts=record["attempts"] + int(result.get("attempts") or 0),
                      request_ids=result.get("request_ids") or [], replayed=bool(result.get("replayed")))
        done = result.pop("_done_op", None)
        return record, result["output"], [done] if done else []

    def call_options(self, *, max_retries: int | None = None) -> CallOptions:
        """Short inline waits (longer ones are re-queued) and the shared rate budget."""
        return CallOptions(max_inline_wait=self.settings.max_inline_wait, max_retries=max_retries,
                           before_request=self.budget.before_request if self.budget else None,
                           after_response=self.budget.after_response if self.budget else None)

    def _requeue_count(self, run_id: str, ledger_key: str) -> int:
        return self.store.count(run_id, f"requeues:{ledger_key}")

    @staticmethod
    def _failed(record: dict[str, Any], error: PackError) -> dict[str, Any]:
        record.update(status="failed", finished=now_iso(), error=scrub_data(error.to_dict()),
                      attempts=record["attempts"] + int(error.details.get("attempts") or 1))
        return record

    @staticmethod
    def _integration(name: str | None, timeout: float | None) -> Integration:
        integration = resolve(name)
        if timeout is not None:
            integration = integration.model_copy(
                update={"timeout": integration.timeout.model_copy(update={"read": float(timeout)})})
        return integration

    def _call(self, action: str, inputs: Any, integration: Integration, options: CallOptions,
              ledger_key: str, step_id: str) -> dict[str, Any]:
        """One action call guarded by the ledger: done before → stored result; claimed before → maybe unknown."""
        manifest = actions.get(action)
        prepared = actions.prepare(action, inputs)  # bad input fails here, before any claim
        stored = self.ledger.begin(ledger_key, idempotent=manifest.is_idempotent, what=f"step {step_id!r}")
        if stored is not None:
            return stored | {"replayed": True}
        try:
            result = actions.execute(action, prepared, integration, options=options, already_prepared=True)
        except OutcomeUnknownError:
            raise
        except NoAnswer as exc:
            if manifest.is_idempotent:
                self.ledger.release(ledger_key)
                raise
            # The request may have been processed (and billed): the claim stays, nothing repeats it.
            raise OutcomeUnknownError(f"step {step_id!r}: {exc.message}", cause=exc.code,
                                      attempts=exc.details.get("attempts")) from None
        except PackError as exc:
            self.ledger.release(ledger_key)
            if isinstance(exc, AuthenticationError):
                self.mark_integration(integration.name, exc)
            raise
        except BaseException:
            self.ledger.release(ledger_key)
            raise
        stored = {"output": result.output, "usage": result.usage, "attempts": result.attempts,
                  "request_ids": result.request_ids}
        return stored | {"_done_op": self.ledger.done_op(ledger_key, stored)}

    def mark_integration(self, name: str, error: PackError) -> None:
        """A 401 means every later step with this integration will fail too: say so where `check` looks."""
        self.store.kv.set(f"opk:health:{name}", _json({"ok": False, "at": now_iso(), "error": error.to_dict()}),
                          ttl=7 * 24 * 3600)

    def integration_health(self, name: str) -> dict[str, Any] | None:
        raw = self.store.kv.get(f"opk:health:{name}")
        return None if raw is None else _unjson(raw)

    # fan-out ------------------------------------------------------------------------------------
    def _start_fanout(self, run_id: str, workflow: Workflow, step_id: str, *, cancelled: bool) -> None:
        step = workflow.step(step_id)
        record = self.store.step(run_id, step_id) or {}
        if record.get("status") in FINISHED:
            self._complete(run_id, workflow, step_id, record["status"], replay=True)
            return
        if cancelled:
            self.store.save_step(run_id, step_id, {"status": "cancelled", "finished": now_iso()})
            self._complete(run_id, workflow, step_id, "cancelled", replay=False)
            return
        first = self.store.once(run_id, f"fanout:{step_id}")
        if first:
            try:
                items = render(step.with_items, self.context(run_id, workflow), step=step_id)
                if not isinstance(items, list):
                    raise TemplateError(f"step {step_id!r}: with_items must give a list, got {type(items).__name__}",
                                        step=step_id, expression=str(step.with_items), reason="not a list")
            except PackError as exc:
                failed = self._failed({"attempts": 0, "started": now_iso()}, exc)
                self.store.save_step(run_id, step_id, failed | {"action": step.action})
                self._complete(run_id, workflow, step_id, "failed", replay=False)
                return
            self.store.save_item_inputs(run_id, step_id, items)
            self.store.save_step(run_id, step_id, {"status": "running", "action": step.action, "started": now_iso(),
                                                   "items": {"total": len(items)}, "attempts": 0})
            self.store.count(run_id, f"next:{step_id}", min(step.concurrency, len(items)))
        total = self.store.item_total(run_id, step_id)
        if total == 0:
            self._finish_fanout(run_id, workflow, step_id)
            return
        for index in range(min(step.concurrency, total)):
            self.dispatch(run_id, step_id, index, None)

    def _run_item(self, run_id: str, workflow: Workflow, step_id: str, index: int, *,
                  cancelled: bool) -> int | None:
        """Run (or replay) one item; returns the index this slot should run next, if any."""
        total, record, item = self.store.item_state(run_id, step_id, index)
        record = record or {}
        replay = record.get("status") in FINISHED
        if not replay:
            ops = []
            if cancelled:
                record = {"status": "cancelled", "finished": now_iso()}
            else:
                record, full_output, ops = self._execute(run_id, workflow, step_id, record, item, index)
                if full_output is not None:
                    ops.append(("hset", (self.store._run(run_id, f"ctx:{step_id}"), {str(index): _json(full_output)}),
                                {}))
            ops.append(self.store.save_item_op(run_id, step_id, index, record))
            self.store.kv.batch(ops)
        done, following, first_claim = self.store.finish_item(run_id, step_id, index,
                                                              failed=record["status"] != "succeeded")
        if done >= total:
            self._finish_fanout(run_id, workflow, step_id)
        # A replay carries on too, in case the first run of the chain stopped here.
        return following if following < total and (first_claim or replay) else None

    def _finish_fanout(self, run_id: str, workflow: Workflow, step_id: str) -> None:
        """All items ended: the step's output is the list of item outputs, in item order."""
        record = self.store.step(run_id, step_id) or {}
        if record.get("status") not in FINISHED:
            total = self.store.item_total(run_id, step_id)
            usage: dict[str, int] = {}
            attempts = 0
            failed: list[int] = []
            first_error: dict[str, Any] = {}
            # In chunks: a 100,000-item step never has every item record in memory at once.
            for start, chunk in self.store.item_chunks(run_id, f"items:{step_id}", total):
                for offset, entry in enumerate(chunk):
                    entry = entry or {}
                    attempts += int(entry.get("attempts") or 0)
                    for key, value in (entry.get("usage") or {}).items():
                        usage[key] = usage.get(key, 0) + int(value)
                    if entry.get("status") != "succeeded":
                        if not failed:
                            first_error = entry.get("error") or {}
                        failed.append(start + offset)
            status = "failed" if failed else "succeeded"
            record.update(status=status, finished=now_iso(), usage=usage, attempts=attempts,
                          items={"total": total, "succeeded": total - len(failed), "failed": len(failed)})
            if failed:
                record["error"] = {"code": "items_failed", "message": f"{len(failed)} of {total} items failed "
                                   f"(first: item {failed[0]}: {first_error.get('message', 'cancelled')})",
                                   "failed_items": failed[:100]}
            self.store.save_step(run_id, step_id, record)
        self._complete(run_id, workflow, step_id, record["status"], replay=True)

    # after a step -----------------------------------------------------------------------------
    def _complete(self, run_id: str, workflow: Workflow, step_id: str, status: str, *, replay: bool) -> None:
        """Transitions, published variables, next steps; then the run ends when nothing is active."""
        if status != "cancelled" and self.store.status(run_id) != "cancelled":
            step = workflow.step(step_id)
            try:
                targets, published = workflow.next_steps(step_id, status, self.context(run_id, workflow))
            except PackError as exc:
                self.store.set_flag(run_id, f"unhandled:{step_id}", _json(scrub_data(exc.to_dict())))
                targets, published = [], {}
            if published:
                self.store.publish(run_id, published)
            if status == "failed" and not any(t.when in ("failure", "always") for t in (step.on or ())):
                self.store.once(run_id, f"unhandled:{step_id}", _json({"code": "step_failed",
                                                                      "message": f"step {step_id!r} failed"}))
            self._activate(run_id, targets, replay=replay)
        if self.store.once(run_id, f"finished:{step_id}"):
            remaining = self.store.count(run_id, "active", -1)
        else:
            remaining = self.store.counter(run_id, "active")
        if remaining <= 0:
            self._finish_run(run_id, workflow)

    def _activate(self, run_id: str, targets: list[str], *, replay: bool = False) -> None:
        for target in targets:
            if self.store.once(run_id, f"activated:{target}"):
                self.store.count(run_id, "active", 1)
                self.dispatch(run_id, target, None, None)
            elif replay:
                self.dispatch(run_id, target, None, None)

    def _finish_run(self, run_id: str, workflow: Workflow) -> None:
        if not self.store.once(run_id, "finished"):
            return
        status = self.store.status(run_id)
        flags = self.store.kv.hgetall(self.store._run(run_id, "flags"))
        unhandled = {k.split(":", 1)[1]: _unjson(v) for k, v in flags.items() if k.startswith("unhandled:")}
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
                        output = render(workflow.output, self.context(run_id, workflow), step="output")
                    except PackError as exc:
                        status, error = "failed", {"step": "output", **exc.to_dict()}
        self.store.update(run_id, status=status, finished=now_iso(), output=output, error=error)
        self._purge_context(run_id, workflow)

    def _purge_context(self, run_id: str, workflow: Workflow) -> None:
        """Full outputs were kept only for templates; the record keeps the redacted ones."""
        keys = [self.store._run(run_id, "ctx")]
        keys += [self.store._run(run_id, f"ctx:{s.id}") for s in workflow.steps if s.with_items is not None]
        self.store.kv.delete(*keys)
        self._workflows.pop(run_id, None)
        self._fixed.pop(run_id, None)
        for key in [k for k in self._steps_seen if k[0] == run_id]:
            self._steps_seen.pop(key, None)

    # context -------------------------------------------------------------------------------------
    def context(self, run_id: str, workflow: Workflow, *, item: Any = None, index: int | None = None,
                has_item: bool = False) -> dict[str, Any]:
        """What templates see: inputs, steps (status, output, error), vars, run; item/index in a fan-out.

        Steps are read lazily, one by one as templates name them, and inputs and finished steps are
        cached (neither changes): a step's cost does not grow with the length of the workflow.
        """
        fixed = self._fixed.get(run_id)
        if fixed is None:
            fixed = (self.store.field(run_id, "inputs") or {}, self.store.field(run_id, "trigger"))
            if len(self._fixed) > 256:
                self._fixed.clear()
            self._fixed[run_id] = fixed
        context: dict[str, Any] = {
            "inputs": fixed[0], "steps": _LazySteps(self, run_id), "vars": self.store.variables(run_id),
            "run": {"id": run_id, "workflow": workflow.name, "trigger": fixed[1]},
        }
        if has_item:
            context["item"], context["index"] = item, index
        return context

    def step_view(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        """One step as templates see it; finished steps are cached."""
        key = (run_id, step_id)
        cached = self._steps_seen.get(key)
        if cached is not None:
            return cached
        record = self.store.step(run_id, step_id)
        if record is None:
            return None
        if record.get("items") is not None and record.get("status") in FINISHED:
            # A fan-out's output is its items' outputs in order, read only when a template asks for it.
            total = int(record["items"].get("total") or 0)
            output: Any = [item for _, chunk in self.store.item_chunks(run_id, f"ctx:{step_id}", total)
                           for item in chunk]
        else:
            full = self.store.kv.hget(self.store._run(run_id, "ctx"), step_id)
            output = _unjson(full) if full is not None else record.get("output")
        view = {"status": record.get("status"), "error": record.get("error"), "usage": record.get("usage"),
                "output": output}
        if record.get("status") in FINISHED:
            if len(self._steps_seen) > 1024:
                self._steps_seen.clear()
            self._steps_seen[key] = view
        return view

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


class _LazySteps(Mapping[str, Any]):
    """``steps`` in templates: each step is fetched when a template names it."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self._engine, self._run_id = engine, run_id
        self._seen: dict[str, Any] = {}

    def __getitem__(self, step_id: str) -> Any:
        if step_id not in self._seen:
            view = self._engine.step_view(self._run_id, step_id)
            if view is None:
                raise KeyError(step_id)
            self._seen[step_id] = view
        return self._seen[step_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._engine.store.steps(self._run_id))

    def __len__(self) -> int:
        return len(self._engine.store.steps(self._run_id))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _unjson(raw: str) -> Any:
    return json.loads(raw)
