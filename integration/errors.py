"""Every error the pack raises, in one tree, so callers branch on type or on a stable ``code``.

    PackError                       .code .retryable .to_dict()
    ├── ManifestError               a manifest is malformed (a developer error, found at load time)
    ├── ConfigError                 an integration is missing or invalid
    ├── InputError                  bad action input; raised before any request is sent
    ├── ApiError                    the API answered with an error status
    │   ├── BadRequestError             400
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── ConflictError               409
    │   ├── UnprocessableEntityError    422
    │   ├── RateLimitedError            429 (retryable, .retry_after)
    │   │   └── QuotaExceededError      429 insufficient_quota (never retryable)
    │   ├── ServerError                 5xx (retryable)
    │   └── ResponseShapeError          2xx, but the body is not what the action promises
    ├── TransportError
    │   ├── ConnectError                the request was never sent: always safe to retry
    │   └── TimeoutError                sent, no answer: the outcome of a paid call is unknown
    └── OutcomeUnknownError         a paid call was started and never finished; refuse to repeat it

Errors are built from plain JSON-able values only (Celery stores ``exc.args``) and never carry
headers, URLs with query strings or request bodies, so nothing secret can ride along.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "InputError",
    "ManifestError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PackError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "ResponseShapeError",
    "ServerError",
    "TimeoutError",
    "TransportError",
    "UnprocessableEntityError",
    "UpstreamError",
    "error_from_dict",
    "error_for_status",
]


class PackError(Exception):
    """Base of every error the pack raises on purpose."""

    code: str = "pack_error"
    retryable: bool = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self).__name__, self.message, self.details))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used on stderr, in run records and in Celery results."""
        return {
            "type": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            **self.details,
        }

    def __str__(self) -> str:
        return self.message


class ManifestError(PackError):
    code = "manifest_invalid"


class ConfigError(PackError):
    code = "config_invalid"

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class InputError(PackError):
    """Bad input: ``problems`` lists every ``{field, reason}``; the first one names ``field``."""

    code = "invalid_input"

    def __init__(self, problems: list[dict[str, str]], action: str | None = None) -> None:
        first = problems[0]
        where = first["field"] or "input"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        prefix = f"{action}: " if action else ""
        super().__init__(f"{prefix}{where}: {first['reason']}{more}", field=first["field"],
                         problems=problems, action=action)
        self.field = first["field"]
        self.problems = problems


class ApiError(PackError):
    """The API answered with an error; the fields mirror OpenAI's error body."""

    code = "api_error"
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
    code = "transport_error"


class ConnectError(TransportError):
    code, retryable = "connect_failed", True


class TimeoutError(TransportError):  # noqa: A001 - the pack's own, distinct from the builtin
    """The request went out and no (complete) answer came back in time."""

    code = "timeout"

    def __init__(self, message: str, *, idempotent: bool = False, **details: Any) -> None:
        super().__init__(message, idempotent=idempotent, **details)
        self.retryable = idempotent


class OutcomeUnknownError(PackError):
    code = "outcome_unknown"


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


def _all_error_classes() -> dict[str, type[PackError]]:
    found: dict[str, type[PackError]] = {}
    pending: list[type[PackError]] = [PackError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _rebuild(type_name: str, message: str, details: dict[str, Any]) -> PackError:
    return error_from_dict({"type": type_name, "message": message, **details})


def error_from_dict(data: dict[str, Any]) -> PackError:
    """Rebuild a typed error from ``to_dict()`` output (run records, Celery results)."""
    cls = _all_error_classes().get(str(data.get("type")), PackError)
    details = {k: v for k, v in data.items() if k not in {"type", "code", "message", "retryable"}}
    err = cls.__new__(cls)
    PackError.__init__(err, str(data.get("message", "")), **details)
    for key, value in details.items():
        setattr(err, key, value)
    if "retryable" in data and cls is TimeoutError:
        err.retryable = bool(data["retryable"])
    return err
