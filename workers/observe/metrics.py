"""Prometheus metrics: steps, API latency, tokens, cost, retries, 429s, budget waits, queue depth.

Every worker and ``serve`` process counts into the same metric names. With several processes on
one machine (prefork children, a worker beside ``serve``), set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory shared by them before they start: each process then writes its samples there and
any process's ``/metrics`` shows the sum (``prometheus_client``'s multiprocess mode). Workers
expose ``/metrics`` themselves on ``OPENAI_PACK_METRICS_PORT`` (127.0.0.1) when it is set.

Labels carry names only (action, integration, model, status, error code): never inputs, outputs
or keys.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from integration.redis_urls import connect, is_redis_url

__all__ = ["CONTENT_TYPE_LATEST", "METRICS_PORT_ENV", "api_seconds", "budget_waits", "child", "cost_usd", "exposition",
           "metrics_route", "rate_limited", "reconify_copies", "retries", "start_worker_exporter", "steps", "tokens"]

log = logging.getLogger("openai_pack.metrics")
METRICS_PORT_ENV = "OPENAI_PACK_METRICS_PORT"
QUEUE = "openai_pack"

steps = Counter("openai_pack_steps", "Workflow steps, fan-out items and action tasks that ended, by outcome.",
                ["action", "status", "code"])
api_seconds = Histogram("openai_pack_api_call_seconds", "Wall time of one action's API call, retries included.",
                        ["action", "integration"],
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
tokens = Counter("openai_pack_tokens", "Tokens the API reported, by kind (input, cached_input, output).",
                 ["action", "integration", "model", "kind"])
cost_usd = Counter("openai_pack_cost_usd", "Estimated cost in USD of the calls made (see the price table).",
                   ["action", "integration", "model"])
retries = Counter("openai_pack_retries", "API requests repeated after a retryable answer or connect failure.",
                  ["action", "integration"])
rate_limited = Counter("openai_pack_rate_limited", "Calls that ended on an API 429.", ["action", "integration"])
budget_waits = Counter("openai_pack_budget_waits", "Calls re-queued because the shared rate budget was spent.",
                       ["integration"])
budget_refusals = Counter("openai_pack_spend_cap_refusals", "Calls refused before sending by a spend cap.",
                          ["integration", "cap"])
reconify_copies = Counter("openai_pack_reconify_copies", "Reconify copies by fate: queued, delivered, "
                          "failed (an attempt), dropped (after the cap or with the outbox full).", ["outcome"])
in_flight = Gauge("openai_pack_calls_in_flight", "API calls being made now.", ["action"],
                  multiprocess_mode="livesum")


class QueueDepth(Collector):
    """Messages waiting in the broker's queue, read at scrape time (Redis and RabbitMQ brokers)."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url

    def collect(self) -> Any:
        family = GaugeMetricFamily("openai_pack_queue_depth", "Messages waiting in the broker queue.",
                                   labels=["queue"])
        try:
            depth = self._depth()
        except Exception as exc:  # a scrape must not fail because the broker is away (the type only: no URL)
            log.debug("queue depth unavailable: %s", type(exc).__name__)
            depth = None
        if depth is not None:
            family.add_metric([QUEUE], float(depth))
        yield family

    def _depth(self) -> int | None:
        if is_redis_url(self.broker_url):  # one Redis, or the master a Sentinel names
            client = connect(self.broker_url, field="OPENAI_PACK_BROKER_URL", socket_timeout=1,
                             socket_connect_timeout=1)
            try:
                return int(client.llen(QUEUE))
            finally:
                client.close()
        if self.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
            from kombu import Connection

            # A passive declare answers the ready count (unacknowledged deliveries are not in it,
            # as with Redis) and never creates the queue.
            with Connection(self.broker_url, connect_timeout=1, transport_options={"max_retries": 0}) as conn:
                _, ready, _ = conn.default_channel.queue_declare(QUEUE, passive=True)
                return int(ready)
        return None


def _registry() -> CollectorRegistry:
    """This process's registry, or a multiprocess one summing every process's samples."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def exposition(broker_url: str | None = None) -> bytes:
    """The text format for a ``/metrics`` answer (families concatenate, so the queue depth is appended)."""
    text = generate_latest(_registry())
    if broker_url:
        queue = CollectorRegistry()
        queue.register(QueueDepth(broker_url))
        text += generate_latest(queue)
    return text


def metrics_route(broker_url: str | None) -> Any:
    """``GET /metrics`` for a Starlette app (``serve``): this process's samples, or all of them in multiprocess mode."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(_: Request) -> Response:
        body = await run_in_threadpool(exposition, broker_url)  # the queue depth is a (short) Redis call
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint, methods=["GET"])


def start_worker_exporter() -> int | None:
    """Serve ``/metrics`` from a worker on 127.0.0.1:``OPENAI_PACK_METRICS_PORT``, when it is set.

    The queue depth is left to ``serve``'s ``/metrics``: one scrape of the broker is enough.
    """
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        log.warning("%s must be a port number, got %r: no metrics endpoint", METRICS_PORT_ENV, raw)
        return None
    start_http_server(int(raw), addr="127.0.0.1", registry=_registry())
    return int(raw)


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: prometheus_client checks and looks the labels up on every call
    (several per paid call, ~3 % of a worker's time at 1,000 calls in flight)."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        if len(_children) > 10_000:  # label values are names, but bound the table all the same
            _children.clear()
        found = _children[key] = metric.labels(*labels)
    return found
