"""String coercion and validation: the Rewst string forms, wrong values named by field, nothing sent."""

from __future__ import annotations

import json
import math

import pytest

import actions
from actions import coerce_inputs, problems_for
from integration.errors import InputError

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model", "messages"],
    "$defs": {
        "Message": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                "name": {"type": "string"},
            },
        }
    },
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Message"}},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
        "stream": {"type": "boolean"},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                           {"type": "null"}]},
        "logit_bias": {"type": "object", "additionalProperties": {"type": "integer", "minimum": -100,
                                                                   "maximum": 100}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "user": {"type": "string"},
    },
}
MSG = [{"role": "user", "content": "hi"}]


def coerce(**fields: object) -> dict:
    return coerce_inputs({"model": "m", "messages": MSG, **fields}, SCHEMA)


@pytest.mark.parametrize(("field", "text", "expected"), [
    ("temperature", "0.7", 0.7),
    ("temperature", "0", 0),
    ("temperature", "null", None),
    ("n", "2", 2),
    ("n", "2.0", 2),
    ("stream", "true", True),
    ("stream", "FALSE", False),
    ("stream", "0", False),
    ("stop", '["a","b"]', ["a", "b"]),
    ("stop", "END", "END"),
    ("stop", "[not json", "[not json"),
    ("logit_bias", '{"50256": -100}', {"50256": -100}),
    ("logit_bias", {"50256": "-100"}, {"50256": -100}),
    ("tags", '["x"]', ["x"]),
    ("user", 42, "42"),
])
def test_rewst_string_forms_are_coerced(field: str, text: object, expected: object) -> None:
    assert coerce(**{field: text})[field] == expected


def test_messages_given_as_json_text_are_parsed_and_coerced_inside() -> None:
    out = coerce_inputs({"model": "m", "messages": '[{"role": "user", "content": "hello"}]'}, SCHEMA)
    assert out["messages"] == [{"role": "user", "content": "hello"}]


def test_empty_string_on_optional_field_means_not_given() -> None:
    out = coerce(temperature="", user="", stop="  ")
    assert "temperature" not in out and "user" not in out and "stop" not in out


def test_real_zero_and_false_are_never_dropped() -> None:
    out = coerce(temperature=0, stream=False, n=0)
    assert out["temperature"] == 0 and out["stream"] is False and out["n"] == 0


def test_null_on_optional_field_that_takes_no_null_means_not_given() -> None:
    out = coerce(n=None, temperature=None)
    assert "n" not in out
    assert out["temperature"] is None  # the schema takes null: it is sent as given


def test_empty_string_on_required_field_is_kept_for_validation_to_judge() -> None:
    assert coerce_inputs({"model": "", "messages": MSG}, SCHEMA)["model"] == ""


def test_caller_dict_is_not_changed() -> None:
    raw = {"model": "m", "messages": MSG, "n": "3"}
    coerce_inputs(raw, SCHEMA)
    assert raw["n"] == "3"


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"temperature": "hot"}, "temperature", "must be a number or null (got the text 'hot')"),
    ({"temperature": "5"}, "temperature", "must be at most 2 (got 5)"),
    ({"n": "2.5"}, "n", "must be a whole number"),
    ({"stream": "maybe"}, "stream", "must be true or false"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 item(s)"),
    ({"logit_bias": '{"1": 500}'}, "logit_bias.1", "must be at most 100"),
    ({"tags": "x,y"}, "tags", "must be a list"),
    ({"temprature": "1"}, "temprature", "did you mean 'temperature'"),
])
def test_wrong_values_are_named_by_field(fields: dict, field: str, words: str) -> None:
    problems = problems_for(coerce(**fields), SCHEMA)
    assert problems, fields
    assert problems[0]["field"] == field
    assert words in problems[0]["reason"]


def test_nested_paths_are_named_like_messages_1_role() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]
    problems = problems_for(coerce_inputs({"model": "m", "messages": messages}, SCHEMA), SCHEMA)
    assert problems == [{"field": "messages[1].role",
                         "reason": "must be one of: 'system', 'user', 'assistant' (got the text 'robot')"}]


