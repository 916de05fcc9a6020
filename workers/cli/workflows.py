"""``openai-pack worker | workflow | runs``: the commands that need the Celery side.

Celery and the run store are imported inside the commands, so ``openai-pack run`` and
``actions list`` never pay for importing them. Commands raise; ``main()`` reports (``boundary``).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from integration.errors import EXIT_FAILURE, ConfigError, InputError, PackError, WorkflowError
from integration.redact import install_log_redaction, scrub
from workers.cli.inputs import read_json_object
from workers.cli.output import console, emit, json_text, stderr_console

if TYPE_CHECKING:
    from workers.workflow import Workflow

workflow_app = typer.Typer(help="Validate and run workflow files.", no_args_is_help=True)
runs_app = typer.Typer(help="Inspect and cancel runs.", no_args_is_help=True)


class WorkflowFilesError(WorkflowError):
    """``workflow validate`` found broken files: one error per file, in the order they were given."""

    def __init__(self, errors: list[PackError], checked: int) -> None:
        files = ", ".join(str(error.details.get("file") or "?") for error in errors)
        super().__init__(f"{len(errors)} of {checked} workflow files are invalid: {files}",
                         errors=[error.to_dict() for error in errors])


class RunNotSucceededError(PackError):
    """A run the CLI waited for did not succeed (failed, cancelled, or still running at ``--timeout``)."""

    code, category, exit_code = "run_not_succeeded", "run", EXIT_FAILURE


# ---------------------------------------------------------------- worker


def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Parallel steps per worker.")] = 8,
    pool: Annotated[str, typer.Option(help="threads (default: I/O-bound work), prefork, solo.")] = "threads",
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "INFO",
    hostname: Annotated[str | None, typer.Option("--hostname", "-n")] = None,
) -> None:
    """Start a Celery worker for the pack's tasks (needs OPENAI_PACK_BROKER_URL, e.g. redis://…)."""
    install_log_redaction()
    from workers.app import app, settings

    if settings.embedded:
        raise ConfigError("OPENAI_PACK_BROKER_URL is not set: a separate worker needs a shared broker such as "
                          "redis://127.0.0.1:6379/0 (without one, `workflow run` uses an in-process worker)",
                          field="OPENAI_PACK_BROKER_URL")
    argv = ["worker", f"--pool={pool}", f"--concurrency={concurrency}", f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle", "-Q", "openai_pack"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)


# ---------------------------------------------------------------- workflow


def _load(path: Path) -> Workflow:
    from workers.workflow import load_workflow

    return load_workflow(path)


@workflow_app.command("validate")
def workflow_validate(files: list[Path]) -> None:
    """Check workflow files (schema, actions, templates, literal inputs) without running anything.

    Every file is checked: the good ones are listed on stdout, and the broken ones are reported
    together, one error each, in one JSON error on stderr (exit 2).
    """
    broken: list[PackError] = []
    for path in files:
        try:
            workflow = _load(path)
        except PackError as exc:
            broken.append(exc)
            continue
        console.print(f"[green]ok[/green] {path}: workflow {workflow.name!r}, {len(workflow.steps)} steps")
    if len(broken) == 1 and len(files) == 1:
        raise broken[0]
    if broken:
        raise WorkflowFilesError(broken, len(files))


@workflow_app.command("run")
def workflow_run(
    file: Path,
    input_: Annotated[str | None, typer.Option("--input", "-i", help="JSON object, or @file.json.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the result and print it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record as JSON.")] = False,
    integration: Annotated[str | None, typer.Option(
        "--integration", metavar="NAME", help="Use this integration for every step that names none "
        "(overrides the workflow's default for this run).")] = None,
) -> None:
    """Start a run. Without a broker configured, an in-process worker runs it (and --wait is implied)."""
    install_log_redaction()
    workflow = _load(file)
    inputs = read_json_object(input_, "--input")
    if integration is not None:
        from integration.store import open_store

        if integration not in open_store():  # refused before the run exists, naming the option
            raise InputError([{"field": "--integration", "reason": f"no stored integration named {integration!r} "
                                                                   "(see `openai-pack integrations list`)"}])
    from workers.app import engine, settings
    from workers.embedded import in_process_worker

    embedded = settings.embedded
    with in_process_worker(workflow=workflow) if embedded else nullcontext():
        run_id, _ = engine().start_run(workflow, inputs, trigger={"type": "manual", "file": str(file)},
                                       integration=integration)
        if not (wait or embedded):
            emit({"run_id": run_id, "status": "running"})
            return
        _wait_with_progress(run_id, timeout, quiet=as_json)
    _print_run(run_id, as_json)
    status = engine().store.status(run_id)
    if status != "succeeded":
        raise RunNotSucceededError(f"run {run_id} did not succeed: its status is {status}", run_id=run_id,
                                   status=status)


def _wait_with_progress(run_id: str, timeout: float, *, quiet: bool) -> None:
    from workers.app import engine

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=stderr_console, transient=True, disable=quiet or not sys.stderr.isatty())
    bars: dict[str, Any] = {}

    def show(state: dict[str, dict[str, int]]) -> None:
        for step_id, counts in state.items():
            if step_id not in bars:
                bars[step_id] = progress.add_task(f"step {step_id}", total=counts["total"])
            progress.update(bars[step_id], completed=counts["done"])

    with progress:
        engine().wait(run_id, timeout, on_progress=show)


