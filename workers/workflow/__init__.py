"""Workflow definitions: loading, validation with file/step/field errors, and sandboxed Jinja2 templates.

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

Everything that can be checked before a run is checked when the file is loaded, so a mistake
costs nothing: unknown actions (with a suggestion), duplicate ids, transitions to unknown steps,
template syntax, templates naming unknown inputs or steps, and literal inputs the action would
refuse. Errors are ``WorkflowError`` naming the file, the step and the field.

Templates render in Jinja2's immutable sandbox with strict undefined variables. A string that is
exactly one ``{{ expression }}`` yields the expression's native value (a list stays a list, an
int an int); any other template renders as text. Values from the context (webhook payloads, API
answers) are data and are never rendered again, so a ticket containing ``{{ 7*7 }}`` stays
literal. Compiled templates are cached by their text: a 10,000-item fan-out compiles once.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

import actions
from actions._coerce import coerce_inputs
from actions._validate import problems_for
from integration import errors
from integration.errors import InputError

__all__ = ["CONTEXT_NAMES", "ITEM_NAMES", "Step", "TemplateError", "Transition", "WebhookConfig", "Workflow",
           "WorkflowError", "evaluate", "load_workflow", "load_workflow_dir", "load_yaml", "parse_workflow",
           "render"]

#: Names the engine puts in every template context; ``ITEM_NAMES`` only in a fan-out step's input.
CONTEXT_NAMES = frozenset({"inputs", "steps", "vars", "run"})
ITEM_NAMES = frozenset({"item", "index"})

_DEFAULT_CONCURRENCY = 5
_DEFAULT_MAX_BODY = 1024 * 1024
_WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")


# ---------------------------------------------------------------- errors


class WorkflowError(errors.WorkflowError):
    """A workflow file is wrong; the message says which file, which step and which field.

    ``str()``: ``"<file>: step 'summarise': input.messages: <reason>"`` (unknown parts left out).
    Class-level defaults keep the attributes readable after ``error_from_dict`` / unpickling, which
    only restore the details that were set.
    """

    code = "workflow_invalid"
    retryable = False
    file: str | None = None
    step: str | None = None
    field: str | None = None
    reason: str = ""
    line: int | None = None

    def __init__(self, reason: str, *, file: str | None = None, step: str | None = None,
                 field: str | None = None, line: int | None = None) -> None:
        parts = [p for p in (file, f"step {step!r}" if step else None, field) if p]
        super().__init__(": ".join([*parts, reason]), file=file, step=step, field=field, reason=reason, line=line)
        self.file, self.step, self.field, self.reason, self.line = file, step, field, reason, line


class TemplateError(errors.TemplateError):
    """A template failed to render (at run time); names the step and the expression."""

    code = "template_error"
    retryable = False
    step: str | None = None
    expression: str | None = None
    reason: str | None = None

    def __init__(self, message: str, *, step: str | None = None, expression: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, step=step, expression=expression, reason=reason)
        self.step, self.expression, self.reason = step, expression, reason


# ---------------------------------------------------------------- templates

_MAX_SEQUENCE = 1_000_000  # characters or items a `*` may build
_MAX_POWER_BITS = 100_000


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on ``*`` and ``**`` so a template cannot exhaust memory or CPU."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if (isinstance(seq, str | list | tuple) and isinstance(times, int)
                        and len(seq) * times > _MAX_SEQUENCE):
                    raise SecurityError(f"repeating a sequence to more than {_MAX_SEQUENCE} elements is not allowed")
        if (op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0
                and max(left.bit_length(), 1) * right > _MAX_POWER_BITS and abs(left) > 1):
            raise SecurityError("the result of this power is too large")
        return super().call_binop(context, op, left, right)


def _fromjson(value: Any) -> Any:
    """Parse JSON text (an API's JSON-mode answer); anything else passes through unchanged."""
    return json.loads(value) if isinstance(value, str | bytes) else value


_ENV = _SandboxEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters["fromjson"] = _fromjson

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{-?(?P<expr>(?:(?!\}\}|\{\{|\{%).)*?)-?\}\}\s*$", re.DOTALL)
_CONTAINER_LITERALS = (nodes.List, nodes.Dict, nodes.Tuple)


class _Compiled(NamedTuple):
    expression: bool  # True: call ``run(context)`` for a native value; False: ``run.render(context)``
    run: Any
    deep: bool  # the expression builds lists/dicts: look inside the result for undefined values


def _has_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@lru_cache(maxsize=4096)
def _parsed(text: str) -> nodes.Template:
    """The template's AST (raises TemplateSyntaxError); used for load-time checks."""
    return _ENV.parse(text)


@lru_cache(maxsize=8192)
def _compiled(text: str) -> _Compiled:
    """Compile once per distinct text: fan-outs and repeated runs render the same templates many times."""
    match = _SINGLE_EXPRESSION.match(text)
    if match:
        expr = match.group("expr")
        compiled = _ENV.compile_expression(expr, undefined_to_none=False)
        deep = any(True for _ in _parsed(text).find_all(_CONTAINER_LITERALS))
        return _Compiled(True, compiled, deep)
    return _Compiled(False, _ENV.from_string(text), False)


def _native(value: Any, deep: bool) -> Any:
    """Make an expression's value plain data: undefined raises, generators become lists."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined (or the sandbox's unsafe marker) raises its own error here
    if isinstance(value, str):
        return str(value) if type(value) is not str else value  # Markup from |tojson -> plain text
    if isinstance(value, Iterator | range | tuple | KeysView | ValuesView):
        value = list(value)
    if deep:
        if isinstance(value, list):
            return [_native(v, True) for v in value]
        if isinstance(value, dict):
            return {k: _native(v, True) for k, v in value.items()}
    return value


def _shown(text: str) -> str:
    text = text.strip()
    return text if len(text) <= 200 else text[:197] + "..."


def _template_error(text: str, step: str | None, detail: str, reason: str) -> TemplateError:
    where = f"step {step!r}: " if step else ""
    return TemplateError(f"{where}template {_shown(text)}: {detail}", step=step, expression=text.strip(),
                         reason=reason)


def _render_string(text: str, context: Mapping[str, Any], step: str | None) -> Any:
    if not _has_template(text):
        return text
    try:
        compiled = _compiled(text)
        if compiled.expression:
            return _native(compiled.run(context), compiled.deep)
        return compiled.run.render(context)
    except SecurityError as exc:
        raise _template_error(text, step, f"not allowed in the sandbox ({exc})", "sandbox") from None
    except TemplateSyntaxError as exc:
        raise _template_error(text, step, f"syntax error: {exc.message}", "syntax") from None
    except UndefinedError as exc:
        raise _template_error(text, step, str(exc.message), "undefined") from None
    except Exception as exc:  # a filter or operator error is still the step's fault, never a crash
        raise _template_error(text, step, f"{type(exc).__name__}: {exc}", type(exc).__name__) from None


def render(value: Any, context: Mapping[str, Any], *, step: str | None = None) -> Any:
    """Render the templates inside a definition value (dicts and lists walked, keys left alone).

    Only strings of the definition are templates: what they produce is returned as data and never
    rendered again, so payload text such as ``{{ 7*7 }}`` stays literal.
    """
    if isinstance(value, str):
        return _render_string(value, context, step)
    if isinstance(value, dict):
        return {k: render(v, context, step=step) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, step=step) for v in value]
    return value


_FALSE_TEXTS = frozenset({"", "false", "0", "no", "none", "null"})


def evaluate(condition: str, context: Mapping[str, Any], *, step: str | None = None) -> bool:
    """A condition's truthiness; text templates give text, so ``"False"``, ``"0"`` and ``""`` count as false."""
    value = render(condition, context, step=step)
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_TEXTS
    return bool(value)


# ---------------------------------------------------------------- the model


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
class Step:
    """One step; ``on`` is None when the file had no ``on`` (then: next step in the list on success)."""

    id: str
    action: str
    integration: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None
    timeout: float | None = None
    redact: tuple[str, ...] = ()
    with_items: Any | None = None
    concurrency: int = _DEFAULT_CONCURRENCY
    on: tuple[Transition, ...] | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "action": self.action}
        if self.description:
            out["description"] = self.description
        if self.integration is not None:
            out["integration"] = self.integration
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
        if self.on is not None:
            out["on"] = [t.to_dict() for t in self.on]
        return out


