"""Schedules: a YAML file of cron entries, fired by Celery beat (``openai-pack beat``).

```yaml
schedules:
  - name: nightly-classification
    cron: "0 2 * * *"          # 5 fields, or 6 with seconds last (croniter)
    timezone: Europe/Paris     # IANA name, default UTC
    workflow: nightly.yaml     # relative to this file
    inputs: {limit: 100}
```

Beat sends ``openai_pack.fire_schedule`` with the moment it fired; the task works out the cron
tick that moment belongs to (the latest tick not after it, in the entry's time zone) and starts
the run with the idempotency key ``schedule:<name>:<tick>``. Two beat processes, a beat restarted
mid-tick or a redelivered message all land on the same key: one run per tick. A beat that was
down over several ticks fires once, for the latest one. Ticks are instants: on the night clocks go
back, a wall-clock time that happens twice (02:30 in Paris) is two ticks.

This module never imports the Celery app: the app registers the fire task by calling
``register_fire_task(app, engine)``, and ``configure_beat``/``run_beat`` are handed the app, so the
dependency points one way (``workers.app`` -> here).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from celery import Celery, Task
from celery.beat import BeatLazyFunc
from celery.schedules import BaseSchedule, schedstate
from croniter import croniter

from integration.errors import ConfigError, InputError
from integration.store import default_home
from workers.settings import Settings
from workers.state.kv import StoreError
from workers.workflow import WorkflowError, load_workflow, load_yaml

if TYPE_CHECKING:
    from workers.engine import Engine

__all__ = ["FIRE_TASK", "CronSchedule", "Schedule", "configure_beat", "describe_schedules", "fire_schedule",
           "load_schedules", "register_fire_task", "run_beat", "validate_schedules"]

log = logging.getLogger("openai_pack.beat")

FIRE_TASK = "openai_pack.fire_schedule"
_ENTRY_KEYS = ("name", "cron", "timezone", "workflow", "inputs")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class Schedule:
    """One validated entry; ``workflow`` is an absolute path."""

    name: str
    cron: str
    timezone: str
    workflow: Path
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def tick_at_or_before(self, moment: datetime) -> datetime:
        """The latest cron tick not after ``moment``, in the entry's time zone."""
        local = _aware(moment).astimezone(self.zone)
        return croniter(self.cron, local + timedelta(microseconds=1)).get_prev(datetime)  # type: ignore[no-any-return]

    def next_tick(self, moment: datetime) -> datetime:
        """The first cron tick strictly after ``moment``, in the entry's time zone."""
        return croniter(self.cron, _aware(moment).astimezone(self.zone)).get_next(datetime)  # type: ignore[no-any-return]


