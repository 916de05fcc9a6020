"""Issue 15: one worker process keeps hundreds of calls in flight, and a stalled call frees its place.

Real parts: a redis-server, ``openai-pack worker`` processes with very few pool threads, the
loopback simulator counting the requests it holds at once (``max_in_flight``), and a raw loopback
socket server that trickles an answer. Nothing here measures speed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actions.simulator import Simulator
from integration.aio import BridgeTransport, Gate, await_only, pause, run_bridged, wait_io
from integration.model import Integration
from integration.store import IntegrationStore
from tests.conftest import WorkerProcess, broker_of_its_own, write_certificates
from workers.workflow import parse_workflow

pytestmark = pytest.mark.timeout(300)


def fanout(concurrency: int, *, timeout: float | None = None, integration: str | None = None) -> str:
    extra = f"\n    timeout: {timeout}" if timeout is not None else ""
    extra += f"\n    integration: {integration}" if integration else ""
    return f"""
name: wide
inputs:
  records: {{type: array, items: {{type: string}}}}
steps:
  - id: classify
    action: create_chat_completion
    with_items: "{{{{ inputs.records }}}}"
    concurrency: {concurrency}{extra}
    input:
      model: gpt-4o-mini
      messages: [{{role: user, content: "item {{{{ index }}}}"}}]
"""


@pytest.fixture
def wide_broker(worker_env: dict[str, str], redis_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        dict[str, str]]:
    """Workers of their own on another Redis database (the session worker takes none of these tasks)."""
    yield from broker_of_its_own(worker_env, redis_server, monkeypatch, 6)


def _start(records: int, text: str) -> tuple[Any, str]:
    import workers.app

    engine = workers.app.engine()
    run_id, _ = engine.start_run(parse_workflow(text, "wide.yaml"), {"records": [str(i) for i in range(records)]},
                                 trigger={"type": "manual"})
    return engine, run_id


def _calls_per_item(simulator: Simulator) -> Counter[str]:
    return Counter(json.dumps(r["body"]["messages"]) for r in simulator.requests if r["path"] == "/v1/chat/completions")


def test_four_pool_threads_hold_hundreds_of_calls_in_flight(wide_broker: dict[str, str],
                                                            simulator: Simulator) -> None:
    # answers after 12 s (read timeout 60 s): every call has reached the simulator (which validates each
    # body, in this test process) before the first answer, even on a loaded machine
    simulator.add_fault({"kind": "latency", "latency": 12.0, "times": -1})
    store = IntegrationStore(path=Path(wide_broker["OPENAI_PACK_HOME"]) / "integrations.json")
    store.add(Integration(name="patient", base_url=simulator.url, auth={"placement": "none"},
                          timeout={"connect": 5, "read": 60}, max_retries=0), replace=True)
    worker = WorkerProcess(wide_broker, concurrency=4, name="wide")
    try:
        engine, run_id = _start(600, fanout(600, integration="patient"))
        header = engine.wait(run_id, 120)
    finally:
        worker.stop()
    record = engine.store.record(run_id)
    failed = [r for r in record["steps"][0]["item_results"] if r["status"] != "succeeded"]
    assert header is not None and header["status"] == "succeeded", ([f.get("error") for f in failed[:2]], len(failed), simulator.max_in_flight)
    assert record["steps"][0]["items"] == {"total": 600, "succeeded": 600, "failed": 0}
    calls = _calls_per_item(simulator)
    assert len(calls) == 600 and max(calls.values()) == 1
    # 4 pool threads, 600 calls held by the server at once: the calls wait on the event loop, not on threads
    print(f"\n[in flight] one worker, 4 pool threads: the simulator held {simulator.max_in_flight} calls at once")
    assert simulator.max_in_flight >= 500


def test_stalled_calls_end_at_their_timeout_and_free_their_slot(wide_broker: dict[str, str],
                                                                simulator: Simulator) -> None:
    """Scenario 4 inside a 1,000-wide fan-out: paid calls hanging past the step's 10 s timeout.

    (10 s, not less: the other 995 calls reach the in-process simulator at once and must be answered
    within it on a loaded machine.)"""
    simulator.add_fault({"kind": "hang", "latency": 280, "times": 5})
    worker = WorkerProcess(wide_broker, concurrency=4, name="stall")
    try:
        started = time.monotonic()
        engine, run_id = _start(1000, fanout(1000, timeout=10))
        header = engine.wait(run_id, 200)  # well before a 280 s hang could end on its own
        waited = time.monotonic() - started
    finally:
        worker.stop()
    assert header is not None and header["status"] == "failed", (header, waited)
    items = engine.store.record(run_id)["steps"][0]["item_results"]
    stalled = [r for r in items if r["status"] != "succeeded"]
    assert len(stalled) == 5 and all(r["error"]["code"] == "outcome_unknown" for r in stalled), stalled[:1]
    calls = _calls_per_item(simulator)
    assert len(calls) == 1000 and max(calls.values()) == 1  # the paid calls that hung were not repeated


def test_sigkill_with_a_thousand_in_flight_loses_nothing_and_pays_once(wide_broker: dict[str, str],
                                                                       simulator: Simulator) -> None:
    """Scenario 5 at concurrency 1,000: the worker dies with its calls in flight; a new one finishes."""
    simulator.add_fault({"kind": "latency", "latency": 0.5, "times": -1})
    first = WorkerProcess(wide_broker, concurrency=4, name="doomed")
    engine, run_id = _start(2500, fanout(1000))
    deadline = time.monotonic() + 120
    while engine.store.counter(run_id, "done:classify") < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    done_at_kill = engine.store.counter(run_id, "done:classify")
    first.kill()
    second = WorkerProcess(wide_broker, concurrency=4, name="rescuer")
    try:
        header = engine.wait(run_id, 180)
    finally:
        second.stop()
    assert header is not None and header["status"] in ("succeeded", "failed"), header
    items = engine.store.record(run_id)["steps"][0]["item_results"]
    assert len(items) == 2500
    unknown = [i for i, r in enumerate(items) if r["status"] != "succeeded"]
    assert all(items[i]["error"]["code"] == "outcome_unknown" for i in unknown)
    assert len(unknown) <= 1000  # at most what was in flight at the kill
    calls = _calls_per_item(simulator)
    assert max(calls.values()) == 1, "a paid call was made twice"
    succeeded = {json.dumps([{"role": "user", "content": f"item {i}"}]) for i, r in enumerate(items)
                 if r["status"] == "succeeded"}
    assert succeeded <= set(calls)  # every success was a call the server received
    print(f"\n[scenario 5 at 1,000] killed at {done_at_kill}/2500; {2500 - len(unknown)} succeeded, "
          f"{len(unknown)} outcome unknown, max calls per item 1")


# ---------------------------------------------------------------- the bridge on its own


class Trickler:
    """A loopback server that reads a request, then sends one byte of its answer every 0.2 s, forever."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
            for byte in answer:
                if self.stopped.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


