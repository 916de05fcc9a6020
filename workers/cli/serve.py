"""``openai-pack serve | beat``: the commands that trigger workflows from outside (webhooks, cron).

``register(app)`` attaches them to the main CLI; ``python -m workers.cli.serve`` runs them alone,
through the same error boundary. Starlette, uvicorn and Celery beat are imported inside the
commands, so the rest of the CLI never pays for them. Commands raise; the boundary reports.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from integration.errors import ConfigError
from integration.redact import install_log_redaction
from workers.cli import boundary
from workers.cli.output import emit as _emit

__all__ = ["beat", "register", "serve"]


def serve(
    workflows: Annotated[Path, typer.Option("--workflows", help="Directory of workflow files; those with "
                                            "`webhook:` get POST /hooks/<name>.")],
    host: Annotated[str, typer.Option(help="Interface to listen on (put a TLS proxy in front for others).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    max_wait: Annotated[float, typer.Option("--max-wait", help="Longest ?wait= a caller may ask for, seconds.")]
    = 300,
    rate_per_minute: Annotated[int, typer.Option("--rate-per-minute", help="Requests a minute each hook accepts.")]
    = 600,
    failed_auth_per_minute: Annotated[int, typer.Option("--failed-auth-per-minute", help="Requests with a missing "
                                                        "or wrong secret accepted from one address a minute (then "
                                                        "429); they never count against a hook's rate.")] = 60,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve POST /hooks/<workflow>, GET /runs/<id> and GET /healthz.

    With OPENAI_PACK_BROKER_URL set, runs go to the shared broker and separate workers run them;
    without it, a worker inside this process runs them (a laptop setup).
    """
    install_log_redaction()
    from workers.app import settings
    from workers.embedded import in_process_worker
    from workers.triggers.webhooks import configure_logging
    from workers.triggers.webhooks import serve as run_server

    for option, value, lowest in (("--rate-per-minute", rate_per_minute, 1), ("--max-wait", max_wait, 0),
                                  ("--failed-auth-per-minute", failed_auth_per_minute, 1)):
        if value < lowest:
            raise ConfigError(f"{option} must be at least {lowest}, got {value}", field=option)
    configure_logging(log_level)
    if settings.embedded:
        logging.getLogger("openai_pack.webhooks").warning(
            "OPENAI_PACK_BROKER_URL is not set: this process runs the steps itself")
    with in_process_worker() if settings.embedded else nullcontext():
        run_server(workflows, host, port, max_wait=max_wait, rate_per_minute=rate_per_minute,
                   failed_auth_per_minute=failed_auth_per_minute, log_level=log_level.lower())


def beat(
    schedules: Annotated[Path, typer.Option("--schedules", help="The schedules file (YAML).")],
    check: Annotated[bool, typer.Option("--check", help="Only validate the file and print the next fires.")]
    = False,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
    schedule_db: Annotated[Path | None, typer.Option("--schedule", help="Beat's state file "
                                                     "(default: under $OPENAI_PACK_HOME, one per schedules file).")]
    = None,
) -> None:
    """Run the schedules with Celery beat: each cron tick starts one run (needs OPENAI_PACK_BROKER_URL)."""
    install_log_redaction()
    from workers.triggers.beat import describe_schedules, run_beat, validate_schedules

    if check:
        _emit({"ok": True, "file": str(schedules.resolve()),
               "schedules": describe_schedules(validate_schedules(schedules))})
        return
    from workers import app as pack_app

    settings = pack_app.reconfigure()  # whatever the environment says now
    run_beat(pack_app.app, settings, schedules, loglevel=loglevel.upper(), schedule_db=schedule_db)


def register(app: typer.Typer) -> None:
    """Attach ``serve`` and ``beat`` to the main CLI."""
    app.command("serve")(serve)
    app.command("beat")(beat)


def main() -> None:
    """``python -m workers.cli.serve serve|beat ...``: these two commands without the rest of the CLI."""
    standalone = typer.Typer(help="Webhooks and schedules.", no_args_is_help=True, add_completion=False,
                             pretty_exceptions_enable=False)
    register(standalone)
    boundary.run(standalone)


if __name__ == "__main__":
    main()
