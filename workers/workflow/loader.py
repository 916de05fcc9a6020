"""Reading workflow files: YAML/JSON text with bounds, the schema's errors in words, building the model.

Loading is bounded so that no file, however written, costs more than a small, known amount of
memory and time (see ``docs/workflows.md``, "Limits"): a file over ``MAX_FILE_BYTES`` is refused
before it is read; YAML nesting deeper than ``MAX_DEPTH`` and aliases that expand the document
beyond ``MAX_VALUES`` values (a 513-byte "billion laughs" file expands to gigabytes) are refused
from the parser's events, before anything is built (Python would otherwise also hit its recursion
limit); JSON gets the same depth and size bounds; a workflow holds at most ``MAX_STEPS`` steps.
Each limit is a ``WorkflowError`` naming the file and the limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from actions import problems_for
from workers.workflow.checks import (
    Scope,
    check_action,
    check_batch_mode,
    check_defaults,
    check_integrations,
    check_literal_inputs,
    check_templates,
    check_wait,
    step_label,
    suggest,
    wait_spec,
)
from workers.workflow.errors import WorkflowError
from workers.workflow.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BODY,
    Step,
    Transition,
    WebhookConfig,
    Workflow,
)
from workers.workflow.templates import CONTEXT_NAMES, ITEM_NAMES, has_template

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_STEPS", "MAX_VALUES", "YAMLLimitError", "build", "load_workflow",
           "load_workflow_dir", "load_yaml", "parse_workflow", "workflow_from_dict"]

#: The largest workflow file read (bytes; for text, characters).
MAX_FILE_BYTES = 512 * 1024
#: The deepest nesting of mappings and lists.
MAX_DEPTH = 64
#: Values (scalars, lists, mappings) in a document once YAML aliases are expanded.
MAX_VALUES = 100_000
#: Steps in one workflow.
MAX_STEPS = 2_000

_WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")
_LIMITS_DOC = "see Limits in docs/workflows.md"


# ---------------------------------------------------------------- reading text


class YAMLLimitError(yaml.MarkedYAMLError):
    """A YAML document is too deep or expands too far; ``problem`` says which, the mark says where."""


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~3x faster


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
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


def _check_yaml_bounds(text: str) -> None:
    """Walk the parser's events once (no nodes, no data) and refuse a document past the bounds.

    Depth is checked before the composer recurses into it; each alias counts the values of what it
    names, so a "billion laughs" file is refused at its first oversized alias, having built nothing.
    """
    open_sizes: list[int] = []  # values counted so far in each open mapping or list
    open_anchors: list[str | None] = []
    anchored: dict[str, int] = {}

    def add(count: int, mark: Any) -> None:
        if open_sizes:
            open_sizes[-1] += count
            if open_sizes[-1] > MAX_VALUES:
                raise YAMLLimitError(problem=f"expands to more than {MAX_VALUES} values (each use of a YAML "
                                             f"alias counts what it names)", problem_mark=mark)

    try:
        for event in yaml.parse(text, Loader=_BaseLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_sizes) >= MAX_DEPTH:
                    raise YAMLLimitError(problem=f"nests deeper than {MAX_DEPTH} levels",
                                         problem_mark=event.start_mark)
                open_sizes.append(1)
                open_anchors.append(event.anchor)
            elif isinstance(event, yaml.CollectionEndEvent):
                size, anchor = open_sizes.pop(), open_anchors.pop()
                if anchor is not None:
                    anchored[anchor] = size
                add(size, event.start_mark)
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    anchored[event.anchor] = 1
                add(1, event.start_mark)
            elif isinstance(event, yaml.AliasEvent):
                add(anchored.get(event.anchor, 1), event.start_mark)
    except YAMLLimitError:
        raise
    except yaml.MarkedYAMLError as exc:  # libyaml stops at 1000 levels by itself, while scanning ahead
        if "nesting depth" in str(exc.problem):
            raise YAMLLimitError(problem=f"nests deeper than {MAX_DEPTH} levels",
                                 problem_mark=exc.problem_mark) from None
        raise


def load_yaml(text: str) -> Any:
    """The one YAML reader of the pack (workflows and schedules); YAMLLimitError past the bounds."""
    _check_yaml_bounds(text)
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _shape_problem(data: Any) -> str | None:
    """Depth and size of parsed data (JSON has no aliases, but the same bounds), without recursion."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"holds more than {MAX_VALUES} values"
        if depth > MAX_DEPTH:
            return f"nests deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None


