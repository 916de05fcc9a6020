"""Redis URLs: the Sentinel form, TLS (``rediss://``) and passwords, which are never printed.

The URL handling is checked directly; a password-protected Redis and a TLS Redis (certificates made
with ``openssl``) each carry a real worker's workflow run, and every log line, CLI output, error, run
record and Redis key is searched for the password.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actions.simulator import Simulator
from integration.errors import ConfigError, StoreUnavailableError
from integration.redact import redact_url
from integration.redis_urls import celery_sentinel, check_url, connect, parse_sentinel_url
from tests.conftest import WorkerProcess, finished_record, point_process_at, redis_dump, run_cli, stop_process
from workers.state.kv import open_kv
from workers.workflow import parse_workflow

pytestmark = pytest.mark.timeout(180)

PASSWORD = "redis-pw-CANARY-3c9d71aa"
SENTINEL_PASSWORD = "sentinel-pw-CANARY-0be4"
SENTINEL_URL = (f"sentinel://:{PASSWORD}@10.0.0.1:26379;sentinel://:{PASSWORD}@10.0.0.2/3"
                f"?master_name=mymaster&sentinel_password={SENTINEL_PASSWORD}")


# ---------------------------------------------------------------- the URL forms


def test_sentinel_url_names_the_sentinels_master_database_and_both_passwords() -> None:
    target = parse_sentinel_url(SENTINEL_URL, field="OPENAI_PACK_STORE_URL")
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))  # the default sentinel port
    assert (target.master_name, target.db, target.password, target.sentinel_password) == (
        "mymaster", 3, PASSWORD, SENTINEL_PASSWORD)
    assert target.sentinel_kwargs() == {"password": SENTINEL_PASSWORD}
    assert PASSWORD not in repr(target) and SENTINEL_PASSWORD not in repr(target)
    assert parse_sentinel_url("redis+sentinel://h:1?master_name=m", field="X").sentinels == (("h", 1),)


def test_a_sentinel_broker_url_becomes_kombus_sentinel_url_and_transport_options() -> None:
    url, options = celery_sentinel(SENTINEL_URL, field="OPENAI_PACK_BROKER_URL")
    assert url == f"sentinel://:{PASSWORD}@10.0.0.1:26379/3;sentinel://:{PASSWORD}@10.0.0.2:26379/3"
    assert options == {"master_name": "mymaster", "sentinel_kwargs": {"password": SENTINEL_PASSWORD}}


@pytest.mark.parametrize(("url", "says"), [
    (f"sentinel://:{PASSWORD}@h:1", "master name is missing"),
    (f"sentinel://:{PASSWORD}@h:1;redis://h:2?master_name=m", "every host must be a sentinel:// URL"),
    (f"sentinel://:{PASSWORD}@h:99999?master_name=m", "port is not a number"),
    (f"sentinel://:{PASSWORD}@h:1/x?master_name=m", "database must be a number"),
    (f"sentinel://:{PASSWORD}@h:1?master_name=m&sentinel_pasword=x", "unknown parameter 'sentinel_pasword'"),
    (f"rediss://:{PASSWORD}@h:1/0?ssl_cert_reqs=sometimes", "ssl_cert_reqs must be one of"),
    (f"rediss://:{PASSWORD}@h:1/0?ssl_cert_reqs=required&ssl_ca_certs=/no/such/ca.pem", "does not exist"),
    (f"redis://:{PASSWORD}@h:port/0", "Port could not be cast"),
    (f"memcached://:{PASSWORD}@h:1", "unsupported scheme 'memcached'"),
])
def test_a_malformed_redis_url_is_a_config_error_naming_the_variable_never_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url, field="OPENAI_PACK_STORE_URL")
    assert says in caught.value.message and caught.value.field == "OPENAI_PACK_STORE_URL"
    assert PASSWORD not in json.dumps(caught.value.to_dict())


def test_the_cli_refuses_a_malformed_broker_url_with_exit_2_and_no_password(worker_env: dict[str, str]) -> None:
    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": f"sentinel://:{PASSWORD}@127.0.0.1:1"}
    done = run_cli(env, "runs", "list", "--json")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "OPENAI_PACK_BROKER_URL" in done.stdout + done.stderr and "master name is missing" in done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_the_store_follows_a_sentinel_broker_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.settings import Settings

    monkeypatch.setenv("OPENAI_PACK_BROKER_URL", SENTINEL_URL)
    monkeypatch.delenv("OPENAI_PACK_STORE_URL", raising=False)
    assert Settings.from_env().store_url == SENTINEL_URL
    monkeypatch.setenv("OPENAI_PACK_STORE_URL", "redis://127.0.0.1:6379/5")
    assert Settings.from_env().store_url == "redis://127.0.0.1:6379/5"


def test_redact_url_masks_every_password_of_a_sentinel_url() -> None:
    shown = redact_url(SENTINEL_URL)
    assert PASSWORD not in shown and SENTINEL_PASSWORD not in shown and "master_name=mymaster" in shown


# ---------------------------------------------------------------- a password-protected Redis, end to end


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(workdir: Path, *args: str, ready: Any) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
                                "--appendonly", "no", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            if ready():
                return process
        except (redis.RedisError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)


TWO_STEPS = """
name: two-steps
steps:
  - id: moderate
    action: create_moderation
    input: {input: "hello"}
  - id: chat
    action: create_chat_completion
    input: {model: gpt-4o-mini, messages: [{role: user, content: "hello"}]}
