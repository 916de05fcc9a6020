"""Shared bench plumbing: a private redis-server, the responder, worker processes, statistics."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"median": statistics.median(ordered), "p99": p99, "min": ordered[0], "max": ordered[-1],
            "n": len(ordered)}


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def ms(value: float) -> str:
    return f"{value * 1000:.3f} ms"


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make bench installs it)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def responder(delay: float = 0.0, rpm: int = 0) -> Iterator[str]:
    """The minimal responder in its own process; yields the base URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.responder", str(port), str(delay), str(rpm)],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.readline()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


#: Celery's gevent pool needs the standard library patched before anything else is imported.
GEVENT_MAIN = ("from gevent import monkey; monkey.patch_all(); import sys; from workers.cli import main; "
               "sys.exit(main())")


class Worker:
    """An ``openai-pack worker`` process; ``peak_rss`` reads its high-water mark from /proc, ``rss`` the current."""

    def __init__(self, env: dict[str, str], concurrency: int, name: str, pool: str = "threads") -> None:
        entry = ["-c", GEVENT_MAIN] if pool == "gevent" else ["-m", "workers.cli"]
        self.process = subprocess.Popen(
            [sys.executable, *entry, "worker", "-c", str(concurrency), "--pool", pool, "--loglevel", "WARNING",
             "-n", f"{name}@%h"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def cpu_seconds(self) -> float:
        """User + system CPU the worker process has used so far (``/proc/<pid>/stat``)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM:")

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS:")

    def _status_mb(self, field: str) -> float:
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return float("nan")
        for line in text.splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def pack_env(broker: str, home: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CELERY"))}
    env.update(OPENAI_PACK_BROKER_URL=broker, OPENAI_PACK_HOME=home, PYTHONUNBUFFERED="1", **extra)
    return env


def wait_ready(app_module: object, timeout: float = 60) -> None:
    """Until a worker answers a ping (counted in the store)."""
    import workers.app as worker_app

    counter = f"bench:ready:{time.time_ns()}"
    worker_app.ping.apply_async(args=[counter])
    deadline = time.monotonic() + timeout
    while not worker_app.kv().get(counter):
        if time.monotonic() > deadline:
            raise SystemExit("worker did not start")
        time.sleep(0.05)
    _ = app_module