def _aware(moment: datetime) -> datetime:
    """Celery hands naive UTC datetimes around in places; read them as UTC, not local time."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- the file


def load_schedules(path: str | Path) -> dict[str, Schedule]:
    """Read and validate a schedules file; a WorkflowError names the file, the entry and the field."""
    path = Path(path).resolve()
    source = str(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowError(f"cannot read the file: {exc.strerror or exc}", file=source) from None
    except UnicodeDecodeError:
        raise WorkflowError("is not UTF-8 text", file=source) from None
    except Exception as exc:  # the YAML parser's own errors say where
        raise WorkflowError(f"not valid YAML: {exc}", file=source) from None
    if not isinstance(data, dict) or not isinstance(data.get("schedules"), list):
        raise WorkflowError("must be a mapping with a `schedules:` list", file=source, field="schedules")
    extra = sorted(set(data) - {"schedules"})
    if extra:
        raise WorkflowError(f"unknown top-level key(s): {', '.join(map(str, extra))}", file=source, field=extra[0])
    found: dict[str, Schedule] = {}
    for index, raw in enumerate(data["schedules"]):
        entry = _entry(raw, index, path, source)
        if entry.name in found:
            raise WorkflowError(f"the name {entry.name!r} is used by another entry", file=source,
                                field=f"schedules[{index}] ({entry.name}).name")
        found[entry.name] = entry
    return found


def validate_schedules(path: str | Path) -> dict[str, Schedule]:
    """Validate a schedules file (``openai-pack beat --check``): the entries, or a WorkflowError."""
    return load_schedules(path)


def _entry(raw: Any, index: int, path: Path, source: str) -> Schedule:
    where = f"schedules[{index}]"
    if not isinstance(raw, dict):
        raise WorkflowError("must be a mapping (name, cron, workflow, ...)", file=source, field=where)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise WorkflowError("name is required: letters, digits, '.', '_' or '-', at most 100 characters",
                            file=source, field=f"{where}.name")
    label = f"{where} ({name})"

    def problem(field_name: str, reason: str) -> WorkflowError:
        return WorkflowError(reason, file=source, field=f"{label}.{field_name}")

    unknown = sorted(set(raw) - set(_ENTRY_KEYS))
    if unknown:
        raise problem(str(unknown[0]), f"unknown key (expected one of: {', '.join(_ENTRY_KEYS)})")
    cron = raw.get("cron")
    if not isinstance(cron, str) or not cron.strip():
        raise problem("cron", "is required: a cron expression such as \"0 2 * * *\"")
    if not croniter.is_valid(cron):
        raise problem("cron", f"{cron!r} is not a cron expression (5 fields, or 6 with seconds last)")
    timezone = raw.get("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except Exception:  # ZoneInfoNotFoundError, or a name that is not a path-safe string
        raise problem("timezone", f"{timezone!r} is not an IANA time zone name (e.g. Europe/Paris)") from None
    workflow_path = raw.get("workflow")
    if not isinstance(workflow_path, str) or not workflow_path.strip():
        raise problem("workflow", "is required: the workflow file, relative to this file")
    resolved = (path.parent / workflow_path).resolve()
    if not resolved.is_file():
        raise problem("workflow", f"the file {workflow_path!r} does not exist (looked for {resolved})")
    try:
        workflow = load_workflow(resolved)
    except WorkflowError as exc:
        raise problem("workflow", f"the workflow is invalid: {exc}") from None
    inputs = raw.get("inputs", {})
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise problem("inputs", "must be a mapping of the workflow's input values")
    try:
        workflow.coerce_inputs(inputs)
    except InputError as exc:
        raise problem("inputs", exc.message) from None
    return Schedule(name, cron.strip(), str(timezone), resolved, dict(inputs))


def describe_schedules(entries: dict[str, Schedule], now: datetime | None = None,
                       count: int = 3) -> list[dict[str, Any]]:
    """What ``beat --check`` prints: each entry and its next fire times."""
    now = now or datetime.now(UTC)
    out = []
    for entry in entries.values():
        upcoming, moment = [], now
        for _ in range(count):
            moment = entry.next_tick(moment)
            upcoming.append(moment.isoformat())
        out.append({"name": entry.name, "cron": entry.cron, "timezone": entry.timezone,
                    "workflow": str(entry.workflow), "inputs": entry.inputs, "next": upcoming})
    return out


# ---------------------------------------------------------------- beat's side


class CronSchedule(BaseSchedule):  # type: ignore[misc]
    """A Celery beat schedule that is due at each cron tick of the entry, in the entry's time zone."""

    def __init__(self, entry: Schedule, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry

    def _now(self) -> datetime:
        return _aware(self.now())

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time until the first tick after the last run (zero when it is already due)."""
        return max(self.entry.next_tick(last_run_at) - self._now(), timedelta(0))

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due when a tick has passed since the last run; says when to look again either way."""
        now = self._now()
        due_tick = self.entry.next_tick(last_run_at)
        if due_tick <= now:
            return schedstate(True, max((self.entry.next_tick(now) - now).total_seconds(), 0.01))
        return schedstate(False, max((due_tick - now).total_seconds(), 0.01))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSchedule) and other.entry == self.entry

    def __hash__(self) -> int:
        return hash((self.entry.name, self.entry.cron, self.entry.timezone))

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.entry,))

    def __repr__(self) -> str:
        return f"<cron {self.entry.cron!r} {self.entry.timezone}>"


