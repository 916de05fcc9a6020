"""The workflow model: Workflow, Step, Transition, WebhookConfig (immutable; one per run, shared across threads).

A workflow file (YAML or JSON, validated against ``workflow.schema.json``; see ``docs/workflows.md``)
declares inputs, an ordered list of steps (one action each, inputs that may be templates,
transitions) and an output mapping. Routing rules, which the engine follows through
``Workflow.next_steps``:

- A run starts at ``start`` (default: the first step in the list).
- A step **without** ``on`` goes to the next step in the list when it succeeds; the last step ends.
  When it fails, its branch ends (and the run fails, since nothing handled the failure).
- A step with ``on`` evaluates every transition in order (follow all): those whose ``when``
  (success | failure | always, default success) matches and whose ``if`` renders true publish
  their variables (to ``vars``; a later transition overrides an earlier one) and start their
  ``do`` steps. ``on: []`` ends the branch. Cycles are allowed: a step runs at most once per run.

A ``Workflow`` is built by ``workers.workflow.loader`` (from a file) or ``loader.workflow_from_dict``
(from the copy stored in a run record), never half-checked.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from actions import check_value, coerce_inputs, parse_json_text, problems_for
from integration.errors import InputError
from workers.workflow.errors import WorkflowError
from workers.workflow.templates import evaluate, render

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_MAX_BODY", "Step", "Transition", "WaitSpec", "WebhookConfig", "Workflow",
           "input_schema"]

DEFAULT_CONCURRENCY = 5
DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Transition:
    """One entry of a step's ``on``; ``condition`` is the YAML key ``if``."""

    when: Literal["success", "failure", "always"] = "success"
    condition: str | None = None
    publish: dict[str, Any] = field(default_factory=dict)
    do: tuple[str, ...] = ()

    def matches(self, status: str) -> bool:
        return self.when == "always" or self.when == _WHEN_OF_STATUS.get(status)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"when": self.when}
        if self.condition is not None:
            out["if"] = self.condition
        if self.publish:
            out["publish"] = copy.deepcopy(self.publish)
        out["do"] = list(self.do)
        return out


_WHEN_OF_STATUS = {"succeeded": "success", "failed": "failure"}


@dataclass(frozen=True)
class WaitSpec:
    """A step's ``wait:``: poll the job the step started until it ends (``workers.engine.waits``).

    ``until`` empty means the job kind's own success statuses; times are seconds.
    """

    until: tuple[str, ...] = ()
    timeout: float = 24 * 3600.0
    interval: float = 5.0
    max_interval: float = 300.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"timeout": self.timeout, "interval": self.interval, "max_interval": self.max_interval}
        if self.until:
            out["until"] = list(self.until)
        return out


@dataclass(frozen=True)
class Step:
    """One step; ``on`` is None when the file had no ``on`` (then: next step in the list on success)."""

    id: str
    action: str
    #: a name, a template, or a selection ``{match, labels, fallback}`` (``workers.engine.selection``)
    integration: str | dict[str, Any] | None = None
    input: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None
    timeout: float | None = None
    redact: tuple[str, ...] = ()
    with_items: Any | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    on: tuple[Transition, ...] | None = None
    description: str = ""
    wait: WaitSpec | None = None
    mode: Literal["live", "batch"] = "live"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "action": self.action}
        if self.description:
            out["description"] = self.description
        if self.integration is not None:
            out["integration"] = copy.deepcopy(self.integration)
        out["input"] = copy.deepcopy(self.input)
        if self.retries is not None:
            out["retries"] = self.retries
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.redact:
            out["redact"] = list(self.redact)
        if self.with_items is not None:
            out["with_items"] = copy.deepcopy(self.with_items)
            out["concurrency"] = self.concurrency
        if self.mode != "live":
            out["mode"] = self.mode
        if self.wait is not None:
            out["wait"] = self.wait.to_dict()
        if self.on is not None:
            out["on"] = [t.to_dict() for t in self.on]
        return out


@dataclass(frozen=True)
class WebhookConfig:
    """How ``openai-pack serve`` authenticates POST /hooks/<name>; the secret itself stays in the environment."""

    secret_env: str
    signature: Literal["hmac-sha256"] | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"secret_env": self.secret_env, "max_body_bytes": self.max_body_bytes}
        if self.signature:
            out["signature"] = self.signature
        return out


