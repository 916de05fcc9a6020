"""The one error tree: every class carries its category and CLI exit code; no builtin is shadowed."""

from __future__ import annotations

import builtins
import pickle
import warnings

import pytest

from integration import errors
from integration.errors import (
    ConfigError,
    HookError,
    InputError,
    NoAnswerError,
    PackError,
    StoreError,
    StoreUnavailableError,
    TemplateError,
    WorkflowError,
    error_from_dict,
    exit_code_for,
)


def _tree() -> list[type[PackError]]:
    found, pending = [], [PackError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == "integration.errors":
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", _tree(), ids=lambda cls: cls.__name__)
def test_every_class_carries_category_and_exit_code_and_is_documented(cls: type[PackError]) -> None:
    assert cls.category and cls.exit_code in (errors.EXIT_BAD_INPUT, errors.EXIT_FAILURE)
    assert cls.__name__ in errors.__all__
    assert cls.__name__ in (errors.__doc__ or ""), "the tree in the module docstring lists every class"


@pytest.mark.parametrize(("error", "code", "category"), [
    (InputError([{"field": "model", "reason": "is required"}]), 2, "input"),
    (ConfigError("no key", field="api_key"), 2, "config"),
    (WorkflowError("bad step"), 2, "input"),
    (TemplateError("undefined x"), 2, "input"),
    (HookError("wrong secret"), 2, "webhook"),
    (errors.ManifestError("bad manifest"), 2, "manifest"),
    (errors.RateLimitedError("slow down", status=429), 1, "api"),
    (errors.ConnectError("refused"), 1, "transport"),
    (NoAnswerError("no answer"), 1, "transport"),
    (errors.OutcomeUnknownError("paid call unknown"), 1, "outcome"),
    (StoreUnavailableError("redis is away"), 1, "store"),
    (ValueError("not ours"), 1, None),
])
def test_exit_code_comes_from_the_class(error: Exception, code: int, category: str | None) -> None:
    """The CLI compared code strings ("workflow_invalid", "template_error"); now the class decides."""
    assert exit_code_for(error) == code
    if category is not None:
        assert isinstance(error, PackError) and error.to_dict()["category"] == category


def test_no_answer_error_no_longer_shadows_the_builtin() -> None:
    namespace: dict[str, object] = {}
    exec("from integration.errors import *", namespace)  # noqa: S102 - what a star import would bind
    assert "TimeoutError" not in namespace
    assert namespace["NoAnswerError"] is NoAnswerError
    assert not issubclass(NoAnswerError, builtins.TimeoutError)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert errors.TimeoutError is NoAnswerError, "old imports keep working"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_records_written_under_the_old_name_come_back_as_no_answer() -> None:
    old = {"type": "TimeoutError", "code": "timeout", "message": "sent, no answer", "retryable": True,
           "idempotent": True}
    again = error_from_dict(old)
    assert type(again) is NoAnswerError and again.retryable and again.exit_code == 1


@pytest.mark.parametrize("error", [
    NoAnswerError("sent, no answer", idempotent=True), StoreUnavailableError("redis away", store="runs"),
    HookError("refused"), errors.KeyRingError("wrong key", field="K"),
], ids=lambda e: type(e).__name__)
def test_round_trips_through_pickle_and_dict(error: PackError) -> None:
    """(WorkflowError and TemplateError are rebuilt as workers' own: tests/test_workflow_definition.py.)"""
    for again in (pickle.loads(pickle.dumps(error)), error_from_dict(error.to_dict())):
        assert type(again) is type(error)
        assert again.to_dict() == error.to_dict()


def test_store_errors_are_one_class_to_catch() -> None:
    assert issubclass(StoreUnavailableError, StoreError) and StoreUnavailableError.retryable
    assert not StoreError.retryable
