"""Fan-out (``with_items``): ``concurrency`` item chains start; each finishing item claims the next index.

So no more than ``concurrency`` calls of the step are ever in flight, and a chain that finishes an
item carries on with the next one in the same task (a message per item would cost Celery's own
overhead on every item). The chains travel in *slot* messages of up to ``slot_width`` chains each;
a slot task runs its chains together on the process's event loop (``workers.engine.inflight``), so
one worker thread holds hundreds of calls in flight. With ``slot_width`` 1 (or no slot dispatch,
as in unit tests) every chain is a step message of its own, run on a pool thread.
The step's output is the list of its items' outputs, in item order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from integration.errors import PackError
from workers.engine.inflight import executor
from workers.requeue import Requeue
from workers.state.runs import FINISHED, OpenedItem, now_iso
from workers.workflow import TemplateError, Workflow, render

if TYPE_CHECKING:
    from workers.engine.lifecycle import Engine

__all__ = ["FanOut", "Left", "SlotDispatch"]

#: dispatch_slot(run_id, step_id, chain heads, countdown seconds or None): one slot message
SlotDispatch = Callable[[str, str, list[int], float | None], None]


class Left(NamedTuple):
    """Where a chain stopped without finishing: the next item, and whether another delivery holds it."""

    index: int
    busy: bool


class FanOut:
    """The fan-out half of the engine; it shares the engine's store, dispatch and step execution."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store

    def start(self, run_id: str, workflow: Workflow, step_id: str, *, cancelled: bool) -> None:
        """Render the item list once, save it, and start the first ``concurrency`` slots."""
        engine, step = self.engine, workflow.step(step_id)
        record = self.store.step(run_id, step_id) or {}
        if record.get("status") in FINISHED:
            engine.complete(run_id, workflow, step_id, record["status"], replay=True)
            return
        if step.mode == "batch":  # the items go to the Batch API (workers.engine.batchmode)
            engine.batches.run(run_id, workflow, step_id, cancelled=cancelled)
            return
        if cancelled:
            self.store.save_step(run_id, step_id, {"status": "cancelled", "finished": now_iso()})
            engine.complete(run_id, workflow, step_id, "cancelled", replay=False)
            return
        if self.store.once(run_id, f"fanout:{step_id}"):
            try:
                items = render(step.with_items, engine.context.build(run_id, workflow), step=step_id)
                if not isinstance(items, list):
                    raise TemplateError(f"step {step_id!r}: with_items must give a list, got {type(items).__name__}",
                                        step=step_id, expression=str(step.with_items), reason="not a list")
            except PackError as exc:
                failed = engine.failed({"attempts": 0, "started": now_iso()}, exc)
                self.store.save_step(run_id, step_id, failed | {"action": step.action})
                engine.complete(run_id, workflow, step_id, "failed", replay=False)
                return
            self.store.save_item_inputs(run_id, step_id, items)
            self.store.save_step(run_id, step_id, {"status": "running", "action": step.action, "started": now_iso(),
                                                   "items": {"total": len(items)}, "attempts": 0})
            self.store.count(run_id, f"next:{step_id}", min(step.concurrency, len(items)))
        total = self.store.item_total(run_id, step_id)
        if total == 0:
            self.finish(run_id, workflow, step_id)
            return
        heads = list(range(min(step.concurrency, total)))
        width = engine.settings.slot_width
        if engine.dispatch_slot is None or width <= 1:
            for index in heads:
                engine.dispatch(run_id, step_id, index, None)
            return
        for first in range(0, len(heads), width):
            engine.dispatch_slot(run_id, step_id, heads[first:first + width], None)

    def run_item(self, run_id: str, workflow: Workflow, step_id: str, index: int, *, cancelled: bool,
                 opened: OpenedItem | None = None, lease: tuple[str, str] | None = None) -> int | None:
        """Run (or replay) one item; returns the index this slot should run next, if any.

        ``opened`` is the item's state when the caller read it with its lease; that lease (key, owner) is
        released in the same round trip as the item's record and its count, after them."""
        if opened is None:
            opened = self.store.open_item(run_id, step_id, index)
        total, record = opened.total, opened.record or {}
        replay = record.get("status") in FINISHED
        full_output, done = None, []
        if not replay:
            if cancelled:
                record = {"status": "cancelled", "finished": now_iso()}
            else:
                record, full_output, done = self.engine.execute(run_id, workflow, step_id, record, opened.item, index,
                                                                variables=opened.variables)
        release = [self.store.leases.release_op(*lease)] if lease else None  # the heartbeat stops keeping it now
        saved, done_count, following, first_claim = self.store.end_item(
            run_id, step_id, index, None if replay else record, full_output, before=done, after=release)
        if not replay and not saved:
            # another delivery ended this item meanwhile: its record stands (this answer is in the ledger)
            replay = True
        if done_count >= total:
            self.finish(run_id, workflow, step_id)
        # A replay carries on too, in case the first run of the chain stopped here.
        return following if following < total and (first_claim or replay) else None

    def continue_slot(self, run_id: str, workflow: Workflow, step_id: str, index: int | None, owner: str, *,
                      cancelled: bool) -> None:
        """Keep a fan-out slot busy: run the next claimed item in this task instead of a new message.

        The loop is bounded to a quarter of the visibility timeout (RabbitMQ: of its consumer
        timeout), so the message it started from is acknowledged long before it could be
        redelivered (or its channel closed); then the next item goes back to the queue. After a
        crash the redelivered message replays the slot's chain (finished items are skipped through
        the ledger and their records) up to where it stopped.
        """
        left = self._chain(run_id, workflow, step_id, index, owner, cancelled=cancelled, deadline=self._deadline())
        if left is not None:
            self.engine.dispatch(run_id, step_id, left.index,
                                 min(2.0, self.engine.settings.max_countdown) if left.busy else None)

    def run_slot(self, run_id: str, step_id: str, heads: list[int], owner: str) -> None:
        """Run (or replay) a slot message's chains together on the event loop, each from its head.

        Chains that reach the deadline go back to the queue together, as one slot message; a chain
        whose next item another delivery still runs (a call outliving the visibility timeout, or a
        crashed worker's lease not lapsed yet) comes back in 2 s, as a step message in that case
        does. A chain that raised (the store went away) makes
        the whole message raise once every other chain has ended, so the task retries it: replaying
        a chain from its head is safe (finished items are skipped through their records, a claimed
        paid call is never repeated).
        """
        engine = self.engine
        status = engine.run_status(run_id)
        if status is None:
            return
        workflow = engine.workflow(run_id)
        deadline = self._deadline()
        cancelled = status == "cancelled"

        def chain(head: int) -> Callable[[], Left | None]:
            return lambda: self._chain(run_id, workflow, step_id, head, f"{owner}:{head}", cancelled=cancelled,
                                       deadline=deadline, slot=True)

        outcomes = executor().run_all([chain(head) for head in heads], loops=engine.settings.inflight_loops,
                                      working=engine.settings.inflight_working)
        assert engine.dispatch_slot is not None
        for busy in (False, True):
            left = [o.index for o in outcomes if isinstance(o, Left) and o.busy is busy]
            if left:
                engine.dispatch_slot(run_id, step_id, left, min(2.0, engine.settings.max_countdown) if busy else None)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _deadline(self) -> float:
        """A slot works at most a quarter of the visibility timeout (RabbitMQ: of its consumer timeout): its
        message is acknowledged long before it could be redelivered (or its channel closed)."""
        return time.monotonic() + min(30.0, self.engine.settings.redelivery_after / 4)

    def _chain(self, run_id: str, workflow: Workflow, step_id: str, index: int | None, owner: str, *,
               cancelled: bool, deadline: float, slot: bool = False) -> Left | None:
        """Run items from ``index`` on, each claiming the next; returns what is left for another message."""
        engine = self.engine
        done_here = 0
        leases, ttl = self.store.leases, engine.settings.lease_ttl
        while index is not None:
            if done_here and time.monotonic() > deadline:  # every chain runs at least its first item
                return Left(index, busy=False)
            lease_key = f"{run_id}:{step_id}:{index}"
            opened = self.store.open_item(run_id, step_id, index, lease=leases.acquire_op(lease_key, owner, ttl))
            if not opened.leased:
                # Another delivery holds this item: look again in 2 s, as a step message does. Trusting it
                # to carry the chain on stopped the chain when it was a crashed worker's lease that had
                # not lapsed yet (RabbitMQ hands a dead worker's messages back at once, and the replay
                # of the chain reaches the item that was in flight).
                return Left(index, busy=True)
            leases.hold(lease_key, owner, ttl)
            released = False
            try:
                done_here += 1
                if not cancelled and done_here % 20 == 0:
                    cancelled = self.store.status(run_id) == "cancelled"
                following = self.run_item(run_id, workflow, step_id, index, cancelled=cancelled, opened=opened,
                                          lease=(lease_key, owner))
                released = True  # with the item's record
                index = following
            except Requeue as wait:  # this item must wait (rate budget): it waits on the queue, alone
                countdown = min(wait.countdown, engine.settings.max_countdown)
                if slot and engine.dispatch_slot is not None:  # it comes back to the event loop
                    engine.dispatch_slot(run_id, step_id, [index], countdown)
                else:
                    engine.dispatch(run_id, step_id, index, countdown)
                return None
            finally:
                if not released:
                    leases.release(lease_key, owner)
        return None

    def finish(self, run_id: str, workflow: Workflow, step_id: str) -> None:
        """All items ended: sum usage and attempts, list the failed items, then complete the step."""
        record = self.store.step(run_id, step_id) or {}
        if record.get("status") not in FINISHED:
            total = self.store.item_total(run_id, step_id)
            usage: dict[str, int] = {}
            attempts = 0
            failed: list[int] = []
            first_error: dict[str, Any] = {}
            # In chunks: a 100,000-item step never has every item record in memory at once.
            for start, chunk in self.store.item_record_chunks(run_id, step_id, total):
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
        self.engine.complete(run_id, workflow, step_id, record["status"], replay=True)
