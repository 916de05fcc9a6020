"""Serving the simulator from a shell: ``serve()`` (typed; ``openai-pack simulate`` calls it) and ``main()``
(``python -m actions.simulator``, argparse over the same options, plus ``extract-spec``)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from actions.simulator.extract import DATA_FILE, DEFAULT_DIRECTORY, extract, write
from actions.simulator.server import Simulator

__all__ = ["BANNER", "DEFAULT_PORT", "HELP", "main", "serve"]

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
EPILOG = """control routes (no key needed, not counted as calls):
  POST /v1/_sim/faults    script a fault: {"kind": "status|drop|malformed|hang|latency", "status": 429,
                          "path": "/chat/completions", "method": "POST", "times": 1, "latency": 2,
                          "headers": {...}, "error_code": "...", "body": ...}; GET lists them
  POST /v1/_sim/reset     clear faults, counters, kept requests and the rate-limit window
  GET  /v1/_sim/stats     {"calls", "by_route", "in_flight", "max_in_flight"}
  GET  /v1/_sim/requests  the requests received (?limit=N for the last N): method, path, query, headers,
                          body, exactly as sent except the --api-key-env key, shown as <api-key>
See docs/simulator.md."""


def serve(port: int = DEFAULT_PORT, *, latency: float = 0.0, api_key_env: str | None = None,
          auth: Placement = "bearer", auth_name: str | None = None, auth_prefix: str = "",
          rate_limit_rpm: int | None = None, legacy_edits: bool = True,
          announce: Callable[[str], None] = print, until: threading.Event | None = None) -> int:
    """Serve until Ctrl-C (or ``until`` is set); the exit code: 0, or 2 when the key variable is unset."""
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            print(f"error: environment variable {api_key_env} is not set or empty", file=sys.stderr)
            return 2
    if rate_limit_rpm is not None and rate_limit_rpm < 1:
        print("error: --rate-limit-rpm must be at least 1", file=sys.stderr)
        return 2
    placement: dict[str, str] = {"placement": auth}
    if auth in ("header", "query"):
        placement |= {"name": auth_name or ("X-Api-Key" if auth == "header" else "api_key"), "prefix": auth_prefix}
    try:
        sim = Simulator(port, latency=latency, api_key=key, auth=placement, legacy_edits=legacy_edits,
                        rate_limit_rpm=rate_limit_rpm).start()
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        announce(f"{BANNER}. Answers are canned and deterministic; nothing is sent to OpenAI.")
        announce(f"base URL: {sim.url}")
        where = {"bearer": "Authorization: Bearer", "header": f"header {placement.get('name')}",
                 "query": f"query parameter {placement.get('name')}"}[auth]
        announce(f"key: required in {where}" if key else "key: not required (add the integration with --auth none)")
        announce(f"control: {sim.url}/_sim/faults, /_sim/stats, /_sim/requests, /_sim/reset   Ctrl-C to stop.")
        sys.stdout.flush()
        with_stop = until or threading.Event()
        try:
            with_stop.wait()
        except KeyboardInterrupt:
            announce("stopped")
    finally:
        sim.stop()
    return 0


def _extract_main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m actions.simulator extract-spec",
                                     description="Regenerate the simulator's spec data from OpenAI's OpenAPI files.")
    parser.add_argument("directory", nargs="?", default=str(DEFAULT_DIRECTORY),
                        help="Folder holding openai-2026-08.yaml and openai-2023-12.yaml.")
    parser.add_argument("--output", default=str(DATA_FILE))
    options = parser.parse_args(args)
    data = extract(options.directory)
    write(data, Path(options.output))
    print(f"wrote {len(data['operations'])} operations to {options.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m actions.simulator [options]`` or ``python -m actions.simulator extract-spec [DIR]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["extract-spec"]:
        return _extract_main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m actions.simulator", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=f"{BANNER}: a loopback OpenAI-compatible server for tests and demos.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=HELP["port"])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"], help="Always 127.0.0.1.")
    parser.add_argument("--latency", type=float, default=0.0, help=HELP["latency"])
    parser.add_argument("--api-key-env", metavar="NAME", help=HELP["api_key_env"])
    parser.add_argument("--auth", choices=["bearer", "header", "query"], default="bearer", help=HELP["auth"])
    parser.add_argument("--auth-name", help=HELP["auth_name"])
    parser.add_argument("--auth-prefix", default="", help=HELP["auth_prefix"])
    parser.add_argument("--rate-limit-rpm", type=int, help=HELP["rate_limit_rpm"])
    parser.add_argument("--no-legacy-edits", action="store_true", help=HELP["no_legacy_edits"])
    options = parser.parse_args(args)
    return serve(options.port, latency=options.latency, api_key_env=options.api_key_env, auth=options.auth,
                 auth_name=options.auth_name, auth_prefix=options.auth_prefix, rate_limit_rpm=options.rate_limit_rpm,
                 legacy_edits=not options.no_legacy_edits)