"""


def _run_through(url: str, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                 wrong_url: str) -> tuple[dict[str, Any], str]:
    """A worker and a two-step workflow on ``url`` (broker and store), then the CLI with ``wrong_url``;
    returns the run record and everything printed, logged or raised on the way."""
    import workers.app
    from workers.observe.metrics import exposition

    env = dict(worker_env) | {"OPENAI_PACK_BROKER_URL": url, "TEST_WORKER_LOGLEVEL": "DEBUG"}
    point_process_at(env, monkeypatch)
    worker = WorkerProcess(env, concurrency=2, name="auth")
    try:
        engine = workers.app.engine()
        run_id, _ = engine.start_run(parse_workflow(TWO_STEPS, "two.yaml"), {}, trigger={"type": "manual"})
        record = finished_record(engine, run_id, timeout=90)
        shown = run_cli(env, "runs", "show", run_id, "--json")
        metrics = exposition(url).decode()
        wrong = run_cli(env | {"OPENAI_PACK_BROKER_URL": wrong_url}, "runs", "list", "--json")
        with pytest.raises(StoreUnavailableError) as refused:
            open_kv(wrong_url).get("anything")
    finally:
        worker.stop()
        monkeypatch.undo()
        workers.app.reconfigure()
    assert record["status"] == "succeeded", record.get("error")
    assert shown.returncode == 0 and run_id in shown.stdout, shown.stderr[-2000:]
    assert 'openai_pack_queue_depth{queue="openai_pack"}' in metrics  # read through the same URL helper
    assert wrong.returncode == 1 and "store_unavailable" in wrong.stderr, wrong.stdout + wrong.stderr[-2000:]
    printed = "\n".join([worker.output, shown.stdout, shown.stderr, wrong.stdout, wrong.stderr, metrics,
                         json.dumps(refused.value.to_dict()), str(refused.value), json.dumps(record)])
    assert "DEBUG" in worker.output
    return record, printed


def test_a_password_protected_redis_carries_a_run_and_the_password_is_printed_nowhere(
        worker_env: dict[str, str], simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    server = _start_redis(tmp_path, "--port", str(port), "--requirepass", PASSWORD,
                          ready=lambda: redis.Redis(port=port, password=PASSWORD, socket_timeout=1).ping())
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        wrong = f"redis://:not-the-{PASSWORD[::-1]}@127.0.0.1:{port}/0"
        _, printed = _run_through(url, worker_env, monkeypatch, wrong)
        dump = redis_dump(redis.Redis(port=port, password=PASSWORD, decode_responses=True))
    finally:
        stop_process(server)
    assert "AuthenticationError" in printed  # the wrong password was refused, and said so
    haystack = "\n".join([printed, *dump])
    assert len(dump) > 5
    for secret in (PASSWORD, f"not-the-{PASSWORD[::-1]}"):
        assert secret not in haystack, f"a password leaked ({haystack.index(secret)})"
    print(f"\n[redis auth] {len(printed.splitlines())} lines of output and errors, {len(dump)} Redis keys: "
          "0 occurrences of either password")


# ---------------------------------------------------------------- TLS


def _tls_supported() -> bool:
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        return False
    probe = subprocess.run([binary, "--port", "0", "--tls-port", "0"], capture_output=True, text=True, timeout=10,
                           check=False)
    return "Configured to not listen anywhere" in probe.stdout + probe.stderr  # TLS options understood


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=openai-pack test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "san.ext")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if not _tls_supported():
        pytest.skip("this redis-server has no TLS built in (or openssl is missing): the URL handling is tested above")
    ca, cert, key = _certificates(tmp_path)
    port = _free_port()
    server = _start_redis(tmp_path, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                          "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                          "--requirepass", PASSWORD,
                          ready=lambda: redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(ca),
                                                    socket_timeout=1).ping())
    try:
        yield port, ca
    finally:
        stop_process(server)


def test_tls_redis_by_url_carries_a_run_and_refuses_an_unverified_server(
        tls_redis: tuple[int, Path], worker_env: dict[str, str], simulator: Simulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port, ca = tls_redis
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    # The same server, but its certificate checked against the system's CAs: it must not be trusted.
    unverified = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
    _, printed = _run_through(url, worker_env, monkeypatch, unverified)
    assert "certificate verify failed" in printed
    assert PASSWORD not in printed
    with pytest.raises(StoreUnavailableError):  # plain text to a TLS port gets nowhere either
        open_kv(f"redis://:{PASSWORD}@127.0.0.1:{port}/0").get("anything")
    client = connect(url, field="OPENAI_PACK_STORE_URL", decode_responses=True)
    assert client.connection_pool.connection_class.__name__ == "SSLConnection" and client.dbsize() > 5
