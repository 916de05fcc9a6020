"""``openai-pack console``: the web console alone, on loopback, over the embedded default.

Starlette, uvicorn and the console package are imported inside the command, so the rest of the
CLI never pays for them. Commands raise; the boundary reports.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer

from integration.errors import ConfigError
from integration.redact import install_log_redaction

__all__ = ["console", "register"]


def console(
    port: Annotated[int, typer.Option(help="Port.")] = 8090,
    host: Annotated[str, typer.Option(help="Interface to listen on; anything but loopback needs "
                                      "OPENAI_PACK_CONSOLE_TOKEN set (and a TLS proxy in front).")] = "127.0.0.1",
    workflows: Annotated[Path | None, typer.Option("--workflows", help="Directory of workflow files to draw "
                                                   "and validate on the Workflows page.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")] = "warning",
) -> None:
    """Serve the web console at http://127.0.0.1:PORT/console/ until Ctrl-C.

    Sign in with OPENAI_PACK_CONSOLE_TOKEN; when it is unset, a one-off token is made and the
    sign-in link printed (loopback only).
    """
    install_log_redaction()
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Mount, Route

    from workers.console import MOUNT, TOKEN_ENV, console_token, create_console_app, is_loopback
    from workers.triggers.webhooks import configure_logging

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0 to 65535, got {port}", field="--port")
    if workflows is not None and not workflows.is_dir():
        raise ConfigError(f"--workflows {str(workflows)!r} is not a directory", field="--workflows")
    loopback = is_loopback(host)
    token = console_token()
    made_up = token is None
    if made_up:
        if not loopback:
            raise ConfigError(f"set {TOKEN_ENV} (16 characters or more) to serve the console on {host!r}, "
                              "beyond this machine", field=TOKEN_ENV)
        token = secrets.token_urlsafe(24)
    configure_logging(log_level)
    console_app = create_console_app(token, workflows_dir=workflows, loopback_only=loopback)

    async def home(_: object) -> RedirectResponse:
        return RedirectResponse(MOUNT + "/", status_code=307)

    app = Starlette(routes=[Route("/", home), Mount(MOUNT, app=console_app)])
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}{MOUNT}/"
    if made_up:  # printed for the person at this terminal, the one way they learn it; never logged
        print(f"console on {url}\nsign in: {url}login?token={token}\n({TOKEN_ENV} is unset: this token "
              "lasts until the console stops)", flush=True)
    else:
        print(f"console on {url} (sign in with {TOKEN_ENV})", flush=True)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level=log_level.lower(), server_header=False)


def register(app: typer.Typer) -> None:
    """Attach ``console`` to the main CLI."""
    app.command("console")(console)
