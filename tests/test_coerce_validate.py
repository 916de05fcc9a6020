"""String coercion and validation: the Rewst string forms, wrong values named by field, nothing sent."""

from __future__ import annotations

import pytest

import actions
from actions._coerce import coerce_inputs
from actions._validate import problems_for
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
