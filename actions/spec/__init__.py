"""Manifests generated from OpenAI's published spec, and the drift between a spec and the manifests.

    python -m actions.spec generate [--spec FILE] [--check]     # or: make generate
    python -m actions.spec diff NEW_SPEC.yaml                  # or: openai-pack spec diff NEW_SPEC.yaml

Run by maintainers (the YAML is parsed at generation time only); the pack at runtime reads the
checked-in manifests.
"""

from __future__ import annotations

from actions.spec.cli import main
from actions.spec.diff import SpecDiff, diff_spec
from actions.spec.generate import Plan, action_name, build, differences, expected_name, write
from actions.spec.source import default_spec_path

__all__ = ["Plan", "SpecDiff", "action_name", "build", "default_spec_path", "diff_spec", "differences",
           "expected_name", "main", "write"]
