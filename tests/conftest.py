"""Shared fixtures: real parts only (a loopback simulator of the API, a real redis-server, a real RabbitMQ)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from actions.simulator import Simulator
from integration.client import close_all_clients
from integration.model import Integration

#: A recognisable fake key: tests grep for it to prove it never leaks.
CANARY_KEY = "sk-canary-LEAK-4f9c2e7d1b3a5c8e0f6d"
#: The test RabbitMQ user's password: every AMQP URL of the suite carries it, and tests grep for it.
RABBITMQ_PASSWORD = "amqp-canary-PW-6b1d9e03f7"
RABBITMQ_USER = "pack"
#: RabbitMQ's consumer timeout on the test node (seconds): a delivery held unacknowledged longer
#: closes its channel. Above scenario 11's 10 s call on RabbitMQ, far below the server's default 30 min.
RABBITMQ_CONSUMER_TIMEOUT = 12
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_OPENAPI = REPO_ROOT.parent / "shared" / "openapi"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rabbitmq: runs against the session's own RabbitMQ node (make test "
                                       "installs rabbitmq-server)")


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
        stop_process(process)


# ---------------------------------------------------------------- RabbitMQ: a node of the session's own


def _rabbitmq_password_hash(password: str) -> str:
    """RabbitMQ's default ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def write_certificates(workdir: Path, ca_file: Path) -> None:
    """A throw-away CA (``ca_file``) and a server certificate for 127.0.0.1 signed by it (``server.pem``,
    ``server.key`` in ``workdir``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("openai-pack test CA")).issuer_name(name("openai-pack test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (workdir / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (workdir / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))


class RabbitMQNode:
    """``rabbitmq-server`` on 127.0.0.1 with free ports, its own epmd, files and cookie under ``workdir``.

    It listens for AMQP on ``port`` and for AMQP over TLS on ``tls_port`` (a certificate for
    127.0.0.1 signed by a CA of its own, ``ca_file``).
    A user ``pack`` with a password (the default ``guest`` is not created) owns two virtual hosts:
    ``/`` for the session's worker, ``isolated`` for tests that start and kill workers of their own.
    The consumer timeout is ``RABBITMQ_CONSUMER_TIMEOUT`` and checked every second (the server
    checks it once a minute by default), so a test can prove no delivery is held that long.
    """

    VHOSTS = ("/", "isolated")

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port, self.dist_port, self.epmd_port, self.tls_port = _free_port(), _free_port(), _free_port(), _free_port()
        #: The test CA that signed the TLS listener's certificate (for 127.0.0.1): ``SSL_CERT_FILE`` for clients.
        self.ca_file = workdir / "ca.pem"
        self.node = f"rabbit-opk{os.getpid()}-{self.port}@localhost"
        bindir = Path("/usr/lib/rabbitmq/bin")  # the Debian wrapper in /usr/sbin switches to the rabbitmq user
        self.server = str(bindir / "rabbitmq-server") if bindir.is_dir() else shutil.which("rabbitmq-server")
        self.ctl = str(bindir / "rabbitmqctl") if bindir.is_dir() else shutil.which("rabbitmqctl")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))} | {
            "HOME": str(workdir),  # the Erlang cookie is written here
            "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"), "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),  # .conf is appended
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        }
        self.epmd: subprocess.Popen[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, vhost: str = "/", password: str = RABBITMQ_PASSWORD, *, tls: bool = False) -> str:
        path = "/" if vhost == "/" else vhost
        scheme, port = ("amqps", self.tls_port) if tls else ("amqp", self.port)
        return f"{scheme}://{RABBITMQ_USER}:{password}@127.0.0.1:{port}/{path}"

    def _write_certificates(self) -> None:
        write_certificates(self.workdir, self.ca_file)

    def _write_config(self) -> None:
        definitions = {
            "users": [{"name": RABBITMQ_USER, "password_hash": _rabbitmq_password_hash(RABBITMQ_PASSWORD),
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}],
            "vhosts": [{"name": vhost} for vhost in self.VHOSTS],
            "permissions": [{"user": RABBITMQ_USER, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
                            for vhost in self.VHOSTS],
        }
        (self.workdir / "definitions.json").write_text(json.dumps(definitions))
        self._write_certificates()
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"load_definitions = {self.workdir / 'definitions.json'}\n"
            f"consumer_timeout = {RABBITMQ_CONSUMER_TIMEOUT * 1000}\n"
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {self.ca_file}\n"
            f"ssl_options.certfile = {self.workdir / 'server.pem'}\n"
            f"ssl_options.keyfile = {self.workdir / 'server.key'}\n"
            "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
            "log.console = false\nlog.file.level = info\n")
        (self.workdir / "advanced.config").write_text("[{rabbit, [{channel_tick_interval, 1000}]}].\n")
        (self.workdir / "enabled_plugins").write_text("[].\n")

    def start(self, timeout: float = 90) -> None:
        if self.server is None or self.ctl is None or shutil.which("epmd") is None:
            pytest.fail("rabbitmq-server is not installed: `make test` installs it (apt-get install rabbitmq-server)")
        self._write_config()
        self.epmd = subprocess.Popen(["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.process = subprocess.Popen([self.server], env=self.env, cwd=self.workdir, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connection():
                    return
            except Exception:  # not listening yet, or still loading the definitions
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                log = "\n".join(p.read_text(errors="replace")[-3000:] for p in (self.workdir / "log").glob("*.log"))
                self.stop()
                pytest.fail(f"rabbitmq-server did not start within {timeout:g}s:\n{log}")
            time.sleep(0.2)

    def connection(self, vhost: str = "/") -> Any:
        """A py-amqp connection as the ``pack`` user (a context manager)."""
        import amqp

        connection = amqp.Connection(f"127.0.0.1:{self.port}", userid=RABBITMQ_USER, password=RABBITMQ_PASSWORD,
                                     virtual_host=vhost, connect_timeout=2)
        connection.connect()
        return connection

    def delete_queues(self, vhost: str, *names: str) -> None:
        with self.connection(vhost) as connection:
            channel = connection.channel()
            for name in names:
                channel.queue_delete(name)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.workdir / "log").glob("*.log"))

    def stop(self) -> None:
        """``rabbitmqctl stop``, then make sure the node and this node's epmd are gone."""
        if self.process is not None and self.process.poll() is None:
            subprocess.run([self.ctl or "rabbitmqctl", "-n", self.node, "stop"], env=self.env, cwd=self.workdir,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for child in (self.epmd,):
            if child is not None and child.poll() is None:
                child.terminate()
                child.wait(timeout=10)


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    """A RabbitMQ node of this test process (each pytest-xdist worker starts its own), stopped at the end."""
    node = RabbitMQNode(tmp_path_factory.mktemp("rabbitmq"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


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


def point_process_at(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Configure this test process like workers started with ``env``: its OPENAI_PACK_* variables (undone by
    ``monkeypatch`` after the test) and the Celery app rebuilt from them."""
    import workers.app

    for key, value in env.items():
        if key.startswith("OPENAI_PACK"):
            monkeypatch.setenv(key, value)
    workers.app.reconfigure()


@pytest.fixture
def pack(worker_env: dict[str, str], session_worker: WorkerProcess, simulator: Simulator,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The test process configured like the workers: ``pack.engine`` starts runs, the session worker runs them."""
    import workers.app

    point_process_at(worker_env, monkeypatch)
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
    point_process_at(env, monkeypatch)
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


# ---------------------------------------------------------------- workers on RabbitMQ (the store stays in Redis)


@contextmanager
def _use_env(env: dict[str, str]) -> Iterator[None]:
    """Point this process's OPENAI_PACK_* variables (and Celery app) at ``env`` until the generator ends."""
    import workers.app

    saved = {k: v for k, v in os.environ.items() if k.startswith("OPENAI_PACK")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("OPENAI_PACK")})
    workers.app.reconfigure()
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("OPENAI_PACK")]:
            del os.environ[key]
        os.environ.update(saved)
        workers.app.reconfigure()


def rabbitmq_env(worker_env: dict[str, str], redis_server: str, node: RabbitMQNode, *, vhost: str,
                 store_db: int) -> dict[str, str]:
    """``worker_env`` with RabbitMQ (virtual host ``vhost``) as the broker and Redis database ``store_db`` as the store."""
    import redis

    store = redis_server.rsplit("/", 1)[0] + f"/{store_db}"
    redis.Redis.from_url(store).flushdb()
    # RabbitMQ has no visibility timeout: the default is kept, so nothing here leans on the 20 s the Redis tests use.
    return dict(worker_env) | {"OPENAI_PACK_BROKER_URL": node.url(vhost), "OPENAI_PACK_STORE_URL": store,
                               "OPENAI_PACK_CONSUMER_TIMEOUT": str(RABBITMQ_CONSUMER_TIMEOUT),
                               "OPENAI_PACK_VISIBILITY_TIMEOUT": "120"}


@pytest.fixture(scope="session")
def rabbitmq_worker_env(worker_env: dict[str, str], redis_server: str,
                        rabbitmq_server: RabbitMQNode) -> dict[str, str]:
    """Environment of the session's RabbitMQ worker: virtual host ``/``, the store in Redis database 9."""
    rabbitmq_server.delete_queues("/", "openai_pack")
    return rabbitmq_env(worker_env, redis_server, rabbitmq_server, vhost="/", store_db=9)


@pytest.fixture(scope="session")
def rabbitmq_session_worker(rabbitmq_worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(rabbitmq_worker_env, concurrency=8, name="rabbit")
    yield worker
    worker.stop()


@pytest.fixture
def rabbitmq_pack(rabbitmq_worker_env: dict[str, str], rabbitmq_session_worker: WorkerProcess,
                  simulator: Simulator) -> Iterator[Any]:
    """Like ``pack``, with RabbitMQ as the broker: the session's RabbitMQ worker runs the runs."""
    import workers.app

    with _use_env(rabbitmq_worker_env):
        yield workers.app
    close_all_clients()


def rabbitmq_of_its_own(worker_env: dict[str, str], redis_server: str, node: RabbitMQNode) -> Iterator[dict[str, str]]:
    """For a fixture: workers of a test's own on the ``isolated`` virtual host (emptied first), the
    store in Redis database 10, so the session's workers take none of its tasks."""
    node.delete_queues("isolated", "openai_pack")
    env = rabbitmq_env(worker_env, redis_server, node, vhost="isolated", store_db=10)
    with _use_env(env):
        yield env


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s: a server a test started is always gone when the test ends."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def redis_dump(client: Any) -> list[str]:
    """Every key and value of a Redis database, one line each, for leak scans (a secret must appear in none)."""
    lines = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value: Any = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                      "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda k: "")(key)
        lines.append(f"{key!r} {value!r}")
    return lines
