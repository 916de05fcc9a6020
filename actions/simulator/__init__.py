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
manifests), ``spec`` (validation and synthesized answers from the spec), ``extract`` (makes the spec
data file), ``behaviours`` (answers per operationId), ``state`` (faults, counters, rate limit), ``cli``.
"""

from __future__ import annotations

from actions.simulator.behaviours import BEHAVIOURS, FLAG_WORDS, MODELS, MODERATION_CATEGORIES, STREAMS
from actions.simulator.cli import BANNER, DEFAULT_PORT, main, serve
from actions.simulator.server import Simulator
from actions.simulator.spec import sample_for, validate_request
from actions.simulator.state import FAULT_KINDS

__all__ = ["BANNER", "BEHAVIOURS", "DEFAULT_PORT", "FAULT_KINDS", "FLAG_WORDS", "MODELS", "MODERATION_CATEGORIES",
           "STREAMS", "Simulator", "main", "sample_for", "serve", "validate_request"]
