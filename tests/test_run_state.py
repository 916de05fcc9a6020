"""The run store's building blocks on both backends (real redis-server, real SQLite file): leases, StoreError."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.errors import PackError, StoreError, StoreUnavailableError
from workers.state.kv import KV, RedisKV, SqliteKV, open_kv
from workers.state.leases import Leases
from workers.state.runs import RunStore


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
    assert store.finish_item("r1", "s", 0, failed=False) == (1, 2, True)
    assert store.finish_item("r1", "s", 0, failed=False) == (1, 2, False)  # a replay
    assert store.finish_item("r1", "s", 1, failed=True) == (2, 3, True)
    assert store.counter("r1", "failed:s") == 1


def test_an_unreachable_store_raises_store_error_not_the_drivers_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    store = open_kv(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailableError, match="run store: ConnectionError") as caught:
        store.get("anything")
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, PackError)
    assert caught.value.retryable and caught.value.to_dict()["category"] == "store"
