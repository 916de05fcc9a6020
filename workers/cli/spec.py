"""``openai-pack spec``: the manifests against OpenAI's spec (drift for CI, regeneration for maintainers).

Self-contained: ``main`` registers it in one line. Commands raise the pack's errors; the boundary
reports them (a bad spec file is exit 2 naming it). ``spec diff`` exits 1 when the spec and the
manifests differ, so a scheduled CI job fails when OpenAI changes the API.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from integration.errors import ConfigError
from workers.cli.output import emit

__all__ = ["register"]

spec_app = typer.Typer(help="Compare the actions with OpenAI's spec, or regenerate them from it.",
                       no_args_is_help=True)


def _load_error(path: Path, exc: Exception, field: str) -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
    return ConfigError(f"{path}: cannot be read as an OpenAPI spec ({reason})", field=field)


@spec_app.command("diff")
def spec_diff(
    new_spec: Annotated[Path, typer.Argument(metavar="NEW_SPEC", help="An OpenAPI YAML file (e.g. a newer "
                                                                       "openai-openapi release).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Operations added and removed, and fields added, removed or changed per action. Exit 1 when they differ."""
    import yaml

    from actions.spec import diff_spec

    try:
        result = diff_spec(new_spec)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise _load_error(new_spec, exc, "NEW_SPEC") from None
    if as_json:
        emit(result.as_dict())
    else:
        sys.stdout.write(result.text())
    if result.differs:
        raise typer.Exit(1)


@spec_app.command("generate")
def spec_generate(
    spec: Annotated[Path | None, typer.Option("--spec", help="The spec file (default: $OPENAI_PACK_SPEC or "
                                                              "../shared/openapi/openai-2026-08.yaml).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when a file would change.")] = False,
) -> None:
    """Write manifests/*.json and docs/coverage.md from the spec and manifests/overrides (a checkout only)."""
    import yaml

    from actions.spec import build, default_spec_path, differences, write

    path = spec or default_spec_path()
    try:
        plan = build(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise _load_error(path, exc, "--spec") from None
    changed = differences(plan) if check else write(plan)
    covered = sum(entry.status == "covered" for entry in plan.entries)
    emit({"operations": len(plan.entries), "covered": covered, "checked" if check else "changed": changed})
    if check and changed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(spec_app, name="spec")
