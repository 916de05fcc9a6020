"""The workflow language's two errors: a file that is wrong (load time) and a template that failed (run time).

Both extend the pack's error tree (``integration.errors``), which gives them their code, category
and CLI exit code (2); here they gain the file, step, field and expression they name.
"""

from __future__ import annotations

from integration import errors

__all__ = ["TemplateError", "WorkflowError"]


class WorkflowError(errors.WorkflowError):
    """A workflow file is wrong; the message says which file, which step and which field.

    ``str()``: ``"<file>: step 'summarise': input.messages: <reason>"`` (unknown parts left out).
    Class-level defaults keep the attributes readable after ``error_from_dict`` / unpickling, which
    only restore the details that were set.
    """

    file: str | None = None
    step: str | None = None
    field: str | None = None
    reason: str = ""
    line: int | None = None

    def __init__(self, reason: str, *, file: str | None = None, step: str | None = None,
                 field: str | None = None, line: int | None = None) -> None:
        parts = [p for p in (file, f"step {step!r}" if step else None, field) if p]
        super().__init__(": ".join([*parts, reason]), file=file, step=step, field=field, reason=reason, line=line)
        self.file, self.step, self.field, self.reason, self.line = file, step, field, reason, line


class TemplateError(errors.TemplateError):
    """A template failed to render (at run time); names the step and the expression."""

    step: str | None = None
    expression: str | None = None
    reason: str | None = None

    def __init__(self, message: str, *, step: str | None = None, expression: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, step=step, expression=expression, reason=reason)
        self.step, self.expression, self.reason = step, expression, reason
