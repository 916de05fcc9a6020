"""Turn OpenAI's published OpenAPI files into the small JSON file the simulator validates against.

Run by a maintainer when a spec file changes, never at runtime (the 3 MB YAML takes a second to
parse; the committed JSON loads in milliseconds)::

    python -m actions.simulator extract-spec [DIRECTORY] [--output FILE]

It keeps every operation of today's spec (``openai-2026-08.yaml``) plus those only the 2023 spec has
that a manifest may still bind (``createEdit``), so a new manifest never needs a re-extraction. Per
operation: method, path, the request body schema per content type (JSON, multipart) and the JSON schema of the first
2xx answer. Schemas stay as shared ``$defs`` joined by ``$ref`` (inlining them would repeat the big ones
hundreds of times); prose, examples and vendor keys are dropped, and OpenAPI-isms (``nullable``,
overlapping ``oneOf``) become plain JSON Schema 2020-12.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DATA_FILE", "LEGACY_OPERATIONS", "SPECS", "extract", "load_yaml", "to_json_schema", "write"]

DATA_FILE = Path(__file__).with_name("openapi_operations.json")
#: spec label (as manifests name it in ``openapi.spec``) -> file in shared/openapi.
SPECS = {"2026-08": "openai-2026-08.yaml", "2023-12": "openai-2023-12.yaml"}
#: Operations taken from the 2023 spec because today's no longer has them (a manifest still binds them).
LEGACY_OPERATIONS = ("createEdit",)
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "shared" / "openapi"
COMMAND = "python -m actions.simulator extract-spec"

#: OpenAPI prose and vendor keys that carry no validation meaning (``x-*`` are dropped too).
_PROSE_KEYS = frozenset({"description", "title", "example", "examples", "default", "deprecated", "readOnly",
                         "writeOnly", "discriminator", "externalDocs", "xml", "nullable", "format",
                         "$comment", "contentEncoding", "contentMediaType"})
_REF_PREFIX = "#/components/schemas/"
_METHODS = ("get", "post", "put", "patch", "delete")


def load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the 3 MB spec takes ~6 s with the pure-Python loader
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader either way


def _merge_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 ``nullable: true`` as JSON Schema: null joins the type (and the enum, if any)."""
    if not schema:
        return schema  # {} already accepts null
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        out = dict(schema, type=[*types, "null"] if "null" not in types else types)
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if "enum" in schema:
        return dict(schema, enum=[*schema["enum"], None]) if None not in schema["enum"] else schema
    if set(schema) == {"anyOf"}:
        return {"anyOf": _simplify_any_of([*schema["anyOf"], {"type": "null"}])}
    return {"anyOf": [schema, {"type": "null"}]}


def _simplify_any_of(branches: list[Any]) -> list[Any]:
    """Flatten nested anyOfs; ``anyOf: [{type: string}, {type: string, enum: [...]}]`` (OpenAI's "a known model or
    any string") is just a string."""
    flat: list[Any] = []
    for branch in branches:
        is_group = isinstance(branch, dict) and set(branch) == {"anyOf"}
        flat += branch["anyOf"] if is_group else [branch]
    plain = {b["type"] for b in flat if isinstance(b, dict) and set(b) == {"type"} and isinstance(b["type"], str)}
    kept = [b for b in flat
            if not (isinstance(b, dict) and set(b) <= {"type", "enum", "const"} and set(b) != {"type"}
                    and isinstance(b.get("type"), str) and b["type"] in plain)]
    unique: list[Any] = []
    for branch in kept:
        if branch not in unique:
            unique.append(branch)
    return unique