def _fired_at() -> str:
    """Evaluated by beat each time it sends (BeatLazyFunc): the moment the tick fired."""
    return datetime.now(UTC).isoformat()


def configure_beat(app: Celery, schedules_path: str | Path) -> dict[str, Schedule]:
    """Validate the file and put its entries into ``app.conf.beat_schedule``."""
    path = Path(schedules_path).resolve()
    entries = load_schedules(path)
    app.conf.beat_schedule = {
        f"openai-pack:{name}": {"task": FIRE_TASK, "schedule": CronSchedule(entry), "args": [name, str(path)],
                                "kwargs": {"fired_at": BeatLazyFunc(_fired_at)}}
        for name, entry in entries.items()
    }
    return entries


def run_beat(app: Celery, settings: Settings, schedules_path: str | Path, *, loglevel: str = "INFO",
             schedule_db: str | Path | None = None) -> None:
    """Run Celery beat for the file's entries; it sends to the shared broker (``settings``) the workers read."""
    if settings.embedded:
        raise ConfigError("beat needs a shared broker that workers read: set OPENAI_PACK_BROKER_URL "
                          "(e.g. redis://127.0.0.1:6379/0); the embedded memory:// broker lives in one process",
                          field="OPENAI_PACK_BROKER_URL")
    path = Path(schedules_path).resolve()
    entries = configure_beat(app, path)
    if schedule_db is None:
        # One state file per schedules file: two beats for two files never share (or lock) one.
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        home = Path(default_home())
        home.mkdir(parents=True, exist_ok=True)
        schedule_db = home / f"beat-{digest}.db"
    log.info("beat: %d schedule(s) from %s, state in %s", len(entries), path, schedule_db)
    app.Beat(loglevel=loglevel, schedule=str(schedule_db), max_interval=5).run()


# ---------------------------------------------------------------- the worker's side


def fire_schedule(engine: Engine, name: str, schedules_path: str, fired_at: str | None = None) -> dict[str, Any]:
    """Start the run of the tick this fire belongs to (once per tick, however many times it fires)."""
    entries = load_schedules(schedules_path)
    entry = entries.get(name)
    if entry is None:
        raise WorkflowError(f"no schedule named {name!r} (the file changed since beat read it?)",
                            file=str(schedules_path), field="schedules")
    moment = datetime.fromisoformat(fired_at) if fired_at else datetime.now(UTC)
    tick = entry.tick_at_or_before(moment).isoformat()
    run_id, created = engine.start_run(load_workflow(entry.workflow), entry.inputs,
                                       trigger={"type": "schedule", "schedule": name, "tick": tick},
                                       idempotency_key=f"schedule:{name}:{tick}")
    log.info("schedule %s tick %s: run %s (%s)", name, tick, run_id, "started" if created else "already started")
    return {"run_id": run_id, "created": created, "tick": tick}


def register_fire_task(app: Celery, engine: Callable[[], Engine]) -> Task:
    """The ``openai_pack.fire_schedule`` task on ``app``, starting runs with ``engine()``; the app calls this."""

    @app.task(name=FIRE_TASK, bind=True, acks_late=True, max_retries=12)
    def fire(self: Task, name: str, schedules_path: str, fired_at: str | None = None) -> dict[str, Any]:
        try:
            return fire_schedule(engine(), name, schedules_path, fired_at)
        except (OSError, ConnectionError, StoreError) as exc:  # the store is away: the tick's key makes a retry safe
            if self.request.called_directly:
                raise
            log.warning("schedule %s: store unavailable (%s); retrying", name, type(exc).__name__)
            raise self.retry(countdown=min(2 ** self.request.retries, 60)) from None

    fire.__doc__ = fire_schedule.__doc__
    return fire
