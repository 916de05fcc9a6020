"""Run records: the saved state every step is dispatched from, and what `runs show` prints.

Layout (all keys under ``opk:``): ``run:<id>`` holds the header fields (each JSON), ``run:<id>:steps``
one JSON record per step, ``run:<id>:items:<step>`` one per fan-out item, ``run:<id>:ctr`` the
counters and ``run:<id>:flags`` the set-once flags that make replays after a redelivery harmless.
Everything written here has been through ``scrub_data``: a key never reaches the store.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from integration.redact import scrub_data
from workers.state.kv import KV, Op
from workers.state.leases import Leases
from workers.state.signatures import SeenSignatures

__all__ = ["FINISHED", "OpenedItem", "OpenedStep", "RunStore", "now_iso", "sum_costs"]

PREFIX = "opk:"
FINISHED = ("succeeded", "failed", "cancelled")
#: How long an Idempotency-Key (webhook) or schedule tick is remembered.
IDEMPOTENCY_TTL = 7 * 24 * 3600


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """Sortable by time, unguessable: the id is also what a webhook caller polls."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)


def _dump(value: Any) -> str:
    return json.dumps(scrub_data(value), separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    """Full outputs for templates: kept as they are (scrubbing happens in the action layer)."""
    return json.dumps(value, separators=(",", ":"), default=str)


def _load(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def _dump_values(values: dict[str, Any]) -> dict[str, str]:
    """Header fields as stored: each value as scrubbed JSON."""
    return {k: _dump(v) for k, v in values.items()}


def _load_values(raw: dict[str, str]) -> dict[str, Any]:
    """A hash of JSON values (a header, the variables, the step records), each decoded."""
    return {k: _load(v) for k, v in raw.items()}


class OpenedStep(NamedTuple):
    """``RunStore.open_step``: whether the lease is held, the header fields asked for, the step's record, variables."""

    leased: bool
    header: dict[str, Any]
    record: dict[str, Any] | None
    variables: dict[str, Any]


class OpenedItem(NamedTuple):
    """``RunStore.open_item``: whether the lease is held, the item count, the item's record and input, variables."""

    leased: bool
    total: int
    record: dict[str, Any] | None
    item: Any
    variables: dict[str, Any]


class RunStore:
    """Typed access to run state in a ``KV``; no caching of anything mutable."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        #: One live execution per step (or item), kept alive while it runs.
        self.leases = Leases(kv, prefix=f"{PREFIX}lease:")
        #: Signed webhook requests already accepted (replays inside the signature window map to their run).
        self.signatures = SeenSignatures(kv)
        #: Fan-outs' item counts seen by this process (written once when the fan-out starts, never changed).
        self._totals: dict[tuple[str, str], int] = {}

    # keys -------------------------------------------------------------------------------
    @staticmethod
    def _run(run_id: str, part: str = "") -> str:
        return f"{PREFIX}run:{run_id}{':' + part if part else ''}"

    def ping(self) -> bool:
        """The store answers (health checks)."""
        return self.kv.ping()

    # creating ---------------------------------------------------------------------------
    def create(self, *, workflow: dict[str, Any], inputs: dict[str, Any], trigger: dict[str, Any],
               idempotency_key: str | None = None) -> tuple[str, bool]:
        """A new run, or the existing one when ``idempotency_key`` was seen before: (run id, created)."""
        run_id = new_run_id()
        if idempotency_key:
            key = f"{PREFIX}idem:{idempotency_key}"
            if not self.kv.set(key, run_id, nx=True, ttl=IDEMPOTENCY_TTL):
                existing = self.kv.get(key)
                if existing:
                    return existing, False
        header = {
            "id": run_id, "workflow": workflow["name"], "trigger": trigger, "status": "running",
            "created": now_iso(), "started": now_iso(), "finished": None, "output": None, "error": None,
            "inputs": inputs, "definition": workflow, "idempotency_key": idempotency_key,
        }
        try:
            self.kv.batch([("hset", (self._run(run_id), _dump_values(header)), {}),
                           ("zadd", (f"{PREFIX}runs", run_id, time.time()), {})])
        except Exception:
            if idempotency_key:  # never leave the key pointing at a run that was not saved
                self.kv.delete(f"{PREFIX}idem:{idempotency_key}")
            raise
        return run_id, True

    # header -----------------------------------------------------------------------------
    def header(self, run_id: str) -> dict[str, Any] | None:
        raw = self.kv.hgetall(self._run(run_id))
        if not raw:
            return None
        return _load_values(raw)

    def field(self, run_id: str, name: str) -> Any:
        return _load(self.kv.hget(self._run(run_id), name))

    def fields(self, run_id: str, names: list[str]) -> dict[str, Any]:
        """Several header fields in one round trip."""
        return {n: _load(v) for n, v in zip(names, self.kv.hmget(self._run(run_id), names), strict=True)}

    def status(self, run_id: str) -> str | None:
        return self.field(run_id, "status")  # type: ignore[no-any-return]

    def _status_op(self, run_id: str) -> Op:
        """``status`` as a batch entry; its result goes through ``_load``."""
        return ("hget", (self._run(run_id), "status"), {})

    def update(self, run_id: str, **fields: Any) -> None:
        self.kv.hset(self._run(run_id), _dump_values(fields))

    def definition(self, run_id: str) -> dict[str, Any]:
        """The workflow as it was when the run started (later edits of the file do not apply)."""
        return self.field(run_id, "definition") or {}  # type: ignore[no-any-return]

    # published variables -------------------------------------------------------------------
    def variables(self, run_id: str) -> dict[str, Any]:
        return _load_values(self.kv.hgetall(self._run(run_id, "vars")))

    def _variables_op(self, run_id: str) -> Op:
        """``variables`` as a batch entry; its result goes through ``_load_values``."""
        return ("hgetall", (self._run(run_id, "vars"),), {})

    def publish(self, run_id: str, values: dict[str, Any]) -> None:
        self.kv.hset(self._run(run_id, "vars"), _dump_values(values))

    # steps and items -----------------------------------------------------------------------
    def step(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        return _load(self.kv.hget(self._run(run_id, "steps"), step_id))  # type: ignore[no-any-return]

    def steps(self, run_id: str) -> dict[str, dict[str, Any]]:
        return _load_values(self.kv.hgetall(self._run(run_id, "steps")))

    def save_step(self, run_id: str, step_id: str, record: dict[str, Any]) -> None:
        self.kv.hset(self._run(run_id, "steps"), {step_id: _dump(record)})

    def item(self, run_id: str, step_id: str, index: int) -> dict[str, Any] | None:
        return _load(self.kv.hget(self._run(run_id, f"items:{step_id}"), str(index)))  # type: ignore[no-any-return]

    def items(self, run_id: str, step_id: str) -> dict[int, dict[str, Any]]:
        raw = self.kv.hgetall(self._run(run_id, f"items:{step_id}"))
        return {int(k): _load(v) for k, v in raw.items()}

    def item_record_chunks(self, run_id: str, step_id: str, total: int,
                           size: int = 1000) -> Iterator[tuple[int, list[Any]]]:
        """``(start, records)`` of a fan-out's items in index order, ``size`` at a time (None where missing)."""
        return self._chunks(self._run(run_id, f"items:{step_id}"), total, size)

    def _chunks(self, key: str, total: int, size: int = 1000) -> Iterator[tuple[int, list[Any]]]:
        for start in range(0, total, size):
            fields = [str(i) for i in range(start, min(start + size, total))]
            yield start, [_load(v) for v in self.kv.hmget(key, fields)]

    def item_input_chunks(self, run_id: str, step_id: str, total: int,
                          size: int = 1000) -> Iterator[tuple[int, list[Any]]]:
        """``(start, items)`` of a fan-out's rendered items in index order, ``size`` at a time."""
        return self._chunks(self._run(run_id, f"fanout:{step_id}"), total, size)

    def save_item_inputs(self, run_id: str, step_id: str, items: list[Any]) -> None:
        """One field per item, so an item task reads its own item, not the whole list."""
        key = self._run(run_id, f"fanout:{step_id}")
        for start in range(0, len(items), 1000):
            self.kv.hset(key, {str(i): _dump(items[i]) for i in range(start, min(start + 1000, len(items)))})
        self.kv.hset(self._run(run_id, "fanout_total"), {step_id: str(len(items))})

    def item_total(self, run_id: str, step_id: str) -> int:
        return int(self.kv.hget(self._run(run_id, "fanout_total"), step_id) or 0)

    def open_item(self, run_id: str, step_id: str, index: int, *, lease: Op | None = None) -> OpenedItem:
        """What running one fan-out item needs, in one round trip: ``lease`` (a ``Leases.acquire_op``) first,
        then the item count, the item's record and input, and the run's published variables."""
        ops: list[Op] = [] if lease is None else [lease]
        known = self._totals.get((run_id, step_id))  # a fan-out's item count never changes once saved
        if known is None:
            ops.append(("hget", (self._run(run_id, "fanout_total"), step_id), {}))
        ops += [("hget", (self._run(run_id, f"items:{step_id}"), str(index)), {}),
                ("hget", (self._run(run_id, f"fanout:{step_id}"), str(index)), {}), self._variables_op(run_id)]
        results = self.kv.batch(ops)
        leased = bool(results.pop(0)) if lease is not None else True
        total = known if known is not None else int(results.pop(0) or 0)
        if known is None and total:
            if len(self._totals) > 4096:
                self._totals.clear()
            self._totals[(run_id, step_id)] = total
        record, item, variables = results
        return OpenedItem(leased, total, _load(record), _load(item), _load_values(variables))

    def open_step(self, run_id: str, step_id: str, fields: list[str], *, lease: Op) -> OpenedStep:
        """What running a step needs, in one round trip: ``lease`` (a ``Leases.acquire_op``) first, then the
        run's header ``fields``, the step's record and the run's published variables."""
        leased, header, record, variables = self.kv.batch([
            lease, ("hmget", (self._run(run_id), fields), {}), ("hget", (self._run(run_id, "steps"), step_id), {}),
            self._variables_op(run_id)])
        return OpenedStep(bool(leased), {n: _load(v) for n, v in zip(fields, header, strict=True)}, _load(record),
                          _load_values(variables))

    def status_and_variables(self, run_id: str) -> tuple[str | None, dict[str, Any]]:
        """The run's status and published variables, in one round trip (a step's transitions need both)."""
        status, variables = self.kv.batch([self._status_op(run_id), self._variables_op(run_id)])
        return _load(status), _load_values(variables)

    def end_step(self, run_id: str, step_id: str) -> tuple[int, bool]:
        """The step leaves the run's active count (once) and, when none is left, the run's ``finished`` flag is
        taken (once): (steps still active, whether this call took the flag). One atomic operation."""
        return self.kv.end_step(self._run(run_id, "flags"), self._run(run_id, "ctr"), step_id)

    def ending(self, run_id: str) -> tuple[str | None, dict[str, dict[str, Any]]]:
        """What ending a run needs, in one round trip: its status and its unhandled failures (see ``unhandled``)."""
        status, flags = self.kv.batch([self._status_op(run_id), ("hgetall", (self._run(run_id, "flags"),), {})])
        return _load(status), self._unhandled(flags)

    def close(self, run_id: str, fanout_steps: list[str], **fields: Any) -> None:
        """``update`` the header with how the run ended and drop the full outputs kept for templates (the step
        and item records keep the redacted ones), in one round trip."""
        purge = (self._run(run_id, "ctx"), *(self._run(run_id, f"ctx:{s}") for s in fanout_steps))
        self.kv.batch([("hset", (self._run(run_id), _dump_values(fields)), {}), ("delete", purge, {})])

    def finish_item(self, run_id: str, step_id: str, index: int) -> tuple[int, int, bool]:
        """Count the item once and claim the index after it once: (done, next index, first claim).

        Both are set-once, so a redelivered item replays this harmlessly; it is one atomic operation
        (a script on Redis: one round trip per item instead of six).
        """
        return self.kv.finish_item(self._run(run_id, "flags"), self._run(run_id, "ctr"), step_id, index)

    def end_item(self, run_id: str, step_id: str, index: int, record: dict[str, Any] | None, full_output: Any = None,
                 *, before: list[Op] | None = None, after: list[Op] | None = None) -> tuple[bool, int, int, bool]:
        """``save_item_result`` (unless ``record`` is None: a replay) and ``finish_item``, in one round trip.

        ``before`` goes first (the ledger's "done"), ``after`` last (the item lease's release). Returns
        (the record was saved, done, next index, first claim)."""
        ops = list(before or [])
        if record is not None:
            ops.append(self._item_result_op(run_id, step_id, index, record, full_output))
        ops.append(("finish_item", (self._run(run_id, "flags"), self._run(run_id, "ctr"), step_id, index), {}))
        results = self.kv.batch([*ops, *(after or [])])
        done, following, first = results[len(ops) - 1]
        return record is not None and bool(results[len(ops) - 2]), done, following, first

    def save_waiting(self, run_id: str, step_id: str, record: dict[str, Any], *,
                     before: list[Op] | None = None) -> None:
        """A step waiting for a remote job (``status: waiting``, what is awaited and how far it is).

        Not final: each poll rewrites it. ``before`` (the ledger's "done" of the call that started
        the job) goes first in the same round trip, so a redelivery never starts the job twice.
        """
        self.kv.batch([*(before or []), ("hset", (self._run(run_id, "steps"), {step_id: _dump(record)}), {})])

    # results: a step's final record is written once ------------------------------------------
    def save_step_result(self, run_id: str, step_id: str, record: dict[str, Any], full_output: Any = None, *,
                         before: list[Op] | None = None) -> bool:
        """Make ``record`` the step's final record, with its full output for templates, unless one exists.

        False when another delivery ended the step first: its record stands, so the run (which may
        have ended on it) and the step always agree. ``before`` (the ledger's "done", which keeps a
        late paid answer either way) goes first; all of it is one round trip.
        """
        writes = [(self._run(run_id, "steps"), step_id, _dump(record))]
        if full_output is not None:
            writes.append((self._run(run_id, "ctx"), step_id, _json(full_output)))
        ops = [*(before or []), ("hset_if_first", (self._run(run_id, "flags"), f"final:{step_id}", writes), {})]
        return bool(self.kv.batch(ops)[-1])

    def save_item_result(self, run_id: str, step_id: str, index: int, record: dict[str, Any],
                         full_output: Any = None, *, before: list[Op] | None = None) -> bool:
        """``save_step_result`` for one fan-out item."""
        return bool(self.kv.batch([*(before or []), self._item_result_op(run_id, step_id, index, record,
                                                                           full_output)])[-1])

    def _item_result_op(self, run_id: str, step_id: str, index: int, record: dict[str, Any],
                        full_output: Any) -> Op:
        writes = [(self._run(run_id, f"items:{step_id}"), str(index), _dump(record))]
        if full_output is not None:
            writes.append((self._run(run_id, f"ctx:{step_id}"), str(index), _json(full_output)))
        return ("hset_if_first", (self._run(run_id, "flags"), f"final:{step_id}:{index}", writes), {})

    def save_item_results(self, run_id: str, step_id: str,
                          results: list[tuple[int, dict[str, Any], Any]]) -> None:
        """``save_item_result`` for many items in one round trip (a batch job's results, mapped back)."""
        ops = [self._item_result_op(run_id, step_id, index, record, full_output)
               for index, record, full_output in results]
        if ops:
            self.kv.batch(ops)

    def full_output(self, run_id: str, step_id: str) -> tuple[bool, Any]:
        """(found, value): the unredacted output kept for templates while the run is active."""
        raw = self.kv.hget(self._run(run_id, "ctx"), step_id)
        return (False, None) if raw is None else (True, json.loads(raw))

    def item_outputs(self, run_id: str, step_id: str, total: int) -> list[Any]:
        """A fan-out's full item outputs in item order (None for items without one)."""
        return [value for _, chunk in self._chunks(self._run(run_id, f"ctx:{step_id}"), total)
                for value in chunk]

    # how a run ended ---------------------------------------------------------------------------
    def note_unhandled(self, run_id: str, step_id: str, error: dict[str, Any], *, replace: bool = False) -> None:
        """A step failed (or its transitions could not be evaluated) with nothing to handle it."""
        if replace:
            self.set_flag(run_id, f"unhandled:{step_id}", _json(scrub_data(error)))
        else:
            self.once(run_id, f"unhandled:{step_id}", _json(scrub_data(error)))

    def unhandled(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Step id → error of every unhandled failure, in the order they were noted."""
        return self._unhandled(self.kv.hgetall(self._run(run_id, "flags")))

    @staticmethod
    def _unhandled(flags: dict[str, str]) -> dict[str, dict[str, Any]]:
        return {k.split(":", 1)[1]: json.loads(v) for k, v in flags.items() if k.startswith("unhandled:")}

    def forget_idempotency_key(self, key: str) -> None:
        """Let the sender's retry start the run afresh (the first attempt could not be queued)."""
        self.kv.delete(f"{PREFIX}idem:{key}")

    # integration health (what `integrations check` and the run output show) ------------------------
    def mark_integration_failing(self, name: str, error: dict[str, Any]) -> None:
        """A 401 means every later step with this integration fails too: say so where `check` looks."""
        self.kv.set(f"{PREFIX}health:{name}", _json({"ok": False, "at": now_iso(), "error": scrub_data(error)}),
                    ttl=IDEMPOTENCY_TTL)

    def integration_health(self, name: str) -> dict[str, Any] | None:
        raw = self.kv.get(f"{PREFIX}health:{name}")
        return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]

    def clear_integration_health(self, name: str) -> None:
        self.kv.delete(f"{PREFIX}health:{name}")

    # counters and set-once flags ---------------------------------------------------------------
    def count(self, run_id: str, name: str, amount: int = 1) -> int:
        return self.kv.hincrby(self._run(run_id, "ctr"), name, amount)

    def counter(self, run_id: str, name: str) -> int:
        return int(self.kv.hget(self._run(run_id, "ctr"), name) or 0)

    def once(self, run_id: str, name: str, value: str = "1") -> bool:
        """True for the first caller only: what makes replaying a redelivered step harmless."""
        return self.kv.hsetnx(self._run(run_id, "flags"), name, value)

    def flag(self, run_id: str, name: str) -> str | None:
        return self.kv.hget(self._run(run_id, "flags"), name)

    def set_flag(self, run_id: str, name: str, value: str) -> None:
        self.kv.hset(self._run(run_id, "flags"), {name: value})

    # cost -------------------------------------------------------------------------------------
    def add_cost_op(self, run_id: str, usd: float | None) -> Op:
        """The write adding one call's estimated cost to the run's total (None: a call whose cost is
        unknown), made in the same round trip as the step's record."""
        if usd is None:
            return ("hincrby", (self._run(run_id, "ctr"), "cost_unpriced", 1), {})
        return ("hincrby", (self._run(run_id, "ctr"), "cost_nano", round(usd * 1_000_000_000)), {})

    def cost(self, run_id: str) -> dict[str, Any]:
        """Every call of the run so far, repeats after a crash included (they were billed too)."""
        nano, unpriced = self.kv.hmget(self._run(run_id, "ctr"), ["cost_nano", "cost_unpriced"])
        return {"usd": round(int(nano or 0) / 1_000_000_000, 10), "unpriced": int(unpriced or 0)}

    # listing ----------------------------------------------------------------------------------
    def list(self, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        rows = []
        for run_id in self.kv.zrevrange(f"{PREFIX}runs", offset, offset + max(limit, 1) - 1):
            header = self.header(run_id)
            if header:
                header.pop("definition", None)
                header["cost"] = self.cost(run_id)
                rows.append(header)
        return rows

    def record(self, run_id: str) -> dict[str, Any] | None:
        """The run as a reader wants it: header, steps in workflow order with item results, totals."""
        header = self.header(run_id)
        if header is None:
            return None
        definition = header.pop("definition", {}) or {}
        order = [s["id"] for s in definition.get("steps", [])]
        steps = self.steps(run_id)
        ordered = [steps[s] | {"id": s} for s in order if s in steps]
        usage: dict[str, int] = {}
        attempts = 0
        for step in ordered:
            for key, value in (step.get("usage") or {}).items():
                if isinstance(value, int):
                    usage[key] = usage.get(key, 0) + value
            attempts += int(step.get("attempts") or 0)
            if step.get("items") is not None:
                items = self.items(run_id, step["id"])
                step["item_results"] = [items[i] for i in sorted(items)]
                step.setdefault("cost", sum_costs(step["item_results"]))
        header["steps"] = ordered
        header["variables"] = self.variables(run_id)
        header["totals"] = {"usage": usage, "attempts": attempts, "steps": len(ordered),
                            "duration": _duration(header.get("started"), header.get("finished")),
                            "cost": sum_costs(ordered)}
        return header


def sum_costs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The USD of records that carry a cost; ``unpriced`` counts those whose cost is unknown.

    ``usd`` stays a sum of what is known, never a guess for the rest: a reader sees both.
    """
    usd, unpriced = 0.0, 0
    for record in records:
        cost = (record or {}).get("cost")
        if not isinstance(cost, dict):
            continue
        if cost.get("usd") is None:
            unpriced += int(cost.get("unpriced") or 1)
        else:
            usd += float(cost["usd"])
            unpriced += int(cost.get("unpriced") or 0)
    return {"usd": round(usd, 10), "unpriced": unpriced}


def _duration(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = datetime.fromisoformat
    return round((parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds(), 3)

