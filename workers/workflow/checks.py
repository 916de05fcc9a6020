"""Load-time checks that JSON Schema cannot express: template names, literal inputs, integrations, defaults.

Everything that can be checked before a run is checked when the file is loaded, so a mistake
costs nothing: templates that do not compile or name unknown inputs or steps, literal inputs the
action would refuse, a malformed integration name, a default its own input refuses. Each problem is a
``WorkflowError`` naming the file, the step and the field.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from jinja2 import TemplateSyntaxError, meta, nodes

import actions
from actions import coerce_inputs, problems_for
from workers.workflow.errors import WorkflowError
from workers.workflow.jobs import batch_problem, job_for, waitable_actions
from workers.workflow.model import WaitSpec, input_schema
from workers.workflow.templates import ITEM_NAMES, compiled, has_template, parsed, shown

__all__ = ["Scope", "check_action", "check_batch_mode", "check_defaults", "check_integrations", "check_literal_inputs",
           "check_templates", "check_wait", "parse_duration", "step_label", "suggest", "template_strings", "wait_spec"]


_INTEGRATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def step_label(data: dict[str, Any], index: int) -> str:
    """A step as errors name it: its id, or ``#3`` when the id itself is missing or wrong."""
    steps = data.get("steps")
    raw = steps[index] if isinstance(steps, list) and index < len(steps) else None
    sid = raw.get("id") if isinstance(raw, dict) else None
    return sid if isinstance(sid, str) and sid else f"#{index + 1}"


def suggest(word: str, choices: Any) -> str:
    """A " (did you mean ...?)" for a typo, or nothing."""
    hint = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


class Scope(NamedTuple):
    """What a template at one place of the file may name."""

    names: frozenset[str]
    inputs: frozenset[str]
    steps: frozenset[str]


def template_strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every template string inside a value, with its field path."""
    if isinstance(value, str):
        if has_template(value):
            yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from template_strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from template_strings(item, f"{where}[{index}]")


def template_problem(text: str, scope: Scope) -> str | None:
    """Why a template cannot work (syntax, unknown names), or None."""
    quoted = shown(text)
    try:
        ast = parsed(text)
        compiled(text)
    except TemplateSyntaxError as exc:
        return f"template {quoted}: syntax error on line {exc.lineno}: {exc.message}"
    undeclared = meta.find_undeclared_variables(ast)
    for name in sorted(undeclared - scope.names):
        if name in ITEM_NAMES:
            return f"template {quoted}: {name!r} exists only in the input of a step with with_items"
        hint = " (Rewst's CTX is `vars` for published values and `inputs` for the run's inputs)" \
            if name in ("CTX", "ctx") else suggest(name, scope.names)
        return f"template {quoted}: unknown name {name!r}{hint}; templates see {', '.join(sorted(scope.names))}"
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if not isinstance(base, nodes.Name) or base.name not in undeclared or base.name not in ("inputs", "steps"):
            continue
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            key = node.arg.value
        else:
            continue
        known = scope.inputs if base.name == "inputs" else scope.steps
        if key in known or hasattr(dict, key):  # inputs.get('x', 'y') is a dict method, not a name
            continue
        what = "a declared input" if base.name == "inputs" else "a step of this workflow"
        return f"template {quoted}: {base.name}.{key} is not {what}{suggest(key, known)}"
    return None


def check_templates(value: Any, where: str, scope: Scope, source: str, step: str | None) -> None:
    """Every template inside ``value`` compiles and names only what ``scope`` offers."""
    for path, text in template_strings(value, where):
        problem = template_problem(text, scope)
        if problem:
            raise WorkflowError(problem, file=source, step=step, field=path or None)


def _touches(problem_field: str, template_paths: list[str]) -> bool:
    """Whether a problem is at, inside or above a templated value (whose value is only known at run time)."""
    for path in template_paths:
        if not problem_field or problem_field == path:
            return True
        for inner, outer in ((path, problem_field), (problem_field, path)):
            if inner.startswith(outer) and inner[len(outer)] in ".[":
                return True
    return False


def check_literal_inputs(step_input: dict[str, Any], action: str, source: str, step_id: str) -> None:
    """Literal values are checked now: `temperature: 5` fails at load, not after three paid steps.

    The whole input is validated against the action, and problems at, inside or above a templated
    value are ignored: ``messages[0].role: robot`` is found even when ``messages[1].content`` is a template.
    """
    manifest = actions.get(action)
    schema = manifest.input
    step_input = {manifest.aliases.get(k, k): v for k, v in step_input.items()}  # the seed's old names
    problems = problems_for(coerce_inputs(step_input, schema), schema)
    templated = [path for path, _ in template_strings(step_input, "")]
    problems = [p for p in problems if not _touches(p["field"], templated)]
    if problems:
        first = problems[0]
        raise WorkflowError(first["reason"], file=source, step=step_id,
                            field=f"input.{first['field']}" if first["field"] else "input")


def check_integrations(value: Any, where: str, scope: Scope, source: str, step: str | None) -> None:
    """A literal integration name is well-formed and its templates compile against the scope (which
    integration exists is only known at run time: the store may change between load and run)."""
    if isinstance(value, str) and not has_template(value) and not _INTEGRATION_NAME.match(value):
        raise WorkflowError(f"{value!r} is not an integration name (1-64 letters, digits, '_', '.' or '-') nor a "
                            "template", file=source, step=step, field=where)
    check_templates(value, where, scope, source, step)


def check_action(action: str, source: str, step_id: str) -> None:
    """The action exists in this pack (with a suggestion for a typo)."""
    registry = actions.registry()
    if action not in registry:
        hint = suggest(action, registry) or " (see `openai-pack actions list`)"
        raise WorkflowError(f"{action!r} is not an action of this pack{hint}", file=source, step=step_id,
                            field="action")


def check_defaults(inputs: dict[str, dict[str, Any]], source: str) -> None:
    """A default the input's own schema refuses would fail every run that leaves it out."""
    schema = input_schema(json.dumps(inputs, sort_keys=True))
    for name, spec in inputs.items():
        if "default" not in spec:
            continue
        problems = problems_for(spec["default"], schema["properties"][name])
        if problems:
            sub = f".{problems[0]['field']}" if problems[0]["field"] else ""
            raise WorkflowError(f"default{sub}: {problems[0]['reason']}", file=source, field=f"inputs.{name}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest a step may wait for a job (a fine-tuning job can take days; a batch's window is 24 h).
MAX_WAIT_SECONDS = 30 * 86400.0


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or text such as ``90s``, ``30m``, ``24h``, ``7d`` (None when it is neither)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match[1]) * _UNIT_SECONDS[match[2] or "s"]
    return None


