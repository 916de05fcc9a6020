"""Observability and cost around each paid call: spend caps, cost, metrics, traces, the Reconify copy.

The engine and the ledgered call (``workers.calls``) hold only a few lines that call in here:

- ``Meter``: wraps one action execution. Before: reserves the estimated cost against the
  integration's spend caps (``workers.state.spend``), opens the API-call span. During: the
  client's hooks time the call and queue the Reconify copy (``reconify``). After: the cost from
  the price table (``cost``), the metrics (``metrics``), the span's GenAI attributes, and the
  reservation settled to the actual cost (or given back when nothing was billed);
- ``step_scope``: the step's span, and the run id the Reconify copy uses as its session;
- ``run_started``: the span a run's first message carries (``tracing``).

Nothing here may fail or slow a step for its own sake: metric, span and outbox failures are
logged and swallowed; only a spend cap refuses a call, on purpose, before it is sent.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from celery.signals import worker_init

from actions import ActionManifest, Call, CallOptions
from integration.client import ApiResponse
from integration.errors import BudgetExceededError, NoAnswerError, OutcomeUnknownError, PackError, RateLimitedError
from integration.model import Integration
from workers.observe import cost as costs
from workers.observe import metrics, reconify, tracing
from workers.requeue import Requeue
from workers.state.kv import KV, Op
from workers.state.runs import RunStore
from workers.state.spend import Reservation, SpendCaps

__all__ = ["Meter", "run_started", "step_scope"]

log = logging.getLogger("openai_pack.observe")
#: The answer's size assumed for a spend-cap estimate when the input sets no cap (as the rate budget does).
DEFAULT_ANSWER_TOKENS = 256
_session: contextvars.ContextVar[str | None] = contextvars.ContextVar("opk_session", default=None)
#: gen_ai.operation.name per action (the GenAI conventions' names); others use the action's name.
_OPERATIONS = {"create_chat_completion": "chat", "create_response": "chat", "create_completion": "text_completion",
               "create_embedding": "embeddings", "create_image": "generate_content"}


@contextmanager
def step_scope(run_id: str, step_id: str, item: int | None) -> Iterator[None]:
    """While a step (or fan-out item) runs: its span, and its run id as the Reconify session."""
    token = _session.set(run_id)
    try:
        with tracing.span(f"workflow.step {step_id}", {"openai_pack.run_id": run_id, "openai_pack.step": step_id,
                                                      "openai_pack.item": item}):
            yield
    finally:
        _session.reset(token)


@contextmanager
def run_started(run_id: str, workflow: str) -> Iterator[None]:
    """Around dispatching a run's first step, so one trace shows the whole run."""
    with tracing.started_run(run_id, workflow):
        yield


@worker_init.connect
def _worker_metrics(**_: Any) -> None:
    """A worker serves its own ``/metrics`` when ``OPENAI_PACK_METRICS_PORT`` is set."""
    _quietly("metrics endpoint", metrics.start_worker_exporter)


