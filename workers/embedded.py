"""The embedded default: a real Celery worker on threads inside this process, over the in-memory broker.

Used when ``OPENAI_PACK_BROKER_URL`` is unset (``make demo``, ``openai-pack workflow run`` on a
laptop): the same tasks and engine as production, with no server to start. Run records still go
to the SQLite file, so ``openai-pack runs list`` shows them afterwards.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from integration.errors import ConfigError

if TYPE_CHECKING:
    from workers.workflow import Workflow

__all__ = ["EMBEDDED_MAX_THREADS", "in_process_worker", "pool_size_for"]

log = logging.getLogger("openai_pack.embedded")

#: The most threads the in-process worker runs (the same as calls in flight): one process, one SQLite
#: file. A workflow asking for more in one fan-out is run with this many, and told so.
EMBEDDED_MAX_THREADS = 64
#: Room for single steps on parallel branches next to the widest fan-out.
_HEADROOM = 2


def pool_size_for(workflow: Workflow | None) -> int:
    """Threads enough for the workflow's widest fan-out (``concurrency:``) plus parallel single steps."""
    if workflow is None:
        return 8
    widest = max((s.concurrency for s in workflow.steps if s.with_items is not None), default=1)
    wanted = max(8, widest + _HEADROOM)
    if wanted > EMBEDDED_MAX_THREADS:
        log.warning("the embedded worker runs at most %d calls at once; workflow %r asks for concurrency %d "
                    "(set OPENAI_PACK_BROKER_URL and run `openai-pack worker -c N` for more)",
                    EMBEDDED_MAX_THREADS, workflow.name, widest)
    return min(wanted, EMBEDDED_MAX_THREADS)


@contextmanager
def in_process_worker(concurrency: int | None = None, *, workflow: Workflow | None = None,
                      ready_timeout: float = 30.0) -> Iterator[Any]:
    """Start a thread-pool worker consuming this process's broker; stop it on exit.

    ``concurrency`` defaults to what ``workflow`` needs (``pool_size_for``), so a step's
    ``concurrency:`` is honoured up to ``EMBEDDED_MAX_THREADS``.
    """
    from workers.app import app

    if concurrency is None:
        concurrency = pool_size_for(workflow)

    ready = threading.Event()

    class _Controller(app.WorkController):  # type: ignore[name-defined,misc]
        def on_consumer_ready(self, consumer: Any) -> None:
            super().on_consumer_ready(consumer)
            ready.set()

    controller = _Controller(
        hostname=f"embedded-{threading.get_ident()}@{socket.gethostname()}",
        pool_cls="threads", concurrency=concurrency, loglevel="WARNING",
        without_heartbeat=True, without_mingle=True, without_gossip=True, quiet=True,
    )
    thread = threading.Thread(target=controller.start, name="openai-pack-worker", daemon=True)
    thread.start()
    if not ready.wait(ready_timeout):
        controller.stop(in_sighandler=False)
        raise ConfigError("the in-process worker did not start within "
                          f"{ready_timeout:g}s", field="OPENAI_PACK_BROKER_URL")
    try:
        yield controller
    finally:
        controller.stop(in_sighandler=False)
        thread.join(timeout=10)