def test_missing_required_fields_are_each_named() -> None:
    problems = problems_for(coerce_inputs({}, SCHEMA), SCHEMA)
    assert [p["field"] for p in problems] == ["messages", "model"]
    assert all(p["reason"] == "is required" for p in problems)


def test_manifest_inputs_rejected_before_any_request(simulator, sim_integration) -> None:
    with pytest.raises(InputError) as caught:
        actions.run("create_chat_completion",
                    {"model": "gpt-4o-mini", "messages": '[{"role": "robot", "content": "x"}]',
                     "temperature": "9"}, sim_integration)
    fields = [p["field"] for p in caught.value.problems]
    assert "messages[0].role" in fields and "temperature" in fields
    assert caught.value.field == fields[0]
    assert simulator.calls == 0


# ---------------------------------------------------------------- no validation hole (2020-12 keywords)


@pytest.mark.parametrize(("schema", "value", "field", "words"), [
    ({"type": "object", "properties": {"pair": {"type": "array", "prefixItems": [{"type": "string"},
                                                                                   {"type": "integer"}]}}},
     {"pair": ["a", "b"]}, "pair[1]", "must be a whole number"),
    ({"type": "object", "dependentRequired": {"start": ["end"]}, "properties": {"start": {}, "end": {}}},
     {"start": 1}, "end", "is required when 'start' is given"),
    ({"type": "object", "$defs": {"L": {"type": "array"}}, "properties": {"xs": {"$ref": "#/$defs/L", "maxItems": 1}}},
     {"xs": [1, 2]}, "xs", "at most 1 item(s)"),
    ({"type": "object", "properties": {"o": {"type": "object", "unevaluatedProperties": False,
                                             "properties": {"a": {}}}}},
     {"o": {"a": 1, "b": 2}}, "o", "nevaluated"),
])
def test_2020_12_only_keywords_are_enforced(schema: dict, value: dict, field: str, words: str) -> None:
    """The draft-07 compiled check would pass each of these; the verdict must not depend on the draft."""
    assert not actions.uses_fast_path(schema)
    problems = problems_for(value, schema)
    assert problems and problems[0]["field"] == field and words in problems[0]["reason"], problems


# ---------------------------------------------------------------- D9: JSON text for a union field


@pytest.mark.parametrize("given", ['["a","b","c","d","e"]', ' ["a", "b", "c", "d", "e"] '])
def test_json_array_text_for_a_union_field_is_read_as_the_array_and_validated(given: str) -> None:
    with pytest.raises(InputError) as caught:
        actions.prepare("create_chat_completion", {"model": "m", "messages": MSG, "stop": given})
    assert caught.value.problems == [{"field": "stop", "reason": "must have at most 4 item(s) (got 5)"}]
    assert actions.prepare("create_completion", {"model": "m", "prompt": "p", "stop": '["a","b"]'})["stop"] == ["a", "b"]
    assert actions.prepare("create_completion", {"model": "m", "prompt": "p", "stop": "[END]"})["stop"] == "[END]"


def test_every_top_level_union_field_reads_json_text_as_a_list() -> None:
    """Whatever the manifest: a union taking text and a list reads list text as that list."""
    checked = 0
    for name, manifest in actions.registry().items():
        for field, schema in manifest.properties.items():
            branches = schema.get("anyOf") or schema.get("oneOf") or []
            kinds = {b.get("type") for b in branches}
            if {"string", "array"} <= kinds:
                coerced = coerce_inputs({field: '["x", "y"]'}, manifest.input)[field]
                assert isinstance(coerced, list), (name, field)
                checked += 1
    assert checked >= 3


def test_a_type_list_union_reads_json_text_too() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": ["string", "array"], "maxItems": 2}}}
    assert coerce_inputs({"tags": '["a", "b", "c"]'}, schema) == {"tags": ["a", "b", "c"]}
    assert problems_for(coerce_inputs({"tags": '["a", "b", "c"]'}, schema), schema)[0]["field"] == "tags"
    assert coerce_inputs({"tags": "[a"}, schema) == {"tags": "[a"}


