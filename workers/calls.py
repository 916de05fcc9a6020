"""The ledgered call: the one way a worker makes a paid API call, for `openai.<name>` tasks and workflow steps.

Both entry points need the same policy, so it is written once here:

| what happened                                   | ledger entry           | the caller gets                      |
|-------------------------------------------------|------------------------|--------------------------------------|
| done before (a redelivered message)             | kept                   | the stored result, ``replayed``      |
| claimed before, paid action                     | kept                   | ``OutcomeUnknownError`` (no call)    |
| claimed before, repeat-safe action              | re-claimed             | a new call                           |
| answer received                                 | done (output redacted) | the result                           |
| no answer (timeout, dropped) on a paid action   | kept claimed           | ``OutcomeUnknownError``              |
| no answer on a repeat-safe action               | released               | the pack's no-answer error           |
| 429 with a Retry-After longer than an inline    | released               | ``Requeue`` (until ``max_requeues``, |
| wait, or the shared rate budget is spent        |                        | then the 429 itself)                 |
| any other error (4xx, 5xx after retries, bad    | released               | that error; a 401 also marks the     |
| input found before sending)                     |                        | integration failing                  |

The ledger's "done" write is returned to the caller as a batch entry (``done_op``), so a step
writes it together with its record in one round trip; a task writes it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import actions
from actions import CallOptions
from integration.errors import (
    AuthenticationError,
    NoAnswerError,
    OutcomeUnknownError,
    PackError,
    RateLimitedError,
    StoreError,
)
from integration.model import Integration
from integration.store import resolve
from workers.observe import Meter
from workers.requeue import Requeue
from workers.settings import Settings
from workers.state.kv import Op
from workers.state.ledger import Ledger

if TYPE_CHECKING:
    from workers.state.budget import Budget
    from workers.state.runs import RunStore

__all__ = ["REDACTED", "CallResult", "LedgeredCalls", "redact"]

REDACTED = "[redacted]"


def redact(value: Any, paths: tuple[str, ...] | list[str]) -> Any:
    """Replace each dotted path of an output by a marker (lists are walked element-wise)."""
    if not paths:
        return value

    def walk(node: Any, parts: list[str]) -> Any:
        if isinstance(node, list):
            return [walk(v, parts) for v in node]
        if not isinstance(node, dict) or not parts:
            return node
        head, rest = parts[0], parts[1:]
        if head not in node:
            return node
        return {**node, head: REDACTED if not rest else walk(node[head], rest)}

    for path in paths:
        value = walk(value, path.split("."))
    return value


@dataclass
class CallResult:
    """One call's result; ``done_op`` is the ledger write still to make (None for a replay)."""

    output: Any
    usage: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    request_ids: list[str] = field(default_factory=list)
    replayed: bool = False
    done_op: Op | None = None
    #: Estimated USD from the price table: ``{"usd": float | None, "model": ..., "reason"?: ...}``.
    cost: dict[str, Any] | None = None
    #: For a workflow step, the write adding ``cost`` to the run's total (made with the record, like ``done_op``).
    cost_op: Op | None = None


class LedgeredCalls:
    """Claim, call, then done or release, with one policy for timeouts, 429s and the rate budget."""

    def __init__(self, ledger: Ledger, settings: Settings, budget: Budget | None, store: RunStore) -> None:
        self.ledger = ledger
        self.settings = settings
        self.budget = budget
        self.store = store

    def options(self, *, max_retries: int | None = None) -> CallOptions:
        """Short inline waits (longer ones are re-queued) and the shared rate budget."""
        return CallOptions(max_inline_wait=self.settings.max_inline_wait, max_retries=max_retries,
                           before_request=self.budget.before_request if self.budget else None,
                           after_response=self.budget.after_response if self.budget else None)

    def call(self, action: str, inputs: Any, integration: Integration | str | None, *, key: str, what: str,
             requeues: Callable[[], int], max_retries: int | None = None,
             redact_paths: tuple[str, ...] = ()) -> CallResult:
        """Run ``action`` at most once per ``key``; ``requeues()`` counts this re-queue and returns the count.

        Raises ``Requeue`` when the call must wait on the queue, ``OutcomeUnknownError`` when a paid
        call may have happened without an answer, and the call's own ``PackError`` otherwise.
        """
        manifest = actions.get(action)
        prepared = actions.prepare(action, inputs)  # bad input fails here, before any claim
        integration = resolve(integration)  # so does a missing integration; the default gets its name
        repeatable = actions.repeat_safe(action, prepared)  # the manifest's word, or the handler's per call
        stored = self.ledger.begin(key, idempotent=repeatable, what=what)
        if stored is not None:
            return CallResult(output=stored.get("output"), usage=stored.get("usage") or {}, attempts=0,
                              request_ids=stored.get("request_ids") or [], replayed=True, cost=stored.get("cost"))
        try:
            with Meter(manifest, prepared, integration, self.store.kv, key=key) as meter:  # caps, cost, traces
                result = actions.execute(action, prepared, integration, already_prepared=True,
                                         options=meter.options(self.options(max_retries=max_retries)))
                cost = meter.done(result.output, result.usage, result.attempts, result.request_ids)
        except OutcomeUnknownError:
            raise
        except NoAnswerError as exc:
            if repeatable:
                self.ledger.release(key)
                raise
            # The request may have been processed (and billed): the claim stays, nothing repeats it.
            raise OutcomeUnknownError(f"{what}: {exc.message}", cause=exc.code,
                                      attempts=exc.details.get("attempts")) from None
        except Requeue:
            self.ledger.release(key)
            raise
        except StoreError:
            raise  # the claim stays: the call may have gone out; the task retries when the store is back
        except RateLimitedError as exc:
            self.ledger.release(key)
            if exc.retryable and exc.retry_after is not None and requeues() <= self.settings.max_requeues:
                raise Requeue(min(exc.retry_after, self.settings.max_countdown),
                              f"rate limited; retry after {exc.retry_after:g}s") from None
            raise
        except PackError as exc:
            self.ledger.release(key)
            if isinstance(exc, AuthenticationError):
                self.store.mark_integration_failing(integration.name, exc.to_dict())
            raise
        except BaseException:
            self.ledger.release(key)
            raise
        # The ledger keeps what a replay needs, redacted as the workflow asked (never the full output).
        kept = {"output": redact(result.output, redact_paths), "usage": result.usage,
                "request_ids": result.request_ids, "cost": cost}
        return CallResult(output=result.output, usage=result.usage or {}, attempts=result.attempts,
                          request_ids=result.request_ids or [], done_op=self.ledger.done_op(key, kept), cost=cost,
                          cost_op=meter.cost_op)
