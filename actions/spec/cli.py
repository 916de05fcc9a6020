"""The ``generate`` and ``diff`` commands, shared by ``python -m actions.spec`` and ``openai-pack spec``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "parser"]


def parser(prog: str = "python -m actions.spec") -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog=prog, description="Manifests from OpenAI's spec, and drift against it.")
    commands = root.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write manifests/*.json and docs/coverage.md from the spec")
    generate.add_argument("--spec", type=Path, help="the spec file (default: $OPENAI_PACK_SPEC or "
                          "../shared/openapi/openai-2026-08.yaml)")
    generate.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file would change")
    diff = commands.add_parser("diff", help="operations and fields that differ between NEW_SPEC and the manifests "
                               "(exit 1 when they differ)")
    diff.add_argument("new_spec", type=Path, metavar="NEW_SPEC")
    diff.add_argument("--json", action="store_true", help="print the differences as JSON")
    return root


def main(argv: list[str] | None = None, prog: str = "python -m actions.spec") -> int:
    """Exit codes: 0 nothing to do or no drift, 1 files out of date or drift found, 2 bad input."""
    args = parser(prog).parse_args(argv)
    import yaml

    from actions.spec.source import default_spec_path

    try:
        if args.command == "generate":
            return _generate(args.spec or default_spec_path(), args.check)
        return _diff(args.new_spec, args.json)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # a bad spec file is reported, not a traceback
        sys.stderr.write(f"error: {exc}\n")
        return 2


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _generate(spec_path: Path, check: bool) -> int:
    from actions.spec.generate import build, differences, write

    plan = build(spec_path)
    covered = sum(e.status == "covered" for e in plan.entries)
    if check:
        stale = differences(plan)
        for name in stale:
            _say(f"out of date: {name}")
        _say(f"{covered} of {len(plan.entries)} operations covered; "
             f"{'up to date' if not stale else f'{len(stale)} file(s) out of date (run make generate)'}")
        return 1 if stale else 0
    changed = write(plan)
    for name in changed:
        _say(f"wrote {name}")
    _say(f"{covered} of {len(plan.entries)} operations covered; {len(changed)} file(s) changed")
    return 0


def _diff(new_spec: Path, as_json: bool) -> int:
    import json

    from actions.spec.diff import diff_spec

    result = diff_spec(new_spec)
    sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n" if as_json else result.text())
    return 1 if result.differs else 0