def test_json_text_inside_a_message_stays_text_unless_it_fits() -> None:
    prepared = actions.prepare("create_chat_completion",
                               {"model": "m", "messages": [{"role": "user", "content": "[1, 2, 3]"}]})
    assert prepared["messages"][0]["content"] == "[1, 2, 3]"


# ---------------------------------------------------------------- D7: what JSON cannot carry


@pytest.mark.parametrize("text", ['{"temperature": NaN}', '{"temperature": Infinity}', '{"temperature": -Infinity}'])
def test_nan_and_infinity_in_json_text_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="NaN or Infinity") as caught:
        actions.parse_json_text(text, "--input")
    assert caught.value.problems[0]["field"] == "--input"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_as_values_are_refused_naming_the_field(value: float) -> None:
    with pytest.raises(InputError) as caught:
        actions.prepare("create_chat_completion", {"model": "m", "messages": MSG, "temperature": value})
    assert caught.value.problems[0]["field"] == "temperature"
    assert "finite" in caught.value.problems[0]["reason"]
    with pytest.raises(InputError) as nested:
        actions.prepare("create_chat_completion", {"model": "m", "messages": MSG, "logit_bias": {"1": value}})
    assert nested.value.problems[0]["field"] == "logit_bias.1"


@pytest.mark.parametrize("text", ["NaN", "inf", "-Infinity", "1e999", "9" * 5000])
def test_non_finite_or_absurd_number_text_is_named_not_crashed(text: str) -> None:
    with pytest.raises(InputError) as caught:
        actions.prepare("create_chat_completion", {"model": "m", "messages": MSG, "temperature": text,
                                                   "max_tokens": text})
    assert {p["field"] for p in caught.value.problems} == {"temperature", "max_tokens"}


def test_a_lone_surrogate_is_refused_never_replaced() -> None:
    parsed_text = '{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    with pytest.raises(InputError) as caught:
        actions.prepare("create_chat_completion", parsed_text)
    assert caught.value.problems[0]["field"] == "messages[0].content"
    assert "lone surrogate (U+D800)" in caught.value.problems[0]["reason"]
    with pytest.raises(InputError) as in_key:
        actions.prepare("create_chat_completion", {"model": "m", "messages": MSG, "logit_bias": {"\udc80": 1}})
    assert in_key.value.problems[0]["field"] == "logit_bias.\\udc80"
    with pytest.raises(InputError) as plain:
        actions.prepare("create_moderation", {"input": "x\udfff"})
    assert plain.value.problems[0]["field"] == "input"


def test_json_nested_100000_deep_is_refused_without_recursion() -> None:
    deep = '{"model": "m", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(InputError, match=f"deeper than {actions.MAX_DEPTH}") as caught:
        actions.parse_json_text(deep, "--input")
    assert caught.value.problems[0]["field"] == "--input"
    with pytest.raises(InputError, match="deeper"):
        actions.prepare("create_chat_completion", deep)
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(InputError) as as_value:
        actions.prepare("create_chat_completion", {"model": "m", "messages": MSG, "stop": value})
    assert as_value.value.problems[0]["field"].startswith("stop[0]")
    assert actions.parse_json_text("[" * actions.MAX_DEPTH + "]" * actions.MAX_DEPTH, "x")  # the limit itself is fine


def test_deep_json_text_given_to_a_list_field_is_named() -> None:
    with pytest.raises(InputError) as caught:
        actions.prepare("create_chat_completion", {"model": "m", "messages": "[" * 5000 + "]" * 5000})
    assert caught.value.problems[0]["field"] == "messages"


def test_input_files_must_be_utf8(tmp_path) -> None:
    latin = tmp_path / "latin1.json"
    latin.write_bytes('{"input": "café"}'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text") as caught:
        actions.read_text_file(latin, "--input")
    assert caught.value.problems[0]["field"] == "--input"
    good = tmp_path / "ok.json"
    good.write_bytes(b"\xef\xbb\xbf" + json.dumps({"input": "café"}, ensure_ascii=False).encode())
    assert json.loads(actions.read_text_file(good, "--input")) == {"input": "café"}
    with pytest.raises(InputError, match="cannot read"):
        actions.read_text_file(tmp_path / "missing.json", "--input")