def test_a_trickling_answer_is_cut_at_the_total_timeout_on_the_loop() -> None:
    """httpx's read timeout restarts with every byte; a bridged call still ends at connect+write+read."""
    server = Trickler()
    transport = BridgeTransport()
    client = httpx.Client(transport=transport, timeout=httpx.Timeout(1.0))

    def call() -> str:
        try:
            client.get(f"http://127.0.0.1:{server.port}/")
        except httpx.ReadTimeout as exc:
            return str(exc)
        return "answered"

    try:
        outcome = asyncio.run(asyncio.wait_for(run_bridged(call), 30))
    finally:
        client.close()
        server.close()
    assert "no complete answer within 3 s" in outcome


class TlsServer:
    """HTTPS on 127.0.0.1 with a throw-away CA: answers every GET with a small JSON body, keep-alive."""

    def __init__(self, workdir: Path) -> None:
        import http.server
        import ssl

        self.ca_file = workdir / "ca.pem"
        write_certificates(workdir, self.ca_file)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                body = json.dumps({"object": "list", "data": [{"id": "gpt-4o-mini"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(workdir / "server.pem", workdir / "server.key")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/v1/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_bridged_calls_speak_tls_and_check_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real API is HTTPS: twenty bridged calls on one loop complete over TLS with a trusted CA (the
    handshake and every read wait on the loop), and a certificate nobody vouches for is refused."""
    server = TlsServer(tmp_path)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))  # what httpx's default context trusts
        trusted = BridgeTransport()
        with httpx.Client(transport=trusted, base_url=server.url, timeout=10) as client:
            async def many() -> list[Any]:
                return list(await asyncio.gather(*(run_bridged(lambda: client.get("models").json()["data"][0]["id"])
                                                   for _ in range(20))))

            assert asyncio.run(asyncio.wait_for(many(), 30)) == ["gpt-4o-mini"] * 20
            assert len(trusted._lanes) <= 20  # kept alive, reused afterwards
            assert asyncio.run(run_bridged(lambda: client.get("models").status_code)) == 200
        monkeypatch.delenv("SSL_CERT_FILE")
        with httpx.Client(transport=BridgeTransport(), base_url=server.url, timeout=10) as client:
            def refused() -> str:
                try:
                    client.get("models")
                except httpx.ConnectError as exc:
                    return str(exc)
                return "answered"

            assert "CERTIFICATE_VERIFY_FAILED" in asyncio.run(run_bridged(refused))
    finally:
        server.close()


def test_a_wait_without_a_timeout_of_its_own_still_ends_at_the_exchanges_deadline() -> None:
    """A socket with no timeout (``None``) inside an exchange bounded to 0.3 s: the wait ends there."""
    from greenlet import getcurrent

    quiet, other = socket.socketpair()

    def wait() -> float:
        getcurrent().deadline = time.monotonic() + 0.3  # what BridgeTransport sets for one exchange
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            wait_io(quiet, timeout=None)
        return time.monotonic() - started

    try:
        waited = asyncio.run(asyncio.wait_for(run_bridged(wait), 10))
    finally:
        quiet.close()
        other.close()
    assert 0.2 < waited < 5


def test_outside_a_bridge_the_transport_and_pause_block_as_before(simulator: Simulator) -> None:
    with httpx.Client(transport=BridgeTransport(), base_url=simulator.url + "/") as client:
        assert client.get("models").status_code == 200
    pause(0.01)  # plain time.sleep outside a bridged greenlet


def test_many_bridged_calls_share_one_loop(simulator: Simulator) -> None:
    """Fifty synchronous callers, one thread: all fifty requests are at the server at the same time."""
    simulator.add_fault({"kind": "latency", "latency": 1.0, "times": -1})
    transport = BridgeTransport()
    client = httpx.Client(transport=transport, base_url=simulator.url + "/")

    async def main() -> list[int]:
        codes = await asyncio.gather(*(run_bridged(lambda: client.get("models").status_code) for _ in range(50)))
        return list(codes)

    try:
        assert asyncio.run(main()) == [200] * 50
    finally:
        client.close()
    assert simulator.max_in_flight == 50


def test_the_gate_bounds_the_greenlets_working_not_those_waiting() -> None:
    """Fifty greenlets under a gate of 4: at most 4 inside work (a wait that keeps the place), all 50 asleep
    at once (``pause`` gives the place up), and a greenlet cancelled while waiting for a place leaks none."""
    gate = Gate(4)
    now = {"working": 0, "sleeping": 0}
    most = {"working": 0, "sleeping": 0}

    def inside(what: str, wait: Any) -> None:
        now[what] += 1
        most[what] = max(most[what], now[what])
        wait()
        now[what] -= 1

    def chain() -> None:
        for _ in range(3):
            inside("working", lambda: await_only(asyncio.sleep(0.005)))  # a short wait keeps the place
            inside("sleeping", lambda: pause(0.2))  # a long one gives it up
        assert most["working"] <= 4

    async def main() -> int:
        await asyncio.gather(*(run_bridged(chain, gate=gate) for _ in range(50)))
        holders = [asyncio.ensure_future(run_bridged(lambda: await_only(asyncio.sleep(0.2)), gate=gate))
                   for _ in range(4)]
        await asyncio.sleep(0.05)
        waiter = asyncio.ensure_future(run_bridged(lambda: None, gate=gate))  # all four places are taken
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, *holders, return_exceptions=True)
        most["working"] = 0  # every place is free again: four greenlets get in at once
        await asyncio.gather(*(run_bridged(inside, "working", lambda: await_only(asyncio.sleep(0.05)), gate=gate)
                               for _ in range(4)))
        return most["working"]

    assert asyncio.run(asyncio.wait_for(main(), 60)) == 4
    assert most["sleeping"] == 50


def test_the_heartbeat_extends_every_held_lease_in_one_round_trip(redis_server: str) -> None:
    """A process holding a thousand leases extended them one round trip each: slower than their TTL
    on a loaded machine, so live items were taken over by a redelivered slot. Now one pipeline."""
    from workers.state.kv import RedisKV

    kv = RedisKV(redis_server.rsplit("/", 1)[0] + "/7")
    kv.redis.flushdb()
    for i in range(1000):
        kv.set(f"lease:{i}", "me", ttl=5)
    kv.set("lease:other", "someone else", ttl=5)
    entries = [(f"lease:{i}", "me", 60.0) for i in range(1000)] + [("lease:other", "me", 60.0), ("lease:gone", "me", 60)]
    extended = kv.extend_all(entries)
    assert extended == [True] * 1000 + [False, False]
    assert kv.redis.pttl("lease:999") > 55_000 and kv.redis.pttl("lease:other") <= 5_000