def wait_spec(raw: Any, source: str, step_id: str) -> WaitSpec | None:
    """A step's ``wait:`` (``true`` or a mapping the schema already shaped) as a ``WaitSpec``."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return WaitSpec()
    values: dict[str, float] = {}
    for name, low, high in (("timeout", 1.0, MAX_WAIT_SECONDS), ("interval", 0.05, 3600.0),
                            ("max_interval", 0.05, 86400.0)):
        if name not in raw:
            continue
        seconds = parse_duration(raw[name])
        if seconds is None or not low <= seconds <= high:
            raise WorkflowError(f"must be a duration between {low:g} and {high:g} seconds (a number, or text "
                                f"such as 90s, 30m, 24h, 7d), got {raw[name]!r}", file=source, step=step_id,
                                field=f"wait.{name}")
        values[name] = seconds
    until = raw.get("until") or ()
    spec = WaitSpec(until=(until,) if isinstance(until, str) else tuple(until), **values)
    if spec.max_interval < spec.interval:
        raise WorkflowError(f"must be at least wait.interval ({spec.interval:g} s)", file=source, step=step_id,
                            field="wait.max_interval")
    return spec


def check_batch_mode(action: str, fan_out: bool, source: str, step_id: str) -> None:
    """``mode: batch`` is for a with_items step whose action ``/v1/batches`` accepts."""
    if not fan_out:
        raise WorkflowError("mode: batch applies to a step with with_items (its items become one batch job)",
                            file=source, step=step_id, field="mode")
    problem = batch_problem(action)
    if problem:
        raise WorkflowError(problem, file=source, step=step_id, field="mode")


def check_wait(action: str, spec: WaitSpec, fan_out: bool, source: str, step_id: str, *, mode: str = "live") -> None:
    """The action starts (or retrieves) a job the pack knows how to poll, and ``until`` names its statuses."""
    if mode == "batch":  # the step's batches are waited for: only the times apply
        if spec.until:
            raise WorkflowError("a mode: batch step waits until its batches end; until does not apply",
                                file=source, step=step_id, field="wait.until")
        return
    if fan_out:
        raise WorkflowError("a with_items step cannot wait yet: wait for each job in a step of its own, or "
                            "use one batch job", file=source, step=step_id, field="wait")
    job = job_for(action)
    if job is None:
        raise WorkflowError(f"{action!r} starts no job to wait for; wait works with "
                            f"{', '.join(waitable_actions())}", file=source, step=step_id, field="wait")
    for status in spec.until:
        if status not in job.kind.statuses:
            raise WorkflowError(f"{status!r} is not a status of a {job.kind.name}{suggest(status, job.kind.statuses)}"
                                f"; it has {', '.join(sorted(job.kind.statuses))}", file=source, step=step_id,
                                field="wait.until")
