"""Drift: what a (newer) spec adds, removes or changes compared with the checked-in manifests.

The manifests are generated from the spec named in their ``openapi.spec`` (today's
``openai-2026-08.yaml``; a test keeps them current), so the comparison is made operation by
operation and field by field between that spec and the new one, and reported per action:

- operations added or removed (``?beta=true`` duplicates are folded, as the generator does);
- per operation, request fields (path, query, header parameters and body properties) added or removed,
  and fields whose schema changed: type, enum, bounds, required-ness, or a shared shape they use.

Prose (descriptions, examples) is not compared: a reworded description is not drift.

The new spec is outside input (a download, a pull request), so it is checked before it is parsed
(``check_spec_file``): at most ``MAX_SPEC_BYTES``, UTF-8, nested at most ``MAX_NESTING`` deep, and at most
``MAX_EXPANDED_NODES`` nodes once every YAML alias is expanded, so a "billion laughs" file (aliases of
aliases) is refused in a second instead of exhausting memory in the comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actions.spec.generate import action_name, defs_for, flatten_object, load_overrides
from actions.spec.source import SpecOperation, converted, default_spec_path, load_spec, operations, resolve

__all__ = ["MAX_EXPANDED_NODES", "MAX_NESTING", "MAX_SPEC_BYTES", "SpecDiff", "check_spec_file", "diff_spec"]

#: Largest spec file read (today's is 3 MB).
MAX_SPEC_BYTES = 32 * 1024 * 1024
#: Most YAML nodes a spec may have with its aliases expanded (today's has about 110,000 and no aliases).
MAX_EXPANDED_NODES = 2_000_000
#: Deepest nesting of mappings and sequences (today's spec: under 30).
MAX_NESTING = 200

_BETA_SUFFIX = "?beta=true"
_BODY_TYPES = ("application/json", "multipart/form-data")


@dataclass
class SpecDiff:
    """Operations added and removed, and field changes per action (by action name)."""

    baseline: str
    new: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "new": self.new, "differs": self.differs, "added": self.added,
                "removed": self.removed, "changed": self.changed}

    def text(self) -> str:
        lines = [f"{self.new} compared with the manifests (generated from {self.baseline}):"]
        if not self.differs:
            return lines[0] + " no differences\n"
        for title, items, mark in (("operations added", self.added, "+"), ("operations removed", self.removed, "-")):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  {mark} {item}" for item in items]
        if self.changed:
            lines.append(f"fields changed in {len(self.changed)} action(s):")
            for action, changes in self.changed.items():
                lines.append(f"  {action}:")
                lines += [f"    {change}" for change in changes]
        return "\n".join(lines) + "\n"


@dataclass
class _Field:
    where: str  # path | query | header | body
    required: bool
    schema: Any
    shapes: dict[str, str]  # shared shape name -> its canonical JSON


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _fields(operation: SpecOperation, spec: dict[str, Any], defs_cache: dict[str, Any]) -> dict[str, _Field]:
    found: dict[str, _Field] = {}
    for param in operation.parameters:
        schema = converted(param.get("schema") or {})
        defs = defs_for(schema, spec, defs_cache)
        found[str(param.get("name"))] = _Field(str(param.get("in")), bool(param.get("required")), schema,
                                               {name: _canonical(d) for name, d in defs.items()})
    for content_type in _BODY_TYPES:
        raw = operation.request_schema(content_type)
        if raw is None:
            continue
        flat = flatten_object(raw, spec) or _union_properties(raw, spec)
        properties, required = flat
        for name, prop in properties.items():
            if name in found:
                continue
            schema = converted(prop)
            defs = defs_for(schema, spec, defs_cache)
            found[name] = _Field("body", name in required, schema, {n: _canonical(d) for n, d in defs.items()})
        break
    return found


def _union_properties(raw: Any, spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Properties of every branch of a union body (what a caller may send)."""
    schema = resolve(raw, spec)
    properties: dict[str, Any] = dict((schema or {}).get("properties") or {}) if isinstance(schema, dict) else {}
    for branch in (schema.get("anyOf") or schema.get("oneOf") or []) if isinstance(schema, dict) else []:
        flat = flatten_object(branch, spec)
        for name, prop in (flat[0] if flat else {}).items():
            properties.setdefault(name, prop)
    return properties, []


def _describe(old: _Field, new: _Field) -> str | None:
    if old.where != new.where:
        return f"moved from {old.where} to {new.where}"
    if old.required != new.required:
        return "now required" if new.required else "no longer required"
    if _canonical(old.schema) != _canonical(new.schema):
        return "schema changed"
    changed = sorted(name for name in set(old.shapes) | set(new.shapes)
                     if old.shapes.get(name) != new.shapes.get(name))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return f"shared shape changed: {shown}"
    return None


