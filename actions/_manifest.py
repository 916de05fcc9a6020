"""The manifest meta-schema: what one ``manifests/<name>.json`` must hold, and loading them all.

The manifest is the action. Validation, coercion, CLI help, docs, the simulator's routes and
the Celery task names are all derived from it, so it is checked strictly when loaded.
"""

from __future__ import annotations

import json
import re
from functools import cache, cached_property
from importlib import resources
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from integration.errors import ManifestError

__all__ = ["ActionManifest", "Example", "HttpBinding", "Stream", "load_all", "load_manifest"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

#: Keywords the pack adds to JSON Schema (ignored by validators, read by the pack).
PACK_KEYWORDS = {
    "x-options-from": "the field's choices come from this action's output (e.g. list_models)",
    "x-pack-only": "a pack option, never sent to the API",
    "x-aliases": "older names the field is still accepted under (e.g. the seed's model_id for model)",
}


class OpenApiRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    operationId: str  # noqa: N815 - OpenAPI's own spelling
    spec: Literal["2026-08", "2023-12"] = Field(
        "2026-08", description="Which file in shared/openapi holds the operation (2023-12 only for /edits).")


class Stream(BaseModel):
    """How a streamed answer is read back into one response of the non-streamed shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: str = Field("stream", description="Input field that turns streaming on.")
    assemble: Literal["chat_completion", "completion"]


class HttpBinding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["GET", "POST", "DELETE"]
    path: str = Field(description="Relative to the integration's base_url; {field} is taken from input.")
    query: tuple[str, ...] = Field((), description="Input fields sent as query parameters.")
    encoding: Literal["json", "multipart", "none"] = "json"
    stream: Stream | None = None

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    input: dict[str, Any]
    output: dict[str, Any]


class ActionManifest(BaseModel):
    """One action, validated strictly: an unknown key is a typo, not an extension."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str = Field(description="The Rewst label, e.g. 'Get Model'.")
    category: str = Field(description="The Rewst category, e.g. 'Models'.")
    description: str
    version: str = "1.0.0"
    openapi: OpenApiRef
    http: HttpBinding
    idempotent: bool | None = Field(None, description="Safe to repeat? Defaults to method == GET.")
    deprecated: str | None = Field(None, description="Why and what to use instead, when upstream retired it.")
    replaced_by: str | None = None
    input: dict[str, Any]
    output: dict[str, Any]
    examples: list[Example] = Field(min_length=1)

    @property
    def is_idempotent(self) -> bool:
        return self.http.method == "GET" if self.idempotent is None else self.idempotent

    @property
    def properties(self) -> dict[str, Any]:
        return self.input.get("properties", {})

    @cached_property
    def aliases(self) -> dict[str, str]:
        """Old field name -> field, from ``x-aliases``."""
        return {old: name for name, schema in self.properties.items() for old in schema.get("x-aliases", [])}

    @cached_property
    def pack_only_fields(self) -> frozenset[str]:
        return frozenset(k for k, v in self.properties.items() if v.get("x-pack-only"))

    @model_validator(mode="after")
    def _check(self) -> ActionManifest:
        if not _NAME.match(self.name):
            raise ValueError("name must be snake_case")
        for label, schema in (("input", self.input), ("output", self.output)):
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ValueError(f"{label} is not a valid JSON Schema: {exc.message}") from None
        if self.input.get("type") != "object" or self.input.get("additionalProperties") is not False:
            raise ValueError("input must be an object schema with additionalProperties: false")
        props = self.properties
        for field in [*self.http.path_params, *self.http.query]:
            if field not in props:
                raise ValueError(f"http binding uses {field!r}, which input does not declare")
        if self.http.stream and self.http.stream.flag not in props:
            raise ValueError(f"http.stream.flag {self.http.stream.flag!r} is not an input field")
        return self


def _parse(text: str, source: str) -> ActionManifest:
    try:
        return ActionManifest.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise ManifestError(f"{source}: {where}: {first['msg']}") from None


def load_manifest(path_or_text: str, source: str = "<manifest>") -> ActionManifest:
    """Parse one manifest from JSON text (used by tests and by load_all)."""
    return _parse(path_or_text, source)


@cache
def load_all() -> dict[str, ActionManifest]:
    """Every manifest shipped in the ``manifests`` package, by name (cached: they are read-only)."""
    found: dict[str, ActionManifest] = {}
    for entry in sorted(resources.files("manifests").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json") or entry.name.startswith("_"):
            continue
        manifest = _parse(entry.read_text(encoding="utf-8"), f"manifests/{entry.name}")
        if manifest.name != entry.name.removesuffix(".json"):
            raise ManifestError(f"manifests/{entry.name}: name {manifest.name!r} does not match the file name")
        found[manifest.name] = manifest
    return found
