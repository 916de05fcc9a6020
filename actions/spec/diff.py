"""Drift: what a (newer) spec adds, removes or changes compared with the checked-in manifests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SpecDiff", "diff_spec"]


@dataclass
class SpecDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}

    def text(self) -> str:
        return "no differences"


def diff_spec(new_spec: Path) -> SpecDiff:
    raise NotImplementedError
