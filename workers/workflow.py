"""Workflow files: loading, validation with file/step/field errors, and sandboxed Jinja2 templates.

A workflow (YAML or JSON, see ``docs/workflows.md`` and ``workflow.schema.json``) declares inputs,
steps (an action each, inputs that may be templates, transitions), and an output mapping. A step
without ``on`` goes to the next step in the list on success; ``on: []`` ends its branch.

Templates render in Jinja2's immutable sandbox with strict undefined variables. A string that is
exactly one ``{{ expression }}`` yields the expression's native value (a list stays a list); any
other template renders as text. Values from the context (webhook payloads, API answers) are never
rendered again, so a ticket containing ``{{ 7*7 }}`` stays literal.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jsonschema import Draft202012Validator

import actions
from actions._coerce import coerce_inputs
from actions._validate import problems_for
from integration.errors import InputError, PackError

__all__ = ["Step", "TemplateError", "Transition", "WebhookConfig", "Workflow", "WorkflowError", "evaluate",
           "load_workflow", "load_workflow_dir", "parse_workflow", "render"]

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)
_DEFAULT_CONCURRENCY = 5


class WorkflowError(PackError):
    """A workflow file is wrong: says which file, which step and which field."""

    code = "workflow_invalid"

    def __init__(self, reason: str, *, file: str | None = None, step: str | None = None,
                 field: str | None = None) -> None:
        parts = [p for p in (file, f"step {step!r}" if step else None, field) if p]
        super().__init__(": ".join([*parts, reason]), file=file, step=step, field=field, reason=reason)
        self.file, self.step, self.field, self.reason = file, step, field, reason


class TemplateError(PackError):
    """A template failed to render: names the step and the expression."""

    code = "template_error"

    def __init__(self, message: str, *, step: str | None = None, expression: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, step=step, expression=expression, reason=reason)
        self.step, self.expression, self.reason = step, expression, reason


# ---------------------------------------------------------------- templates


def _fromjson(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@cache
def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["fromjson"] = _fromjson
    return env


def _has_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@lru_cache(maxsize=4096)
def _compiled(text: str) -> Any:
    """A compiled expression (native value) or template (text), cached: fan-outs render the same ones."""
    match = _SINGLE_EXPRESSION.match(text)
    if match and "{%" not in text:
        return ("expr", _env().compile_expression(match.group("expr"), undefined_to_none=False))
    return ("text", _env().from_string(text))


def _render_string(text: str, context: dict[str, Any], step: str | None) -> Any:
    if not _has_template(text):
        return text
    where = f"step {step!r}: " if step else ""
    try:
        kind, compiled = _compiled(text)
        value = compiled(**context) if kind == "expr" else compiled.render(**context)
        if hasattr(value, "_undefined_name") or type(value).__name__ == "StrictUndefined":
            str(value)  # raises the UndefinedError with its message
        return value
    except SecurityError as exc:
        raise TemplateError(f"{where}template {text.strip()}: not allowed in the sandbox ({exc})", step=step,
                            expression=text.strip(), reason="sandbox") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{where}template {text.strip()}: syntax error: {exc.message}", step=step,
                            expression=text.strip(), reason="syntax") from None
    except UndefinedError as exc:
        raise TemplateError(f"{where}template {text.strip()}: {exc.message}", step=step, expression=text.strip(),
                            reason="undefined") from None
    except Exception as exc:  # a filter or operator error: still the step's fault, never a crash
        raise TemplateError(f"{where}template {text.strip()}: {type(exc).__name__}: {exc}", step=step,
                            expression=text.strip(), reason=type(exc).__name__) from None


def render(value: Any, context: dict[str, Any], *, step: str | None = None) -> Any:
    """Render templates inside ``value`` (dicts and lists walked); results are never re-rendered."""
    if isinstance(value, str):
        return _render_string(value, context, step)
    if isinstance(value, dict):
        return {k: render(v, context, step=step) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, step=step) for v in value]
    return value


def evaluate(condition: str, context: dict[str, Any], *, step: str | None = None) -> bool:
    """A condition's truthiness (``"false"``/``"0"``/``""`` text counts as false)."""
    value = render(condition, context, step=step)
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


def _check_syntax(value: Any, where: str) -> str | None:
    """The first template syntax error inside ``value``, for load-time validation."""
    if isinstance(value, str) and _has_template(value):
        try:
            _compiled(value)
        except TemplateSyntaxError as exc:
            return f"{where}: template {value.strip()!r}: syntax error: {exc.message}"
    elif isinstance(value, dict):
        for key, item in value.items():
            if problem := _check_syntax(item, f"{where}.{key}"):
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if problem := _check_syntax(item, f"{where}[{index}]"):
                return problem
    return None


