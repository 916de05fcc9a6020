"""Every error the pack raises, in one tree, so callers branch on type, ``category`` or a stable ``code``.

Each class carries its ``category`` and the CLI ``exit_code`` (2: the caller must fix their input or
configuration; 1: the call failed and may work later), so no caller compares code strings::

    PackError                       .code .category .exit_code .retryable .to_dict()   internal, 1
    ├── ManifestError               a manifest is malformed (found at load time)        manifest, 2
    ├── ConfigError                 an integration or a setting is missing or invalid   config, 2
    │   └── KeyRingError                the Fernet keys cannot open the stored API keys
    ├── InputError                  bad action input; raised before any request is sent input, 2
    ├── WorkflowError               a workflow file is wrong (base of workers' own)     input, 2
    ├── TemplateError               a template failed to render (base of workers' own)  input, 2
    ├── HookError                   a webhook request is refused; ``.status`` (HTTP)    webhook, 2
    ├── StoreError                  the run/state store failed                          store, 1
    │   └── StoreUnavailableError       it cannot be reached right now (retryable)
    ├── ApiError                    the API answered with an error status               api, 1
    │   ├── BadRequestError             400
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── ConflictError               409
    │   ├── UnprocessableEntityError    422
    │   ├── RateLimitedError            429 (retryable, .retry_after)
    │   │   └── QuotaExceededError      429 insufficient_quota (never retryable)
    │   ├── ServerError                 5xx (retryable)
    │   ├── UpstreamError               any other status
    │   └── ResponseShapeError          2xx, but the body is not what the action promises
    ├── TransportError                                                                  transport, 1
    │   ├── ConnectError                the request was never sent: always safe to retry
    │   └── NoAnswerError               sent, no answer: the outcome of a paid call is unknown
    ├── OutcomeUnknownError         a paid call was started and never finished          outcome, 1
    └── BudgetExceededError         a spend cap refused the call before it was sent     budget, 1

``NoAnswerError`` was called ``TimeoutError``, which shadowed the builtin; the old name still
imports (with a DeprecationWarning) but is not exported by ``*``. Records written under the old
name are rebuilt as ``NoAnswerError``.

Errors are built from plain JSON-able values only (Celery stores ``exc.args``) and never carry
headers, URLs with query strings or request bodies, so nothing secret can ride along.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "HookError",
    "InputError",
    "KeyRingError",
    "ManifestError",
    "NoAnswerError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PackError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "ResponseShapeError",
    "ServerError",
    "StoreError",
    "StoreUnavailableError",
    "TemplateError",
    "TransportError",
    "UnprocessableEntityError",
    "UpstreamError",
    "WorkflowError",
    "error_for_status",
    "error_from_dict",
    "exit_code_for",
]

#: The CLI's exit codes: 2 when the caller must change their input or configuration, 1 otherwise.
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class PackError(Exception):
    """Base of every error the pack raises on purpose."""

    code: str = "pack_error"
    category: str = "internal"
    exit_code: int = EXIT_FAILURE
    retryable: bool = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self).__name__, self.message, {**self.details, "retryable": self.retryable}))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used on stderr, in run records and in Celery results."""
        return {
            "type": type(self).__name__,
            "code": self.code,
            "category": self.category,
            "message": self.message,
            "retryable": self.retryable,
            **self.details,
        }

    def __str__(self) -> str:
        return self.message


def exit_code_for(error: BaseException) -> int:
    """The CLI exit code of any exception: the class decides for the pack's own, 1 for anything else."""
    return error.exit_code if isinstance(error, PackError) else EXIT_FAILURE


class ManifestError(PackError):
    code, category, exit_code = "manifest_invalid", "manifest", EXIT_BAD_INPUT


class ConfigError(PackError):
    code, category, exit_code = "config_invalid", "config", EXIT_BAD_INPUT

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class KeyRingError(ConfigError):
    """The Fernet keys in use cannot open an API key already stored: writing now would strand it."""

    code = "keyring_mismatch"


class InputError(PackError):
    """Bad input: ``problems`` lists every ``{field, reason}``; the first one names ``field``."""

    code, category, exit_code = "invalid_input", "input", EXIT_BAD_INPUT

    def __init__(self, problems: list[dict[str, str]], action: str | None = None) -> None:
        first = problems[0]
        where = first["field"] or "input"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        prefix = f"{action}: " if action else ""
        super().__init__(f"{prefix}{where}: {first['reason']}{more}", field=first["field"],
                         problems=problems, action=action)
        self.field = first["field"]
        self.problems = problems


class WorkflowError(PackError):
    """A workflow file is wrong; ``workers`` subclasses it with file, step and field."""

    code, category, exit_code = "workflow_invalid", "input", EXIT_BAD_INPUT


class TemplateError(PackError):
    """A template failed to render at run time; ``workers`` subclasses it with step and expression."""

    code, category, exit_code = "template_error", "input", EXIT_BAD_INPUT


