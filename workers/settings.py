"""Worker settings, read from the environment once: the same variables configure every process.

``OPENAI_PACK_BROKER_URL`` unset means the embedded default: an in-memory broker with an
in-process worker, and run records in a SQLite file under ``$OPENAI_PACK_HOME``. Set it to
``redis://host:6379/0`` and every worker, beat and webhook process on every machine shares one
broker, one run store (the same Redis unless ``OPENAI_PACK_STORE_URL`` says otherwise), one
ledger and one rate budget. With RabbitMQ (``amqp://`` or ``amqps://``) as the broker, the run
store, ledger and budget still live in Redis, so ``OPENAI_PACK_STORE_URL`` must name one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from integration.errors import ConfigError
from integration.redact import register_url_secrets
from integration.redis_urls import check_url, is_redis_url
from integration.store import default_home

EMBEDDED_BROKER = "memory://"
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def _number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}", field=name) from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value:g}", field=name)
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a worker, beat, webhook server or CLI process needs to agree on."""

    broker_url: str
    store_url: str
    #: Seconds before Redis hands an unacknowledged message to another worker (a crashed worker's
    #: step is redelivered after this). Every step must finish, and every countdown be shorter.
    visibility_timeout: float
    #: Longest wait the HTTP client may sleep inside a worker thread; longer waits are re-queued.
    max_inline_wait: float
    #: Upper bound for a re-queue countdown (kept well below the visibility timeout).
    max_countdown: float
    #: How many times a step may be re-queued for rate limits or Retry-After before it fails.
    max_requeues: int
    #: Where ``openai.<name>`` tasks keep their results for callers' ``.get()`` (``OPENAI_PACK_RESULT_BACKEND``,
    #: e.g. ``redis://host:6379/1``); unset, results are not kept (workflow steps never need them).
    result_backend: str | None = None
    #: RabbitMQ's ``consumer_timeout`` in seconds (``OPENAI_PACK_CONSUMER_TIMEOUT``, the server's
    #: default 1800): a delivery held unacknowledged longer gets its channel closed, which stops
    #: the Celery worker. Every countdown (an ETA message is held unacknowledged until due) and
    #: every step must stay below it. Only used with an AMQP broker.
    consumer_timeout: float = 1800.0
    #: Fan-out items in flight per slot task (``OPENAI_PACK_SLOT_WIDTH``): a slot runs this many item
    #: chains at once on the process's event loop (``workers.engine.inflight``); 1 = one chain per
    #: task on a pool thread, as before issue 15.
    slot_width: int = 250
    #: Event loops (each in its own thread) that a worker process spreads its slots' chains over
    #: (``OPENAI_PACK_INFLIGHT_LOOPS``). One is the default: HTTP and Redis waits both go to the loop, so more
    #: loops only contend for the GIL (measured: one loop moved 10–15 % more items with 30 % less memory than 8).
    inflight_loops: int = 1
    #: Chains of a loop that work at once (``OPENAI_PACK_INFLIGHT_WORKING``; 0 = no bound): the rest wait for
    #: their answers or for a place, so answers that arrive together are worked through a few at a time
    #: (``integration.aio.Gate``; docs/performance.md has the measurements).
    inflight_working: int = 16

    @property
    def amqp(self) -> bool:
        """RabbitMQ: unacknowledged messages come back when the consumer's connection drops."""
        return self.broker_url.startswith(AMQP_SCHEMES)

    @property
    def redelivery_after(self) -> float:
        """How long a live delivery may stay unacknowledged before the broker hands it out again
        (Redis) or closes its channel (RabbitMQ's consumer timeout)."""
        return self.consumer_timeout if self.amqp else self.visibility_timeout

    @property
    def lease_ttl(self) -> float:
        """How long a running step's lease lives between heartbeats (they come every third of it).

        Short on purpose and independent of how long a call may take: the heartbeat keeps a slow
        call's lease alive, and after a crash the lease lapses this soon, so the redelivered step
        is not held back (the visibility timeout still decides when it is redelivered). RabbitMQ
        redelivers a crashed worker's messages at once, so there the lease alone holds the step
        back: 6 s, the shortest that still leaves the heartbeat two chances every TTL.
        """
        if self.amqp:
            return 6.0
        return max(2.0, min(10.0, self.visibility_timeout / 2))

    @property
    def restore_interval(self) -> float:
        """Seconds between the broker's sweeps for unacknowledged messages of crashed workers (Redis only)."""
        return min(10.0, self.visibility_timeout / 4)

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("memory://")

    @classmethod
    def from_env(cls) -> Settings:
        broker = os.environ.get("OPENAI_PACK_BROKER_URL", "").strip() or EMBEDDED_BROKER
        store = os.environ.get("OPENAI_PACK_STORE_URL", "").strip()
        for url in (broker, store, os.environ.get("OPENAI_PACK_RESULT_BACKEND"),
                    os.environ.get("OPENAI_PACK_INTEGRATIONS_URL")):
            register_url_secrets(url)  # a broker or store password is scrubbed like an API key from here on
        amqp = broker.startswith(AMQP_SCHEMES)
        if amqp:
            _require_redis_store(store)
        if not store:  # the broker's Redis (one server or a Sentinel-managed master), else a local file
            store = broker if is_redis_url(broker) else "sqlite:///" + str(Path(default_home()) / "runs.sqlite3")
        visibility = _number("OPENAI_PACK_VISIBILITY_TIMEOUT", 120, 5, 86400)
        for name, url in (("OPENAI_PACK_BROKER_URL", broker), ("OPENAI_PACK_STORE_URL", store),
                          ("OPENAI_PACK_RESULT_BACKEND", os.environ.get("OPENAI_PACK_RESULT_BACKEND", "").strip())):
            if is_redis_url(url):
                check_url(url, field=name)  # a malformed Redis URL is refused here, not as an outage later
        consumer_timeout = _number("OPENAI_PACK_CONSUMER_TIMEOUT", 1800, 5, 86400 * 7)
        # An ETA message is held unacknowledged until it is due: keep every hop at half of what the
        # broker tolerates (RabbitMQ checks its consumer timeout only about once a minute, so the
        # channel closes between the timeout and a minute after it; half leaves room either way).
        redelivery_after = consumer_timeout if amqp else visibility
        return cls(
            broker_url=broker,
            store_url=store,
            visibility_timeout=visibility,
            max_inline_wait=_number("OPENAI_PACK_MAX_INLINE_WAIT", 5, 0, 600),
            max_countdown=min(_number("OPENAI_PACK_MAX_COUNTDOWN", 300, 1, 86400), redelivery_after * 0.5),
            max_requeues=int(_number("OPENAI_PACK_MAX_REQUEUES", 50, 0, 10000)),
            result_backend=os.environ.get("OPENAI_PACK_RESULT_BACKEND", "").strip() or None,
            consumer_timeout=consumer_timeout,
            slot_width=int(_number("OPENAI_PACK_SLOT_WIDTH", 250, 1, 10000)),
            inflight_loops=int(_number("OPENAI_PACK_INFLIGHT_LOOPS", 1, 1, 64)),
            inflight_working=int(_number("OPENAI_PACK_INFLIGHT_WORKING", 16, 0, 100000)),
        )


def _require_redis_store(store: str) -> None:
    """With RabbitMQ as the broker, the run store, ledger and rate budget must still be one shared Redis.

    A SQLite file would be private to each machine (two workers would each pay for the same
    item), so there is no default: the error names the variable and never echoes the URL.
    """
    if not store:
        raise ConfigError("OPENAI_PACK_STORE_URL is not set: with an amqp:// broker the run store, ledger and "
                          "rate budget live in Redis; set it to e.g. redis://127.0.0.1:6379/0",
                          field="OPENAI_PACK_STORE_URL")
    if not is_redis_url(store):  # one Redis, or a Sentinel URL
        scheme = store.split("://", 1)[0] if "://" in store else "no scheme"
        raise ConfigError(f"OPENAI_PACK_STORE_URL must be a Redis URL (redis://, rediss://, unix:// or a Sentinel "
                          f"URL) with an amqp:// broker, got {scheme!r}", field="OPENAI_PACK_STORE_URL")
