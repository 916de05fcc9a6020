"""Standard tests generated from the manifests: each new manifest gets them for free.

They check the manifest on its own (schemas, examples, conventions), against OpenAI's published
spec in ``shared/openapi`` (operation, fields, required, enums, ranges) and against the seed's
Rewst fields. Running every example end to end lives in ``tests/test_actions.py`` (simulator).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

import actions
from actions import ActionManifest, coerce_inputs, load_manifest
from actions.spec import expected_name
from integration.errors import InputError, ManifestError

REPO = Path(__file__).resolve().parents[1]
MANIFEST_DIR = REPO / "manifests"
SPEC_DIR = REPO.parent / "shared" / "openapi"
#: Every action in the registry, extra manifest directories included (OPENAI_PACK_MANIFEST_PATH).
NAMES = sorted(actions.registry())
#: Actions that bind no operation of a spec: the generic request reaches any path (actions/openai_request.py).
GENERIC = {"openai_request"}
SPEC_NAMES = [name for name in NAMES if name not in GENERIC]
#: Bounds at the int64 edge (``seed``) say "any integer", not a range worth copying.
_HUGE = 2**53


# ---------------------------------------------------------------- the spec, loaded once per session


@cache
def _load_spec(version: str) -> dict[str, Any] | None:
    path = SPEC_DIR / f"openai-{version}.yaml"
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _spec(version: str) -> dict[str, Any]:
    spec = _load_spec(version)
    if spec is None:
        pytest.skip(f"OpenAI spec {SPEC_DIR / f'openai-{version}.yaml'} not found: the shared/openapi directory "
                    "next to the repository holds the official spec these checks compare against")
    return spec


def _resolve(schema: Any, spec: dict[str, Any]) -> Any:
    for _ in range(32):
        if not (isinstance(schema, dict) and "$ref" in schema):
            break
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _body_properties(schema: Any, spec: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """Every property of a request body, through $ref, allOf, anyOf and oneOf."""
    schema = _resolve(schema, spec)
    if not isinstance(schema, dict) or depth > 8:
        return {}
    found = dict(schema.get("properties", {}))
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            for name, sub in _body_properties(part, spec, depth + 1).items():
                found.setdefault(name, sub)
    return found


def _body_required(schema: Any, spec: dict[str, Any], depth: int = 0) -> set[str]:
    schema = _resolve(schema, spec)
    if not isinstance(schema, dict) or depth > 8:
        return set()
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        required |= _body_required(part, spec, depth + 1)
    return required


def _branches(schema: Any, spec: dict[str, Any] | None = None, depth: int = 0) -> list[dict[str, Any]]:
    """The alternatives a field accepts (anyOf/oneOf flattened, null branches dropped)."""
    if spec is not None:
        schema = _resolve(schema, spec)
    if not isinstance(schema, dict) or depth > 8:
        return []
    parts = schema.get("anyOf") or schema.get("oneOf")
    if parts:
        return [b for part in parts for b in _branches(part, spec, depth + 1)]
    return [] if schema.get("type") == "null" else [schema]


def _enum_values(branches: list[dict[str, Any]]) -> set[Any]:
    return {v for b in branches for v in b.get("enum", []) if v is not None}


def _open_string(branches: list[dict[str, Any]]) -> bool:
    """Whether some branch takes any string (maybe with a pattern), not only listed values."""
    return any(b.get("type") == "string" and "enum" not in b and "const" not in b for b in branches)


def _bounds(branches: list[dict[str, Any]], keyword: str) -> set[Any]:
    return {b[keyword] for b in branches if keyword in b and abs(b[keyword]) < _HUGE}


def _operation(spec: dict[str, Any], operation_id: str) -> tuple[str, str, dict[str, Any]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return method.upper(), path, operation
    raise AssertionError(f"operationId {operation_id!r} is not in the spec")


def _spec_fields(manifest: ActionManifest) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(body properties, parameters by name, required names) of the manifest's operation."""
    spec = _spec(manifest.openapi.spec)
    _, _, operation = _operation(spec, manifest.openapi.operationId)
    # a ``x[]`` query parameter is the input field ``x`` (the binder sends every list as ``x[]=…``)
    parameters = {p["name"].removesuffix("[]"): p for p in (_resolve(p, spec) for p in operation.get("parameters", []))}
    content_type = "multipart/form-data" if manifest.http.encoding == "multipart" else "application/json"
    body = (operation.get("requestBody") or {}).get("content", {}).get(content_type, {}).get("schema")
    properties = _body_properties(body, spec) if body else {}
    required = (_body_required(body, spec) if body else set()) | {n for n, p in parameters.items() if p.get("required")}
    return properties, parameters, required


