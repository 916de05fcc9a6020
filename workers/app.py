"""The Celery app: one task per manifest (``openai.<name>``) plus the workflow step task.

Configured from the environment (see ``workers.settings``). Messages are JSON and carry names
and ids only: an integration travels as its name, never its key, and a step task as
``(run_id, step_id, item)``; everything else is read from the run store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from amqp.exceptions import AMQPError
from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_init
from kombu import Exchange, Queue
from kombu.exceptions import KombuError

import actions
from integration.errors import PackError, StoreError, StoreUnavailableError
from integration.redact import install_log_redaction, scrub, scrub_data
from integration.redis_urls import celery_sentinel, is_sentinel_url
from workers.engine import Engine
from workers.observe.reconify import register_drain_task
from workers.requeue import Requeue
from workers.settings import Settings
from workers.state.budget import Budget
from workers.state.kv import KV, open_kv
from workers.state.ledger import Ledger
from workers.state.runs import RunStore
from workers.triggers.beat import register_fire_task

__all__ = ["STEP_TASK", "app", "engine", "settings"]

STEP_TASK = "openai_pack.step"
SLOT_TASK = "openai_pack.slot"
QUEUE = "openai_pack"
log = logging.getLogger("openai_pack.worker")


def _transport_options(settings: Settings) -> dict[str, Any]:
    """The broker's own options: Redis emulates acknowledgements with a visibility timeout, AMQP has them."""
    if settings.embedded:
        # The in-memory broker polls; a short interval keeps a step's hand-off in milliseconds.
        return {"polling_interval": 0.005}
    if settings.amqp:
        # Publisher confirms: apply_async returns only once RabbitMQ has taken the message (else a
        # broker at its memory or disk alarm could drop a step silently). No visibility timeout
        # exists: an unacknowledged message comes back as soon as its consumer's connection drops.
        return {"confirm_publish": True}
    return {
        # A crashed worker's unacknowledged step is handed to another worker after this long.
        "visibility_timeout": settings.visibility_timeout,
        # ... and the check for such messages runs this often. kombu scans only on every
        # `unacked_restore_throttle`-th check (default 10): 1 makes every check scan, so a
        # crashed worker's message is back within visibility_timeout + this interval.
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
        "health_check_interval": 10,
    }


def _queues(settings: Settings) -> tuple[Queue, ...] | None:
    """RabbitMQ: one durable classic queue and exchange; messages are persistent (delivery mode 2).

    Classic, not quorum: Celery holds a countdown's message in the worker and raises the
    channel's prefetch to make room for it, which needs the global QoS that quorum queues do not
    support (Celery 5.5+ then switches countdowns to a delay-exchange topology we do not test).
    """
    if not settings.amqp:
        return None
    return (Queue(QUEUE, Exchange(QUEUE, type="direct", durable=True), routing_key=QUEUE, durable=True,
                  auto_delete=False),)


def _broker_ssl(settings: Settings) -> dict[str, Any] | None:
    """``amqps://``: verify the broker's certificate and its name against the URL's host.

    Given only the URL, py-amqp checks the certificate chain but not the name; a ``server_hostname``
    of None makes kombu fill in the URL's host. CAs come from the system store, or from
    ``SSL_CERT_FILE`` for a private CA.
    """
    if settings.broker_url.startswith("amqps://"):
        return {"server_hostname": None}
    return None


def _configure(app: Celery, settings: Settings) -> None:
    transport_options = _transport_options(settings)
    sentinel_options, sentinel_urls = _sentinel(settings)
    transport_options.update(sentinel_options)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_use_ssl=_broker_ssl(settings),
        broker_transport_options=transport_options,
        task_queues=_queues(settings),
        task_default_delivery_mode="persistent",
        broker_connection_retry_on_startup=True,
        result_backend=settings.result_backend,
        task_ignore_result=settings.result_backend is None,
        result_expires=24 * 3600,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_redirect_stdouts=False,
        task_default_queue=QUEUE,
        enable_utc=True,
        timezone="UTC",
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_max_retries=None,
    )
    app.conf.update(sentinel_urls)