def to_json_schema(node: Any, component: str | None = None) -> Any:
    """One OpenAPI schema node as JSON Schema 2020-12: refs point into ``$defs``, prose dropped. ``component``
    is the name of the schema being converted, the target of its ``$recursiveRef: "#"``."""
    if isinstance(node, list):
        return [to_json_schema(item, component) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _PROSE_KEYS or key.startswith("x-") or key == "$recursiveAnchor":
            continue
        if key == "$ref":
            out[key] = "#/$defs/" + str(value).removeprefix(_REF_PREFIX)
        elif key == "$recursiveRef":  # 2019-09's self reference: the component it sits in
            out["$ref"] = f"#/$defs/{component}" if component and value == "#" else "#"
        elif key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {name: to_json_schema(sub, component) for name, sub in value.items()}
        elif key == "required" and isinstance(value, list):
            out[key] = list(dict.fromkeys(value))  # the spec repeats some names; JSON Schema wants them once
        elif key in ("enum", "const", "type"):
            out[key] = value
        else:
            out[key] = to_json_schema(value, component)
    if out.get("required") == []:
        del out["required"]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        # OpenAPI 3.0's boolean form, still found in the 3.1 file
        if isinstance(out.get(exclusive), bool) and out.pop(exclusive) and bound in out:
            out[exclusive] = out.pop(bound)
    if "$ref" in out and len(out) > 1:  # 2020-12 allows siblings, but one allOf keeps the shapes uniform
        ref = {"$ref": out.pop("$ref")}
        out = {"allOf": [ref, out]}
    if "oneOf" in out:  # OpenAI's oneOfs overlap (a string can match two branches); anyOf is what they mean
        branches = out.pop("oneOf")
        out = {"allOf": [out, {"anyOf": branches}]} if "anyOf" in out else out | {"anyOf": branches}
    if "anyOf" in out:
        out["anyOf"] = _simplify_any_of(out["anyOf"])
        if len(out["anyOf"]) == 1 and isinstance(out["anyOf"][0], dict) and not set(out) - {"anyOf"}:
            out = out["anyOf"][0]
    if "allOf" in out:
        out["allOf"] = [part for part in out["allOf"] if part != {}] or [{}]
    if "allOf" in out and len(out["allOf"]) == 1 and set(out) == {"allOf"}:
        out = out["allOf"][0]
    return _merge_nullable(out) if node.get("nullable") is True else out


def _refs(node: Any) -> set[str]:
    """Names of the ``$defs`` a converted schema refers to directly."""
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {str(node["$ref"]).removeprefix("#/$defs/")} if isinstance(node.get("$ref"), str) else set()
    for key, value in node.items():
        if key not in ("enum", "const"):
            found |= _refs(value)
    return found


def _body_schemas(content: dict[str, Any]) -> dict[str, Any] | None:
    """Request body schema per content type the simulator reads (JSON, multipart); None without a body."""
    found = {content_type: to_json_schema(content[content_type]["schema"])
             for content_type in ("application/json", "multipart/form-data")
             if "schema" in (content.get(content_type) or {})}
    return found or None


def _operations(spec: dict[str, Any], wanted: tuple[str, ...] | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            if wanted is not None and operation["operationId"] not in wanted:
                continue
            entry: dict[str, Any] = {"method": method.upper(), "path": path, "request": None, "response": None}
            entry["request"] = _body_schemas((operation.get("requestBody") or {}).get("content") or {})
            for status in sorted(operation.get("responses") or {}, key=str):
                answer = (operation["responses"][status] or {}).get("content") or {}
                if str(status).startswith("2") and "application/json" in answer:
                    entry["response"] = {"status": int(status),
                                         "schema": to_json_schema(answer["application/json"].get("schema") or {})}
                    break
            found[operation["operationId"]] = entry
    return found


def extract(directory: str | Path = DEFAULT_DIRECTORY) -> dict[str, Any]:
    """Every operation of today's spec and the legacy ones, with the ``$defs`` they reach (per spec file)."""
    data: dict[str, Any] = {"generated_by": COMMAND, "operations": {}, "defs": {}}
    for label, filename in SPECS.items():
        spec = load_yaml(Path(directory) / filename)
        wanted = None if label == "2026-08" else LEGACY_OPERATIONS
        operations = _operations(spec, wanted)
        if wanted is not None and set(wanted) - set(operations):
            raise LookupError(f"{filename} has no operation {', '.join(sorted(set(wanted) - set(operations)))}")
        components = spec.get("components", {}).get("schemas", {})
        defs: dict[str, Any] = {}
        pending = set().union(*(_refs(op["request"]) | _refs(op["response"]) for op in operations.values()))
        while pending:
            name = pending.pop()
            if name in defs or name not in components:
                continue
            defs[name] = to_json_schema(components[name], name)
            pending |= _refs(defs[name]) - set(defs)
        for operation_id, operation in operations.items():
            data["operations"][operation_id] = {"spec": label, **operation}
        data["defs"][label] = dict(sorted(defs.items()))
    return data


def write(data: dict[str, Any], output: Path = DATA_FILE) -> None:
    """Compact, key-sorted JSON: regenerating from the same spec gives the same bytes."""
    output.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