def _spec_schema_of(manifest: ActionManifest, field: str) -> Any:
    properties, parameters, _ = _spec_fields(manifest)
    return properties[field] if field in properties else parameters[field].get("schema", {})


def _sent_fields(manifest: ActionManifest) -> list[str]:
    return [f for f in manifest.properties if f not in manifest.pack_only_fields]


# ---------------------------------------------------------------- the manifests themselves


def _file_of(manifest: ActionManifest) -> Path:
    return REPO / manifest.source if manifest.shipped else Path(manifest.source)


def test_the_seven_seed_actions_exist() -> None:
    """The one hard-coded list: the seed's actions must keep existing (their Rewst fields are below)."""
    assert set(SEED_INPUTS) <= set(NAMES)
    shipped = sorted(n for n, m in actions.registry().items() if m.shipped)
    assert shipped == sorted(p.stem for p in MANIFEST_DIR.glob("*.json") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", NAMES)
def test_manifest_is_valid_and_named_after_its_file(name: str) -> None:
    manifest = actions.get(name)
    text = _file_of(manifest).read_text(encoding="utf-8")
    assert load_manifest(text, name).name == name == json.loads(text)["name"]
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", "keep 2-space JSON"
    Draft202012Validator.check_schema(manifest.input)
    Draft202012Validator.check_schema(manifest.output)
    assert manifest.title and manifest.category and manifest.description.strip() and manifest.examples
    if manifest.shipped:  # the generator's rule: snake_case of the operationId, or its override's name
        assert name == expected_name(manifest.openapi.operationId)


@pytest.mark.parametrize("name", NAMES)
def test_every_field_is_documented(name: str) -> None:
    manifest = actions.get(name)
    undocumented = [f for f, schema in manifest.properties.items() if not str(schema.get("description", "")).strip()]
    assert not undocumented, f"fields without a description: {undocumented}"


@pytest.mark.parametrize("name", NAMES)
def test_examples_validate_as_written_and_coerce_to_themselves(name: str) -> None:
    manifest = actions.get(name)
    inputs, outputs = Draft202012Validator(manifest.input), Draft202012Validator(manifest.output)
    for example in manifest.examples:
        inputs.validate(example.input)
        outputs.validate(example.output)
        assert coerce_inputs(example.input, manifest.input) == example.input, example.title
        assert actions.prepare(name, example.input) == example.input, example.title


@pytest.mark.parametrize("name", NAMES)
def test_binding_conventions(name: str) -> None:
    manifest = actions.get(name)
    if "model" in manifest.properties:
        assert manifest.properties["model"].get("x-options-from") == "list_models"
    if manifest.http.method == "GET":
        assert manifest.http.encoding == "none" and manifest.is_idempotent
    if "stream" in manifest.properties:
        assert manifest.http.stream is not None and manifest.http.stream.flag == "stream"
    required = set(manifest.input.get("required", []))
    assert set(manifest.http.path_params) <= required, "a path parameter must be a required input"
    assert not set(manifest.http.path_params) & manifest.pack_only_fields
    if manifest.replaced_by:  # deprecated with no successor (e.g. the video API) names none
        assert manifest.deprecated and manifest.replaced_by in actions.registry()


def test_handlers_belong_to_manifests() -> None:
    """Public modules in actions/ are handlers, one per shipped manifest that needs code (no orphans);
    public packages (the simulator) are reserved names no manifest may take."""
    shipped = {n for n, m in actions.registry().items() if m.shipped}
    handlers = {p.stem for p in (REPO / "actions").glob("*.py") if not p.stem.startswith("_")}
    assert handlers <= shipped, f"handler without a manifest: {sorted(handlers - shipped)}"
    for handler in handlers:
        assert callable(actions.handler(handler))
    packages = {p.name for p in (REPO / "actions").iterdir()
                if p.is_dir() and (p / "__init__.py").exists() and not p.name.startswith("_")}
    assert packages <= actions.RESERVED_NAMES
    assert not actions.RESERVED_NAMES & set(NAMES)


# ---------------------------------------------------------------- against OpenAI's spec


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_operation_exists_in_the_official_spec(name: str) -> None:
    manifest = actions.get(name)
    method, path, _ = _operation(_spec(manifest.openapi.spec), manifest.openapi.operationId)
    assert (method, path) == (manifest.http.method, manifest.http.path)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_sent_fields_exist_in_the_official_spec(name: str) -> None:
    manifest = actions.get(name)
    properties, parameters, required = _spec_fields(manifest)
    sent = set(_sent_fields(manifest))
    assert sent <= set(properties) | set(parameters), f"not in the spec: {sorted(sent - set(properties) - set(parameters))}"
    assert not manifest.pack_only_fields & (set(properties) | set(parameters)), "a pack-only field shadows the API's"
    for field in manifest.http.path_params:
        assert parameters.get(field, {}).get("in") == "path", field
    for field in manifest.http.query:
        assert parameters.get(field, {}).get("in") == "query", field
    assert set(manifest.input.get("required", [])) == required


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_choices_match_the_official_spec(name: str) -> None:
    """Enums equal the spec's: never refuse a value the API takes, nor offer one it refuses."""
    manifest = actions.get(name)
    spec = _spec(manifest.openapi.spec)
    for field in _sent_fields(manifest):
        ours, theirs = _branches(manifest.properties[field]), _branches(_spec_schema_of(manifest, field), spec)
        if _open_string(theirs):
            assert not _enum_values(ours) or _open_string(ours), f"{field}: the API takes any string"
        if _enum_values(ours):
            assert _enum_values(ours) == _enum_values(theirs), field


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_ranges_match_the_official_spec(name: str) -> None:
    manifest = actions.get(name)
    spec = _spec(manifest.openapi.spec)
    for field in _sent_fields(manifest):
        ours, theirs = _branches(manifest.properties[field]), _branches(_spec_schema_of(manifest, field), spec)
        for keyword in ("minimum", "maximum", "minItems", "maxItems", "maxLength"):
            assert _bounds(theirs, keyword) <= _bounds(ours, keyword), (field, keyword)


# ---------------------------------------------------------------- the seed's Rewst fields still work

#: What a Rewst workflow built on the seed's actions sends: every seed field, every value as text.
SEED_INPUTS: dict[str, dict[str, Any]] = {
    "create_chat_completion": {
        "model": "gpt-3.5-turbo", "temperature": "0.7", "top_p": "1", "n": "2", "stream": "false",
        "stop": ["\n\n"], "max_tokens": "256", "presence_penalty": "0", "frequency_penalty": "0.5",
        "logit_bias": '{"50256": -100}', "user": "user-1234",
        "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hello"}],
    },
    "create_completion": {
        "model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "suffix": "", "max_tokens": "7",
        "temperature": "0", "top_p": "1", "n": "1", "stream": "false", "logprobs": "2", "echo": "true",
        "stop": '["\\n"]', "presence_penalty": "0", "frequency_penalty": "0", "best_of": "2",
        "logit_bias": '{"50256": -100}', "user": "user-1234",
    },
    "create_edit": {
        "model": "text-davinci-edit-001", "instruction": "Fix the spelling mistakes", "input": "What day of the wek",
        "n": "1", "temperature": "0.2", "top_p": "1",
    },
    "create_image": {"prompt": "A cute baby sea otter", "n": "2", "size": "1024x1024", "response_format": "url",
                     "user": "user-1234"},
    "list_models": {},
    "retrieve_model": {"model_id": "gpt-4o-mini"},
    "create_moderation": {"input": "I want to kill them.", "model": "text-moderation-latest"},
}