class HookError(PackError):
    """A webhook request is refused; ``status`` is the HTTP status the caller gets."""

    code, category, exit_code = "hook_refused", "webhook", EXIT_BAD_INPUT
    status: int = 400


class StoreError(PackError):
    """The pack's own state store (runs, ledger, budget) failed, as opposed to the step it runs."""

    code, category, exit_code = "store_error", "store", EXIT_FAILURE


class StoreUnavailableError(StoreError):
    """The state store cannot be reached right now; the work is safe to retry later."""

    code, retryable = "store_unavailable", True


class ApiError(PackError):
    """The API answered with an error; the fields mirror OpenAI's error body."""

    code, category, exit_code = "api_error", "api", EXIT_FAILURE
    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status or self.status, request_id=request_id,
                         error_type=error_type, error_code=error_code, param=param,
                         retry_after=retry_after)
        self.status = status or self.status
        self.request_id = request_id
        self.error_type = error_type
        self.error_code = error_code
        self.param = param
        self.retry_after = retry_after


class BadRequestError(ApiError):
    code, status = "bad_request", 400


class AuthenticationError(ApiError):
    code, status = "authentication_failed", 401


class PermissionDeniedError(ApiError):
    code, status = "permission_denied", 403


class NotFoundError(ApiError):
    code, status = "not_found", 404


class ConflictError(ApiError):
    code, status = "conflict", 409


class UnprocessableEntityError(ApiError):
    code, status = "unprocessable_entity", 422


class RateLimitedError(ApiError):
    code, status, retryable = "rate_limited", 429, True


class QuotaExceededError(RateLimitedError):
    """429 ``insufficient_quota``: waiting will not help, so it is never retried."""

    code, retryable = "insufficient_quota", False


class ServerError(ApiError):
    code, status, retryable = "server_error", 500, True


class UpstreamError(ApiError):
    """Any other non-2xx status (e.g. 405, 413): reported, not retried."""

    code = "api_error"


class ResponseShapeError(ApiError):
    code = "bad_response"


class TransportError(PackError):
    code, category, exit_code = "transport_error", "transport", EXIT_FAILURE


class ConnectError(TransportError):
    code, retryable = "connect_failed", True


class NoAnswerError(TransportError):
    """The request went out and no (complete) answer came back in time (or the connection dropped)."""

    code = "timeout"

    def __init__(self, message: str, *, idempotent: bool = False, **details: Any) -> None:
        super().__init__(message, idempotent=idempotent, **details)
        self.retryable = idempotent


class OutcomeUnknownError(PackError):
    code, category, exit_code = "outcome_unknown", "outcome", EXIT_FAILURE


class BudgetExceededError(PackError):
    """An integration's spend cap would be crossed by this call's estimated cost: it was not sent."""

    code, category, exit_code = "budget_exceeded", "budget", EXIT_FAILURE


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitedError,
}


def error_for_status(status: int, error_code: str | None = None) -> type[ApiError]:
    """The one status-to-class table."""
    if status == 429 and error_code == "insufficient_quota":
        return QuotaExceededError
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, UpstreamError)


#: Names used in records written by earlier versions of the pack.
_RENAMED = {"TimeoutError": "NoAnswerError"}


def __getattr__(name: str) -> Any:
    """``TimeoutError`` still imports, for code written before the rename, with a warning."""
    if name == "TimeoutError":
        warnings.warn("integration.errors.TimeoutError is now NoAnswerError", DeprecationWarning, stacklevel=2)
        return NoAnswerError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _all_error_classes() -> dict[str, type[PackError]]:
    """Every class by name. When two share a name, the one that extends this tree from another module
    wins: workers' ``WorkflowError`` (a subclass of this one, or still a sibling) is what its records mean."""
    found: dict[str, type[PackError]] = {}
    pending: list[type[PackError]] = [PackError]
    while pending:
        cls = pending.pop()
        known = found.get(cls.__name__)
        if known is None or issubclass(cls, known) or (known.__module__ == __name__ and cls.__module__ != __name__):
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _rebuild(type_name: str, message: str, details: dict[str, Any]) -> PackError:
    return error_from_dict({"type": type_name, "message": message, **details})


def error_from_dict(data: dict[str, Any]) -> PackError:
    """Rebuild a typed error from ``to_dict()`` output (run records, Celery results)."""
    type_name = str(data.get("type"))
    cls = _all_error_classes().get(_RENAMED.get(type_name, type_name), PackError)
    details = {k: v for k, v in data.items() if k not in {"type", "code", "category", "message", "retryable"}}
    err = cls.__new__(cls)
    PackError.__init__(err, str(data.get("message", "")), **details)
    for key, value in details.items():
        setattr(err, key, value)
    if "retryable" in data and bool(data["retryable"]) != cls.retryable:  # set per instance (NoAnswerError)
        err.retryable = bool(data["retryable"])
    return err
