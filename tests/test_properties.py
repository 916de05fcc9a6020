"""Property-based tests (hypothesis): inputs generated from each manifest's schema.

Valid inputs are sent and succeed against the loopback server; invalid ones are refused before
any request with the field named; nothing raises anything but the pack's typed errors.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actions
from actions.simulator import Simulator
from actions.spec.generate import load_overrides
from integration.errors import BadRequestError, InputError, NotFoundError
from integration.model import Integration

SAFE_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,!?{}%#'\"\\", min_size=1, max_size=40).filter(str.strip)  # whitespace-only text means "not given"


def _value(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for values valid under a (manifest-style) JSON schema."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([_value(s, depth + 1) for s in schema["anyOf"] if s.get("type") != "null"])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: 0 < len(s) <= 64)
        return SAFE_TEXT
    if kind == "integer":
        low = schema.get("minimum", 0)
        return st.integers(low, schema.get("maximum", low + 5))
    if kind == "number":
        return st.floats(schema.get("minimum", -1), schema.get("maximum", 1), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(_value(schema.get("items", {"type": "string"}), depth + 1), min_size=low,
                        max_size=min(schema.get("maxItems", low + 2), low + 2))
    if kind == "object" and "properties" in schema and depth < 8:
        required = {k: _value(v, depth + 1) for k, v in schema["properties"].items()
                    if k in schema.get("required", [])}
        return st.fixed_dictionaries(required)
    return st.just({})


# Fields whose valid values depend on each other or on the model; generated separately.
SKIP = {"stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs",
        "top_logprobs", "best_of", "n", "echo", "suffix", "save_to", "file_prefix", "metadata", "store",
        "output_compression", "logit_bias", "messages", "model"}


_STRUCTURAL = frozenset({"$ref", "allOf", "oneOf", "not", "if", "prefixItems", "dependentRequired"})


def _plain(schema: Any) -> bool:
    """Whether ``_value`` can generate valid values for the schema: no references or combinators inside
    (generated manifests keep OpenAI's shared shapes by $ref; their fields come from the examples)."""
    if isinstance(schema, list):
        return all(_plain(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    return not _STRUCTURAL & set(schema) and all(_plain(v) for k, v in schema.items()
                                                 if k not in ("enum", "const", "examples", "default"))


#: Hypothesis examples per action: the seven hand-written seed manifests get the most; the ~250 generated
#: ones share one generator and its tests, so a few each keep the suite within its time budget.
CURATED = {op_id for op_id, (_, override) in load_overrides().items() if "manifest" in override}
#: The generic request reaches any path: a 404 for a generated one is the server's right answer, as for generated actions.
CURATED.discard("openaiRequest")


def _budget(name: str, full: int) -> int:
    return full if actions.get(name).openapi.operationId in CURATED else max(2, full // 8)


def _from_examples(manifest: actions.ActionManifest, field: str) -> st.SearchStrategy[Any] | None:
    """Values the manifest itself vouches for: the field's JSON Schema ``examples``, else its example inputs."""
    schema = manifest.properties[field]
    values = list(schema.get("examples") or []) or [e.input[field] for e in manifest.examples if field in e.input]
    return st.sampled_from(values) if values else None


def _inputs(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Generated inputs for any manifest: fields whose valid values depend on the server (path ids, model
    ids) or on each other (SKIP) come from the manifest's own examples; the rest from the schema."""
    manifest = actions.get(name)
    required = manifest.input.get("required", [])
    vouched = {*manifest.http.path_params, *(f for f, s in manifest.properties.items() if s.get("x-options-from"))}
    fixed: dict[str, Any] = {}
    for field in manifest.properties:
        if field in vouched or (field in SKIP and field in required):
            strategy = _from_examples(manifest, field)
            if strategy is not None:
                fixed[field] = strategy
    if "messages" in manifest.properties and manifest.openapi.operationId in CURATED:  # the chat seeds' roles
        fixed["messages"] = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]),
                                                            "content": SAFE_TEXT}), min_size=1, max_size=3)
    groups = [set(branch.get("required", [])) for branch in manifest.input.get("oneOf") or []]
    chosen = next((group for group in groups if group <= set(manifest.examples[0].input)), set())
    for field in chosen:  # fields in exclusive groups (file_ids or files): the example's group, and only it
        strategy = _from_examples(manifest, field)
        if strategy is not None:
            fixed[field] = strategy
    excluded = set().union(*groups) - chosen if groups else set()
    free = {k: v for k, v in manifest.properties.items()
            if k not in fixed and k not in SKIP and k not in manifest.pack_only_fields and k not in manifest.file_fields
            and k not in excluded and _plain(v)}
    for field in set(required) - set(fixed) - set(free) - SKIP:  # a structured required field: its example
        strategy = _from_examples(manifest, field)
        if strategy is not None:
            fixed[field] = strategy
    optional = {k: _value(v) for k, v in free.items() if k not in required}
    mandatory = {k: _value(v) for k, v in free.items() if k in required}
    return st.fixed_dictionaries({**mandatory, **fixed}, optional=optional)


@pytest.fixture(scope="module")
def sim() -> Any:
    with Simulator(port=0) as simulator:
        yield simulator


@pytest.mark.parametrize("name", sorted(actions.registry()))
def test_valid_generated_inputs_succeed_against_the_server(name: str, sim: Simulator) -> None:
    integration = Integration(name="sim", base_url=sim.url, auth={"placement": "none"}, max_retries=0)

    @settings(max_examples=_budget(name, 25), deadline=None, suppress_health_check=list(HealthCheck))
    @given(_inputs(name))
    def check(inputs: dict[str, Any]) -> None:
        as_strings = {k: (v if v is None or isinstance(v, str | list | dict) else str(v).lower() if isinstance(v, bool) else str(v))
                      for k, v in inputs.items()}
        for variant in (inputs, as_strings):  # typed values, and the Rewst string forms
            try:
                output = actions.run(name, variant, integration)
            except (NotFoundError, BadRequestError):
                # Generated actions: a schema-valid value can still name an object the (stateful) server does not
                # hold (previous_response_id "0") or break a rule the spec does not state; the API's typed refusal
                # is the right answer then. The hand-written seeds must succeed.
                if actions.get(name).openapi.operationId in CURATED:
                    raise
                continue
            assert isinstance(output, dict)

    check()


@pytest.mark.parametrize("name", sorted(actions.registry()))
def test_invalid_inputs_are_refused_before_any_request_with_the_field_named(name: str, sim: Simulator) -> None:
    manifest = actions.get(name)
    integration = Integration(name="sim", base_url=sim.url, auth={"placement": "none"}, max_retries=0)
    fields = sorted(set(manifest.properties) - manifest.pack_only_fields)  # save_to would write files

    @settings(max_examples=_budget(name, 40), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(fields or ["nope"]),
           st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), min_size=1), st.just("[{bad json"),
                     st.just(-10**9), st.just("not-a-number")))
    def check(field: str, bad: Any) -> None:
        before = sim.calls
        inputs = dict(manifest.examples[0].input)
        inputs.pop("save_to", None)
        inputs[field if fields else "unknown_field"] = bad
        try:
            actions.run(name, inputs, integration)
        except InputError as exc:
            assert exc.problems and all(p["field"] is not None for p in exc.problems)
            assert sim.calls == before
        # Some generated values are valid for some fields (a string for a string field): then the call
        # succeeds or the server refuses it with a typed error; never anything untyped.
        except Exception as exc:
            from integration.errors import PackError

            assert isinstance(exc, PackError), repr(exc)

    check()
