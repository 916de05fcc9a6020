"""Which integration a step calls with: Rewst's Integration Overrides for the pack.

A step's ``integration`` (else the workflow's, where a run's ``--integration`` is stored) is

- a name: that integration;
- a template (``"{{ inputs.customer }}"``): rendered with the step's context (``item`` too in a
  fan-out), then looked up by name, so one workflow serves one integration per customer;
- a selection ``{match: "acme-*", labels: {customer: "{{ inputs.customer }}"}, fallback: default | fail}``:
  the stored integrations whose name fits the pattern and that carry every label; exactly one must
  match, or, when none does, ``fallback: default`` takes the default integration (``fail``, the
  default, fails the step). Two or more matches always fail: a step never guesses between customers.

Errors name the step and what was looked up; they are ``ConfigError`` (a step failure, exit code 2).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from integration.errors import ConfigError, PackError
from integration.model import Integration
from integration.store import IntegrationStore, open_store, resolve
from workers.workflow import render

__all__ = ["select_integration"]


def select_integration(spec: str | dict[str, Any] | None, context: Mapping[str, Any], *, step: str,
                       store: IntegrationStore | None = None) -> Integration:
    """The integration ``spec`` designates for ``step`` in ``context`` (None: the default integration)."""
    if spec is None:
        return resolve(None, store=store)
    rendered = render(spec, context, step=step)
    if isinstance(spec, str):
        return _by_name(rendered, spec, step, store)
    return _by_selection(rendered, spec, step, store if store is not None else open_store())


def _by_name(name: Any, written: str, step: str, store: IntegrationStore | None) -> Integration:
    looked_up = f"{name!r}" + (f" (from {written!r})" if written != name else "")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"step {step!r}: integration {looked_up} is not an integration name",
                          field="integration", step=step)
    try:
        return resolve(name.strip(), store=store)
    except PackError as exc:
        raise ConfigError(f"step {step!r}: integration {looked_up}: {exc.message}", field="integration", step=step,
                          integration=name.strip()) from None


def _by_selection(selection: dict[str, Any], written: dict[str, Any], step: str,
                  store: IntegrationStore) -> Integration:
    pattern = selection.get("match")
    labels = selection.get("labels") or {}
    wanted = {k: str(v) for k, v in labels.items()}
    described = ", ".join([f"name matching {pattern!r}"] * bool(pattern)
                          + [f"label {k}={v!r}" for k, v in sorted(wanted.items())])
    found = [i for i in store.list()
             if (not pattern or fnmatch.fnmatchcase(i.name, str(pattern)))
             and all(i.labels.get(k) == v for k, v in wanted.items())]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(sorted(i.name for i in found))
        raise ConfigError(f"step {step!r}: {len(found)} integrations have {described} ({names}); the selection "
                          "must single out one", field="integration", step=step)
    if written.get("fallback") == "default":
        try:
            return resolve(None, store=store)
        except PackError as exc:
            raise ConfigError(f"step {step!r}: no integration has {described}, and the fallback default: "
                              f"{exc.message}", field="integration", step=step) from None
    raise ConfigError(f"step {step!r}: no integration has {described} (fallback: fail)", field="integration",
                      step=step)
