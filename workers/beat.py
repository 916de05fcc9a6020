"""Schedules: a YAML file of cron entries, fired by Celery beat (``openai-pack beat``).

```yaml
schedules:
  - name: nightly-classification
    cron: "0 2 * * *"          # 5 fields, or 6 with seconds last
    timezone: Europe/Paris     # IANA name, default UTC
    workflow: nightly.yaml     # relative to this file
    inputs: {records: [...]}
```

Each fire sends ``openai_pack.fire_schedule``; the task works out which cron tick it is for and
starts the run with the idempotency key ``schedule:<name>:<tick>``, so two beat processes (or a
beat restarted mid-tick) start one run per tick.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import BaseSchedule, schedstate
from croniter import croniter

from integration.errors import InputError
from workers.app import app, engine, settings
from workers.workflow import WorkflowError, load_workflow, load_yaml

__all__ = ["CronSchedule", "Schedule", "fire_schedule", "load_schedules", "run_beat"]

FIRE_TASK = "openai_pack.fire_schedule"


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    workflow: Path
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def tick_at_or_before(self, moment: datetime) -> datetime:
        """The most recent cron tick not after ``moment`` (in the entry's timezone)."""
        local = moment.astimezone(self.zone)
        probe = croniter(self.cron, local + timedelta(microseconds=1))
        return probe.get_prev(datetime)  # type: ignore[no-any-return]

    def next_tick(self, moment: datetime) -> datetime:
        return croniter(self.cron, moment.astimezone(self.zone)).get_next(datetime)  # type: ignore[no-any-return]


def load_schedules(path: str | Path) -> dict[str, Schedule]:
    """Validate a schedules file; errors name the file, the entry and the field."""
    path = Path(path)
    source = str(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowError(f"cannot read the file: {exc.strerror}", file=source) from None
    except Exception as exc:
        raise WorkflowError(f"not valid YAML: {exc}", file=source) from None
    if not isinstance(data, dict) or not isinstance(data.get("schedules"), list):
        raise WorkflowError("must be a mapping with a `schedules:` list", file=source, field="schedules")
    found: dict[str, Schedule] = {}
    for index, entry in enumerate(data["schedules"]):
        where = f"schedules[{index}]"
        if not isinstance(entry, dict):
            raise WorkflowError("must be a mapping", file=source, field=where)
        unknown = set(entry) - {"name", "cron", "timezone", "workflow", "inputs"}
        if unknown:
            raise WorkflowError(f"unknown key(s): {', '.join(sorted(unknown))}", file=source, field=where)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise WorkflowError("name is required", file=source, field=f"{where}.name")
        label = f"{where} ({name})"
        if name in found:
            raise WorkflowError("name used twice", file=source, field=f"{label}.name")
        cron = entry.get("cron")
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise WorkflowError(f"{cron!r} is not a cron expression (5 fields, or 6 with seconds)", file=source,
                                field=f"{label}.cron")
        timezone = entry.get("timezone", "UTC")
        try:
            ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise WorkflowError(f"{timezone!r} is not an IANA time zone (e.g. Europe/Paris)", file=source,
                                field=f"{label}.timezone") from None
        workflow_path = entry.get("workflow")
        if not isinstance(workflow_path, str):
            raise WorkflowError("workflow (a file path) is required", file=source, field=f"{label}.workflow")
        resolved = (path.parent / workflow_path).resolve()
        if not resolved.is_file():
            raise WorkflowError(f"workflow file {workflow_path!r} does not exist", file=source,
                                field=f"{label}.workflow")
        inputs = entry.get("inputs") or {}
        workflow = load_workflow(resolved)
        try:
            workflow.coerce_inputs(inputs)
        except InputError as exc:
            raise WorkflowError(str(exc), file=source, field=f"{label}.inputs") from None
        found[name] = Schedule(name, cron, str(timezone), resolved, dict(inputs))
    return found


class CronSchedule(BaseSchedule):  # type: ignore[misc]
    """A Celery beat schedule driven by croniter in the entry's own timezone."""

    def __init__(self, entry: Schedule, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        now = datetime.now(UTC)
        return max(self.entry.next_tick(last_run_at) - now, timedelta(0))

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = datetime.now(UTC)
        if last_run_at.tzinfo is None:
            last_run_at = last_run_at.replace(tzinfo=UTC)
        due_tick = self.entry.next_tick(last_run_at)
        if due_tick <= now:
            following = self.entry.next_tick(now)
            return schedstate(True, max((following - now).total_seconds(), 0.05))
        return schedstate(False, max((due_tick - now).total_seconds(), 0.05))

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.entry,))

    def __repr__(self) -> str:
        return f"<cron {self.entry.cron} {self.entry.timezone}>"


@app.task(name=FIRE_TASK, acks_late=True)
def fire_schedule(name: str, schedules_path: str, fired_at: str | None = None) -> dict[str, Any]:
    """Start the run for the tick this fire belongs to (once per tick, however many beats fired it)."""
    entry = load_schedules(schedules_path)[name]
    moment = datetime.fromisoformat(fired_at) if fired_at else datetime.now(UTC)
    tick = entry.tick_at_or_before(moment).isoformat()
    workflow = load_workflow(entry.workflow)
    run_id, created = engine().start_run(workflow, entry.inputs,
                                         trigger={"type": "schedule", "schedule": name, "tick": tick},
                                         idempotency_key=f"schedule:{name}:{tick}")
    return {"run_id": run_id, "created": created, "tick": tick}


def configure_beat(schedules_path: str | Path) -> dict[str, Schedule]:
    entries = load_schedules(schedules_path)
    app.conf.beat_schedule = {
        f"openai-pack:{name}": {"task": FIRE_TASK, "schedule": CronSchedule(entry),
                                "args": [name, str(Path(schedules_path).resolve())]}
        for name, entry in entries.items()
    }
    return entries


def run_beat(schedules_path: str | Path, *, loglevel: str = "INFO", schedule_db: str | None = None) -> None:
    """Run Celery beat for the file's entries against the shared broker."""
    if settings.embedded:
        raise WorkflowError("beat needs a shared broker: set OPENAI_PACK_BROKER_URL (e.g. redis://127.0.0.1:6379/0)",
                            field="OPENAI_PACK_BROKER_URL")
    configure_beat(schedules_path)
    home = Path(os.environ.get("OPENAI_PACK_HOME") or Path.home() / ".openai-pack")
    home.mkdir(parents=True, exist_ok=True)
    db = schedule_db or str(home / "beat-schedule")
    app.Beat(loglevel=loglevel, schedule=db, max_interval=1).run()
