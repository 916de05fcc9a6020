"""The simulator's options and control routes in words: one text for ``openai-pack simulate --help``,
``python -m actions.simulator --help`` and the banner. Imports nothing heavy, so the pack's CLI can read
it without loading the server."""

from __future__ import annotations

import textwrap
from typing import Literal

__all__ = ["BANNER", "CONTROL_ROUTES", "CONTROL_ROUTE_HELP", "DEFAULT_PORT", "HELP", "Placement"]

BANNER = "OpenAI API SIMULATOR — not the real API"
DEFAULT_PORT = 8765
Placement = Literal["bearer", "header", "query"]
#: One line per option, shared by ``openai-pack simulate --help`` and ``python -m actions.simulator --help``.
HELP = {
    "port": "Port on 127.0.0.1 (0 = any free port). The simulator never listens on another interface.",
    "latency": "Seconds added before every answer.",
    "api_key_env": "Require the key held by this environment variable (401 invalid_api_key otherwise). "
                   "Without it, any key or none is accepted.",
    "auth": "Where the key must be, with --api-key-env: bearer (Authorization: Bearer KEY), header (--auth-name "
            "header, after --auth-prefix) or query (--auth-name query parameter).",
    "auth_name": "Header or query parameter that carries the key (default X-Api-Key for header, api_key for query).",
    "auth_prefix": "Text before the key in a custom header, e.g. 'Token '.",
    "rate_limit_rpm": "Requests per moving minute before 429 rate_limit_exceeded with retry-after-ms.",
    "no_legacy_edits": "Answer operations only the 2023 spec has (POST /v1/edits) with 404, as the API does today.",
}
#: (route, what it does): the control routes, which need no key and are not counted as calls.
CONTROL_ROUTE_HELP = (
    ("POST /v1/_sim/faults", "script a fault, a JSON object: kind (status, drop, malformed, hang, latency), "
                             "status, error_code, headers, body, path, method, times (-1 = forever), latency. "
                             "GET lists the scripted faults."),
    ("POST /v1/_sim/reset", "clear faults, counters, kept requests, the rate-limit window and the objects issued "
                            "(files, batches, vector stores, responses, conversations)."),
    ("POST /v1/_sim/jobs", "when long jobs finish: {\"after_polls\": N, \"after_seconds\": S} (null = never that "
                           "way); GET shows the settings and the running jobs."),
    ("POST /v1/_sim/jobs/complete", "finish running jobs now: {} all, {\"id\": ...} one; optional \"outcome\": "
                                    "completed, failed, cancelled, expired."),
    ("GET /v1/_sim/stats", "calls, by_route, in_flight, max_in_flight."),
    ("GET /v1/_sim/requests", "the requests received (?limit=N: the last N): method, path, query (and "
                              "query_pairs, repeats kept), headers, body, as sent (not redacted) except the "
                              "--api-key-env key, shown as <api-key>."),
)
CONTROL_ROUTES = "\n".join(["Control routes (no key needed, not counted as calls):",
                            *(textwrap.fill(f"{route}: {text}", 100, initial_indent="  ", subsequent_indent="      ")
                              for route, text in CONTROL_ROUTE_HELP),
                            "See docs/simulator.md."])
