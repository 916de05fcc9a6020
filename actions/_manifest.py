"""The manifest meta-schema: what one ``manifests/<name>.json`` must hold, and loading them all.

The manifest is the action. Validation, coercion, CLI help, docs, the simulator's routes and
the Celery task names are all derived from it, so it is checked strictly when loaded.

Manifests come from the ``manifests`` package and from extra directories, so users can add
actions (e.g. an OpenAI-compatible server's extras) without forking: the directories listed in
``OPENAI_PACK_MANIFEST_PATH`` (``os.pathsep``-separated) and those named by installed
distributions under the ``openai_pack.manifests`` entry point group. A name given twice is an
error naming both files, never a silent override.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from functools import cache, cached_property
from importlib import metadata, resources
from importlib.abc import Traversable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from actions._validate import check_schema, unsupported_keywords
from integration.errors import ManifestError

__all__ = ["ENTRY_POINT_GROUP", "MANIFEST_PATH_ENV", "PAGINATION_FIELDS", "ActionManifest", "Example", "HttpBinding",
           "Pagination", "Stream", "load_all", "load_manifest", "manifest_sources"]

#: Extra manifest directories, ``os.pathsep``-separated (read when the registry is first loaded).
MANIFEST_PATH_ENV = "OPENAI_PACK_MANIFEST_PATH"
#: Entry point group: each entry names a package holding ``*.json`` manifests, or a callable returning a directory.
ENTRY_POINT_GROUP = "openai_pack.manifests"
#: Module and package names in ``actions`` that are not handlers; no action may take one of them.
RESERVED_NAMES = frozenset({"simulator", "spec"})
#: Output tokens assumed when an action has an output cap field and none was given.
DEFAULT_OUTPUT_TOKENS = 256

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
#: Headers the integration and the client own; a manifest may not set them.
_RESERVED_HEADERS = frozenset({"authorization", "openai-organization", "openai-project", "content-length",
                               "content-type", "host", "user-agent"})
#: The pack-only inputs every paginated action declares: walk every page, and stop after this many items.
PAGINATION_FIELDS = ("fetch_all", "max_items")
_PATH_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

#: Keywords the pack adds to JSON Schema (ignored by validators, read by the pack).
PACK_KEYWORDS = {
    "x-options-from": "the field's choices come from this action's output (e.g. list_models)",
    "x-pack-only": "a pack option, never sent to the API",
    "x-aliases": "older names the field is still accepted under (e.g. the seed's model_id for model)",
    "x-budget": "how the field counts for a token budget: 'output-cap' (caps the answer's tokens) or 'choices' "
                "(the number of answers)",
    "x-max-bytes": "largest file a file field (format: binary) accepts, in bytes",
}
_BUDGET_ROLES = {"output-cap", "choices"}


class OpenApiRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    operationId: str  # noqa: N815 - OpenAPI's own spelling
    spec: str = Field("2026-08", pattern=r"^\d{4}-\d{2}$",
                      description="Which spec version (shared/openapi/openai-<spec>.yaml) holds the operation.")


class Stream(BaseModel):
    """How a streamed answer is read back into one response of the non-streamed shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: str = Field("stream", description="Input field (body or query) that turns streaming on.")
    assemble: Literal["chat_completion", "completion", "response", "transcription", "image", "run"]