def _contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return _has_template(value)
    if isinstance(value, dict):
        return any(_contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_template(v) for v in value)
    return False


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Transition:
    when: str = "success"
    condition: str | None = None
    publish: dict[str, Any] = field(default_factory=dict)
    do: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    id: str
    action: str
    integration: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None
    timeout: float | None = None
    redact: tuple[str, ...] = ()
    with_items: Any = None
    concurrency: int = _DEFAULT_CONCURRENCY
    on: tuple[Transition, ...] | None = None


@dataclass(frozen=True)
class WebhookConfig:
    secret_env: str
    signature: str | None = None
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    start: str
    description: str = ""
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    output: dict[str, Any] | None = None
    webhook: WebhookConfig | None = None
    source: str = "<string>"
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise WorkflowError(f"no step {step_id!r}", file=self.source)

    def next_steps(self, step_id: str, status: str, context: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """Targets and published variables after ``step_id`` ended with ``status``."""
        step = self.step(step_id)
        if step.on is None:
            if status != "succeeded":
                return [], {}
            index = [s.id for s in self.steps].index(step_id)
            return ([self.steps[index + 1].id] if index + 1 < len(self.steps) else []), {}
        targets: list[str] = []
        published: dict[str, Any] = {}
        wanted = {"succeeded": "success", "failed": "failure"}.get(status)
        for transition in step.on:
            if transition.when != "always" and transition.when != wanted:
                continue
            if transition.condition is not None and not evaluate(transition.condition, context, step=step_id):
                continue
            for name, template in transition.publish.items():  # in order: a later value may use an earlier one
                scope = {**context, "vars": {**context.get("vars", {}), **published}}
                published[name] = render(template, scope, step=step_id)
            targets += [t for t in transition.do if t not in targets]
        return targets, published

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        """The declared inputs as a JSON schema (built once: validators are cached per schema object)."""
        properties = {}
        for name, spec in self.inputs.items():
            properties[name] = {k: v for k, v in spec.items() if k not in ("required", "default")}
        required = [n for n, s in self.inputs.items() if s.get("required")]
        return {"type": "object", "additionalProperties": False, "properties": properties, "required": required}

    def coerce_inputs(self, raw: Any) -> dict[str, Any]:
        """Declared inputs only, string forms coerced, defaults filled; InputError names the field."""
        label = f"workflow {self.name}"
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise InputError([{"field": "", "reason": f"is not valid JSON ({exc.msg})"}], action=label) from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InputError([{"field": "", "reason": "must be an object of input values"}], action=label)
        schema = self.input_schema
        values = coerce_inputs(raw, schema)
        for name, spec in self.inputs.items():
            if name not in values and "default" in spec:
                values[name] = json.loads(json.dumps(spec["default"]))
        problems = problems_for(values, schema)
        if problems:
            raise InputError(problems, action=label)
        return values

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.raw | {"source": self.source}))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workflow:
        data = dict(data)
        source = str(data.pop("source", "<stored>"))
        return _build(data, source, check_actions=False)


