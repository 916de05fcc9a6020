"""OpenTelemetry traces: a span per run start, per step and per API call, one trace per run.

Off by default. It turns on when the optional extra is installed (``pip install
'openai-actions-pack[otel]'``) and the standard variables ask for it: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or ``OTEL_TRACES_EXPORTER=otlp|console``;
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off. The exporter is OTLP over
HTTP and reads the rest of the ``OTEL_*`` variables itself (headers, timeouts, batch delays).

The trace context rides in each Celery message's headers (W3C ``traceparent``), so every step of a
run, on whichever worker process, is a child of the span that started the run. API-call spans
follow the GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens``, ...). Prompts and completions stay out of spans unless
``OPENAI_PACK_TRACE_CONTENT=true``; then they are added scrubbed of every known secret.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from celery.signals import before_task_publish, task_postrun, task_prerun

from integration.redact import scrub_data

__all__ = ["CONTENT_ENV", "enabled", "flush", "reset", "setup", "span", "started_run", "tracer"]

log = logging.getLogger("openai_pack.tracing")
CONTENT_ENV = "OPENAI_PACK_TRACE_CONTENT"
_HEADER = "traceparent"

_lock = threading.Lock()
_state: dict[str, Any] = {"tracer": None, "decided": False, "provider": None}
#: The carrier steps should be children of (the run's), while a task runs or a run starts.
_run_carrier: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("opk_run_carrier",
                                                                                   default=None)
_tokens: dict[str, Any] = {}


def _wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(exporter: Any = None, *, force: bool = False) -> Any:
    """Build this process's tracer (once); ``exporter`` (e.g. an in-memory one) replaces OTLP.

    Returns the tracer, or None when tracing is off or the extra is not installed.
    """
    with _lock:
        if _state["decided"] and not force:
            return _state["tracer"]
        _state["decided"] = True
        if exporter is None and not _wanted():
            _state["tracer"] = None
            return None
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
        except ImportError:
            log.warning("OTEL_* variables ask for traces, but the extra is not installed: "
                        "pip install 'openai-actions-pack[otel]'")
            _state["tracer"] = None
            return None
        if _state["provider"] is not None:
            _state["provider"].shutdown()
        provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
            "OTEL_SERVICE_NAME", "openai-pack")}))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _state["provider"] = provider
        _state["tracer"] = provider.get_tracer("openai_pack")
        return _state["tracer"]


def reset() -> None:
    """Forget the decision (a test changed the environment); the next span decides again."""
    with _lock:
        if _state["provider"] is not None:
            _state["provider"].shutdown()
        _state.update(tracer=None, decided=False, provider=None)


def flush(timeout_ms: int = 10000) -> None:
    """Send the spans still batched (a CLI command or test about to exit or look)."""
    provider = _state["provider"]
    if provider is not None:
        provider.force_flush(timeout_ms)


def tracer() -> Any:
    return _state["tracer"] if _state["decided"] else setup()


def enabled() -> bool:
    return tracer() is not None


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


@contextmanager
def span(name: str, attributes: dict[str, Any] | None = None, *, kind: str = "internal") -> Iterator[Any]:
    """A span (the current one's child) or, with tracing off, nothing at all."""
    active = tracer()
    if active is None:
        yield None
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with active.start_as_current_span(name, kind=SpanKind.CLIENT if kind == "client" else SpanKind.INTERNAL,
                                      attributes={k: v for k, v in (attributes or {}).items() if v is not None},
                                      record_exception=False, set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            code = getattr(exc, "code", None)
            current.set_attribute("error.type", str(code or type(exc).__name__))
            current.set_status(Status(StatusCode.ERROR, str(code or type(exc).__name__)))
            raise


@contextmanager
def started_run(run_id: str | None, workflow: str) -> Iterator[None]:
    """The span of a run's start; the first step's message carries its context."""
    active = tracer()
    if active is None:
        yield
        return
    with span(f"workflow.run {workflow}", {"openai_pack.workflow": workflow, "openai_pack.run_id": run_id}):
        carrier: dict[str, str] = {}
        _propagator().inject(carrier)
        token = _run_carrier.set(carrier)
        try:
            yield
        finally:
            _run_carrier.reset(token)


def note_run_id(current: Any, run_id: str) -> None:
    """The run id is known only once the run is saved: add it to the run span."""
    if current is not None:
        current.set_attribute("openai_pack.run_id", run_id)


def set_attributes(current: Any, attributes: dict[str, Any]) -> None:
    if current is not None:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)


def content_wanted() -> bool:
    return os.environ.get(CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


def add_content(current: Any, request: Any, response: Any) -> None:
    """Prompts and completions, only when opted in, and scrubbed of every registered secret."""
    if current is None or not content_wanted():
        return
    current.set_attribute("gen_ai.input.messages", json.dumps(scrub_data(request), default=str)[:32000])
    current.set_attribute("gen_ai.output.messages", json.dumps(scrub_data(response), default=str)[:32000])


def server_address(base_url: str) -> str | None:
    return urlparse(base_url).hostname


# ---------------------------------------------------------------- Celery propagation


@before_task_publish.connect
def _inject(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every message sent while a run or step is traced carries the run's context."""
    if headers is None or tracer() is None:
        return
    carrier = _run_carrier.get()
    if carrier is None:
        carrier = {}
        _propagator().inject(carrier)
    if carrier.get(_HEADER):
        headers[_HEADER] = carrier[_HEADER]


@task_prerun.connect
def _extract(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or tracer() is None:
        return
    parent = task.request.get(_HEADER) if hasattr(task.request, "get") else None
    if not parent:
        return
    from opentelemetry import context

    carrier = {_HEADER: str(parent)}
    token = context.attach(_propagator().extract(carrier))
    run_token = _run_carrier.set(carrier)
    _tokens[str(task_id)] = (token, run_token)


@task_postrun.connect
def _detach(task_id: str | None = None, **_: Any) -> None:
    held = _tokens.pop(str(task_id), None)
    if held is None:
        return
    from opentelemetry import context

    context.detach(held[0])
    _run_carrier.reset(held[1])
