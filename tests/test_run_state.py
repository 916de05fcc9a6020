"""The run store's building blocks on both backends (real redis-server, real SQLite file): leases, StoreError."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from integration.errors import PackError, StoreError, StoreUnavailableError
from workers.state.kv import KV, RedisKV, SqliteKV, open_kv
from workers.state.leases import Leases
from workers.state.runs import RunStore

if TYPE_CHECKING:
    from actions.simulator import Simulator


@pytest.fixture(params=["redis", "sqlite"])
def kv(request: pytest.FixtureRequest, redis_server: str, tmp_path: Path) -> Iterator[KV]:
    if request.param == "redis":
        store = open_kv(redis_server.rsplit("/", 1)[0] + "/7")
        assert isinstance(store, RedisKV)
        store.redis.flushdb()
        yield store
        store.redis.flushdb()
    else:
        yield SqliteKV(tmp_path / "runs.sqlite3")


def _until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


def test_a_held_lease_outlives_its_ttl_while_the_heartbeat_runs(kv: KV) -> None:
    """issue 10 D1: a lease is kept alive for as long as its holder runs, then released by it."""
    leases = Leases(kv, prefix="test:lease:")
    assert leases.acquire("step", "first", ttl=1.0)
    assert leases.acquire("step", "first", ttl=1.0)  # its own earlier attempt
    time.sleep(2.5)  # more than twice the TTL
    assert leases.holder("step") == "first"
    assert not leases.acquire("step", "second", ttl=1.0)
    assert not leases.lost("step", "first")
    leases.release("step", "first")
    assert leases.holder("step") is None
    assert leases.acquire("step", "second", ttl=1.0)
    leases.release("step", "second")


def test_an_abandoned_lease_lapses_after_its_ttl(kv: KV) -> None:
    """A crashed holder sends no heartbeat: the lease is free again after its (short) TTL."""
    kv.set("test:lease:step", "crashed", nx=True, ttl=0.5)
    leases = Leases(kv, prefix="test:lease:")
    assert not leases.acquire("step", "rescuer", ttl=1.0)
    assert _until(lambda: leases.acquire("step", "rescuer", ttl=1.0))
    leases.release("step", "rescuer")


def test_a_lease_taken_by_another_holder_is_reported_lost(kv: KV) -> None:
    leases = Leases(kv, prefix="test:lease:")
    assert leases.acquire("step", "first", ttl=0.6)
    kv.set("test:lease:step", "intruder", ttl=30)
    assert _until(lambda: leases.lost("step", "first"))
    assert leases.holder("step") == "intruder"
    leases.release("step", "first")
    assert leases.holder("step") == "intruder"  # only the owner's own lease is released


def test_finish_item_counts_once_and_claims_the_next_index_once(kv: KV) -> None:
    store = RunStore(kv)
    store.count("r1", "next:s", 2)  # two slots started: indexes 0 and 1
    assert store.finish_item("r1", "s", 0) == (1, 2, True)
    assert store.finish_item("r1", "s", 0) == (1, 2, False)  # a replay
    assert store.finish_item("r1", "s", 1) == (2, 3, True)
    assert store.counter("r1", "done:s") == 2


def test_an_unreachable_store_raises_store_error_not_the_drivers_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    store = open_kv(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailableError, match="run store: ConnectionError") as caught:
        store.get("anything")
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, PackError)
    assert caught.value.retryable and caught.value.to_dict()["category"] == "store"


def test_a_late_answer_after_the_lease_was_taken_over_leaves_step_and_run_agreeing(
        tmp_path: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 10 D1: when a holder stalls past its lease and another delivery ends the step, the late answer
    must not flip the step to succeeded under a failed run: the first record stands, the ledger keeps the answer."""
    import threading

    from integration.model import Integration
    from integration.store import IntegrationStore
    from workers.engine import Engine
    from workers.settings import Settings
    from workers.state.ledger import Ledger
    from workers.workflow import parse_workflow

    IntegrationStore().add(Integration(name="sim", base_url=simulator.url, auth={"placement": "none"},
                                       timeout={"connect": 2, "read": 10}, max_retries=0), make_default=True)
    monkeypatch.setenv("OPENAI_PACK_VISIBILITY_TIMEOUT", "5")  # lease TTL 2.5 s, heartbeat every ~0.8 s
    kv = SqliteKV(tmp_path / "runs.sqlite3")
    dispatched: list[tuple[str, str, int | None, float | None]] = []
    engine = Engine(RunStore(kv), Ledger(kv), Settings.from_env(), lambda *a: dispatched.append(a))
    workflow = parse_workflow("name: late\nsteps:\n  - id: call\n    action: create_chat_completion\n"
                              "    input: {model: gpt-4o-mini, messages: [{role: user, content: hi}]}\n", "late.yaml")
    simulator.add_fault({"path": "/chat/completions", "kind": "latency", "latency": 3, "times": 1})
    run_id, _ = engine.start_run(workflow, {}, trigger={"type": "manual"})
    first = threading.Thread(target=engine.run_step, args=(run_id, "call", None, "first"))
    first.start()
    assert _until(lambda: simulator.calls == 1)
    kv.set(f"opk:lease:{run_id}:call:", "second", ttl=30)  # the first holder's lease lapsed; another took it
    engine.run_step(run_id, "call", None, "second")  # ... found the claim: outcome unknown, the run ends
    assert engine.store.status(run_id) == "failed"
    first.join(timeout=30)
    record = engine.store.record(run_id)
    assert record is not None
    assert record["status"] == "failed" and record["steps"][0]["status"] == "failed"
    assert record["steps"][0]["error"]["code"] == "outcome_unknown"
    assert engine.ledger.state(f"{run_id}:call:") == "done"  # the paid answer is kept, not lost
    assert simulator.calls == 1