# ---------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 reads the key ``on:`` as True, and ``no`` as False.)"""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def load_yaml(text: str) -> Any:
    """The one YAML reader of the pack (workflows and schedules)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@cache
def _validator() -> Draft202012Validator:
    text = resources.files("workers").joinpath("workflow.schema.json").read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


def _schema_error(data: dict[str, Any], source: str) -> WorkflowError | None:
    error = next(iter(sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))), None)
    if error is None:
        return None
    path = list(error.absolute_path)
    step = None
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = data.get("steps") or []
        step = steps[path[1]].get("id") if isinstance(steps[path[1]], dict) else None
        step = step or f"#{path[1] + 1}"
        path = path[2:]
    where = ""
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    reason = error.message
    if error.validator == "additionalProperties":
        reason = f"unknown key ({error.message.split('(')[-1].rstrip(')')})"
    return WorkflowError(reason, file=source, step=step, field=where or None)


def _build(data: dict[str, Any], source: str, *, check_actions: bool = True) -> Workflow:
    if not isinstance(data, dict):
        raise WorkflowError("must be a mapping with name and steps", file=source)
    if problem := _schema_error(data, source):
        raise problem
    ids = [s["id"] for s in data["steps"]]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise WorkflowError(f"step id used twice: {', '.join(duplicates)}", file=source, step=duplicates[0],
                            field="id")
    registry = actions.registry()
    steps = []
    for raw in data["steps"]:
        sid = raw["id"]
        if raw["action"] not in registry:
            hint = difflib.get_close_matches(raw["action"], list(registry), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else " (see `openai-pack actions list`)"
            raise WorkflowError(f"{raw['action']!r} is not an action{suggestion}", file=source, step=sid,
                                field="action")
        if "concurrency" in raw and "with_items" not in raw:
            raise WorkflowError("concurrency only applies with with_items", file=source, step=sid, field="concurrency")
        transitions = None
        if "on" in raw:
            transitions = []
            for index, t in enumerate(raw["on"]):
                targets = (t["do"],) if isinstance(t.get("do"), str) else tuple(t.get("do") or ())
                for target in targets:
                    if target not in ids:
                        hint = difflib.get_close_matches(target, ids, n=1)
                        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                        raise WorkflowError(f"transition to unknown step {target!r}{extra}", file=source, step=sid,
                                            field=f"on[{index}].do")
                transitions.append(Transition(t.get("when", "success"), t.get("if"), dict(t.get("publish") or {}),
                                              targets))
        for key in ("input", "with_items", "on"):
            if key in raw and (problem := _check_syntax(raw[key], key)):
                raise WorkflowError(problem.split(": ", 1)[1], file=source, step=sid, field=problem.split(": ")[0])
        step_input = dict(raw.get("input") or {})
        if check_actions:
            _check_literal_inputs(step_input, raw["action"], source, sid)
        steps.append(Step(sid, raw["action"], raw.get("integration"), step_input, raw.get("retries"),
                          raw.get("timeout"), tuple(raw.get("redact") or ()), raw.get("with_items"),
                          int(raw.get("concurrency", _DEFAULT_CONCURRENCY)),
                          tuple(transitions) if transitions is not None else None))
    start = data.get("start", ids[0])
    if start not in ids:
        raise WorkflowError(f"start names unknown step {start!r}", file=source, field="start")
    if "output" in data and (problem := _check_syntax(data["output"], "output")):
        raise WorkflowError(problem.split(": ", 1)[1], file=source, field=problem.split(": ")[0])
    for name, spec in (data.get("inputs") or {}).items():
        if "default" in spec and spec.get("type"):
            problems = problems_for(coerce_inputs({name: spec["default"]}, {"type": "object", "properties": {
                name: {k: v for k, v in spec.items() if k not in ("required", "default")}}}),
                {"type": "object", "properties": {name: {k: v for k, v in spec.items()
                                                         if k not in ("required", "default")}}})
            if problems:
                raise WorkflowError(f"default: {problems[0]['reason']}", file=source, field=f"inputs.{name}")
    hook = data.get("webhook")
    return Workflow(
        name=data["name"], steps=tuple(steps), start=start, description=data.get("description", ""),
        inputs=dict(data.get("inputs") or {}), output=data.get("output"),
        webhook=WebhookConfig(hook["secret_env"], hook.get("signature"), int(hook.get("max_body_bytes", 1 << 20)))
        if hook else None, source=source, raw=data,
    )


def _check_literal_inputs(step_input: dict[str, Any], action: str, source: str, step_id: str) -> None:
    """Literal (non-template) values are checked against the action's schema at load time."""
    manifest = actions.get(action)
    literal = {k: v for k, v in step_input.items() if not _contains_template(v)}
    templated = set(step_input) - set(literal)
    schema = dict(manifest.input)
    schema["required"] = [r for r in schema.get("required", []) if r not in templated]
    problems = problems_for(coerce_inputs(literal, schema), schema)
    if problems:
        first = problems[0]
        raise WorkflowError(first["reason"], file=source, step=step_id,
                            field=f"input.{first['field']}" if first["field"] else "input")


def parse_workflow(text: str, source: str = "<string>") -> Workflow:
    """A workflow from YAML or JSON text."""
    try:
        data = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise WorkflowError(f"not valid YAML at {where}: {exc.problem}", file=source) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"not valid YAML: {exc}", file=source) from None
    return _build(data, source)


def load_workflow(path: str | Path) -> Workflow:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(f"cannot read the file: {exc.strerror}", file=str(path)) from None
    return parse_workflow(text, str(path))


def load_workflow_dir(directory: str | Path) -> dict[str, Workflow]:
    """Every ``*.yaml``/``*.yml``/``*.json`` workflow of a directory, by name."""
    found: dict[str, Workflow] = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json") or path.name.startswith(("_", ".")):
            continue
        text = path.read_text(encoding="utf-8")
        data = load_yaml(text)
        if not isinstance(data, dict) or "steps" not in data:
            continue  # schedules files and other YAML live alongside workflows
        workflow = parse_workflow(text, str(path))
        if workflow.name in found:
            raise WorkflowError(f"workflow name {workflow.name!r} is also used by {found[workflow.name].source}",
                                file=str(path), field="name")
        found[workflow.name] = workflow
    return found
