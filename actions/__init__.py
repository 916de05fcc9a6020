"""Run OpenAI actions in-process: the one path the CLI, the workers and the tests all take.

    >>> import actions
    >>> actions.run("create_moderation", {"input": "hello"})          # doctest: +SKIP

Public modules in this package are handlers (``actions/<name>.py`` with ``run(call)``); the
runtime lives in ``_``-prefixed modules.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from functools import cache
from typing import Any

from actions._binding import ActionResult, Call, CallOptions, prepare_inputs
from actions._manifest import ActionManifest, load_all
from integration.errors import InputError
from integration.model import Integration
from integration.redact import scrub_data
from integration.store import resolve

__all__ = ["ActionManifest", "ActionResult", "Call", "CallOptions", "execute", "get", "prepare",
           "registry", "run"]

Handler = Callable[[Call], dict[str, Any]]


def registry() -> dict[str, ActionManifest]:
    """Every action the pack ships, by name."""
    return load_all()


def get(name: str) -> ActionManifest:
    """One manifest; an unknown name is an input error with a suggestion."""
    manifests = load_all()
    if name in manifests:
        return manifests[name]
    hint = difflib.get_close_matches(name, list(manifests), n=1)
    where = f"did you mean {hint[0]!r}?" if hint else "see `openai-pack actions list`"
    reason = f"is not an action of this pack ({where})"
    raise InputError([{"field": "action", "reason": f"{name!r} {reason}"}])


@cache
def handler(name: str) -> Handler | None:
    """The action's handler, when it has one (``actions/<name>.py``); most actions need none."""
    if importlib.util.find_spec(f"actions.{name}") is None:
        return None
    module = importlib.import_module(f"actions.{name}")
    return module.run  # type: ignore[no-any-return]


def prepare(name: str, inputs: Any) -> dict[str, Any]:
    """Coerce and validate inputs without calling anything (webhooks and workflows check early)."""
    return prepare_inputs(get(name), inputs)


def execute(
    name: str,
    inputs: Any,
    integration: Integration | str | None = None,
    *,
    options: CallOptions | None = None,
    already_prepared: bool = False,
) -> ActionResult:
    """Run one action and return its output with usage, attempts and request ids.

    ``already_prepared`` skips coercion and validation for inputs that came out of ``prepare``.
    """
    manifest = get(name)
    prepared = inputs if already_prepared else prepare_inputs(manifest, inputs)
    resolved = resolve(integration)
    call = Call(manifest, prepared, resolved, options or CallOptions())
    run_handler = handler(name)
    output = run_handler(call) if run_handler else call.default()
    return call.result(scrub_data(output))


def run(name: str, inputs: Any, integration: Integration | str | None = None) -> dict[str, Any]:
    """Run one action and return its output (typed errors from ``integration.errors`` on failure)."""
    return execute(name, inputs, integration).output
