"""Standard tests generated from the manifests: each new manifest gets them for free."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

import actions
from actions._manifest import load_all, load_manifest
from integration.errors import InputError, ManifestError

MANIFEST_DIR = Path(__file__).resolve().parents[1] / "manifests"
SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "openapi"
NAMES = sorted(actions.registry())


@cache
def _spec(version: str) -> dict[str, Any]:
    path = SPEC_DIR / f"openai-{version}.yaml"
    if not path.exists():
        pytest.skip(f"{path} is not present (the official spec lives next to the repository)")
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _operation(spec: dict[str, Any], operation_id: str) -> tuple[str, str, dict[str, Any]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return method.upper(), path, operation
    raise AssertionError(f"operationId {operation_id} not in the spec")


def _properties(schema: dict[str, Any], spec: dict[str, Any], depth: int = 0) -> set[str]:
    if depth > 8:
        return set()
    if "$ref" in schema:
        return _properties(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]], spec, depth + 1)
    names = set(schema.get("properties", {}))
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            names |= _properties(part, spec, depth + 1)
    return names


def test_the_seven_actions_ship() -> None:
    assert NAMES == ["create_chat_completion", "create_completion", "create_edit", "create_image", "create_moderation",
                     "list_models", "retrieve_model"]
    assert sorted(p.stem for p in MANIFEST_DIR.glob("*.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_manifest_is_valid_and_named_after_its_file(name: str) -> None:
    manifest = actions.get(name)
    text = (MANIFEST_DIR / f"{name}.json").read_text(encoding="utf-8")
    assert load_manifest(text, name).name == name == json.loads(text)["name"]
    Draft202012Validator.check_schema(manifest.input)
    Draft202012Validator.check_schema(manifest.output)
    assert manifest.title and manifest.description and manifest.examples


@pytest.mark.parametrize("name", NAMES)
def test_examples_validate_after_coercion(name: str) -> None:
    manifest = actions.get(name)
    for example in manifest.examples:
        prepared = actions.prepare(name, example.input)
        Draft202012Validator(manifest.input).validate(prepared)
        Draft202012Validator(manifest.output).validate(example.output)


@pytest.mark.parametrize("name", NAMES)
def test_operation_and_fields_exist_in_the_official_spec(name: str) -> None:
    manifest = actions.get(name)
    spec = _spec(manifest.openapi.spec)
    method, path, operation = _operation(spec, manifest.openapi.operationId)
    assert (method, path) == (manifest.http.method, manifest.http.path)
    known = {p["name"] for p in operation.get("parameters", []) if "name" in p}
    body = (operation.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        known |= _properties(body, spec)
    sent = set(manifest.properties) - manifest.pack_only_fields
    assert sent <= known, f"not in the spec: {sorted(sent - known)}"
    assert name == "".join("_" + c.lower() if c.isupper() else c for c in manifest.openapi.operationId)


@pytest.mark.parametrize("name", NAMES)
def test_binding_conventions(name: str) -> None:
    manifest = actions.get(name)
    if "model" in manifest.properties:
        assert manifest.properties["model"].get("x-options-from") == "list_models"
    if manifest.http.method == "GET":
        assert manifest.http.encoding == "none" and manifest.is_idempotent
    if "stream" in manifest.properties:
        assert manifest.http.stream is not None


@pytest.mark.parametrize("name", NAMES)
def test_every_field_rejects_a_wrong_value_naming_it(name: str) -> None:
    manifest = actions.get(name)
    base = dict(manifest.examples[0].input)
    for field, schema in manifest.properties.items():
        if schema.get("x-pack-only"):
            continue
        structured = schema.get("type") in ("array", "object")
        wrong: Any = "not-json-[{" if structured else {"unexpected": ["an object"]}
        with pytest.raises(InputError) as caught:
            actions.prepare(name, base | {field: wrong})
        assert any(p["field"].split("[")[0].split(".")[0] == field for p in caught.value.problems), (field, caught.value)


def test_a_broken_manifest_is_reported_with_its_location() -> None:
    broken = json.loads((MANIFEST_DIR / "list_models.json").read_text())
    broken["input"]["additionalProperties"] = True
    with pytest.raises(ManifestError, match="additionalProperties"):
        load_manifest(json.dumps(broken), "x.json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest("{", "x.json")
    assert load_all() is load_all()


def test_docs_actions_md_is_current() -> None:
    """docs/actions.md is `openai-pack docs` output; regenerate it when a manifest changes."""
    from actions._docs import render_reference

    committed = (MANIFEST_DIR.parent / "docs" / "actions.md").read_text(encoding="utf-8")
    assert committed == render_reference(actions.registry()), "run: openai-pack docs --output docs/actions.md"
