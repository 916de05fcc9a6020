"""Everything the CLI prints: JSON results on stdout, tables for people, JSON errors on stderr.

The leaf of ``workers.cli``: every command module imports it and it imports none of them, so the
output contract lives in one place. Everything printed goes through ``scrub`` (no registered secret
is ever shown), and JSON that cannot be written as UTF-8 (a lone surrogate an API echoed back) is
written with ``\\uXXXX`` escapes instead of crashing the print.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from integration.errors import PackError, exit_code_for
from integration.redact import scrub

__all__ = ["console", "emit", "error_payload", "json_text", "stderr_console", "write_error"]

#: Tables and progress for people. Piped output (CI logs, scripts) gets wide tables instead of
#: rich's 80-column default. Rich resolves ``sys.stdout`` when printing, so redirection works.
console = Console() if sys.stdout.isatty() else Console(width=200)
stderr_console = Console(stderr=True)

def json_text(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as scrubbed JSON text; non-JSON values (paths, datetimes) are shown with ``str``."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: still valid JSON when escaped
        text = json.dumps(value, indent=indent, ensure_ascii=True, default=str)
    return scrub(text)


def emit(value: Any) -> None:
    """A command's result: JSON on stdout, for scripts."""
    sys.stdout.write(json_text(value) + "\n")


def error_payload(error: BaseException) -> dict[str, Any]:
    """The JSON shape of an error: the pack's own ``to_dict()``, or type and message for anything else."""
    if isinstance(error, PackError):
        return error.to_dict()
    return {"type": type(error).__name__, "code": "internal_error", "category": "internal",
            "message": str(error) or type(error).__name__}


def write_error(error: BaseException) -> int:
    """Print ``{"error": …}`` on stderr (one line) and return the exit code its class carries.

    2: the caller must fix their input or configuration; 1: the call failed, or (for anything that
    is not one of the pack's errors) the pack has a defect.
    """
    sys.stderr.write(json_text({"error": error_payload(error)}, indent=None) + "\n")
    return exit_code_for(error)
