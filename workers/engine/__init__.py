"""The workflow engine: each step is dispatched from saved run state as the one before it finishes.

No Celery chain is compiled: a step task loads the run, renders its inputs, calls the action
through the ledger, saves the result, evaluates transitions and dispatches what comes next.
Every write after the call is either idempotent or guarded by a set-once flag, so a message
delivered twice (worker crash, broker restore) replays the bookkeeping without calling again.

- ``lifecycle``: starting a run, the step task, single steps, transitions, how a run ends;
- ``fanout``: ``with_items`` steps, at most ``concurrency`` items in flight;
- ``context``: what templates see (inputs, steps, vars, run, item), read lazily and cached.
"""

from workers.engine.lifecycle import Dispatch, Engine
from workers.requeue import Requeue

__all__ = ["Dispatch", "Engine", "Requeue"]