def _by_id(spec: dict[str, Any]) -> dict[str, SpecOperation]:
    ops = operations(spec)
    plain = {(op.method, op.path) for op in ops if _BETA_SUFFIX not in op.path}
    return {op.operation_id: op for op in ops
            if not (_BETA_SUFFIX in op.path and (op.method, op.path.replace(_BETA_SUFFIX, "")) in plain)}


def _names() -> dict[str, str]:
    """operationId -> action name: the manifests' own, then the generator's naming (overrides included)."""
    import actions

    names = {op_id: name for op_id, (name, _) in load_overrides().items()}
    names.update({m.openapi.operationId: name for name, m in actions.registry().items()})
    return names


def _bound_to_other_specs(baseline_spec: Path) -> set[str]:
    import actions
    from actions.spec.source import spec_label

    label = spec_label(baseline_spec)
    return {m.openapi.operationId for m in actions.registry().values() if m.openapi.spec != label}


def check_spec_file(path: Path) -> None:
    """Refuse a spec file that is too big, not UTF-8, too deep, or that expands (YAML aliases) past the bounds;
    ValueError says which, so the CLI reports it as bad input (exit 2) naming the file."""
    import yaml

    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise ValueError(f"the file is {size:,} bytes; a spec may be at most {MAX_SPEC_BYTES:,} bytes")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    sizes: dict[str, int] = {}  # anchor -> nodes it stands for
    open_nodes: list[tuple[str | None, int]] = []
    expanded = 0
    for event in yaml.parse(text, Loader=loader):
        kind = type(event)
        if kind is yaml.ScalarEvent:
            expanded += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif kind is yaml.AliasEvent:
            expanded += sizes.get(event.anchor, 1)
        elif kind in (yaml.MappingStartEvent, yaml.SequenceStartEvent):
            expanded += 1
            open_nodes.append((event.anchor, expanded))
            if len(open_nodes) > MAX_NESTING:
                raise ValueError(f"nested more than {MAX_NESTING} levels deep (line {event.start_mark.line + 1})")
        elif kind in (yaml.MappingEndEvent, yaml.SequenceEndEvent):
            anchor, started = open_nodes.pop()
            if anchor:
                sizes[anchor] = expanded - started + 1
        if expanded > MAX_EXPANDED_NODES:
            raise ValueError(f"its YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes (a 'billion laughs' "
                             "file?); refused before loading it")


def diff_spec(new_spec: Path, baseline_spec: Path | None = None) -> SpecDiff:
    """The drift from the manifests' spec to ``new_spec`` (see the module docstring)."""
    check_spec_file(new_spec)
    baseline_spec = baseline_spec or default_spec_path()
    old, new = load_spec(baseline_spec), load_spec(new_spec)
    old_ops, new_ops = _by_id(old), _by_id(new)
    names = _names()
    result = SpecDiff(baseline_spec.name, new_spec.name)

    def label(op_id: str, op: SpecOperation) -> str:
        action = names.get(op_id)
        return f"{op.method} {op.path} {op_id}" + (f" (action {action})" if action else "")

    bound_elsewhere = _bound_to_other_specs(baseline_spec)  # e.g. create_edit, kept from the 2023 spec
    result.added = [label(i, new_ops[i]) for i in sorted(set(new_ops) - set(old_ops) - bound_elsewhere)]
    result.removed = [label(i, old_ops[i]) for i in sorted(set(old_ops) - set(new_ops))]
    old_cache: dict[str, Any] = {}
    new_cache: dict[str, Any] = {}
    for op_id in sorted(set(old_ops) & set(new_ops)):
        before, after = _fields(old_ops[op_id], old, old_cache), _fields(new_ops[op_id], new, new_cache)
        changes = [f"+ {name} ({after[name].where})" for name in sorted(set(after) - set(before))]
        changes += [f"- {name} ({before[name].where})" for name in sorted(set(before) - set(after))]
        for name in sorted(set(before) & set(after)):
            what = _describe(before[name], after[name])
            if what:
                changes.append(f"~ {name}: {what}")
        if old_ops[op_id].path != new_ops[op_id].path or old_ops[op_id].method != new_ops[op_id].method:
            changes.insert(0, f"~ moved: {old_ops[op_id].method} {old_ops[op_id].path} -> "
                              f"{new_ops[op_id].method} {new_ops[op_id].path}")
        if changes:
            result.changed[names.get(op_id) or action_name(op_id)] = changes
    return result
