"""OpenAI's published spec as the generator reads it: operations, their parameters and bodies.

The YAML is parsed once per run (the 3 MB file takes about a second with the C loader); schemas are
converted to JSON Schema 2020-12 by the same function the simulator's extraction uses, so the
manifests and the simulator read the spec the same way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from actions.simulator.extract import load_yaml, to_json_schema

__all__ = ["REPO", "SPEC_ENV", "SpecOperation", "default_spec_path", "load_spec", "operations", "ref_name",
           "resolve", "spec_label"]

REPO = Path(__file__).resolve().parents[2]
#: Overrides the spec file the generator reads (default: ../shared/openapi/openai-2026-08.yaml).
SPEC_ENV = "OPENAI_PACK_SPEC"
_DEFAULT_SPEC = REPO.parent / "shared" / "openapi" / "openai-2026-08.yaml"
_METHODS = ("get", "post", "put", "patch", "delete")
_REF = "#/components/schemas/"
_LABEL = re.compile(r"(\d{4}-\d{2})")


def default_spec_path() -> Path:
    """The spec the checked-in manifests come from: ``$OPENAI_PACK_SPEC`` or ../shared/openapi's 2026-08 file."""
    return Path(os.environ.get(SPEC_ENV) or _DEFAULT_SPEC)


def spec_label(path: Path) -> str:
    """The version label manifests record in ``openapi.spec`` (``openai-2026-08.yaml`` → ``2026-08``)."""
    found = _LABEL.search(path.name)
    return found.group(1) if found else "2026-08"


def load_spec(path: Path) -> dict[str, Any]:
    """The parsed spec (cached per file and modification time: callers only read it)."""
    stat = path.stat()
    return _load_spec(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@cache
def _load_spec(path: str, _mtime: int, _size: int) -> dict[str, Any]:
    spec = load_yaml(Path(path))
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise ValueError(f"{path}: not an OpenAPI document (no paths)")
    return spec


def ref_name(ref: str) -> str:
    return ref.removeprefix(_REF)


def resolve(schema: Any, spec: dict[str, Any]) -> Any:
    """Follow ``$ref`` to components (a bounded walk: a ref cycle stops rather than loops)."""
    for _ in range(32):
        if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
            return schema
        schema = spec.get("components", {}).get("schemas", {}).get(ref_name(schema["$ref"]), {})
    return schema


@dataclass
class SpecOperation:
    """One operation: where it lives and its raw OpenAPI parts."""

    operation_id: str
    method: str
    path: str
    raw: dict[str, Any]
    parameters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tag(self) -> str | None:
        tags = self.raw.get("tags") or []
        return str(tags[0]) if tags else None

    @property
    def request_types(self) -> tuple[str, ...]:
        return tuple(sorted((self.raw.get("requestBody") or {}).get("content") or {}))

    def request_schema(self, content_type: str) -> Any:
        return (((self.raw.get("requestBody") or {}).get("content") or {}).get(content_type) or {}).get("schema")

    @property
    def success(self) -> tuple[int, dict[str, Any]]:
        """The first 2xx answer: (status, content by type)."""
        for status in sorted(self.raw.get("responses") or {}, key=str):
            if str(status).startswith("2"):
                answer = self.raw["responses"][status] or {}
                return int(status), answer.get("content") or {}
        return 0, {}

    @property
    def response_types(self) -> tuple[str, ...]:
        return tuple(sorted(self.success[1]))

    def response_schema(self) -> Any:
        return (self.success[1].get("application/json") or {}).get("schema")


def operations(spec: dict[str, Any]) -> list[SpecOperation]:
    """Every operation in document order (paths, then methods in a fixed order)."""
    found: list[SpecOperation] = []
    for path, item in spec["paths"].items():
        if not isinstance(item, dict):
            continue
        shared = [p for p in item.get("parameters") or [] if isinstance(p, dict)]
        for method in _METHODS:
            raw = item.get(method)
            if not isinstance(raw, dict) or "operationId" not in raw:
                continue
            own = [p for p in raw.get("parameters") or [] if isinstance(p, dict)]
            params = [_resolve_parameter(p, spec) for p in shared + own]
            found.append(SpecOperation(str(raw["operationId"]), method.upper(), str(path), raw, params))
    return found


def _resolve_parameter(param: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = param.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/parameters/"):
        return dict(spec.get("components", {}).get("parameters", {}).get(ref.rsplit("/", 1)[-1], {}))
    return param


def converted(schema: Any) -> Any:
    """An OpenAPI schema node as JSON Schema 2020-12 with refs into ``#/$defs`` (prose dropped)."""
    return to_json_schema(schema)