def _read(text: str, source: str) -> Any:
    """Parse JSON or YAML into plain JSON data within the bounds; syntax errors name the line and column."""
    if len(text) > MAX_FILE_BYTES:
        raise WorkflowError(f"is larger than {MAX_FILE_BYTES} characters; {_LIMITS_DOC}", file=source)
    if source.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowError(f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=source,
                                line=exc.lineno) from None
        except RecursionError:
            raise WorkflowError(f"nests deeper than {MAX_DEPTH} levels; {_LIMITS_DOC}", file=source) from None
    else:
        try:
            data = load_yaml(text)
        except YAMLLimitError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark else None
            where = f" at line {line}" if line else ""
            raise WorkflowError(f"{exc.problem}{where}; {_LIMITS_DOC}", file=source, line=line) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = exc.problem or exc.context or "unreadable"
            raise WorkflowError(f"not valid YAML{where}: {problem}", file=source,
                                line=mark.line + 1 if mark else None) from None
        except yaml.YAMLError as exc:
            raise WorkflowError(f"not valid YAML: {exc}", file=source) from None
    if problem := _shape_problem(data):
        raise WorkflowError(f"{problem}; {_LIMITS_DOC}", file=source)
    try:  # YAML allows int keys ({50256: -100}) and binary values; the run record is JSON
        return json.loads(json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise WorkflowError(f"holds a value that is not JSON data ({exc})", file=source) from None


def _read_file(path: Path) -> str:
    """A workflow file's text; its size is checked before a byte is read."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise WorkflowError(f"is {size} bytes, larger than {MAX_FILE_BYTES}; {_LIMITS_DOC}", file=source)
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(f"cannot read the file: {exc.strerror or exc}", file=source) from None
    except UnicodeDecodeError:
        raise WorkflowError("is not UTF-8 text", file=source) from None


# ---------------------------------------------------------------- validation


@cache
def _schema() -> dict[str, Any]:
    text = resources.files("workers.workflow").joinpath("workflow.schema.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


_STEP_FIELD = re.compile(r"^steps\[(\d+)\](?:\.|(?=\[))?(.*)$")


def _schema_error(data: dict[str, Any], source: str) -> WorkflowError | None:
    """The first schema problem, in words, located by step id rather than list index."""
    problems = problems_for(data, _schema())
    if not problems:
        return None
    first = problems[0]
    reason = first["reason"] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
    match = _STEP_FIELD.match(first["field"])
    if match:
        return WorkflowError(reason, file=source, step=step_label(data, int(match.group(1))),
                             field=match.group(2) or None)
    return WorkflowError(reason, file=source, field=first["field"] or None)


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
                raise WorkflowError(f"transition to unknown step {target!r}{suggest(target, ids)}", file=source,
                                    step=sid, field=f"on[{index}].do")
        condition = entry.get("if")
        if condition is not None and not has_template(condition):
            raise WorkflowError(f"must be a template such as \"{{{{ steps.{sid}.output.ok }}}}\" (the plain text "
                                f"{condition!r} would always count as true)", file=source, step=sid,
                                field=f"on[{index}].if")
        transitions.append(Transition(entry.get("when", "success"), condition, dict(entry.get("publish") or {}),
                                      targets))
    return tuple(transitions)


def _build_step(raw: dict[str, Any], ids: list[str], scope: Scope, source: str, trusted: bool) -> Step:
    sid, action = raw["id"], raw["action"]
    if not trusted:
        check_action(action, source, sid)
    with_items = raw.get("with_items")
    if "concurrency" in raw and with_items is None:
        raise WorkflowError("concurrency only applies to a step with with_items", file=source, step=sid,
                            field="concurrency")
    if isinstance(with_items, str) and not has_template(with_items):
        raise WorkflowError("must be a template giving a list (e.g. \"{{ inputs.records }}\") or a literal list",
                            file=source, step=sid, field="with_items")
    on = _build_transitions(raw, ids, source)
    step_input = dict(raw.get("input") or {})
    if not trusted:
        item_scope = scope._replace(names=scope.names | ITEM_NAMES) if with_items is not None else scope
        check_templates(step_input, "input", item_scope, source, sid)
        check_templates(with_items, "with_items", scope, source, sid)
        for index, transition in enumerate(on or ()):
            check_templates(transition.condition, f"on[{index}].if", scope, source, sid)
            check_templates(transition.publish, f"on[{index}].publish", scope, source, sid)
        check_literal_inputs(step_input, action, source, sid)
        check_integrations(raw.get("integration"), "integration", item_scope, source, sid)
    mode = raw.get("mode", "live")
    if mode == "batch" and not trusted:
        check_batch_mode(action, with_items is not None, source, sid)
    wait = wait_spec(raw.get("wait"), source, sid)
    if wait is not None and not trusted:
        check_wait(action, wait, with_items is not None, source, sid, mode=mode)
    timeout = raw.get("timeout")
    return Step(
        id=sid, action=action, integration=raw.get("integration"), input=step_input, retries=raw.get("retries"),
        timeout=float(timeout) if timeout is not None else None, redact=tuple(raw.get("redact") or ()),
        with_items=with_items, concurrency=int(raw.get("concurrency", DEFAULT_CONCURRENCY)), on=on,
        description=raw.get("description", ""), wait=wait, mode=mode,
    )


def build(data: Any, source: str, *, trusted: bool = False) -> Workflow:
    """Validate parsed data and build the Workflow; ``trusted`` (stored definitions) skips registry checks."""
    if not isinstance(data, dict):
        raise WorkflowError("must be a mapping with `name` and `steps`", file=source)
    steps_given = data.get("steps")
    if isinstance(steps_given, list) and len(steps_given) > MAX_STEPS:
        raise WorkflowError(f"has {len(steps_given)} steps, more than {MAX_STEPS}; {_LIMITS_DOC}",
                            file=source, field="steps")
    if problem := _schema_error(data, source):
        raise problem
    ids = [s["id"] for s in data["steps"]]
    duplicates = [i for i in dict.fromkeys(ids) if ids.count(i) > 1]
    if duplicates:
        raise WorkflowError(f"step id {duplicates[0]!r} is used by more than one step", file=source,
                            step=duplicates[0], field="id")
    inputs: dict[str, dict[str, Any]] = dict(data.get("inputs") or {})
    scope = Scope(CONTEXT_NAMES, frozenset(inputs), frozenset(ids))
    if not trusted:
        check_defaults(inputs, source)
    steps = tuple(_build_step(raw, ids, scope, source, trusted) for raw in data["steps"])
    start = data.get("start", ids[0])
    if start not in ids:
        raise WorkflowError(f"names no step of this workflow: {start!r}{suggest(start, ids)}", file=source,
                            field="start")
    output = data.get("output")
    if output is not None and not trusted:
        check_templates(output, "output", scope, source, None)
    hook = data.get("webhook")
    webhook = WebhookConfig(hook["secret_env"], hook.get("signature"),
                            int(hook.get("max_body_bytes", DEFAULT_MAX_BODY))) if hook else None
    if not trusted:
        check_integrations(data.get("integration"), "integration", scope, source, None)
    return Workflow(name=data["name"], description=data.get("description", ""), inputs=inputs, steps=steps,
                    start=start, output=output, webhook=webhook, integration=data.get("integration"), source=source)


# ---------------------------------------------------------------- entry points


def workflow_from_dict(data: Mapping[str, Any]) -> Workflow:
    """Rebuild from ``Workflow.to_dict()``; the structure is re-checked, the action registry is not.

    A stored definition was fully checked when its run started; a later change of the pack
    must not make the record of an old run unreadable.
    """
    data = dict(data)
    source = str(data.pop("source", "<stored>"))
    return build(data, source, trusted=True)


def parse_workflow(text: str, source: str = "<string>") -> Workflow:
    """A workflow from YAML or JSON text (JSON is read as JSON when ``source`` ends in .json)."""
    return build(_read(text, source), source)


def load_workflow(path: str | Path) -> Workflow:
    """A workflow from a .yaml, .yml or .json file."""
    path = Path(path)
    return parse_workflow(_read_file(path), str(path))


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
        data = _read(_read_file(path), source)
        if not isinstance(data, dict) or "steps" not in data:
            continue
        workflow = build(data, source)
        if workflow.name in found:
            raise WorkflowError(f"workflow name {workflow.name!r} is also used by {found[workflow.name].source}",
                                file=source, field="name")
        found[workflow.name] = workflow
    return found

