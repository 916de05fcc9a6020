"""What each page shows, shaped from the run store, the workflow files, the manifests and the integrations.

Nothing here renders HTML: these functions turn records into plain values the templates lay out.
Every value that came from a run, an API answer or a user passes through ``scrub_data`` on its
way to a page (``shown``), so a key that slipped into a record is masked there too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from integration.errors import PackError
from integration.redact import scrub_data
from workers.state.runs import FINISHED, RunStore

__all__ = ["RunFilters", "graph", "integration_rows", "load_workflow_files", "pretty", "run_page", "run_rows",
           "shown", "usd"]

#: Runs looked at for the list page (newest first), before filters.
LIST_WINDOW = 500
#: Failed fan-out items listed on a run page (the count says how many there are).
MAX_FAILED_ITEMS = 50
SINCE_CHOICES = {"": None, "1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
STATUSES = ("running", "succeeded", "failed", "cancelled")
TRIGGERS = ("manual", "webhook", "schedule")


def shown(value: Any) -> Any:
    """What may reach a page: the value with every known secret masked."""
    return scrub_data(value)


def pretty(value: Any) -> str:
    """Indented JSON for a ``<pre>`` (the template escapes it); secrets masked."""
    return json.dumps(shown(value), indent=2, ensure_ascii=False, default=str)


def usd(cost: Any) -> str:
    """A cost record (``{"usd", "unpriced"}`` of a run, ``{"usd", "reason"}`` of a call) as text; "" when absent."""
    if not isinstance(cost, dict):
        return ""
    amount = cost.get("usd")
    text = "unknown" if amount is None else f"${float(amount):.6f}"
    if amount is None and cost.get("reason"):
        text += f" ({cost['reason']})"
    if cost.get("unpriced"):
        text += f" + {cost['unpriced']} call{'s' if cost['unpriced'] != 1 else ''} not priced"
    return text


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds(start: Any, end: Any) -> float | None:
    first, last = _parse_time(start), _parse_time(end)
    return None if first is None or last is None else max(0.0, (last - first).total_seconds())


# ---------------------------------------------------------------- runs list


@dataclass(frozen=True)
class RunFilters:
    """The list page's filters, read from the query string (unknown values are ignored, not errors)."""

    workflow: str = ""
    status: str = ""
    trigger: str = ""
    since: str = ""

    @classmethod
    def from_query(cls, query: Any) -> RunFilters:
        status = query.get("status", "")
        trigger = query.get("trigger", "")
        since = query.get("since", "")
        return cls(workflow=query.get("workflow", "")[:200], status=status if status in STATUSES else "",
                   trigger=trigger if trigger in TRIGGERS else "", since=since if since in SINCE_CHOICES else "")

    def keep(self, row: dict[str, Any], now: datetime) -> bool:
        if self.workflow and row.get("workflow") != self.workflow:
            return False
        if self.status and row.get("status") != self.status:
            return False
        if self.trigger and (row.get("trigger") or {}).get("type") != self.trigger:
            return False
        window = SINCE_CHOICES.get(self.since)
        created = _parse_time(row.get("created"))
        return window is None or (created is not None and now - created <= window)


def run_rows(store: RunStore, filters: RunFilters) -> tuple[list[dict[str, Any]], list[str]]:
    """(the runs that pass the filters, newest first; every workflow name seen) for the list page."""
    now = datetime.now(UTC)
    rows, names = [], set()
    for header in store.list(LIST_WINDOW):
        names.add(str(header.get("workflow")))
        if not filters.keep(header, now):
            continue
        trigger = header.get("trigger") or {}
        rows.append(shown({"id": header.get("id"), "workflow": header.get("workflow"), "status": header.get("status"),
                           "trigger": trigger.get("type", ""), "created": header.get("created") or "",
                           "duration": _seconds(header.get("started"), header.get("finished")),
                           "error": (header.get("error") or {}).get("code", ""), "cost": header.get("cost")}))
    return rows, sorted(names)


# ---------------------------------------------------------------- one run


def _fanout(store: RunStore, run_id: str, step_id: str, step: dict[str, Any]) -> dict[str, Any]:
    """Item counts and the first failed items, read in chunks (a fan-out may have 100,000 items)."""
    total = int((step.get("items") or {}).get("total") or store.item_total(run_id, step_id))
    counts = {"total": total, "succeeded": 0, "failed": 0, "cancelled": 0, "pending": 0}
    failed: list[dict[str, Any]] = []
    for start, chunk in store.item_record_chunks(run_id, step_id, total):
        for offset, item in enumerate(chunk):
            status = (item or {}).get("status") or "pending"
            if status not in FINISHED:
                status = "pending"
            counts[status] = counts.get(status, 0) + 1
            if status == "failed" and len(failed) < MAX_FAILED_ITEMS:
                failed.append({"index": start + offset, "error": (item or {}).get("error") or {}})
    counts["done"] = total - counts["pending"]
    return {"counts": counts, "failed": failed}


