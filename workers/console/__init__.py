"""The web console: runs, steps, workflows, actions and integrations in a browser.

``openai-pack serve`` mounts it at ``/console`` when ``OPENAI_PACK_CONSOLE_TOKEN`` is set;
``openai-pack console`` serves it alone on 127.0.0.1 over the embedded default (the SQLite run
store under ``$OPENAI_PACK_HOME``). Server-rendered pages (Starlette + Jinja2) with one small
script of our own for the live parts; templates and assets ship in this package. See docs/console.md.
"""

from __future__ import annotations

from workers.console.app import MOUNT, create_console_app
from workers.console.auth import MIN_TOKEN_LENGTH, TOKEN_ENV, is_loopback

__all__ = ["MIN_TOKEN_LENGTH", "MOUNT", "TOKEN_ENV", "console_token", "create_console_app", "is_loopback"]


def console_token() -> str | None:
    """The configured token, or None when unset; a token too short to resist guessing is a ConfigError."""
    import os

    from integration.errors import ConfigError

    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or token.strip() != token:
        raise ConfigError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} printable characters without "
                          "surrounding spaces", field=TOKEN_ENV)
    return token
