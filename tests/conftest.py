"""Shared fixtures: real parts only (a loopback simulator of the API, a real redis-server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.simulator import Simulator
from integration.client import close_all_clients
from integration.model import Integration

#: A recognisable fake key: tests grep for it to prove it never leaks.
CANARY_KEY = "sk-canary-LEAK-4f9c2e7d1b3a5c8e0f6d"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_OPENAPI = REPO_ROOT.parent / "shared" / "openapi"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the user's ~/.openai-pack or picks up their real key."""
    home = tmp_path_factory.mktemp("pack-home")
    monkeypatch.setenv("OPENAI_PACK_HOME", str(home))
    for name in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_BASE_URL",
                 "OPENAI_PACK_FERNET_KEYS"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="session")
def simulator_session() -> Iterator[Simulator]:
    with Simulator(port=0) as sim:
        yield sim


@pytest.fixture
def simulator(simulator_session: Simulator) -> Iterator[Simulator]:
    """The session's simulator, with faults and counters cleared for this test."""
    simulator_session.reset()
    yield simulator_session
    simulator_session.reset()


@pytest.fixture
def sim_integration(simulator: Simulator) -> Integration:
    """An integration pointing at the simulator, with short timeouts so fault tests stay fast."""
    return Integration(name="sim", base_url=simulator.url, auth={"placement": "none"},
                       timeout={"connect": 2, "read": 5}, max_retries=2)


@pytest.fixture
def keyed_simulator() -> Iterator[Simulator]:
    """A simulator that demands the canary key as a bearer token (auth placement tests make their own)."""
    with Simulator(port=0, api_key=CANARY_KEY, auth={"placement": "bearer"}) as sim:
        yield sim
    close_all_clients()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 and a free port, stopped at the end of the session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        os.environ["OPENAI_PACK_TEST_REDIS_URL"] = url
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# ---------------------------------------------------------------- workers: real redis, real worker processes


class WorkerProcess:
    """An ``openai-pack worker`` child process; its output is kept for leak scans."""

    def __init__(self, env: dict[str, str], *, concurrency: int = 4, pool: str = "threads", name: str = "w1") -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "-c", str(concurrency), "--pool", pool,
             "--loglevel", env.get("TEST_WORKER_LOGLEVEL", "INFO"), "-n", f"{name}@%h"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
        )
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            self.stop()
            raise RuntimeError("worker did not become ready:\n" + "".join(self.lines[-40:]))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if " ready." in line:
                self._ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: the crash the reliability tests simulate."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=5)


@pytest.fixture(scope="session")
def worker_env(redis_server: str, simulator_session: Simulator,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment shared by the test process and its worker processes: one home, one broker, one store."""
    from integration.store import IntegrationStore

    home = tmp_path_factory.mktemp("worker-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CELERY"))}
    env.update(OPENAI_PACK_HOME=str(home), OPENAI_PACK_BROKER_URL=redis_server, PYTHONUNBUFFERED="1",
               OPENAI_PACK_VISIBILITY_TIMEOUT="20", OPENAI_PACK_MAX_INLINE_WAIT="2")
    store = IntegrationStore(path=home / "integrations.json")
    store.add(Integration(name="sim", base_url=simulator_session.url, auth={"placement": "none"},
                          timeout={"connect": 2, "read": 10}, max_retries=2), make_default=True)
    return env


@pytest.fixture(scope="session")
def session_worker(worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(worker_env, concurrency=8, name="session")
    yield worker
    worker.stop()


@pytest.fixture
def pack(worker_env: dict[str, str], session_worker: WorkerProcess, simulator: Simulator,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The test process configured like the workers: ``pack.engine`` starts runs, the session worker runs them."""
    for key, value in worker_env.items():
        if key.startswith("OPENAI_PACK"):
            monkeypatch.setenv(key, value)
    import workers.app

    workers.app.reconfigure()
    yield workers.app
    close_all_clients()


def run_cli(env: dict[str, str], *args: str, input_text: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``openai-pack ARGS`` in a child process with ``env``."""
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, cwd=REPO_ROOT, text=True,
                          capture_output=True, input=input_text, timeout=timeout, check=False)


def broker_of_its_own(worker_env: dict[str, str], redis_server: str, monkeypatch: pytest.MonkeyPatch,
                      db: int) -> Iterator[dict[str, str]]:
    """For a fixture: workers of a test's own on Redis database ``db`` (visibility timeout 8 s), so the
    session worker takes none of its tasks; this process's Celery app points there until the test ends."""
    import redis

    import workers.app

    env = dict(worker_env)
    env["OPENAI_PACK_BROKER_URL"] = redis_server.rsplit("/", 1)[0] + f"/{db}"
    env["OPENAI_PACK_VISIBILITY_TIMEOUT"] = "8"
    redis.Redis.from_url(env["OPENAI_PACK_BROKER_URL"]).flushdb()
    for key, value in env.items():
        if key.startswith("OPENAI_PACK"):
            monkeypatch.setenv(key, value)
    workers.app.reconfigure()
    yield env
    workers.app.reconfigure()


def finished_record(engine: Any, run_id: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for a run to end (succeeded, failed or cancelled) and return its whole record."""
    header = engine.wait(run_id, timeout)
    assert header is not None and header["status"] in ("succeeded", "failed", "cancelled"), header
    record = engine.store.record(run_id)
    assert record is not None
    return record


def steps_by_id(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run record's step records keyed by step id."""
    return {s["id"]: s for s in record["steps"]}