@pytest.mark.parametrize("name", sorted(SEED_INPUTS))
def test_seed_fields_are_still_accepted_as_text(name: str) -> None:
    prepared = actions.prepare(name, SEED_INPUTS[name])
    renamed = {actions.get(name).aliases.get(k, k) for k in SEED_INPUTS[name]}  # e.g. the seed's model_id
    assert set(prepared) <= renamed
    assert all(not isinstance(v, str) for k, v in prepared.items()
               if actions.get(name).properties[k].get("type") in ("integer", "number", "boolean", "object"))


# ---------------------------------------------------------------- refusals and loading errors


_ANYTHING_GOES = object()


def _a_wrong_value(manifest: ActionManifest, schema: dict[str, Any]) -> Any:
    """A value the field's schema refuses: an object where text is expected, broken JSON text where a list or
    an object is (open objects take any keys, so an object may be right for them)."""
    check = Draft202012Validator({**schema, "$defs": manifest.input.get("$defs", {})})
    for candidate in ({"unexpected": ["an object"]}, "not-json-[{", -10**9, [{"unexpected": True}]):
        if not check.is_valid(candidate):
            return candidate
    return _ANYTHING_GOES


@pytest.mark.parametrize("name", NAMES)
def test_every_field_rejects_a_wrong_value_naming_it(name: str) -> None:
    manifest = actions.get(name)
    base = dict(manifest.examples[0].input)
    for field, schema in manifest.properties.items():
        if schema.get("x-pack-only"):
            continue
        wrong = _a_wrong_value(manifest, schema)
        if wrong is _ANYTHING_GOES:
            continue
        with pytest.raises(InputError) as caught:
            actions.prepare(name, base | {field: wrong})
        assert any(p["field"].split("[")[0].split(".")[0] == field for p in caught.value.problems), (field, caught.value)


