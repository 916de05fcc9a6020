"""Schedules against real parts: the schedules file, the fire task on redis + the session worker, a beat process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.simulator import Simulator
from tests.conftest import REPO_ROOT, run_cli

pytestmark = pytest.mark.timeout(60)

MOD = """
name: nightly
inputs:
  text: {type: string, required: true}
  limit: {type: integer, default: 10}
steps:
  - id: moderate
    action: create_moderation
    input: {input: "{{ inputs.text }}"}
output:
  flagged: "{{ steps.moderate.output.results[0].flagged }}"
"""


def _schedules(tmp_path: Path, *, name: str = "nightly-classification", cron: str = "0 2 * * *",
               extra: str = "    timezone: Europe/Paris\n    workflow: flows/nightly.yaml\n"
                            "    inputs: {text: scheduled, limit: '100'}\n") -> Path:
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "flows" / "nightly.yaml").write_text(MOD)
    path = tmp_path / "schedules.yaml"
    path.write_text(f"schedules:\n  - name: {name}\n    cron: \"{cron}\"\n{extra}")
    return path


def _runs_of(pack: Any, schedule: str) -> list[dict[str, Any]]:
    return [r for r in pack.engine().store.list(200) if (r.get("trigger") or {}).get("schedule") == schedule]


# ---------------------------------------------------------------- the file


def test_a_valid_file_loads_with_paths_resolved(tmp_path: Path) -> None:
    from workers.triggers.beat import describe_schedules, validate_schedules

    entries = validate_schedules(_schedules(tmp_path))
    entry = entries["nightly-classification"]
    assert entry.workflow == (tmp_path / "flows" / "nightly.yaml").resolve()
    assert entry.timezone == "Europe/Paris" and entry.inputs == {"text": "scheduled", "limit": "100"}
    described = describe_schedules(entries, datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    assert described[0]["next"][:2] == ["2026-11-24T02:00:00+01:00", "2026-11-25T02:00:00+01:00"]
    utc = validate_schedules(_schedules(tmp_path, extra="    workflow: flows/nightly.yaml\n    inputs: {text: a}\n"))
    assert utc["nightly-classification"].timezone == "UTC"


@pytest.mark.parametrize(("change", "field", "reason"), [
    (("cron: \"0 2 * * *\"", "cron: \"every day\""), "cron", "not a cron expression"),
    (("cron: \"0 2 * * *\"", "cron: \"61 2 * * *\""), "cron", "not a cron expression"),
    (("Europe/Paris", "Mars/Olympus_Mons"), "timezone", "not an IANA time zone"),
    (("flows/nightly.yaml", "flows/missing.yaml"), "workflow", "does not exist"),
    (("{text: scheduled, limit: '100'}", "{limit: 5}"), "inputs", "text"),
    (("{text: scheduled, limit: '100'}", "{text: a, limit: many}"), "inputs", "limit"),
    (("{text: scheduled, limit: '100'}", "[1, 2]"), "inputs", "mapping"),
    (("    timezone:", "    colour: blue\n    timezone:"), "colour", "unknown key"),
])
def test_file_errors_name_the_file_entry_and_field(tmp_path: Path, change: tuple[str, str], field: str,
                                                   reason: str) -> None:
    from workers.triggers.beat import validate_schedules
    from workers.workflow import WorkflowError

    path = _schedules(tmp_path)
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(WorkflowError) as caught:
        validate_schedules(path)
    message = str(caught.value)
    assert message.startswith(str(path.resolve())), message
    assert f"schedules[0] (nightly-classification).{field}" in message and reason in message, message


def test_structural_errors(tmp_path: Path) -> None:
    from workers.triggers.beat import validate_schedules
    from workers.workflow import WorkflowError

    path = _schedules(tmp_path)
    cases = {
        "jobs: []\n": "schedules",
        "schedules:\n  - cron: '* * * * *'\n    workflow: flows/nightly.yaml\n": "schedules[0].name",
        "schedules:\n  - just a string\n": "schedules[0]",
        "schedules: [\n": "not valid YAML",
    }
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(WorkflowError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            validate_schedules(path)
    twice = _schedules(tmp_path).read_text()
    path.write_text(twice + twice.replace("schedules:\n", ""))
    with pytest.raises(WorkflowError, match=r"schedules\[1\] \(nightly-classification\)\.name"):
        validate_schedules(path)
    path = _schedules(tmp_path)
    (tmp_path / "flows" / "nightly.yaml").write_text(MOD.replace("create_moderation", "no_such_action"))
    with pytest.raises(WorkflowError, match=r"\(nightly-classification\)\.workflow: the workflow is invalid"):
        validate_schedules(path)


# ---------------------------------------------------------------- cron math


def test_ticks_and_the_celery_schedule_follow_the_entry_time_zone(tmp_path: Path) -> None:
    from workers.triggers.beat import CronSchedule, validate_schedules

    entry = validate_schedules(_schedules(tmp_path))["nightly-classification"]
    moment = datetime(2026, 11, 23, 1, 0, 5, tzinfo=UTC)  # 02:00:05 in Paris
    assert entry.tick_at_or_before(moment).isoformat() == "2026-11-23T02:00:00+01:00"
    assert entry.tick_at_or_before(datetime(2026, 11, 23, 1, 0, tzinfo=UTC)).isoformat() == "2026-11-23T02:00:00+01:00"
    assert entry.tick_at_or_before(moment - timedelta(seconds=6)).isoformat() == "2026-11-22T02:00:00+01:00"
    summer = entry.tick_at_or_before(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert summer.isoformat() == "2026-07-01T02:00:00+02:00"

    now = {"value": datetime(2026, 11, 23, 0, 59, 0, tzinfo=UTC)}
    schedule = CronSchedule(entry, nowfun=lambda: now["value"])
    last = datetime(2026, 11, 22, 1, 0, 1, tzinfo=UTC)  # just after yesterday's tick
    due, next_check = schedule.is_due(last)
    assert not due and next_check == pytest.approx(60)
    assert schedule.remaining_estimate(last) == timedelta(seconds=60)
    now["value"] = datetime(2026, 11, 23, 1, 0, 0, 200000, tzinfo=UTC)
    due, next_check = schedule.is_due(last)
    assert due and next_check == pytest.approx(24 * 3600 - 0.2)
    assert schedule.remaining_estimate(last) == timedelta(0)
    # A beat that was down for three days fires once, then waits for the next tick.
    now["value"] = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert schedule.is_due(datetime(2026, 11, 23, 1, 0, 1, tzinfo=UTC))[0] is True
    assert schedule.is_due(datetime(2026, 11, 26, 9, 0, tzinfo=UTC))[0] is False
    # Naive datetimes (as Celery sometimes passes) are UTC.
    assert schedule.is_due(datetime(2026, 11, 26, 9, 0))[0] is False
    assert CronSchedule(entry) == schedule and "Europe/Paris" in repr(schedule)


# ---------------------------------------------------------------- firing


def test_two_fires_of_one_tick_start_one_run(pack: Any, tmp_path: Path, simulator: Simulator) -> None:
    from workers.triggers.beat import fire_schedule

    name = f"tick-{uuid.uuid4().hex[:8]}"
    path = _schedules(tmp_path, name=name)
    first = fire_schedule(pack.engine(), name, str(path), datetime(2026, 11, 23, 1, 0, 0, 30000, tzinfo=UTC).isoformat())
    second = fire_schedule(pack.engine(), name, str(path), datetime(2026, 11, 23, 1, 0, 4, tzinfo=UTC).isoformat())
    assert first["created"] is True and second["created"] is False
    assert first["run_id"] == second["run_id"] and first["tick"] == "2026-11-23T02:00:00+01:00"
    header = pack.engine().wait(first["run_id"], 30)
    assert header["status"] == "succeeded" and header["output"] == {"flagged": False}
    runs = _runs_of(pack, name)
    assert len(runs) == 1
    assert runs[0]["trigger"] == {"type": "schedule", "schedule": name, "tick": "2026-11-23T02:00:00+01:00"}
    assert runs[0]["idempotency_key"] == f"schedule:{name}:2026-11-23T02:00:00+01:00"
    assert runs[0]["inputs"] == {"text": "scheduled", "limit": 100}
    time.sleep(0.2)
    assert simulator.calls == 1
    following = fire_schedule(pack.engine(), name, str(path), datetime(2026, 11, 24, 1, 0, 1, tzinfo=UTC).isoformat())
    assert following["created"] is True and following["tick"] == "2026-11-24T02:00:00+01:00"
    assert pack.engine().wait(following["run_id"], 30)["status"] == "succeeded"


def test_the_check_command(worker_env: dict[str, str], tmp_path: Path) -> None:
    path = _schedules(tmp_path)
    checked = subprocess.run([sys.executable, "-m", "workers.cli.serve", "beat", "--schedules", str(path), "--check"],
                             env=worker_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is True and report["schedules"][0]["name"] == "nightly-classification"
    assert all(t.endswith(("+01:00", "+02:00")) for t in report["schedules"][0]["next"])
    path.write_text(path.read_text().replace("Europe/Paris", "Europe/Atlantis"))
    bad = subprocess.run([sys.executable, "-m", "workers.cli.serve", "beat", "--schedules", str(path), "--check"],
                         env=worker_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    error = json.loads(bad.stderr)["error"]
    assert error["code"] == "workflow_invalid" and error["field"] == "schedules[0] (nightly-classification).timezone"


def test_beat_refuses_the_embedded_broker(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in worker_env.items() if k not in ("OPENAI_PACK_BROKER_URL", "OPENAI_PACK_STORE_URL")}
    result = subprocess.run([sys.executable, "-m", "workers.cli.serve", "beat", "--schedules",
                             str(_schedules(tmp_path))], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "OPENAI_PACK_BROKER_URL" in json.loads(result.stderr)["error"]["message"]


def test_a_beat_process_starts_runs_every_tick(pack: Any, worker_env: dict[str, str], tmp_path: Path) -> None:
    name = f"every-2s-{uuid.uuid4().hex[:8]}"
    path = _schedules(tmp_path, name=name, cron="* * * * * */2",
                      extra="    timezone: America/New_York\n    workflow: flows/nightly.yaml\n"
                            "    inputs: {text: from beat}\n")
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "beat", "--schedules", str(path),
                                "--schedule", str(tmp_path / "beat-state")],
                               env=worker_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    runs: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(runs) < 2:
            runs = _runs_of(pack, name)
            time.sleep(0.2)
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert runs, output
    for run in runs:
        assert pack.engine().wait(run["id"], 30)["status"] == "succeeded"
    ticks = [datetime.fromisoformat(r["trigger"]["tick"]) for r in _runs_of(pack, name)]
    assert len(ticks) == len(set(ticks))  # one run per tick
    assert all(t.second % 2 == 0 and t.microsecond == 0 and t.utcoffset() in (timedelta(hours=-5),
                                                                              timedelta(hours=-4)) for t in ticks)
    assert run_cli(worker_env, "runs", "show", runs[0]["id"]).returncode == 0


def test_beat_never_imports_the_celery_app() -> None:
    """Issue 9 item 5: the app registers the fire task; nothing in the triggers imports the app back."""
    probe = ("import sys, workers.triggers.beat, workers.triggers.webhooks\n"
             "assert 'workers.app' not in sys.modules, 'imported workers.app'\n"
             "import workers.app\n"
             "assert 'openai_pack.fire_schedule' in workers.app.app.tasks\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_beat_entries_carry_the_moment_they_fire(tmp_path: Path) -> None:
    from celery.beat import ScheduleEntry

    from workers.app import app
    from workers.triggers.beat import FIRE_TASK, CronSchedule, configure_beat

    before = app.conf.beat_schedule
    try:
        path = _schedules(tmp_path)
        configure_beat(app, path)
        conf = app.conf.beat_schedule["openai-pack:nightly-classification"]
        assert conf["task"] == FIRE_TASK and conf["args"] == ["nightly-classification", str(path.resolve())]
        assert isinstance(conf["schedule"], CronSchedule)
        entry = ScheduleEntry(name="x", app=app, **conf)
        fired_at = datetime.fromisoformat(entry.kwargs["fired_at"]())  # evaluated by beat at each send
        assert abs((datetime.now(UTC) - fired_at).total_seconds()) < 5
    finally:
        app.conf.beat_schedule = before