def _timeline(steps: list[dict[str, Any]], started: Any, finished: Any) -> dict[str, Any]:
    """Bars in SVG units (0..1000 wide), to scale from the run's start to its end (or now)."""
    origin = _parse_time(started)
    end = _parse_time(finished) or datetime.now(UTC)
    bars = []
    span = max((end - origin).total_seconds(), 0.001) if origin else 0.001
    for step in steps:
        first, last = _parse_time(step.get("started")), _parse_time(step.get("finished"))
        if origin is None or first is None:
            continue
        last = last or end
        x = max(0.0, (first - origin).total_seconds()) / span * 1000
        width = max(2.0, (last - first).total_seconds() / span * 1000)
        x = min(x, 998.0)
        bars.append({"x": round(x, 1), "width": round(min(width, 1000 - x), 1), "id": step["id"],
                     "status": step.get("status", ""), "duration": (last - first).total_seconds(),
                     "attempts": int(step.get("attempts") or 0), "requeues": int(step.get("requeues") or 0)})
    return {"bars": bars, "span": round(span, 3)}


def run_page(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """The run as its page shows it: header, trigger, totals, timeline, and per step its details."""
    header = store.header(run_id)
    if header is None:
        return None
    definition = header.pop("definition", None) or {}
    declared = {s["id"]: s for s in definition.get("steps", []) if isinstance(s, dict) and "id" in s}
    records = store.steps(run_id)
    order = [s for s in declared if s in records] + [s for s in records if s not in declared]
    steps, usage, attempts = [], {}, 0
    for step_id in order:
        record = records[step_id] | {"id": step_id}
        record["duration"] = _seconds(record.get("started"), record.get("finished"))
        record["input_template"] = (declared.get(step_id) or {}).get("input")
        for key, value in (record.get("usage") or {}).items():
            if isinstance(value, int):
                usage[key] = usage.get(key, 0) + value
        attempts += int(record.get("attempts") or 0)
        if record.get("items") is not None:
            record["fanout"] = _fanout(store, run_id, step_id, record)
        steps.append(record)
    unhandled = store.unhandled(run_id)
    header.update(
        steps=steps, variables=store.variables(run_id), unhandled=unhandled,
        pending=[s for s in declared if s not in records],
        totals={"usage": usage, "cost": store.cost(run_id), "attempts": attempts, "steps": len(steps),
                "duration": _seconds(header.get("started"), header.get("finished"))},
        timeline=_timeline(steps, header.get("started"), header.get("finished")),
        finished_run=header.get("status") in FINISHED, has_definition=bool(declared))
    return shown(header)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- workflows


@dataclass
class WorkflowFile:
    """One workflow file: its workflow, or the error that stops it loading (with step and field)."""

    path: Path
    workflow: Any = None
    error: dict[str, Any] = field(default_factory=dict)
    #: The file as read (YAML/JSON), when it parsed: an invalid workflow is still drawn from it.
    raw: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.workflow.name if self.workflow is not None else self.path.stem


def load_workflow_files(directory: Path | None) -> list[WorkflowFile]:
    """Each workflow file of the directory on its own, so one broken file is shown, not fatal."""
    from workers.workflow import load_workflow
    from workers.workflow.loader import load_yaml

    if directory is None or not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json") or path.name.startswith(("_", ".")) or not path.is_file():
            continue
        raw = None
        try:
            data = load_yaml(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or "steps" not in data:
                continue  # a schedules file lives alongside workflows
            raw = data
        except Exception:  # the loader below names the problem
            pass
        try:
            found.append(WorkflowFile(path, workflow=load_workflow(path)))
        except PackError as exc:
            found.append(WorkflowFile(path, error=shown(exc.to_dict()), raw=raw))
    return found


def graph(definition: dict[str, Any]) -> dict[str, Any]:
    """The step graph in SVG units: steps in layers from the start, edges labelled by when/if/publish.

    Layers come from a breadth-first walk of the transitions from the start step (steps not reached
    go in a last layer); a step without ``on`` continues to the next step on success, as the engine does.
    """
    listed = definition.get("steps")
    steps = [s for s in listed if isinstance(s, dict) and isinstance(s.get("id"), str)] \
        if isinstance(listed, list) else []
    ids = [s["id"] for s in steps]
    edges: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        transitions = step.get("on")
        if transitions is None:
            if index + 1 < len(steps):
                edges.append({"from": step["id"], "to": ids[index + 1], "when": "success", "if": None, "publish": {}})
            continue
        for transition in transitions if isinstance(transitions, list) else []:
            if not isinstance(transition, dict) or not isinstance(transition.get("do", []), list):
                continue  # an invalid file is drawn as far as it can be; its error is shown beside
            for target in transition.get("do", []):
                if not isinstance(target, str):
                    continue
                publish = transition.get("publish")
                edges.append({"from": step["id"], "to": target, "when": str(transition.get("when", "success")),
                              "if": transition.get("if"), "publish": publish if isinstance(publish, dict) else {}})
    layer: dict[str, int] = {}
    start = definition.get("start") if definition.get("start") in ids else (ids[0] if ids else None)
    frontier = [start] if start in ids else []
    if frontier:
        layer[start] = 0
    while frontier:
        following = []
        for node in frontier:
            for edge in edges:
                if edge["from"] == node and edge["to"] in ids and edge["to"] not in layer:
                    layer[edge["to"]] = layer[node] + 1
                    following.append(edge["to"])
        frontier = following
    last = max(layer.values(), default=-1) + 1
    for step_id in ids:
        layer.setdefault(step_id, last)
    columns: dict[int, list[str]] = {}
    for step_id in ids:
        columns.setdefault(layer[step_id], []).append(step_id)
    box_w, box_h, gap_x, gap_y = 180, 56, 90, 28
    nodes = {}
    for depth, members in columns.items():
        for row, step_id in enumerate(members):
            nodes[step_id] = {"id": step_id, "x": 20 + depth * (box_w + gap_x), "y": 20 + row * (box_h + gap_y),
                              "w": box_w, "h": box_h}
    by_id = {s["id"]: s for s in steps}
    for step_id, node in nodes.items():
        step = by_id[step_id]
        node.update(action=str(step.get("action", "")), fanout=step.get("with_items") is not None,
                    start=step_id == start)
    lines = []
    for edge in edges:
        source, target = nodes.get(edge["from"]), nodes.get(edge["to"])
        if source is None or target is None:
            continue
        x1, y1 = source["x"] + box_w, source["y"] + box_h / 2
        x2, y2 = target["x"], target["y"] + box_h / 2
        if target["x"] <= source["x"]:  # a loop back: leave from below
            x1, y1 = source["x"] + box_w / 2, source["y"] + box_h
            x2, y2 = target["x"] + box_w / 2, target["y"] + box_h
        label = edge["when"] + (f" if {edge['if']}" if edge["if"] else "")
        lines.append({**edge, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "label": label,
                      "lx": (x1 + x2) / 2, "ly": (y1 + y2) / 2 - 6})
    width = max((n["x"] + box_w for n in nodes.values()), default=200) + 20
    height = max((n["y"] + box_h for n in nodes.values()), default=80) + 20
    return shown({"nodes": list(nodes.values()), "edges": lines, "width": width, "height": height,
                  "steps": steps, "start": start})  # type: ignore[no-any-return]


# ---------------------------------------------------------------- integrations


def _provider(base_url: str) -> str:
    host = base_url.split("://", 1)[-1].split("/", 1)[0].lower()
    if host.endswith("openai.azure.com"):
        return "Azure OpenAI"
    if host == "api.openai.com":
        return "OpenAI"
    return "OpenAI-compatible"


def integration_rows(store: Any, run_store: RunStore | None, pause_of: Any = None) -> list[dict[str, Any]]:
    """One row per integration: what ``public_dict`` allows, never the key (only whether one is set).

    Extra header *values* are left out too (a custom auth header is a key by another name).
    """
    default = store.default_name()
    rows = []
    for integration in store.list():
        public = integration.public_dict()
        limits = public.get("rate_limits") or {}
        rows.append(shown({
            "name": public["name"], "default": public["name"] == default, "provider": _provider(public["base_url"]),
            "base_url": public["base_url"], "auth": (public.get("auth") or {}).get("placement"),
            "organization": public.get("organization_id"), "project": public.get("project_id"),
            "labels": sorted(k for k, v in (public.get("features") or {}).items() if v),
            "header_names": sorted(public.get("extra_headers") or {}), "has_key": public["has_api_key"],
            "rpm": limits.get("requests_per_minute"), "tpm": limits.get("tokens_per_minute"),
            "health": run_store.integration_health(public["name"]) if run_store is not None else None,
            "paused_until": pause_of(public["name"]) if pause_of else None,
        }))
    return rows