@dataclass(frozen=True)
class WebhookConfig:
    """How ``openai-pack serve`` authenticates POST /hooks/<name>; the secret itself stays in the environment."""

    secret_env: str
    signature: Literal["hmac-sha256"] | None = None
    max_body_bytes: int = _DEFAULT_MAX_BODY

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
    source: str = "<string>"
    _index: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._index.update({s.id: i for i, s in enumerate(self.steps)})
        if not self.start and self.steps:
            object.__setattr__(self, "start", self.steps[0].id)

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
        return _input_schema(json.dumps(self.inputs, sort_keys=True))

    def coerce_inputs(self, raw: Any) -> dict[str, Any]:
        """Declared inputs only, string forms coerced, defaults filled; InputError names the field."""
        label = f"workflow {self.name}"
        if isinstance(raw, str | bytes):
            try:
                raw = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise InputError([{"field": "", "reason": f"is not valid JSON ({exc.msg} at char {exc.pos})"}],
                                 action=label) from None
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
        out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workflow:
        """Rebuild from ``to_dict()``; the structure is re-checked, the action registry is not.

        A stored definition was fully checked when its run started; a later change of the pack
        must not make the record of an old run unreadable.
        """
        data = dict(data)
        source = str(data.pop("source", "<stored>"))
        return _build(data, source, trusted=True)