def test_an_old_name_and_its_new_name_together_are_refused() -> None:
    with pytest.raises(InputError, match="model_id"):
        actions.prepare("retrieve_model", {"model_id": "gpt-4o", "model": "gpt-4o-mini"})
    assert actions.prepare("retrieve_model", {"model_id": "gpt-4o"}) == {"model": "gpt-4o"}


def test_a_broken_manifest_is_reported_with_its_location() -> None:
    broken = json.loads((MANIFEST_DIR / "list_models.json").read_text(encoding="utf-8"))
    broken["input"]["additionalProperties"] = True
    with pytest.raises(ManifestError, match="additionalProperties"):
        load_manifest(json.dumps(broken), "x.json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest("{", "x.json")
    assert actions.registry() is actions.registry()


def test_docs_actions_md_is_current() -> None:
    """docs/actions.md is `openai-pack docs` output for the shipped actions; regenerate it when one changes."""
    shipped = {n: m for n, m in actions.registry().items() if m.shipped}
    committed = (REPO / "docs" / "actions.md").read_text(encoding="utf-8")
    assert committed == actions.render_reference(shipped), "run: openai-pack docs --output docs/actions.md"


# ---------------------------------------------------------------- extra manifest directories


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{manifest['name']}.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def _renamed_copy(source: str, name: str) -> dict[str, Any]:
    manifest = json.loads((MANIFEST_DIR / f"{source}.json").read_text(encoding="utf-8"))
    manifest["name"] = name
    return manifest


def test_an_extra_directory_adds_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "extra"
    path = _write_manifest(extra, _renamed_copy("list_models", "list_models_again"))
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, f"{tmp_path / 'empty-but-listed'}{os.pathsep}")
    with pytest.raises(ManifestError, match="empty-but-listed.*not a directory"):
        actions.registry()
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, str(extra))
    added = actions.get("list_models_again")
    assert not added.shipped and Path(added.source) == path.resolve()
    assert actions.handler("list_models_again") is None  # extra manifests are pass-throughs
    assert set(NAMES) < set(actions.registry())
    monkeypatch.delenv(actions.MANIFEST_PATH_ENV)
    assert "list_models_again" not in actions.registry()


def test_a_name_given_twice_is_an_error_naming_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clash = _write_manifest(tmp_path / "mine", _renamed_copy("list_models", "list_models"))
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, str(tmp_path / "mine"))
    with pytest.raises(ManifestError) as caught:
        actions.registry()
    assert "manifests/list_models.json" in str(caught.value) and str(clash.resolve()) in str(caught.value)
    second = _write_manifest(tmp_path / "other", _renamed_copy("list_models", "mine_only"))
    first = _write_manifest(tmp_path / "third", _renamed_copy("list_models", "mine_only"))
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, os.pathsep.join([str(tmp_path / "other"), str(tmp_path / "third")]))
    with pytest.raises(ManifestError) as caught:
        actions.registry()
    assert str(second.resolve()) in str(caught.value) and str(first.resolve()) in str(caught.value)


def test_a_reserved_name_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_manifest(tmp_path, _renamed_copy("list_models", "simulator"))
    monkeypatch.setenv(actions.MANIFEST_PATH_ENV, str(tmp_path))
    with pytest.raises(ManifestError, match="reserved"):
        actions.registry()


def test_an_entry_point_adds_a_package_of_manifests(tmp_path: Path) -> None:
    """An installed distribution declaring ``[openai_pack.manifests]`` adds its package's manifests."""
    package = tmp_path / "acme_extras"
    _write_manifest(package, _renamed_copy("list_models", "list_acme_models"))
    (package / "__init__.py").write_text("", encoding="utf-8")
    info = tmp_path / "acme_extras-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-extras\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{actions.ENTRY_POINT_GROUP}]\nacme = acme_extras\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != actions.MANIFEST_PATH_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    probe = ("import actions; m = actions.get('list_acme_models'); "
             "print(m.shipped, m.source.endswith('list_acme_models.json'), len(actions.registry()))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", str(len(NAMES) + 1)]


