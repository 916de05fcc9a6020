"""Redis with Sentinel: a real master, replica and three sentinels on loopback; the master is SIGKILLed
mid fan-out and the run completes on the promoted replica, no item called twice and none lost.

Every server has a password (``requirepass`` on master and replica, another one on the sentinels), and
the test proves neither appears in a worker's log, the CLI's output, a run record or a Redis key.
Run with ``-s`` to see the recovery time it measured (docs/deployment.md quotes it).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actions.simulator import Simulator
from tests.conftest import WorkerProcess, point_process_at, redis_dump, run_cli
from tests.test_reliability import FANOUT
from workers.workflow import parse_workflow

pytestmark = pytest.mark.timeout(240)

MASTER = "packmaster"
REDIS_PASSWORD = "redis-pw-CANARY-8e21f0c4"
SENTINEL_PASSWORD = "sentinel-pw-CANARY-51ab9c77"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(what: str, check: Any, timeout: float) -> Any:
    """Poll ``check()`` until it returns something truthy (Redis errors count as "not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g}s")
        time.sleep(0.05)


class SentinelCluster:
    """A master, a replica and three sentinels (quorum 2) on 127.0.0.1, each on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
        self.workdir = workdir
        self.master_port, self.replica_port = _free_port(), _free_port()
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ";".join(f"sentinel://:{REDIS_PASSWORD}@127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"{hosts}/0?master_name={MASTER}&sentinel_password={SENTINEL_PASSWORD}"

    def _spawn(self, port: int, args: list[str]) -> None:
        log = (self.workdir / f"{port}.log").open("wb")
        self.processes[port] = subprocess.Popen([self.binary or "redis-server", *args], stdout=log,
                                                stderr=subprocess.STDOUT, cwd=self.workdir)

    def _server(self, port: int, *extra: str) -> None:
        data = self.workdir / str(port)
        data.mkdir()
        self._spawn(port, ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
                           "--appendonly", "no", "--requirepass", REDIS_PASSWORD, "--masterauth", REDIS_PASSWORD,
                           "--repl-diskless-sync-delay", "0", *extra])  # the default 5 s delays every sync

    def client(self, port: int, password: str = REDIS_PASSWORD) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2,
                           socket_connect_timeout=1, decode_responses=True)

    def start(self) -> None:
        self._server(self.master_port)
        self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        _until("the replica did not sync",
               lambda: self.client(self.replica_port).info("replication")["master_link_status"] == "up", 20)
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel auth-pass {MASTER} {REDIS_PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
                f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n")
            self._spawn(port, [str(conf), "--sentinel"])
        for port in self.sentinel_ports:  # each sees the replica and the two other sentinels
            _until(f"sentinel {port} did not discover the others", lambda port=port: (
                (info := self.sentinel(port).sentinel_master(MASTER))["num-other-sentinels"] == 2
                and info["num-slaves"] == 1), 30)

    def sentinel(self, port: int) -> redis.Redis:
        return self.client(port, SENTINEL_PASSWORD)

    def master_address(self) -> tuple[str, int]:
        host, port = self.sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER)
        return host, int(port)

    def kill(self, port: int) -> None:
        self.processes[port].kill()
        self.processes[port].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*.log")))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A cluster of this test's own (the failover test kills its master)."""
    servers = SentinelCluster(tmp_path)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def healthy_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """One cluster for the tests that leave it as they found it (starting one takes several seconds)."""
    servers = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def sentinel_env(cluster: SentinelCluster, worker_env: dict[str, str],
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Broker and run store both on the Sentinel URL (the store defaults to the broker's Redis)."""
    import workers.app

    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": cluster.url, "OPENAI_PACK_VISIBILITY_TIMEOUT": "10"}
    env.pop("OPENAI_PACK_STORE_URL", None)
    monkeypatch.delenv("OPENAI_PACK_STORE_URL", raising=False)
    point_process_at(env, monkeypatch)
    yield env
    monkeypatch.undo()
    workers.app.reconfigure()


ITEMS = 200


def test_master_killed_mid_fanout_fails_over_without_losing_or_repeating_an_item(
        cluster: SentinelCluster, sentinel_env: dict[str, str], simulator: Simulator) -> None:
    import workers.app

    assert workers.app.settings.store_url == cluster.url  # the store followed the broker onto Sentinel
    simulator.add_fault({"kind": "latency", "latency": 0.1, "times": -1})
    workers_ = [WorkerProcess(sentinel_env, concurrency=8, name=f"sentinel{i}") for i in range(2)]
    replaced, outputs = 0, []
    try:
        engine = workers.app.engine()
        run_id, _ = engine.start_run(parse_workflow(FANOUT, "fanout.yaml"),
                                     {"records": [str(i) for i in range(ITEMS)]}, trigger={"type": "manual"})
        _until("the fan-out did not get going",
               lambda: engine.store.counter(run_id, "done:classify") >= ITEMS // 4, 60)
        done_at_kill = engine.store.counter(run_id, "done:classify")
        old_master = cluster.master_address()
        cluster.kill(old_master[1])
        killed_at = time.monotonic()

        new_master = _until("no replica was promoted",
                            lambda: (address := cluster.master_address()) != old_master and address, 60)
        promoted_after = time.monotonic() - killed_at
        first_seen = _until("the store did not answer after the failover",
                            lambda: engine.store.counter(run_id, "done:classify") or None, 60)
        _until("the fan-out made no progress after the failover",
               lambda: engine.store.counter(run_id, "done:classify") > first_seen, 60)
        progress_after = time.monotonic() - killed_at

        header: dict[str, Any] | None = None

        def finished() -> bool:
            nonlocal header, replaced
            # kombu's Redis transport can crash a worker whose broker connection drops ("Unrecoverable
            # error: AttributeError ... 'hostname'" on closing the channel, see scenario 6 and
            # celery/celery#10205): a supervisor (systemd, Kubernetes) restarts it, and so do we.
            for i, worker in enumerate(workers_):
                if worker.process.poll() is not None:
                    worker.stop()
                    outputs.append(worker.output)
                    workers_[i] = WorkerProcess(sentinel_env, concurrency=8, name=f"sentinel-restarted{replaced}")
                    replaced += 1
            header = engine.store.header(run_id)
            return bool(header and header["status"] in ("succeeded", "failed")
                        and engine.store.flag(run_id, "finished"))

        _until("the run did not finish after the failover", finished, 120)
        finished_after = time.monotonic() - killed_at
        record = engine.store.record(run_id)
        cli = run_cli(sentinel_env, "runs", "show", run_id, "--json")
        listing = run_cli(sentinel_env, "runs", "list", "--json")
        dump = redis_dump(cluster.client(new_master[1]))
    finally:
        for worker in workers_:
            worker.stop()
    assert header is not None and record is not None
    items = record["steps"][0]["item_results"]
    assert len(items) == ITEMS
    calls = Counter(json.dumps(r["body"]["messages"]) for r in simulator.requests
                    if r["path"] == "/v1/chat/completions")
    failed = {i: item.get("error") for i, item in enumerate(items) if item["status"] != "succeeded"}
    print(f"\n[sentinel failover] master killed at {done_at_kill}/{ITEMS} items: replica promoted after "
          f"{promoted_after:.1f}s, fan-out progressing again after {progress_after:.1f}s, run finished "
          f"{finished_after:.1f}s after the kill; {ITEMS - len(failed)} succeeded, {len(failed)} not; "
          f"max calls per item {max(calls.values())}, calls at the server {sum(calls.values())}, "
          f"workers restarted {replaced}")
    assert all("Unrecoverable error: AttributeError" in output for output in outputs), outputs[0][-3000:]
    assert max(calls.values()) == 1, [c for c, n in calls.items() if n > 1][:3]  # no item paid twice
    assert not failed, list(failed.items())[:3]  # none lost, none left "outcome unknown"
    assert header["status"] == "succeeded"
    assert len(calls) == ITEMS
    assert cli.returncode == 0 and run_id in cli.stdout, cli.stderr[-2000:]
    haystack = "\n".join([*outputs, *(w.output for w in workers_), cli.stdout, cli.stderr, listing.stdout, listing.stderr,
                          json.dumps(record), *dump])
    for secret in (REDIS_PASSWORD, SENTINEL_PASSWORD):
        assert secret not in haystack, f"a password leaked ({haystack.index(secret)})"


def test_a_claim_returns_only_once_a_replica_has_it_and_a_stalled_replica_is_reported(
        healthy_cluster: SentinelCluster, caplog: pytest.LogCaptureFixture) -> None:
    """Replication is asynchronous: without ``WAIT`` a claim acknowledged by a master that dies a moment
    later can be missing on the promoted replica, and the paid call it guarded would be made again."""
    import logging
    import os
    import signal

    from workers.state.kv import open_kv

    cluster = healthy_cluster
    kv = open_kv(cluster.url)
    replica = cluster.client(cluster.replica_port)
    assert kv.claim("opk:ledger:first", "attempt-1", ttl=60)
    assert replica.get("opk:ledger:first") == "attempt-1"  # already there when the claim returned
    stalled = cluster.processes[cluster.replica_port]
    os.kill(stalled.pid, signal.SIGSTOP)  # the replica stops acknowledging
    try:
        with caplog.at_level(logging.WARNING, logger="openai_pack.store"):
            assert kv.claim("opk:ledger:second", "attempt-2", ttl=60)  # waited, then went on
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    assert "no replica confirmed a write" in caplog.text
    _until("the replica did not catch up", lambda: replica.get("opk:ledger:second") == "attempt-2", 10)
    assert kv.batch([("set", ("opk:ledger:third", "done"), {})]) == [True]
    assert replica.get("opk:ledger:third") == "done"


def test_the_shared_rate_budget_lives_on_the_sentinel_master(healthy_cluster: SentinelCluster) -> None:
    """Not a per-process memory window: every worker must draw from the one budget on the master."""
    from workers.state.budget import Budget, window_for
    from workers.state.kv import open_kv

    cluster = healthy_cluster
    budget = Budget(cluster.url, open_kv(cluster.url))
    window = window_for(120)  # 2 a second
    assert [budget.limiter.hit(window, "openai-pack", "sim", "requests") for _ in range(3)] == [True, True, False]
    master = cluster.client(cluster.master_port)
    assert any("sim" in key for key in master.scan_iter("LIMITS*"))


def test_a_claim_or_fan_out_claim_retried_after_a_lost_reply_is_still_the_callers(
        healthy_cluster: SentinelCluster, tmp_path: Path) -> None:
    """redis-py repeats a command whose reply a failover cut off; if the dead master had already replicated
    it, the repeat finds the claim made. Seen in the failover test before the fix: an item never called
    ended ``outcome_unknown`` (its own claim looked like another delivery's)."""
    from workers.state.kv import SqliteKV, open_kv

    for kv in (open_kv(healthy_cluster.url), SqliteKV(tmp_path / "runs.sqlite3")):
        assert kv.claim("opk:ledger:run:step:7", "attempt-a", ttl=60)
        assert kv.claim("opk:ledger:run:step:7", "attempt-a", ttl=60)  # the same attempt, repeated
        assert not kv.claim("opk:ledger:run:step:7", "attempt-b", ttl=60)  # another attempt
    kv = open_kv(healthy_cluster.url)
    # The fan-out script, called twice with one call's token (what a retry does), then by another call:
    first = kv._finish_item(keys=["f", "c"], args=["s", 0, "call-1"])  # the script itself, as a retry runs it
    again = kv._finish_item(keys=["f", "c"], args=["s", 0, "call-1"])
    other = kv._finish_item(keys=["f", "c"], args=["s", 0, "call-2"])
    assert (first[2], again[2], other[2]) == (1, 1, 0) and first[1] == again[1] == other[1]


def test_task_results_are_kept_through_sentinel_too(healthy_cluster: SentinelCluster, worker_env: dict[str, str],
                                                    simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """``OPENAI_PACK_RESULT_BACKEND`` takes the same URL form (Celery's Sentinel result backend)."""
    import workers.app

    results_url = healthy_cluster.url.replace("/0?", "/1?")
    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": healthy_cluster.url, "OPENAI_PACK_RESULT_BACKEND": results_url}
    point_process_at(env, monkeypatch)
    worker = WorkerProcess(env, concurrency=2, name="results")
    try:
        output = workers.app.app.send_task("openai.create_moderation", args=[{"input": "hello"}, "sim"]).get(timeout=60)
    finally:
        worker.stop()
        monkeypatch.undo()
        workers.app.reconfigure()
    assert isinstance(output, dict) and output["results"], output
    kept = list(healthy_cluster.client(healthy_cluster.master_port).scan_iter("celery-task-meta-*"))
    assert kept == [], "results belong in database 1, not the broker's"
    master = redis.Redis(host="127.0.0.1", port=healthy_cluster.master_port, password=REDIS_PASSWORD, db=1)
    assert list(master.scan_iter("celery-task-meta-*"))
    for secret in (REDIS_PASSWORD, SENTINEL_PASSWORD):
        assert secret not in worker.output