@lru_cache(maxsize=256)
def _input_schema(declared: str) -> dict[str, Any]:
    inputs: dict[str, dict[str, Any]] = json.loads(declared)
    properties = {n: {k: v for k, v in s.items() if k not in ("required", "default")} for n, s in inputs.items()}
    required = [n for n, s in inputs.items() if s.get("required")]
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": required}


# ---------------------------------------------------------------- reading text


class _Loader(yaml.SafeLoader):
    """YAML for workflows: only true/false are booleans (YAML 1.1 reads the key ``on:`` as True and
    ``no`` as False), dates stay text, and a key given twice in one mapping is an error, not a silent override.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def load_yaml(text: str) -> Any:
    """The one YAML reader of the pack (workflows and schedules)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _read(text: str, source: str) -> Any:
    """Parse JSON or YAML into plain JSON data; syntax errors name the line and column."""
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowError(f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=source,
                                line=exc.lineno) from None
    try:
        data = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "unreadable"
        raise WorkflowError(f"not valid YAML{where}: {problem}", file=source,
                            line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"not valid YAML: {exc}", file=source) from None
    try:  # YAML allows int keys ({50256: -100}) and binary values; the run record is JSON
        return json.loads(json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise WorkflowError(f"holds a value that is not JSON data ({exc})", file=source) from None


# ---------------------------------------------------------------- validation


@cache
def _schema() -> dict[str, Any]:
    text = resources.files("workers.workflow").joinpath("workflow.schema.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


_STEP_FIELD = re.compile(r"^steps\[(\d+)\](?:\.|(?=\[))?(.*)$")


def _step_label(data: dict[str, Any], index: int) -> str:
    steps = data.get("steps")
    raw = steps[index] if isinstance(steps, list) and index < len(steps) else None
    sid = raw.get("id") if isinstance(raw, dict) else None
    return sid if isinstance(sid, str) and sid else f"#{index + 1}"


def _schema_error(data: dict[str, Any], source: str) -> WorkflowError | None:
    """The first schema problem, in words, located by step id rather than list index."""
    problems = problems_for(data, _schema())
    if not problems:
        return None
    first = problems[0]
    reason = first["reason"] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
    match = _STEP_FIELD.match(first["field"])
    if match:
        return WorkflowError(reason, file=source, step=_step_label(data, int(match.group(1))),
                             field=match.group(2) or None)
    return WorkflowError(reason, file=source, field=first["field"] or None)


def _suggest(word: str, choices: Any) -> str:
    hint = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


class _Scope(NamedTuple):
    """What a template at one place of the file may name."""

    names: frozenset[str]
    inputs: frozenset[str]
    steps: frozenset[str]


def _template_strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every template string inside a value, with its field path."""
    if isinstance(value, str):
        if _has_template(value):
            yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _template_strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _template_strings(item, f"{where}[{index}]")


def _template_problem(text: str, scope: _Scope) -> str | None:
    """Why a template cannot work (syntax, unknown names), or None."""
    shown = _shown(text)
    try:
        ast = _parsed(text)
        _compiled(text)
    except TemplateSyntaxError as exc:
        return f"template {shown}: syntax error on line {exc.lineno}: {exc.message}"
    undeclared = meta.find_undeclared_variables(ast)
    for name in sorted(undeclared - scope.names):
        if name in ITEM_NAMES:
            return f"template {shown}: {name!r} exists only in the input of a step with with_items"
        hint = " (Rewst's CTX is `vars` for published values and `inputs` for the run's inputs)" \
            if name in ("CTX", "ctx") else _suggest(name, scope.names)
        return f"template {shown}: unknown name {name!r}{hint}; templates see {', '.join(sorted(scope.names))}"
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
        return f"template {shown}: {base.name}.{key} is not {what}{_suggest(key, known)}"
    return None


def _check_templates(value: Any, where: str, scope: _Scope, source: str, step: str | None) -> None:
    for path, text in _template_strings(value, where):
        problem = _template_problem(text, scope)
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


def _check_literal_inputs(step_input: dict[str, Any], action: str, source: str, step_id: str) -> None:
    """Literal values are checked now: `temperature: 5` fails at load, not after three paid steps.

    The whole input is validated against the action, and problems at, inside or above a templated
    value are ignored: ``messages[0].role: robot`` is found even when ``messages[1].content`` is a template.
    """
    manifest = actions.get(action)
    schema = manifest.input
    step_input = {manifest.aliases.get(k, k): v for k, v in step_input.items()}  # the seed's old names
    problems = problems_for(coerce_inputs(step_input, schema), schema)
    templated = [path for path, _ in _template_strings(step_input, "")]
    problems = [p for p in problems if not _touches(p["field"], templated)]
    if problems:
        first = problems[0]
        raise WorkflowError(first["reason"], file=source, step=step_id,
                            field=f"input.{first['field']}" if first["field"] else "input")


def _check_integrations(data: dict[str, Any], source: str) -> None:
    """A templated integration gets its own message (the schema's pattern error would not say why)."""
    for index, raw in enumerate(data.get("steps") or []):
        value = raw.get("integration") if isinstance(raw, dict) else None
        if isinstance(value, str) and _has_template(value):
            raise WorkflowError("must be an integration name, not a template: which credentials a step uses is "
                                "fixed when the workflow is written", file=source, step=_step_label(data, index),
                                field="integration")


def _build_transitions(raw: dict[str, Any], ids: list[str], source: str) -> tuple[Transition, ...] | None:
    if "on" not in raw:
        return None
    sid = raw["id"]
    transitions = []
    for index, entry in enumerate(raw["on"]):
        do = entry.get("do")
        targets = tuple(dict.fromkeys([do] if isinstance(do, str) else (do or [])))
        for target in targets:
            if target not in ids:
                raise WorkflowError(f"transition to unknown step {target!r}{_suggest(target, ids)}", file=source,
                                    step=sid, field=f"on[{index}].do")
        condition = entry.get("if")
        if condition is not None and not _has_template(condition):
            raise WorkflowError(f"must be a template such as \"{{{{ steps.{sid}.output.ok }}}}\" (the plain text "
                                f"{condition!r} would always count as true)", file=source, step=sid,
                                field=f"on[{index}].if")
        transitions.append(Transition(entry.get("when", "success"), condition, dict(entry.get("publish") or {}),
                                      targets))
    return tuple(transitions)


def _build_step(raw: dict[str, Any], ids: list[str], scope: _Scope, source: str, trusted: bool) -> Step:
    sid, action = raw["id"], raw["action"]
    if not trusted:
        registry = actions.registry()
        if action not in registry:
            hint = _suggest(action, registry) or " (see `openai-pack actions list`)"
            raise WorkflowError(f"{action!r} is not an action of this pack{hint}", file=source, step=sid,
                                field="action")
    with_items = raw.get("with_items")
    if "concurrency" in raw and with_items is None:
        raise WorkflowError("concurrency only applies to a step with with_items", file=source, step=sid,
                            field="concurrency")
    if isinstance(with_items, str) and not _has_template(with_items):
        raise WorkflowError("must be a template giving a list (e.g. \"{{ inputs.records }}\") or a literal list",
                            file=source, step=sid, field="with_items")
    on = _build_transitions(raw, ids, source)
    step_input = dict(raw.get("input") or {})
    if not trusted:
        item_scope = scope._replace(names=scope.names | ITEM_NAMES) if with_items is not None else scope
        _check_templates(step_input, "input", item_scope, source, sid)
        _check_templates(with_items, "with_items", scope, source, sid)
        for index, transition in enumerate(on or ()):
            _check_templates(transition.condition, f"on[{index}].if", scope, source, sid)
            _check_templates(transition.publish, f"on[{index}].publish", scope, source, sid)
        _check_literal_inputs(step_input, action, source, sid)
    timeout = raw.get("timeout")
    return Step(
        id=sid, action=action, integration=raw.get("integration"), input=step_input, retries=raw.get("retries"),
        timeout=float(timeout) if timeout is not None else None, redact=tuple(raw.get("redact") or ()),
        with_items=with_items, concurrency=int(raw.get("concurrency", _DEFAULT_CONCURRENCY)), on=on,
        description=raw.get("description", ""),
    )


def _check_defaults(inputs: dict[str, dict[str, Any]], source: str) -> None:
    """A default the input's own schema refuses would fail every run that leaves it out."""
    schema = _input_schema(json.dumps(inputs, sort_keys=True))
    for name, spec in inputs.items():
        if "default" not in spec:
            continue
        problems = problems_for(spec["default"], schema["properties"][name])
        if problems:
            sub = f".{problems[0]['field']}" if problems[0]["field"] else ""
            raise WorkflowError(f"default{sub}: {problems[0]['reason']}", file=source, field=f"inputs.{name}")


def _build(data: Any, source: str, *, trusted: bool = False) -> Workflow:
    """Validate parsed data and build the Workflow; ``trusted`` (stored definitions) skips registry checks."""
    if not isinstance(data, dict):
        raise WorkflowError("must be a mapping with `name` and `steps`", file=source)
    _check_integrations(data, source)
    if problem := _schema_error(data, source):
        raise problem
    ids = [s["id"] for s in data["steps"]]
    duplicates = [i for i in dict.fromkeys(ids) if ids.count(i) > 1]
    if duplicates:
        raise WorkflowError(f"step id {duplicates[0]!r} is used by more than one step", file=source,
                            step=duplicates[0], field="id")
    inputs: dict[str, dict[str, Any]] = dict(data.get("inputs") or {})
    scope = _Scope(CONTEXT_NAMES, frozenset(inputs), frozenset(ids))
    if not trusted:
        _check_defaults(inputs, source)
    steps = tuple(_build_step(raw, ids, scope, source, trusted) for raw in data["steps"])
    start = data.get("start", ids[0])
    if start not in ids:
        raise WorkflowError(f"names no step of this workflow: {start!r}{_suggest(start, ids)}", file=source,
                            field="start")
    output = data.get("output")
    if output is not None and not trusted:
        _check_templates(output, "output", scope, source, None)
    hook = data.get("webhook")
    webhook = WebhookConfig(hook["secret_env"], hook.get("signature"),
                            int(hook.get("max_body_bytes", _DEFAULT_MAX_BODY))) if hook else None
    return Workflow(name=data["name"], description=data.get("description", ""), inputs=inputs, steps=steps,
                    start=start, output=output, webhook=webhook, source=source)


# ---------------------------------------------------------------- entry points


def parse_workflow(text: str, source: str = "<string>") -> Workflow:
    """A workflow from YAML or JSON text (JSON is read as JSON when ``source`` ends in .json)."""
    return _build(_read(text, source), source)


def load_workflow(path: str | Path) -> Workflow:
    """A workflow from a .yaml, .yml or .json file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    except UnicodeDecodeError:
        raise WorkflowError("is not UTF-8 text", file=str(path)) from None
    return parse_workflow(text, str(path))


def load_workflow_dir(directory: str | Path) -> dict[str, Workflow]:
    """Every workflow of a directory by name (for the webhook server).

    YAML/JSON files without ``steps`` (schedules files live alongside workflows) are skipped;
    files starting with ``.`` or ``_`` too. Two files with the same ``name`` are an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WorkflowError("is not a directory", file=str(directory))
    found: dict[str, Workflow] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix not in _WORKFLOW_SUFFIXES or path.name.startswith(("_", ".")) or not path.is_file():
            continue
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowError(f"cannot read the file: {exc}", file=source) from None
        data = _read(text, source)
        if not isinstance(data, dict) or "steps" not in data:
            continue
        workflow = _build(data, source)
        if workflow.name in found:
            raise WorkflowError(f"workflow name {workflow.name!r} is also used by {found[workflow.name].source}",
                                file=source, field="name")
        found[workflow.name] = workflow
    return found