def _sentinel(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(broker transport options, settings) for ``sentinel://…?master_name=…`` broker and result-backend
    URLs in Celery's form: the sentinels in the URL, the master name and the sentinels' password as
    transport options (``integration.redis_urls``). Empty for other URLs."""
    broker_options: dict[str, Any] = {}
    conf: dict[str, Any] = {"result_backend_transport_options": {}}
    if is_sentinel_url(settings.broker_url):
        conf["broker_url"], broker_options = celery_sentinel(settings.broker_url, field="OPENAI_PACK_BROKER_URL")
    if settings.result_backend and is_sentinel_url(settings.result_backend):
        conf["result_backend"], conf["result_backend_transport_options"] = celery_sentinel(
            settings.result_backend, field="OPENAI_PACK_RESULT_BACKEND")
    return broker_options, conf


settings = Settings.from_env()
app = Celery("openai_pack")
_configure(app, settings)


def reconfigure(new: Settings | None = None) -> Settings:
    """Re-read the environment (a test or CLI option changed it) and drop cached connections."""
    global settings
    new = new or Settings.from_env()
    if new == settings:
        return settings
    settings = new
    _configure(app, settings)
    app._pool = None  # the next send opens a connection to the new broker
    app.amqp._producer_pool = None
    app._backend_cache = None  # ... and the result backend (Celery caches it per app, or per thread)
    app._local.__dict__.pop("backend", None)
    kv.cache_clear()
    engine.cache_clear()
    return settings


@cache
def kv() -> KV:
    return open_kv(settings.store_url)


class BrokerUnavailableError(StoreUnavailableError):
    """The broker refused the connection (a wrong password) or could not be reached while a step was queued.

    A kind of store failure for the code that rides outages out (``_ride_out``), with its own code so
    the CLI and the run record say which URL to check; the message names the error, never the URL.
    """

    code, category = "broker_unavailable", "broker"


@contextmanager
def _queueing() -> Iterator[None]:
    """A broker error while a message is queued becomes ``BrokerUnavailableError`` (the reason, never the URL)."""
    try:
        yield
    except (KombuError, AMQPError, OSError) as exc:
        reason = scrub(str(exc)) or type(exc).__name__
        raise BrokerUnavailableError(f"the broker (OPENAI_PACK_BROKER_URL) did not take the step: "
                                     f"{type(exc).__name__}: {reason}") from None


def _dispatch(run_id: str, step_id: str, item: int | None, countdown: float | None) -> None:
    with _queueing():
        step_task.apply_async(args=[run_id, step_id, item], countdown=countdown,
                              task_id=f"{run_id}:{step_id}:{'' if item is None else item}:{uuid.uuid4().hex[:8]}")


def _dispatch_slot(run_id: str, step_id: str, heads: list[int], countdown: float | None) -> None:
    with _queueing():
        slot_task.apply_async(args=[run_id, step_id, heads], countdown=countdown,
                              task_id=f"{run_id}:{step_id}:slot{heads[0]}+{len(heads)}:{uuid.uuid4().hex[:8]}")


@cache
def engine() -> Engine:
    store = kv()
    return Engine(RunStore(store), Ledger(store), settings, _dispatch, Budget(settings.store_url, store),
                  dispatch_slot=_dispatch_slot)


@app.task(name=STEP_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def step_task(self: Task, run_id: str, step_id: str, item: int | None = None) -> None:
    """One workflow step (or fan-out item); re-queued, not slept, when it must wait."""
    owner = f"{self.request.id}:{self.request.hostname}:{os.getpid()}:{threading.get_ident()}"
    try:
        engine().run_step(run_id, step_id, item, owner=owner)
    except Requeue as wait:
        _requeue(self, run_id, step_id, wait)
    except Exception as exc:
        _ride_out(self, run_id, step_id, exc, again=lambda: engine().run_step(run_id, step_id, item, owner=owner),
                  give_up=lambda reason: engine().abandon(run_id, step_id, item, reason))


@app.task(name=SLOT_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def slot_task(self: Task, run_id: str, step_id: str, heads: list[int]) -> None:
    """A fan-out slot: several item chains at once on this process's event loop (``FanOut.run_slot``)."""
    owner = f"{self.request.id}:{self.request.hostname}:{os.getpid()}:{threading.get_ident()}"
    try:
        engine().fanout.run_slot(run_id, step_id, heads, owner)
    except Exception as exc:
        def give_up(reason: str) -> None:
            for head in heads:
                engine().abandon(run_id, step_id, head, reason)

        _ride_out(self, run_id, step_id, exc, again=lambda: engine().fanout.run_slot(run_id, step_id, heads, owner),
                  give_up=give_up)


def _requeue(task: Task, run_id: str, step_id: str, wait: Requeue) -> None:
    log.info("step %s of run %s re-queued for %.1fs: %s", step_id, run_id, wait.countdown, wait.reason)
    raise task.retry(countdown=min(wait.countdown, settings.max_countdown), max_retries=None) from None


def _ride_out(task: Task, run_id: str, step_id: str, first: Exception, *, again: Callable[[], None],
              give_up: Callable[[str], None]) -> None:
    """The store or broker failed mid-step (a Redis restart): retry here for about a minute.

    Raising would let Celery acknowledge the message and lose the step, and re-queueing needs the
    broker that is down. Every retry is safe: the ledger keeps the paid call from repeating. After
    a minute the message is rejected back to the queue (or, with the broker still away, stays
    unacknowledged and is redelivered after Redis's visibility timeout, or by RabbitMQ as soon as
    the worker's connection drops).
    """
    log.warning("step %s of run %s hit %s; retrying until the store answers", step_id, run_id,
                type(first).__name__)
    last: Exception = first
    for delay in (0.5, 1, 2, 4, 8, 15, 30):
        time.sleep(delay)
        try:
            again()
            return
        except Requeue as wait:
            _requeue(task, run_id, step_id, wait)
        except Exception as exc:  # still down
            last = exc
            log.warning("step %s of run %s: still failing (%s)", step_id, run_id, type(exc).__name__)
    if isinstance(last, OSError | ConnectionError | StoreError):
        raise Reject(f"store unavailable: {type(last).__name__}", requeue=True)
    # Not the store: a bug. End the step as failed so the run finishes loudly instead of hanging.
    give_up(f"{type(last).__name__}: {scrub(str(last))}")


@app.task(name="openai_pack.ping", acks_late=True)
def ping(counter: str | None = None) -> str:
    """Liveness probe, and the benchmarks' no-op reference: optionally counts itself in the store."""
    if counter:
        kv().incr(counter)
    return "pong"


def _action_task(name: str) -> Task:
    """``openai.<name>``: run the action with (inputs, integration name); returns the output.

    The same ledgered call as a workflow step (``workers.calls``): a redelivered message returns the
    stored output or, for a paid call whose answer never came, ``outcome_unknown``; waits are
    re-queued. The task's lease (kept alive while it runs) makes a redelivery of a slow call wait
    instead of calling again.
    """

    @app.task(name=f"openai.{name}", bind=True, acks_late=True, max_retries=None)
    def run_action(self: Task, inputs: dict[str, Any] | str | None = None,
                   integration: str | None = None) -> Any:
        key = f"task:{self.request.id}"
        owner = f"{self.request.id}:{self.request.hostname}:{os.getpid()}:{threading.get_ident()}"
        leases = engine().store.leases
        try:
            if not leases.acquire(key, owner, settings.lease_ttl):
                raise Requeue(min(2.0, settings.max_countdown), "another delivery of this task is running")
            try:
                result = engine().calls.call(name, inputs, integration, key=key, what=f"task openai.{name}",
                                             requeues=lambda: self.request.retries + 1)
                if result.done_op is not None:
                    engine().ledger.write(result.done_op)
            finally:
                leases.release(key, owner)
        except Requeue as wait:
            raise self.retry(countdown=min(wait.countdown, settings.max_countdown), max_retries=None) from None
        except PackError as exc:
            raise _plain(exc) from None
        return result.output

    run_action.__doc__ = f"Run the {name} action (manifests/{name}.json)."
    return run_action


def _plain(error: PackError) -> PackError:
    """Errors cross process boundaries as their dict (scrubbed), never with a traceback of secrets."""
    error.args = (scrub(str(error.args[0]) if error.args else ""),)
    error.details = scrub_data(error.details)
    return error


action_tasks = {name: _action_task(name) for name in actions.registry()}
fire_schedule = register_fire_task(app, engine)  # workers.triggers.beat never imports this module
reconify_drain = register_drain_task(app, kv)  # sends the outbox of Reconify copies (workers.observe.reconify)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_logs(**_: Any) -> None:
    install_log_redaction()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked pool child must not share its parent's sockets."""
    kv.cache_clear()
    engine.cache_clear()
    from integration.client import close_all_clients

    close_all_clients()


install_log_redaction()