def test_a_steps_final_record_is_written_once(kv: KV) -> None:
    store = RunStore(kv)
    assert store.save_step_result("r1", "s", {"status": "failed", "error": {"code": "outcome_unknown"}})
    assert not store.save_step_result("r1", "s", {"status": "succeeded"}, {"answer": 42})
    assert store.step("r1", "s") == {"status": "failed", "error": {"code": "outcome_unknown"}}
    assert store.full_output("r1", "s") == (False, None)
    assert store.save_item_result("r1", "s", 0, {"status": "succeeded"}, {"answer": 1})
    assert not store.save_item_result("r1", "s", 0, {"status": "failed"})
    assert store.item("r1", "s", 0) == {"status": "succeeded"} and store.item_outputs("r1", "s", 1) == [{"answer": 1}]


def test_pipelined_scripts_survive_a_redis_that_forgot_them(redis_server: str) -> None:
    """Pipelines queue scripts by digest alone (no ``SCRIPT EXISTS`` round trip per item); after a Redis
    restart forgets the scripts, the writes still happen, once, and the set-once flag still holds."""
    store = open_kv(redis_server.rsplit("/", 1)[0] + "/7")
    assert isinstance(store, RedisKV)
    store.redis.flushdb()
    store.redis.script_flush()
    ops = [("set", ("test:ledger", "done"), {}),
           ("hset_if_first", ("test:flags", "final:s:0", [("test:items", "0", "first")]), {})]
    assert store.batch(ops) == [True, 1]
    store.redis.script_flush()
    again = [("hset_if_first", ("test:flags", "final:s:0", [("test:items", "0", "second")]), {})]
    assert store.batch(again) == [0]
    assert store.hget("test:items", "0") == "first"
    store.redis.script_flush()
    store.set("test:lease", "me", ttl=5)
    assert store.extend_all([("test:lease", "me", 9.0), ("test:lease", "other", 9.0)]) == [True, False]
    assert 5000 < store.redis.pttl("test:lease") <= 9000
    store.redis.flushdb()


def test_end_step_leaves_the_active_count_once_and_hands_the_run_end_to_one_caller(kv: KV) -> None:
    store = RunStore(kv)
    store.count("r2", "active", 2)  # two steps running
    assert store.end_step("r2", "a") == (1, False)
    assert store.end_step("r2", "a") == (1, False)  # a replay of the same step counts once
    assert store.end_step("r2", "b") == (0, True)  # the last step takes the run's end
    assert store.end_step("r2", "b") == (0, False)  # and only once
    assert store.flag("r2", "finished") == "1"
