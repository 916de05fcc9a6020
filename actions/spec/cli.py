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
    from actions.spec.source import default_spec_path

    try:
        if args.command == "generate":
            return _generate(args.spec or default_spec_path(), args.check)
        return _diff(args.new_spec, args.json)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _generate(spec_path: Path, check: bool) -> int:
    from actions.spec.generate import build, differences, write

    plan = build(spec_path)
    covered = sum(e.status == "covered" for e in plan.entries)
    if check:
        stale = differences(plan)
        for name in stale:
            print(f"out of date: {name}")
        print(f"{covered} of {len(plan.entries)} operations covered; "
              f"{'up to date' if not stale else f'{len(stale)} file(s) out of date (run make generate)'}")
        return 1 if stale else 0
    changed = write(plan)
    for name in changed:
        print(f"wrote {name}")
    print(f"{covered} of {len(plan.entries)} operations covered; {len(changed)} file(s) changed")
    return 0


def _diff(new_spec: Path, as_json: bool) -> int:
    import json

    from actions.spec.diff import diff_spec

    result = diff_spec(new_spec)
    print(json.dumps(result.as_dict(), indent=2) if as_json else result.text())
    return 1 if result.differs else 0