# ---------------------------------------------------------------- the meta-schema's other refusals


def test_a_foreign_or_misspelt_keyword_is_refused_at_load() -> None:
    manifest = _renamed_copy("create_moderation", "create_moderation")
    manifest["input"]["properties"]["model"]["nullable"] = True
    with pytest.raises(ManifestError, match=r"input\.properties\.model: 'nullable' is not a JSON Schema 2020-12"):
        load_manifest(json.dumps(manifest), "x.json")
    manifest["input"]["properties"]["model"].pop("nullable")
    manifest["output"]["maxitems"] = 3
    with pytest.raises(ManifestError, match="output: 'maxitems'"):
        load_manifest(json.dumps(manifest), "x.json")


@pytest.mark.parametrize("bad", [
    {"type": "strin"}, {"minimum": "x"}, {"items": [{"type": "string"}]}, {"required": ["a", "a"]},
    {"deprecated": "yes"}, {"prefixItems": 3}, {"allOf": {}}, {"enum": "x"}, {"$ref": 5},
    {"properties": {"b": {"type": ["string", "strin"]}}}, {"$defs": {"inner": {"maxLength": -1}}},
])
def test_the_load_time_meta_schema_check_refuses_what_2020_12_refuses(bad: dict[str, Any]) -> None:
    """The loader checks shipped schemas with a compiled draft-07 meta-schema where that is exact (ms, not 8 s for
    ~270 manifests); the verdict must stay the full 2020-12 check's, in the schema and in its $defs alike."""
    manifest = _renamed_copy("create_moderation", "create_moderation")
    for where in ("field", "def"):
        schema = manifest["input"]["properties"]["model"] = {"description": "d"}
        if where == "field":
            schema.update(bad)
        else:
            schema["$ref"] = "#/$defs/Shape"
            manifest["input"]["$defs"] = {"Shape": {"description": "shape", **bad}}
        with pytest.raises(SchemaError):
            Draft202012Validator.check_schema(manifest["input"])
        with pytest.raises(ManifestError, match="input is not a valid JSON Schema"):
            load_manifest(json.dumps(manifest), "x.json")


def test_a_file_field_needs_a_multipart_binding() -> None:
    manifest = _renamed_copy("create_moderation", "create_moderation")
    manifest["input"]["properties"]["input"] = {"type": "string", "format": "binary", "description": "A file."}
    with pytest.raises(ManifestError, match="multipart"):
        load_manifest(json.dumps(manifest), "x.json")
    manifest["http"]["encoding"] = "multipart"
    assert load_manifest(json.dumps(manifest), "x.json").file_fields == {"input"}


@pytest.mark.parametrize("name", NAMES)
def test_every_manifest_schema_takes_the_compiled_fast_path(name: str) -> None:
    """Not a correctness rule (a 2020-12-only keyword is validated completely, see test_coerce_validate)
    but a speed one: shipped schemas stay in the subset the compiled check implements exactly."""
    manifest = actions.get(name)
    assert actions.uses_fast_path(manifest.input), "input uses a keyword only the slow complete validator knows"


@pytest.mark.parametrize("name", NAMES)
def test_token_estimate_comes_from_the_manifest(name: str) -> None:
    manifest = actions.get(name)
    for example in manifest.examples:
        estimate = manifest.estimate_tokens(example.input)
        sent = {k: v for k, v in example.input.items() if k not in manifest.file_fields}  # files are not tokens
        assert estimate >= len(json.dumps(sent)) // 8
        caps = [f for f in manifest.budget_fields("output-cap") if isinstance(example.input.get(f), int)]
        if caps:
            assert estimate >= example.input[caps[0]]
    for field in manifest.budget_fields("output-cap") + manifest.budget_fields("choices"):
        assert manifest.properties[field].get("type") == "integer", field


def test_budget_hints_drive_the_estimate() -> None:
    chat = actions.get("create_chat_completion")
    base = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    prompt_only = actions.get("create_moderation").estimate_tokens({"input": "x" * 400})
    assert 100 <= prompt_only < 120
    assert chat.estimate_tokens(base | {"max_tokens": 1000, "n": 3}) >= 3000
    assert chat.estimate_tokens(base) >= 100 + 256  # an answer cap exists but none was given
