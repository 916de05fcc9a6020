"""The CLI's one error boundary: every failure leaves as a JSON error on stderr, with its class's exit code.

Commands raise; they never print errors or pick exit codes. ``run`` catches what they raise: the
pack's errors carry their exit code (2 for bad input or configuration, 1 for a failed call), and
anything else is a defect, reported the same way with exit 1 rather than as a traceback. Usage
mistakes that click catches itself (an unknown option, a missing argument) keep click's message
and its exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import typer

from workers.cli.output import write_error

__all__ = ["run"]


def run(app: typer.Typer, argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``app`` on ``argv`` (default: ``sys.argv[1:]``) and exit with the code its outcome carries."""
    try:
        app(args=None if argv is None else list(argv))
    except Exception as error:  # noqa: BLE001 - the boundary: one JSON error, never a traceback
        sys.exit(write_error(error))
    sys.exit(0)  # not reached: in standalone mode click always exits