def _quietly(what: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:  # observability must never fail the step
        log.warning("%s failed: %s", what, type(exc).__name__)


class Meter:
    """One action execution's spend reservation, span, metrics, cost and Reconify copy."""

    def __init__(self, manifest: ActionManifest, inputs: dict[str, Any], integration: Integration, kv: KV,
                 *, key: str) -> None:
        self.manifest, self.inputs, self.integration, self.kv = manifest, inputs, integration, kv
        self.session = _session.get() or key.removeprefix("task:")  # a run id, or a task id
        self.cost: dict[str, Any] | None = None
        #: For a workflow step, the write adding the cost to its run's total (batched with the step's record).
        self.cost_op: Op | None = None
        self._held = Reservation()
        self._span_cm: Any = None
        self._span: Any = None
        self._started = 0.0
        self._labels = (manifest.name, integration.name)

    # before ------------------------------------------------------------------------------------
    def __enter__(self) -> Meter:
        estimate = self.estimate()
        try:
            self._held = SpendCaps(self.kv).reserve(self.integration, estimate.usd, reason=estimate.reason,
                                                    what=f"{self.manifest.name}")
        except BudgetExceededError as exc:
            _quietly("metrics", self._count_refusal, exc)
            raise
        model = self.inputs.get("model") if isinstance(self.inputs.get("model"), str) else None
        operation = _OPERATIONS.get(self.manifest.name, self.manifest.name)
        self._span_cm = tracing.span(f"{operation} {model}" if model else operation, {
            "gen_ai.operation.name": operation, "gen_ai.system": "openai", "gen_ai.request.model": model,
            "server.address": tracing.server_address(self.integration.base_url),
            "openai_pack.action": self.manifest.name, "openai_pack.integration": self.integration.name}, kind="client")
        self._span = self._span_cm.__enter__()
        self._started = time.monotonic()
        _quietly("metrics", lambda: metrics.child(metrics.in_flight, self.manifest.name).inc())
        return self

    def estimate(self) -> costs.Cost:
        """The most this call should cost, for the spend caps (0 for calls billed by nothing they send)."""
        if not self.integration.spend_caps.daily_usd and not self.integration.spend_caps.monthly_usd:
            return costs.Cost(0.0)
        name = self.manifest.name
        if name in ("create_image", "create_image_edit", "create_image_variation"):
            images = self.inputs.get("n") if isinstance(self.inputs.get("n"), int) else 1
            return costs.cost_of(name, self.inputs, {"data": [{}] * images}, None)
        if "model" not in self.manifest.properties:
            return costs.Cost(0.0)
        if costs.prices().entry("audio_per_minute", self.inputs.get("model")) is not None:
            return costs.Cost(0.0)  # billed by the audio's length, known only from the answer: settled after
        declared = self.manifest.budget_fields("output-cap")
        caps = declared or ["max_output_tokens"]  # the Responses API's cap, where the manifest declares none
        answer = next((self.inputs[k] for k in caps if isinstance(self.inputs.get(k), int)), DEFAULT_ANSWER_TOKENS)
        choices = self.inputs.get("n") if isinstance(self.inputs.get("n"), int) else 1
        total = self.manifest.estimate_tokens(self.inputs)  # what is sent, plus the declared cap times n
        if not declared:
            total += answer * max(1, choices)
        return costs.estimate_upper_bound(self.inputs, total, min(total, answer * max(1, choices)))

    def options(self, base: CallOptions) -> CallOptions:
        """The worker's options, with this meter's hooks run after the rate budget's."""

        def before(call: Call) -> None:
            try:
                if base.before_request:
                    base.before_request(call)
            except Requeue:
                _quietly("metrics", lambda: metrics.child(metrics.budget_waits, self.integration.name).inc())
                raise

        def after(call: Call, response: ApiResponse) -> None:
            if base.after_response:
                base.after_response(call, response)
            _quietly("reconify copy", self._copy, call, response)
            _quietly("span content", tracing.add_content, self._span, sent_body(call), response.body)

        return replace(base, before_request=before, after_response=after)

    def _copy(self, call: Call, response: ApiResponse) -> None:
        if reconify.payload_type(call.manifest.name) is None or reconify.sink_for(call.integration) is None:
            return
        responded = time.time()
        request = sent_body(call)
        copy = reconify.build_copy(request=request, response=response.body,
                                   session=self.session, requested_ms=int((responded - response.elapsed) * 1000),
                                   responded_ms=int(responded * 1000))
        outbox = reconify.Outbox(self.kv)
        if outbox.put(call.integration.name, call.manifest.name, copy):
            outbox.wake_drain()

    # after -------------------------------------------------------------------------------------
    def done(self, output: Any, usage: dict[str, Any], attempts: int, request_ids: list[str]) -> dict[str, Any]:
        """The call answered: its cost (also the record's ``cost``), settled against the caps."""
        try:
            found = costs.cost_of(self.manifest.name, self.inputs, output, usage,
                                  takes_model="model" in self.manifest.properties)
        except PackError as exc:  # a broken OPENAI_PACK_PRICES file: the paid answer is kept all the same
            found = costs.Cost(None, None, f"the price table could not be read: {exc.message}")
        self.cost = found.to_dict() | {"integration": self.integration.name}
        _quietly("spend settle", SpendCaps(self.kv).settle, self._held, found.usd)
        if _session.get() is not None:  # a workflow step: the run's running total (`runs list`), saved with it
            self.cost_op = RunStore(self.kv).add_cost_op(self.session, found.usd)
        _quietly("metrics", self._count_success, found, output, usage, attempts)
        _quietly("span attributes", self._describe_span, found, output, usage, attempts, request_ids)
        return self.cost

    def _describe_span(self, found: costs.Cost, output: Any, usage: dict[str, Any], attempts: int,
                       request_ids: list[str]) -> None:
        if self._span is not None:
            full = output.get("usage") if isinstance(output, dict) and isinstance(output.get("usage"), dict) else usage
            tracing.set_attributes(self._span, {
                "gen_ai.response.id": output.get("id") if isinstance(output, dict) else None,
                "gen_ai.response.model": found.model,
                "gen_ai.usage.input_tokens": (full or {}).get("prompt_tokens", (full or {}).get("input_tokens")),
                "gen_ai.usage.output_tokens": (full or {}).get("completion_tokens", (full or {}).get("output_tokens")),
                "openai_pack.cost_usd": found.usd, "openai_pack.attempts": attempts,
                "openai_pack.request_ids": ",".join(request_ids) or None})

    def _count_success(self, found: costs.Cost, output: Any, usage: dict[str, Any], attempts: int) -> None:
        action, integration = self._labels
        model = found.model or ""
        metrics.child(metrics.steps, action, "succeeded", "").inc()
        metrics.child(metrics.api_seconds, action, integration).observe(time.monotonic() - self._started)
        if attempts > 1:
            metrics.child(metrics.retries, action, integration).inc(attempts - 1)
        full = output.get("usage") if isinstance(output, dict) and isinstance(output.get("usage"), dict) else usage
        counts = costs.token_counts(full or {}) if full else None
        if counts:
            for kind, value in zip(("input", "cached_input", "output"), counts, strict=True):
                if value:
                    metrics.child(metrics.tokens, action, integration, model, kind).inc(value)
        if found.usd:
            metrics.child(metrics.cost_usd, action, integration, model).inc(found.usd)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is not None:
                billed = isinstance(exc, OutcomeUnknownError) or (
                    isinstance(exc, NoAnswerError) and not self.manifest.is_idempotent)
                if not billed:
                    _quietly("spend release", SpendCaps(self.kv).release, self._held)
                if isinstance(exc, PackError):
                    _quietly("metrics", self._count_failure, exc)
        finally:
            _quietly("metrics", lambda: metrics.child(metrics.in_flight, self.manifest.name).dec())
            if self._span_cm is not None:
                self._span_cm.__exit__(exc_type, exc, tb)

    def _count_refusal(self, exc: BudgetExceededError) -> None:
        metrics.child(metrics.budget_refusals, self.integration.name, str(exc.details.get("cap"))).inc()
        metrics.child(metrics.steps, self.manifest.name, "failed", exc.code).inc()

    def _count_failure(self, exc: PackError) -> None:
        action, integration = self._labels
        metrics.child(metrics.api_seconds, action, integration).observe(time.monotonic() - self._started)
        if isinstance(exc, RateLimitedError):
            metrics.child(metrics.rate_limited, action, integration).inc()
        metrics.child(metrics.steps, action, "failed", exc.code).inc()


def sent_body(call: Call) -> dict[str, Any]:
    """The JSON body ``Call.default`` sends for these inputs: everything but pack-only, path and query fields."""
    http = call.manifest.http
    skip = set(call.manifest.pack_only_fields) | set(http.path_params) | set(http.query)
    return {k: v for k, v in call.inputs.items() if k not in skip}
