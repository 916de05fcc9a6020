"""Serving the simulator from a shell: ``serve()`` (typed; ``openai-pack simulate`` calls it) and ``main()``
(``python -m actions.simulator``, argparse over the same options, plus ``extract-spec``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from actions.simulator.extract import DATA_FILE, DEFAULT_DIRECTORY, extract, write
from actions.simulator.options import BANNER, CONTROL_ROUTES, DEFAULT_PORT, HELP, Placement
from actions.simulator.server import Simulator
from integration.auth import api_key_problem
from integration.errors import ConfigError

__all__ = ["main", "serve"]

def serve(port: int = DEFAULT_PORT, *, latency: float = 0.0, api_key_env: str | None = None,
          auth: Placement = "bearer", auth_name: str | None = None, auth_prefix: str = "",
          rate_limit_rpm: int | None = None, legacy_edits: bool = True,
          announce: Callable[[str], None] = print, until: threading.Event | None = None) -> int:
    """Serve until Ctrl-C (or until ``until`` is set) and return 0. A bad option is a ``ConfigError`` naming it,
    raised before anything listens."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, not {port}", field="port")
    if not math.isfinite(latency) or latency < 0:
        raise ConfigError(f"latency must be a number of seconds >= 0, not {latency}", field="latency")
    if rate_limit_rpm is not None and rate_limit_rpm < 1:
        raise ConfigError(f"rate_limit_rpm must be at least 1, not {rate_limit_rpm}", field="rate_limit_rpm")
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env, "")
        if not key.strip():
            raise ConfigError(f"environment variable {api_key_env} is not set or empty", field="api_key_env")
        problem = api_key_problem(key)  # a CR in a key would make every header check fail in confusing ways
        if problem is not None:
            raise ConfigError(f"environment variable {api_key_env}: the API key {problem}", field="api_key_env")
    placement: dict[str, str] = {"placement": auth}
    if auth in ("header", "query"):
        placement |= {"name": auth_name or ("X-Api-Key" if auth == "header" else "api_key"), "prefix": auth_prefix}
    try:
        sim = Simulator(port, latency=latency, api_key=key, auth=placement, legacy_edits=legacy_edits,
                        rate_limit_rpm=rate_limit_rpm).start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", field="port") from None
    try:
        announce(f"{BANNER}. Answers are canned and deterministic; nothing is sent to OpenAI.")
        announce(f"base URL: {sim.url}")
        where = {"bearer": "Authorization: Bearer", "header": f"header {placement.get('name')}",
                 "query": f"query parameter {placement.get('name')}"}[auth]
        announce(f"key: required in {where}" if key else "key: not required (add the integration with --auth none)")
        announce(f"control: {sim.url}/_sim/faults, /_sim/stats, /_sim/requests, /_sim/reset   Ctrl-C to stop.")
        sys.stdout.flush()
        try:
            (until or threading.Event()).wait()
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
    parser = argparse.ArgumentParser(prog="python -m actions.simulator", epilog=CONTROL_ROUTES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,  # keep one line per route
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
    try:
        return serve(options.port, latency=options.latency, api_key_env=options.api_key_env, auth=options.auth,
                     auth_name=options.auth_name, auth_prefix=options.auth_prefix,
                     rate_limit_rpm=options.rate_limit_rpm, legacy_edits=not options.no_legacy_edits)
    except ConfigError as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
