"""A loopback OpenAI-compatible server: NOT the real API. Used by the tests, the demo, the benchmarks and
users' own test suites (``from actions.simulator import Simulator``; ``openai-pack simulate`` or
``python -m actions.simulator`` from a shell).

Why it exists: every layer above (client retries, workers, workflows) must be tested against real HTTP
on a real socket, without a key and without spending money. It derives from the manifests: each one's
``http`` binding is a route, OpenAI's spec schema for its ``operationId`` validates the request (with
OpenAI's 400 shape), and the answer is a registered behaviour (``behaviours.py``) or the manifest's
example output. Faults, counters, kept requests and an optional rate limit are scripted from Python or
over the control routes under ``/v1/_sim/``. docs/simulator.md has the whole surface.

Modules: ``server`` (Starlette app, uvicorn lifecycle, the request pipeline), ``routes`` (routes from
manifests), ``bodies`` (reading JSON and multipart bodies), ``spec`` (validation and synthesized answers
from the spec), ``extract`` (makes the spec
data file), ``behaviours`` (answers per operationId), ``stateful`` (the behaviours that remember: files, batches, vector
stores, responses, conversations), ``store`` (the objects issued and the long-job clock), ``state`` (faults,
counters, rate limit), ``cli``
(``serve``, ``main``), ``options`` (the options in words).

The names below load on first use: ``import actions.simulator.options`` (the CLI's help) must not start
uvicorn's and Starlette's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actions.simulator.behaviours import BEHAVIOURS, FLAG_WORDS, MODELS, MODERATION_CATEGORIES, STREAMS
    from actions.simulator.cli import main, serve
    from actions.simulator.options import BANNER, DEFAULT_PORT
    from actions.simulator.server import Simulator
    from actions.simulator.spec import sample_for, validate_request
    from actions.simulator.state import FAULT_KINDS

_HOMES = {
    "BEHAVIOURS": "behaviours", "FLAG_WORDS": "behaviours", "MODELS": "behaviours",
    "MODERATION_CATEGORIES": "behaviours", "STREAMS": "behaviours", "main": "cli", "serve": "cli",
    "BANNER": "options", "DEFAULT_PORT": "options", "Simulator": "server", "sample_for": "spec",
    "validate_request": "spec", "FAULT_KINDS": "state",
}
__all__ = ["BANNER", "BEHAVIOURS", "DEFAULT_PORT", "FAULT_KINDS", "FLAG_WORDS", "MODELS", "MODERATION_CATEGORIES",
           "STREAMS", "Simulator", "main", "sample_for", "serve", "validate_request"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'actions.simulator' has no attribute {name!r}")
    return getattr(importlib.import_module(f"actions.simulator.{_HOMES[name]}"), name)