class Pagination(BaseModel):
    """How a list action pages, so ``fetch_all`` can walk it (``actions/_pages.py``).

    ``cursor``: the request's ``after`` is the previous page's ``last_id`` (else its last item's ``id``) while
    ``has_more`` is true. ``page``: the request's ``page`` is the previous answer's ``next_page`` while it is set
    (the usage reports).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    style: Literal["cursor", "page"]
    param: str = Field(description="The query field that carries the cursor (after, page).")
    items: str = Field("data", description="The output field holding the page's items.")


class HttpBinding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["GET", "POST", "DELETE"]
    path: str = Field(description="Relative to the integration's base_url; {field} is taken from input.")
    query: tuple[str, ...] = Field((), description=(
        "Input fields sent as query parameters. Lists go as repeated name[]=value and objects as "
        "name[key]=value (the brackets form OpenAI's SDKs send)."))
    headers: dict[str, str] = Field(default_factory=dict, description=(
        "Constant headers every request of the action carries (e.g. OpenAI-Beta: assistants=v2)."))
    header_params: dict[str, str] = Field(default_factory=dict, description=(
        "Input field -> the header it is sent as (a list is joined with commas)."))
    key: Literal["api", "admin"] = Field("api", description=(
        "Which of the integration's keys the action sends: the API key, or the Admin API key "
        "(OpenAI's /organization endpoints)."))
    encoding: Literal["json", "multipart", "none"] = "json"
    stream: Stream | None = None
    answer: Literal["json", "empty", "binary"] = Field(
        "json", description="What a success answers: a JSON object, nothing (the binder returns a small result), or "
                            "bytes (saved to ``save_to`` or returned as base64; see actions/_outputs.py).")
    pagination: Pagination | None = None

    @model_validator(mode="after")
    def _check_headers(self) -> HttpBinding:
        for header in [*self.headers, *self.header_params.values()]:
            if not _HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not a valid HTTP header name")
            if header.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {header!r} is set by the integration or the client, not a manifest")
        for header, value in self.headers.items():
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise ValueError(f"the value of header {header!r} holds a control character")
        return self

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

    _source: str = PrivateAttr("<manifest>")
    _shipped: bool = PrivateAttr(False)

    @property
    def source(self) -> str:
        """Where the manifest was read from (a path, or ``manifests/<name>.json`` for shipped ones)."""
        return self._source

    @property
    def shipped(self) -> bool:
        """Whether the pack itself ships it (only those may have a handler module in ``actions``)."""
        return self._shipped

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

    @cached_property
    def file_fields(self) -> frozenset[str]:
        """Input fields that carry files (``format: binary``, or a list of them): sent as multipart files."""
        return frozenset(name for name, schema in self.properties.items() if _is_file_schema(schema))

    def budget_fields(self, role: str) -> list[str]:
        """The input fields marked ``x-budget: <role>``, in declaration order."""
        return [name for name, schema in self.properties.items() if schema.get("x-budget") == role]

    def estimate_tokens(self, inputs: dict[str, Any]) -> int:
        """A cheap upper-ish token estimate for a rate budget, from the manifest alone (no field names in code).

        About 4 characters per token of what is sent, plus the answer's cap (the first ``x-budget:
        output-cap`` field given, else ``DEFAULT_OUTPUT_TOKENS`` when the action has such a field)
        times the number of answers (an ``x-budget: choices`` field, default 1).
        """
        sent = {k: v for k, v in inputs.items() if k not in self.pack_only_fields and k not in self.file_fields}
        prompt = len(json.dumps(sent, ensure_ascii=False, default=str)) // 4
        caps = self.budget_fields("output-cap")
        if not caps:
            return prompt
        given = next((inputs[k] for k in caps if isinstance(inputs.get(k), int)), DEFAULT_OUTPUT_TOKENS)
        choices = next((inputs[k] for k in self.budget_fields("choices") if isinstance(inputs.get(k), int)), 1)
        return prompt + int(given) * max(1, int(choices))

    @model_validator(mode="after")
    def _check(self) -> ActionManifest:
        if not _NAME.match(self.name):
            raise ValueError("name must be snake_case")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"name {self.name!r} is reserved for the pack's own modules")
        for label, schema in (("input", self.input), ("output", self.output)):
            try:
                check_schema(schema)
            except SchemaError as exc:
                raise ValueError(f"{label} is not a valid JSON Schema: {exc.message}") from None
            unknown = unsupported_keywords(schema)
            if unknown:
                where, keyword, hint = unknown[0]
                raise ValueError(f"{label}{where}: {keyword!r} is not a JSON Schema 2020-12 keyword{hint} "
                                 "(pack extensions start with 'x-')")
        for name, schema in self.properties.items():
            role = schema.get("x-budget")
            if role is not None and role not in _BUDGET_ROLES:
                raise ValueError(f"input.properties.{name}.x-budget must be one of {sorted(_BUDGET_ROLES)}")
        if self.file_fields and self.http.encoding != "multipart":
            raise ValueError(f"file fields {sorted(self.file_fields)} need http.encoding 'multipart'")
        if self.http.encoding == "multipart" and self.http.method == "GET":
            raise ValueError("a GET request has no multipart body")
        if self.input.get("type") != "object" or self.input.get("additionalProperties") is not False:
            raise ValueError("input must be an object schema with additionalProperties: false")
        props = self.properties
        for field in [*self.http.path_params, *self.http.query, *self.http.header_params]:
            if field not in props:
                raise ValueError(f"http binding uses {field!r}, which input does not declare")
        pages = self.http.pagination
        if pages is not None:
            if pages.param not in self.http.query:
                raise ValueError(f"http.pagination.param {pages.param!r} is not one of http.query")
            for field in PAGINATION_FIELDS:
                if not props.get(field, {}).get("x-pack-only"):
                    raise ValueError(f"a paginated action declares the pack-only input {field!r} (x-pack-only)")
        if self.http.stream and self.http.stream.flag not in props:
            raise ValueError(f"http.stream.flag {self.http.stream.flag!r} is not an input field")
        return self


def _is_file_schema(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("type") == "string" and schema.get("format") == "binary":
        return True
    if schema.get("type") == "array":
        return _is_file_schema(schema.get("items"))
    return any(_is_file_schema(b) for b in schema.get("anyOf", []) + schema.get("oneOf", []))


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


def _json_files(directory: Traversable) -> Iterator[Traversable]:
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json") and not entry.name.startswith("_") and entry.is_file():
            yield entry


def _entry_point_dirs() -> Iterator[tuple[str, Traversable]]:
    """Directories named by installed distributions (a package of manifests, or a callable returning one)."""
    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        label = f"entry point {entry_point.name!r} ({entry_point.value})"
        try:
            target = entry_point.load()
            if callable(target) and not isinstance(target, ModuleType):
                target = target()
            directory = resources.files(target) if isinstance(target, ModuleType) else Path(target)
        except Exception as exc:  # a broken third-party plugin is reported, not a traceback
            raise ManifestError(f"{label}: cannot be loaded: {exc}") from None
        if not directory.is_dir():
            raise ManifestError(f"{label}: {directory} is not a directory")
        yield label, directory


def manifest_sources(extra_path: str | None = None) -> list[tuple[str, Traversable]]:
    """Where manifests are read from, in order: the pack's own, ``OPENAI_PACK_MANIFEST_PATH``, entry points."""
    extra_path = os.environ.get(MANIFEST_PATH_ENV, "") if extra_path is None else extra_path
    sources: list[tuple[str, Traversable]] = [("manifests", resources.files("manifests"))]
    for part in extra_path.split(os.pathsep):
        if not part.strip():
            continue
        directory = Path(part).expanduser()
        if not directory.is_dir():
            raise ManifestError(f"{MANIFEST_PATH_ENV}: {part!r} is not a directory")
        sources.append((str(directory.resolve()), directory))
    sources.extend(_entry_point_dirs())
    return sources


def load_all() -> dict[str, ActionManifest]:
    """Every action: the shipped manifests plus the extra directories (cached per ``OPENAI_PACK_MANIFEST_PATH``)."""
    return _load_all(os.environ.get(MANIFEST_PATH_ENV, ""))


@cache
def _load_all(extra_path: str) -> dict[str, ActionManifest]:
    found: dict[str, ActionManifest] = {}
    for label, directory in manifest_sources(extra_path):
        shipped = label == "manifests"
        for entry in _json_files(directory):
            source = f"manifests/{entry.name}" if shipped else str(Path(str(directory)) / entry.name)
            try:
                text = entry.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(f"{source}: cannot be read: {exc}") from None
            manifest = _parse(text, source)
            if manifest.name != entry.name.removesuffix(".json"):
                raise ManifestError(f"{source}: name {manifest.name!r} does not match the file name")
            if manifest.name in found:
                raise ManifestError(f"action {manifest.name!r} is defined twice: {found[manifest.name].source} "
                                    f"and {source} (rename one; a manifest never silently replaces another)")
            manifest._source, manifest._shipped = source, shipped
            found[manifest.name] = manifest
    return found