@dataclass(frozen=True, kw_only=True)
class Workflow:
    """A loaded, validated workflow. Immutable: the engine shares one per run across threads."""

    name: str
    description: str = ""
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: tuple[Step, ...]
    start: str = ""
    output: dict[str, Any] | None = None
    webhook: WebhookConfig | None = None
    #: the integration of steps that name none (same forms as ``Step.integration``)
    integration: str | dict[str, Any] | None = None
    source: str = "<string>"
    _index: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._index.update({s.id: i for i, s in enumerate(self.steps)})
        if not self.start and self.steps:
            object.__setattr__(self, "start", self.steps[0].id)

    def integration_for(self, step: Step) -> str | dict[str, Any] | None:
        """The step's own integration, else the workflow's (a run's override is stored as the workflow's)."""
        return step.integration if step.integration is not None else self.integration

    def step(self, step_id: str) -> Step:
        index = self._index.get(step_id)
        if index is None:
            raise WorkflowError(f"no step {step_id!r}", file=self.source, step=step_id)
        return self.steps[index]

    def next_steps(self, step_id: str, status: str, context: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """The steps to start and the variables to publish after ``step_id`` ended with ``status``.

        ``status`` is "succeeded" or "failed" (any other status matches only ``always``). Targets
        are deduplicated in order; publish values render in order, each seeing the ones before it
        as ``vars``. Condition and publish errors raise TemplateError naming the step.
        """
        step = self.step(step_id)
        if step.on is None:
            index = self._index[step_id]
            if status != "succeeded" or index + 1 >= len(self.steps):
                return [], {}
            return [self.steps[index + 1].id], {}
        targets: list[str] = []
        published: dict[str, Any] = {}
        for transition in step.on:
            if not transition.matches(status):
                continue
            if transition.condition is not None and not evaluate(transition.condition, context, step=step_id):
                continue
            for name, template in transition.publish.items():
                scope = {**context, "vars": {**(context.get("vars") or {}), **published}} if published else context
                published[name] = render(template, scope, step=step_id)
            targets += [t for t in transition.do if t not in targets]
        return targets, published

    @property
    def input_schema(self) -> dict[str, Any]:
        """The declared inputs as one object schema (the same dict object for equal declarations)."""
        return input_schema(json.dumps(self.inputs, sort_keys=True))

    def coerce_inputs(self, raw: Any) -> dict[str, Any]:
        """Declared inputs only, string forms coerced, defaults filled; InputError names the field."""
        label = f"workflow {self.name}"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError([{"field": "", "reason": "is not UTF-8 text"}], action=label) from None
        if isinstance(raw, str):
            raw = parse_json_text(raw, "", action=label) if raw.strip() else {}
        else:  # values from a webhook body or Python: NaN, lone surrogates and absurd depth refused here too
            check_value(raw, action=label)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InputError([{"field": "", "reason": "must be an object of input values"}], action=label)
        schema = self.input_schema
        values = coerce_inputs(raw, schema)
        for name, spec in self.inputs.items():
            if name not in values and "default" in spec:
                values[name] = copy.deepcopy(spec["default"])
        problems = problems_for(values, schema)
        if problems:
            raise InputError(problems, action=label)
        return values

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy of the definition (stored in each run so later edits of the file don't affect it)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["inputs"] = copy.deepcopy(self.inputs)
        out["start"] = self.start
        out["steps"] = [s.to_dict() for s in self.steps]
        if self.output is not None:
            out["output"] = copy.deepcopy(self.output)
        if self.webhook is not None:
            out["webhook"] = self.webhook.to_dict()
        if self.integration is not None:
            out["integration"] = copy.deepcopy(self.integration)
        out["source"] = self.source
        return out


@lru_cache(maxsize=256)
def input_schema(declared: str) -> dict[str, Any]:
    """The object schema of declared inputs (JSON text of the declarations, so the result can be cached)."""
    inputs: dict[str, dict[str, Any]] = json.loads(declared)
    properties = {n: {k: v for k, v in s.items() if k not in ("required", "default")} for n, s in inputs.items()}
    required = [n for n, s in inputs.items() if s.get("required")]
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": required}
