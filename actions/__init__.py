"""Run OpenAI actions in-process: the one path the CLI, the workers and the tests all take.

    >>> import actions
    >>> actions.run("create_moderation", {"input": "hello"})          # doctest: +SKIP

Public modules in this package are handlers (``actions/<name>.py`` with ``run(call)``, looked up
only for a shipped manifest of that name); the runtime lives in ``_``-prefixed modules, and what
other packages need from it is re-exported here, so nothing outside ``actions`` imports ``actions._*``:

- the registry: ``registry``, ``get``, ``load_manifest``, ``ActionManifest`` (extra manifest
  directories: ``MANIFEST_PATH_ENV``, ``ENTRY_POINT_GROUP``; names no action may take: ``RESERVED_NAMES``);
- running: ``prepare``, ``execute``, ``run``, ``Call``, ``CallOptions``, ``ActionResult``;
- values against a schema: ``coerce_inputs``, ``problems_for`` (``uses_fast_path`` says whether
  the compiled check applies), and for raw outside input
  ``parse_json_text``, ``check_value``, ``read_text_file``;
- docs: ``render_reference``, ``render_action``, ``field_rows``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from functools import cache
from typing import Any

from actions._binding import ActionResult, Call, CallOptions, prepare_inputs
from actions._coerce import coerce_inputs
from actions._docs import field_rows, render_action, render_reference
from actions._inputs import MAX_DEPTH, check_value, parse_json_text, read_text_file
from actions._manifest import (
    ENTRY_POINT_GROUP,
    MANIFEST_PATH_ENV,
    RESERVED_NAMES,
    ActionManifest,
    load_all,
    load_manifest,
)
from actions._validate import problems_for, uses_fast_path
from integration.errors import InputError
from integration.model import Integration
from integration.redact import scrub_data
from integration.store import resolve

__all__ = [
    "ENTRY_POINT_GROUP", "MANIFEST_PATH_ENV", "MAX_DEPTH", "RESERVED_NAMES", "ActionManifest", "ActionResult",
    "Call", "CallOptions", "check_value", "coerce_inputs", "execute", "field_rows", "get", "handler",
    "load_manifest", "parse_json_text", "prepare", "problems_for", "read_text_file", "registry", "render_action",
    "render_reference", "repeat_safe", "run", "uses_fast_path",
]

Handler = Callable[[Call], dict[str, Any]]


def registry() -> dict[str, ActionManifest]:
    """Every action: the shipped ones and those of the extra manifest directories, by name."""
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


def handler(name: str) -> Handler | None:
    """The action's handler, when it has one (``actions/<name>.py``); most actions need none.

    Only a manifest the pack ships can have one: a user's extra manifest is a pass-through, and
    runtime modules (``_*``, the simulator) are never mistaken for handlers.
    """
    manifest = load_all().get(name)
    return None if manifest is None else _handler_of(manifest)


def _handler_of(manifest: ActionManifest) -> Handler | None:
    return _handler_module(manifest.name) if manifest.shipped else None


@cache
def _handler_module(name: str) -> Handler | None:
    if importlib.util.find_spec(f"actions.{name}") is None:
        return None
    module = importlib.import_module(f"actions.{name}")
    return module.run  # type: ignore[no-any-return]


def repeat_safe(name: str, prepared: dict[str, Any]) -> bool:
    """Whether this call may be repeated after a lost answer: the manifest says, unless its handler decides
    per call (``openai_request``: by method)."""
    manifest = get(name)
    if _handler_of(manifest) is not None:
        per_call = getattr(importlib.import_module(f"actions.{name}"), "repeat_safe", None)
        if callable(per_call):
            return bool(per_call(prepared))
    return manifest.is_idempotent


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
    run_handler = _handler_of(manifest)
    output = run_handler(call) if run_handler else call.default()
    return call.result(scrub_data(output))


def run(name: str, inputs: Any, integration: Integration | str | None = None) -> dict[str, Any]:
    """Run one action and return its output (typed errors from ``integration.errors`` on failure)."""
    return execute(name, inputs, integration).output
