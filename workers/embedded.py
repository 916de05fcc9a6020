"""The embedded default: a real Celery worker on threads inside this process, over the in-memory broker.

Used when ``OPENAI_PACK_BROKER_URL`` is unset (``make demo``, ``openai-pack workflow run`` on a
laptop): the same tasks and engine as production, with no server to start. Run records still go
to the SQLite file, so ``openai-pack runs list`` shows them afterwards.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from integration.errors import ConfigError

__all__ = ["in_process_worker"]


@contextmanager
def in_process_worker(concurrency: int = 8, *, ready_timeout: float = 30.0) -> Iterator[Any]:
    """Start a thread-pool worker consuming this process's broker; stop it on exit."""
    from workers.app import app

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