# ---------------------------------------------------------------- runs


def _record(run_id: str) -> dict[str, Any]:
    from workers.app import engine

    record = engine().store.record(run_id)
    if record is None:
        raise InputError([{"field": "run_id", "reason": f"no run {run_id!r} in the run store"}])
    return record


def _print_run(run_id: str, as_json: bool) -> None:
    record = _record(run_id)
    if as_json:
        emit(record)
        return
    totals = record["totals"]
    usage = totals["usage"]
    console.print(f"run [bold]{record['id']}[/bold]  workflow {record['workflow']}  "
                  f"trigger {record['trigger'].get('type')}  status [bold]{record['status']}[/bold]  "
                  f"duration {totals['duration']}s")
    table = Table("step", "action", "status", "attempts", "tokens", "cost", "started", "finished", "detail")
    for step in record["steps"]:
        detail = ""
        if step.get("error"):
            detail = f"{step['error'].get('code')}: {step['error'].get('message', '')}"[:100]
        elif step.get("items"):
            items = step["items"]
            detail = f"{items.get('succeeded', 0)}/{items['total']} items"
        elif step.get("wait"):  # a durable wait: what is awaited and how far it is
            wait = step["wait"]
            detail = f"{wait.get('summary', wait.get('kind'))} ({wait.get('polls', 0)} polls)"
        table.add_row(step["id"], step.get("action", ""), step.get("status", ""), str(step.get("attempts", 0)),
                      str((step.get("usage") or {}).get("total_tokens", "")), _usd(step.get("cost")),
                      str(step.get("started", ""))[11:23],
                      str(step.get("finished", ""))[11:23], scrub(detail))
    console.print(table)
    console.print(f"totals: {totals['steps']} steps, {totals['attempts']} API attempts, "
                  f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion = "
                  f"{usage.get('total_tokens', 0)} tokens, estimated cost {_usd(totals.get('cost'))}")
    if record.get("output") is not None:
        console.print("output:")
        sys.stdout.write(json_text(record["output"]) + "\n")
    if record.get("error"):
        console.print(f"[red]error[/red]: {json_text(record['error'], indent=None)}")


def _usd(cost: Any) -> str:
    """``$0.000123``; ``?`` when unknown; ``+ N unpriced`` when part of a total could not be priced."""
    if not isinstance(cost, dict):
        return ""
    if cost.get("usd") is None:
        return "?"
    text = f"${cost['usd']:.6f}"
    return text + (f" + {cost['unpriced']} unpriced" if cost.get("unpriced") else "")


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent runs, newest first."""
    from workers.app import engine

    rows = engine().store.list(limit)
    if as_json:
        emit(rows)
        return
    table = Table("run", "workflow", "trigger", "status", "cost", "created", "finished")
    for row in rows:
        table.add_row(row["id"], row["workflow"], (row.get("trigger") or {}).get("type", ""), row["status"],
                      _usd(row.get("cost")), row.get("created") or "", row.get("finished") or "")
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One run: per step status, attempts, timings, tokens, errors; totals and output."""
    _print_run(run_id, as_json)


@runs_app.command("cancel")
def runs_cancel(run_id: str) -> None:
    """Stop a run: steps in flight finish, nothing new starts."""
    from workers.app import engine

    _record(run_id)
    cancelled = engine().cancel(run_id)
    emit({"run_id": run_id, "cancelled": cancelled, "status": engine().store.status(run_id)})


def register(app: typer.Typer) -> None:
    """Attach the worker-side commands to the main CLI."""
    app.command("worker")(worker)
    app.add_typer(workflow_app, name="workflow")
    app.add_typer(runs_app, name="runs")
