"""Issue 14 without worker processes: the price table and costs, spend caps on a real store, the Reconify
outbox against a loopback sink, sealed Reconify keys, traces into the SDK's in-memory exporter."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.errors import BadRequestError, BudgetExceededError, ConfigError, RateLimitedError
from integration.model import Integration
from integration.redact import scrub
from integration.store import IntegrationStore
from workers.observe import cost as costs
from workers.observe import reconify, tracing
from workers.state.kv import SqliteKV
from workers.state.spend import SpendCaps, spent

APP_CANARY = "rcfy-app-CANARY-7e1d9a3c5b"
API_CANARY = "rcfy-api-CANARY-2f8b6d4e0a"


# ---------------------------------------------------------------- the price table


def test_the_price_table_says_its_date_and_source_and_prices_what_the_issue_lists() -> None:
    table = costs.prices()
    data = table.data
    assert data["as_of"] and data["source"].startswith("https://") and table.version
    assert data["batch_discount"] == 0.5
    mini = data["tokens_per_million"]["gpt-4o-mini"]
    assert set(mini) == {"input", "cached_input", "output"}
    assert data["images_per_image"]["dall-e-3"]["hd"]["1024x1024"] > 0
    assert data["audio_per_minute"]["whisper-1"] > 0
    assert data["tokens_per_million"]["text-embedding-3-small"]["input"] > 0


def test_a_chat_cost_is_tokens_times_the_table_with_cached_tokens_at_their_price() -> None:
    price = costs.prices().data["tokens_per_million"]["gpt-4o"]
    output = {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 1000, "completion_tokens": 200,
                                                      "prompt_tokens_details": {"cached_tokens": 400}}}
    found = costs.cost_of("create_chat_completion", {"model": "gpt-4o"}, output, None)
    expected = (600 * price["input"] + 400 * price["cached_input"] + 200 * price["output"]) / 1e6
    assert found.usd == pytest.approx(expected) and found.model == "gpt-4o-2024-08-06" and found.reason is None


def test_an_unknown_model_has_no_cost_and_says_why_never_a_guess() -> None:
    found = costs.cost_of("create_chat_completion", {"model": "my-local-llama"},
                          {"model": "my-local-llama", "usage": {"prompt_tokens": 5, "completion_tokens": 5}}, None)
    assert found.usd is None and "my-local-llama" in (found.reason or "")
    no_usage = costs.cost_of("create_chat_completion", {"model": "gpt-4o"}, {"model": "gpt-4o"}, None)
    assert no_usage.usd is None and "usage" in (no_usage.reason or "")
    # an action that takes no model and reports no usage (listing models) is not billed per call
    assert costs.cost_of("list_models", {}, {"data": []}, None, takes_model=False).usd == 0.0


def test_images_are_priced_per_image_by_quality_and_size() -> None:
    table = costs.prices().data["images_per_image"]["dall-e-3"]
    found = costs.cost_of("create_image", {"model": "dall-e-3", "quality": "hd", "size": "1024x1792"},
                          {"data": [{"url": "u1"}, {"url": "u2"}]}, None)
    assert found.usd == pytest.approx(2 * table["hd"]["1024x1792"])
    odd = costs.cost_of("create_image", {"model": "dall-e-3", "size": "7x7"}, {"data": [{}]}, None)
    assert odd.usd is None and "7x7" in (odd.reason or "")


def test_a_user_price_file_overrides_model_by_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"version": "acme-1", "tokens_per_million": {
        "my-local-llama": {"input": 1.0, "cached_input": None, "output": 2.0}}}))
    monkeypatch.setenv(costs.PRICES_ENV, str(user))
    found = costs.cost_of("create_chat_completion", {"model": "my-local-llama"},
                          {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 500_000}}, None)
    assert found.usd == pytest.approx(2.0)
    assert costs.prices().entry("tokens_per_million", "gpt-4o-mini") is not None  # the shipped ones stay
    user.write_text("{not json")
    costs._table.cache_clear()
    with pytest.raises(ConfigError) as caught:
        costs.prices()
    assert caught.value.details["field"] == costs.PRICES_ENV


# ---------------------------------------------------------------- spend caps


@pytest.fixture
def kv(tmp_path: Path) -> SqliteKV:
    return SqliteKV(tmp_path / "state.sqlite3")


def test_a_spend_cap_refuses_before_crossing_and_settles_to_the_actual_cost(kv: SqliteKV) -> None:
    capped = Integration(name="acme", auth={"placement": "none"}, spend_caps={"daily_usd": 0.01})
    caps = SpendCaps(kv)
    first = caps.reserve(capped, 0.006)
    caps.settle(first, 0.002)  # the answer cost less than the estimate
    assert spent(kv, "acme") == pytest.approx(0.002)
    second = caps.reserve(capped, 0.006)  # 0.008 held: under the cap
    with pytest.raises(BudgetExceededError) as caught:
        caps.reserve(capped, 0.006)  # would be 0.014
    error = caught.value
    assert error.code == "budget_exceeded" and error.details["cap"] == "daily" and error.details["called"] is False
    assert "daily spend cap of $0.01" in error.message and "acme" in error.message
    assert spent(kv, "acme") == pytest.approx(0.008)  # the refused estimate was taken back
    caps.release(second)  # a call that failed before it was billed gives its hold back
    assert spent(kv, "acme") == pytest.approx(0.002)


def test_a_capped_integration_refuses_a_model_it_cannot_price(kv: SqliteKV) -> None:
    capped = Integration(name="acme", auth={"placement": "none"}, spend_caps={"monthly_usd": 5})
    with pytest.raises(BudgetExceededError) as caught:
        SpendCaps(kv).reserve(capped, None, reason="no price for model 'x'")
    assert caught.value.details["cap"] == "monthly" and "no price for model 'x'" in caught.value.message
    uncapped = Integration(name="free", auth={"placement": "none"})
    assert SpendCaps(kv).reserve(uncapped, None).keys == []


@pytest.mark.parametrize("caps", [{"daily_usd": 0}, {"daily_usd": -1}, {"monthly_usd": float("nan")},
                                  {"weekly_usd": 3}])
def test_bad_spend_caps_name_the_field(caps: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        Integration.build(name="acme", auth={"placement": "none"}, spend_caps=caps)
    assert caught.value.details["field"].startswith("spend_caps")


# ---------------------------------------------------------------- the Reconify outbox against a loopback sink


class Sink:
    """A loopback Reconify endpoint: answers ``status`` (or never, with ``hang``) and keeps what it got."""

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status, self.hang = status, hang
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.received.append(json.loads(body))
                if sink.hang:
                    sink.release.wait(30)
                    return
                self.send_response(sink.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/track"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def reconify_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(reconify.APP_KEY_ENV, APP_CANARY)
    monkeypatch.setenv(reconify.API_KEY_ENV, API_CANARY)
    monkeypatch.setenv("OPENAI_PACK_RECONIFY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("OPENAI_PACK_RECONIFY_TIMEOUT", "1")


def _queue_one(kv: SqliteKV, sink_url: str) -> reconify.Outbox:
    store = IntegrationStore()
    store.add(Integration(name="acme", auth={"placement": "none"}, reconify={"url": sink_url}), make_default=True)
    outbox = reconify.Outbox(kv)
    copy = reconify.build_copy(request={"model": "gpt-4o-mini", "prompt": "hi", "user": "u-1"},
                               response={"id": "cmpl-1"}, session="run-1", requested_ms=1, responded_ms=2)
    assert outbox.put("acme", "create_completion", copy)
    return outbox


def test_the_drain_delivers_the_seed_shape_with_the_keys_added_at_send_time(kv: SqliteKV, reconify_env: None) -> None:
    with Sink() as sink, httpx.Client(timeout=2) as client:
        outbox = _queue_one(kv, sink.url)
        stored = json.dumps([kv.get(k) for k in outbox.pending()])
        assert APP_CANARY not in stored and API_CANARY not in stored  # the outbox holds no key
        result = outbox.drain(client=client)
    assert result["sent"] == 1 and outbox.pending() == [] and outbox.totals()["delivered"] == 1
    assert sink.received == [{
        "reconify": {"format": "openai", "type": "completion", "version": "1.0.0", "appKey": APP_CANARY,
                     "apiKey": API_CANARY},
        "timestamps": {"request": 1, "response": 2}, "session": "run-1", "user": {"userId": "u-1"},
        "request": {"model": "gpt-4o-mini", "prompt": "hi", "user": "u-1"}, "response": {"id": "cmpl-1"}}]


@pytest.mark.parametrize("hang", [False, True], ids=["answers-500", "hangs"])
def test_a_failing_sink_is_retried_up_to_the_cap_then_the_copy_is_dropped_and_counted(
        kv: SqliteKV, reconify_env: None, hang: bool) -> None:
    with Sink(status=500, hang=hang) as sink, httpx.Client(timeout=httpx.Timeout(0.5)) as client:
        outbox = _queue_one(kv, sink.url)
        first = outbox.drain(client=client)
        assert first["failed"] == 1 and first["retry_in"] is not None and len(outbox.pending()) == 1
        second = outbox.drain(client=client)
    assert second["dropped"] == 1 and outbox.pending() == []
    assert outbox.totals() == {"queued": 1, "delivered": 0, "failed": 2, "dropped": 1}
    assert len(sink.received) == 2


def test_a_full_outbox_drops_new_copies_and_counts_them(kv: SqliteKV, reconify_env: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_PACK_RECONIFY_MAX_QUEUED", "1")
    outbox = _queue_one(kv, "http://127.0.0.1:9/track")
    assert not outbox.put("acme", "create_completion", {"request": {}, "response": {}})
    assert len(outbox.pending()) == 1 and outbox.totals()["dropped"] == 1


def test_reconify_keys_of_an_integration_are_sealed_at_rest_and_never_shown(tmp_path: Path) -> None:
    store = IntegrationStore(path=tmp_path / "integrations.json")
    store.add(Integration(name="acme", auth={"placement": "none"},
                          reconify={"url": "https://reconify.example/track", "app_key": APP_CANARY,
                                    "api_key": API_CANARY}))
    at_rest = (tmp_path / "integrations.json").read_text()
    assert APP_CANARY not in at_rest and API_CANARY not in at_rest and "app_key_sealed" in at_rest
    loaded = IntegrationStore(path=tmp_path / "integrations.json").get("acme")
    sink = reconify.sink_for(loaded)
    assert sink is not None and sink.app_key == APP_CANARY and sink.api_key == API_CANARY
    shown = json.dumps(loaded.public_dict()) + repr(loaded) + repr(sink)
    assert APP_CANARY not in shown and API_CANARY not in shown
    assert loaded.public_dict()["reconify"] == {"url": "https://reconify.example/track", "has_app_key": True,
                                                "has_api_key": True}
    assert APP_CANARY not in scrub(f"a log line with {APP_CANARY}")  # opened keys are redacted like API keys
    assert store.rotate() == 0  # no API key sealed; the Reconify ones stay readable
    assert reconify.sink_for(IntegrationStore(path=tmp_path / "integrations.json").get("acme")) == sink


# ---------------------------------------------------------------- traces into the in-memory exporter


@pytest.fixture
def memory_spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.setup(exporter, force=True)
    yield exporter
    tracing.reset()


def test_tracing_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    tracing.reset()
    assert not tracing.enabled()
    with tracing.span("nothing") as current:
        assert current is None


def _metered_chat(kv: SqliteKV, integration: Integration, content: str) -> dict[str, Any]:
    import actions
    from actions import CallOptions
    from workers.observe import Meter

    manifest = actions.get("create_chat_completion")
    inputs = actions.prepare("create_chat_completion", {"model": "gpt-4o-mini", "max_tokens": "9",
                                                        "messages": [{"role": "user", "content": content}]})
    with Meter(manifest, inputs, integration, kv, key="task:t1") as meter:
        result = actions.execute("create_chat_completion", inputs, integration, already_prepared=True,
                                 options=meter.options(CallOptions()))
        return meter.done(result.output, result.usage, result.attempts, result.request_ids)


def test_prompts_enter_spans_only_when_asked_and_then_redacted(memory_spans: Any, kv: SqliteKV,
                                                              sim_integration: Integration,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from integration.redact import register_secret
    from tests.conftest import CANARY_KEY

    register_secret(CANARY_KEY)
    monkeypatch.delenv("OPENAI_PACK_RECONIFY_URL", raising=False)
    cost = _metered_chat(kv, sim_integration, f"my key is {CANARY_KEY}, say hello")
    assert cost["usd"] > 0 and cost["model"] == "gpt-4o-mini" and cost["integration"] == "sim"
    (quiet,) = memory_spans.get_finished_spans()
    assert quiet.name == "chat gpt-4o-mini" and "gen_ai.input.messages" not in quiet.attributes
    assert quiet.attributes["gen_ai.usage.input_tokens"] > 0 and quiet.attributes["openai_pack.cost_usd"] == cost["usd"]
    memory_spans.clear()

    monkeypatch.setenv(tracing.CONTENT_ENV, "true")
    _metered_chat(kv, sim_integration, f"my key is {CANARY_KEY}, say hello")
    (told,) = memory_spans.get_finished_spans()
    prompt = told.attributes["gen_ai.input.messages"]
    assert "say hello" in prompt and CANARY_KEY not in prompt  # opted in: the prompt, scrubbed of the key
    assert "gen_ai.output.messages" in told.attributes
    assert CANARY_KEY not in json.dumps({k: str(v) for k, v in told.attributes.items()})


def test_a_failed_call_gives_its_spend_hold_back_and_marks_its_span(memory_spans: Any, kv: SqliteKV,
                                                                    simulator: Any) -> None:
    capped = Integration(name="capped", base_url=simulator.url, auth={"placement": "none"}, max_retries=0,
                         spend_caps={"daily_usd": 1.0})
    simulator.add_fault({"kind": "status", "status": 400, "times": 1})
    with pytest.raises(BadRequestError) as caught:
        _metered_chat(kv, capped, "hello")
    assert spent(kv, "capped") == 0.0  # a 400 is not billed: the estimate held before the call is released
    (failed,) = memory_spans.get_finished_spans()
    assert failed.status.status_code.name == "ERROR" and failed.attributes["error.type"] == caught.value.code


def test_a_streamed_chat_is_copied_with_the_assembled_answer_and_the_body_as_sent(
        kv: SqliteKV, sim_integration: Integration, simulator: Any, reconify_env: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import actions
    from actions import CallOptions
    from workers.observe import Meter

    monkeypatch.setenv(reconify.URL_ENV, "http://127.0.0.1:9/never-called-here")
    inputs = actions.prepare("create_chat_completion", {"model": "gpt-4o-mini", "stream": "true", "user": "u-7",
                                                        "messages": [{"role": "user", "content": "stream me"}]})
    manifest = actions.get("create_chat_completion")
    with Meter(manifest, inputs, sim_integration, kv, key="task:abc") as meter:
        result = actions.execute("create_chat_completion", inputs, sim_integration, already_prepared=True,
                                 options=meter.options(CallOptions()))
    outbox = reconify.Outbox(kv)
    (key,) = outbox.pending()
    entry = json.loads(kv.get(key) or "{}")
    assert entry["integration"] == "sim" and entry["type"] == "chat"
    copy = entry["copy"]
    assert copy["request"] == simulator.requests[-1]["body"] and copy["request"]["stream"] is True
    assert copy["response"] == result.output and copy["response"]["object"] == "chat.completion"
    assert copy["session"] == "abc" and copy["user"] == {"userId": "u-7"}
    assert APP_CANARY not in json.dumps(entry) and API_CANARY not in json.dumps(entry)


def test_a_broken_price_file_never_loses_a_paid_answer(kv: SqliteKV, sim_integration: Integration,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "prices.json"
    broken.write_text("[1, 2")
    monkeypatch.setenv(costs.PRICES_ENV, str(broken))
    monkeypatch.delenv("OPENAI_PACK_RECONIFY_URL", raising=False)
    cost = _metered_chat(kv, sim_integration, "hello")
    assert cost["usd"] is None and costs.PRICES_ENV in cost["reason"]


def test_integrations_add_takes_spend_caps_and_a_reconify_override_without_showing_its_keys(
        isolated_home: Path) -> None:
    import os

    from tests.conftest import run_cli

    env = {**os.environ, "OPENAI_PACK_HOME": str(isolated_home), "ACME_RCFY_APP_KEY": APP_CANARY,
           "ACME_RCFY_API_KEY": API_CANARY}
    added = run_cli(env, "integrations", "add", "acme", "--auth", "none", "--daily-cap-usd", "5",
                    "--reconify-url", "https://reconify.example/track", "--reconify-keys-env", "ACME_RCFY")
    assert added.returncode == 0, added.stderr
    listed = run_cli(env, "integrations", "list", "--json")
    (entry,) = [i for i in json.loads(listed.stdout) if i["name"] == "acme"]
    assert entry["spend_caps"] == {"daily_usd": 5.0, "monthly_usd": None}
    assert entry["reconify"] == {"url": "https://reconify.example/track", "has_app_key": True, "has_api_key": True}
    everything = added.stdout + added.stderr + listed.stdout + (isolated_home / "integrations.json").read_text()
    assert APP_CANARY not in everything and API_CANARY not in everything
    bad = run_cli(env, "integrations", "add", "beta", "--auth", "none", "--monthly-cap-usd", "-3")
    assert bad.returncode == 2 and "spend_caps.monthly_usd" in bad.stderr and "Traceback" not in bad.stderr


def test_retries_and_429s_are_counted_in_the_metrics(kv: SqliteKV, simulator: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    monkeypatch.delenv("OPENAI_PACK_RECONIFY_URL", raising=False)
    labels = {"action": "create_chat_completion", "integration": "metered"}

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    patient = Integration(name="metered", base_url=simulator.url, auth={"placement": "none"}, max_retries=2)
    before = sample("openai_pack_retries_total")
    simulator.add_fault({"kind": "status", "status": 429, "times": 1, "headers": {"retry-after-ms": "20"}})
    _metered_chat(kv, patient, "hello")
    assert sample("openai_pack_retries_total") == before + 1

    hasty = patient.model_copy(update={"max_retries": 0})
    limited = sample("openai_pack_rate_limited_total")
    simulator.add_fault({"kind": "status", "status": 429, "times": 1, "headers": {"retry-after-ms": "20"}})
    with pytest.raises(RateLimitedError):
        _metered_chat(kv, hasty, "hello")
    assert sample("openai_pack_rate_limited_total") == limited + 1
    failed = REGISTRY.get_sample_value("openai_pack_steps_total", {"action": "create_chat_completion",
                                                                   "status": "failed", "code": "rate_limited"})
    assert failed and failed >= 1
