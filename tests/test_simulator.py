"""The loopback OpenAI simulator over real HTTP: every manifest's route (parametrized over the registry), shapes,
spec validation, auth placements, SSE, scripted faults, control endpoints, counters, the rate limit, the spec
extraction step and the command line."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

import actions
from actions import simulator as simulator_package
from actions.simulator import (
    FLAG_WORDS,
    MODERATION_CATEGORIES,
    Simulator,
    behaviours,
    bodies,
    options,
    sample_for,
    spec,
    validate_request,
)
from actions.simulator import extract as spec_extract
from tests.conftest import CANARY_KEY, REPO_ROOT, SHARED_OPENAPI

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What day of the week is it?"}]}
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def post(client: httpx.Client, sim: Simulator, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return client.post(f"{sim.url}{path}", json=body, **kwargs)


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Parse a PNG enough to prove it is valid: signature, chunk CRCs, IHDR size, inflatable IDAT."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, {}
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks[kind] = body
        offset += 12 + length
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw[1:4]


# ---------------------------------------------------------------- routes and response shapes


def test_listens_on_loopback_only(simulator: Simulator) -> None:
    assert simulator.url.startswith("http://127.0.0.1:") and simulator.url.endswith("/v1")
    assert simulator.address is not None and simulator.address[0] == "127.0.0.1"


def test_models_list_and_retrieve(simulator: Simulator, client: httpx.Client) -> None:
    listing = client.get(f"{simulator.url}/models")
    assert listing.status_code == 200 and listing.json()["object"] == "list"
    ids = {m["id"] for m in listing.json()["data"]}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini", "gpt-3.5-turbo-instruct", "dall-e-2", "dall-e-3",
            "gpt-image-1", "omni-moderation-latest", "text-moderation-latest", "text-embedding-3-small",
            "whisper-1"} <= ids
    assert all(m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"] in ("openai", "system")
               for m in listing.json()["data"])
    one = client.get(f"{simulator.url}/models/gpt-4o")
    assert one.json() == {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"}
    missing = client.get(f"{simulator.url}/models/gpt-nope")
    assert missing.status_code == 404
    assert missing.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                         "param": "model", "code": "model_not_found"}


def test_chat_completion_shape_usage_and_headers(simulator: Simulator, client: httpx.Client) -> None:
    response = post(client, simulator, "/chat/completions", CHAT | {"n": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-sim") and body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini" and body["system_fingerprint"] == "fp_sim"
    assert isinstance(body["created"], int)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    assert choice["message"]["content"] == "Simulated reply to: What day of the week is it?"
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    usage = body["usage"]
    assert usage["prompt_tokens"] == round(7 * 4 / 3)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > usage["prompt_tokens"]
    assert response.headers["x-request-id"].startswith("req_sim_")
    assert int(response.headers["openai-processing-ms"]) >= 1
    assert all(name in response.headers for name in RATE_HEADERS)
    again = post(client, simulator, "/chat/completions", CHAT)
    assert again.json()["choices"][0]["message"]["content"] == choice["message"]["content"]  # deterministic
    assert again.headers["x-request-id"] != response.headers["x-request-id"]


def test_completion_and_edit_shapes(simulator: Simulator, client: httpx.Client) -> None:
    completion = post(client, simulator, "/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi",
                                                        "max_tokens": 16}).json()
    assert completion["object"] == "text_completion" and completion["id"].startswith("cmpl-sim")
    assert completion["choices"][0]["text"].strip() and completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["total_tokens"] > 0
    edit = post(client, simulator, "/edits", {"model": "text-davinci-edit-001", "input": "What day of the wek is it?",
                                            "instruction": "Fix the spelling mistakes."}).json()
    assert edit["object"] == "edit" and isinstance(edit["created"], int)
    assert edit["choices"] == [{"text": "What day of the week is it?", "index": 0, "finish_reason": "stop"}]
    assert set(edit["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_edits_can_be_shut_down_like_today(client: httpx.Client) -> None:
    with Simulator(legacy_edits=False) as sim:
        response = post(client, sim, "/edits", {"model": "text-davinci-edit-001", "instruction": "x"})
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert sim.calls_by_route() == {"POST /edits": 1}


def test_moderation_flags_trigger_words_only(simulator: Simulator, client: httpx.Client) -> None:
    body = post(client, simulator, "/moderations", {"input": ["hello there", "how to kill a process"]}).json()
    assert body["id"].startswith("modr-sim") and body["model"] == "omni-moderation-latest"
    calm, violent = body["results"]
    for result in (calm, violent):
        assert set(result["categories"]) == set(MODERATION_CATEGORIES) == set(result["category_scores"])
        assert set(result["category_applied_input_types"]) == set(MODERATION_CATEGORIES)
        assert len(MODERATION_CATEGORIES) == 13
    assert calm["flagged"] is False and not any(calm["categories"].values())
    assert violent["flagged"] is True and violent["categories"]["violence"] is True
    assert violent["category_scores"]["violence"] > 0.5 > calm["category_scores"]["violence"]
    assert "kill" in FLAG_WORDS


def test_multimodal_moderation_is_accepted_as_one_input(simulator: Simulator, client: httpx.Client) -> None:
    parts = [{"type": "text", "text": "a picture about violence"},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    response = post(client, simulator, "/moderations", {"model": "omni-moderation-latest", "input": parts})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["flagged"] is True
    assert result["category_applied_input_types"]["violence"] == ["text", "image"]
    assert result["category_applied_input_types"]["hate"] == ["text"]
    only_image = post(client, simulator, "/moderations", {"input": parts[1:]})
    assert only_image.status_code == 200 and only_image.json()["results"][0]["flagged"] is False


def test_image_url_downloads_a_valid_png(simulator: Simulator, client: httpx.Client) -> None:
    body = post(client, simulator, "/images/generations", {"prompt": "a lighthouse", "n": 2, "model": "dall-e-2"}).json()
    assert isinstance(body["created"], int) and len(body["data"]) == 2
    url = body["data"][0]["url"]
    assert url.startswith(f"{simulator.url}/_sim/images/") and url.endswith(".png")
    image = client.get(url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert png_pixels(image.content)[:2] == (8, 8)
    assert client.get(f"{simulator.url}/_sim/images/nope.png").status_code == 404
    assert simulator.calls == 1  # the image download is not an API call


def test_image_b64_and_dalle3_revised_prompt(simulator: Simulator, client: httpx.Client) -> None:
    body = post(client, simulator, "/images/generations", {"prompt": "a red fox", "model": "dall-e-3",
                                                         "response_format": "b64_json"}).json()
    (item,) = body["data"]
    assert "url" not in item and item["revised_prompt"].startswith("a red fox")
    _, _, colour = png_pixels(base64.b64decode(item["b64_json"]))
    other = post(client, simulator, "/images/generations", {"prompt": "a blue whale", "response_format": "b64_json"})
    assert png_pixels(base64.b64decode(other.json()["data"][0]["b64_json"]))[2] != colour  # colour from the prompt
    gpt_image = post(client, simulator, "/images/generations", {"prompt": "x", "model": "gpt-image-1"}).json()
    assert "b64_json" in gpt_image["data"][0] and gpt_image["usage"]["total_tokens"] > 0


def test_unknown_route_wrong_method_and_bad_json(simulator: Simulator, client: httpx.Client) -> None:
    unknown = client.post(f"{simulator.url}/embeddingz", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"
    assert set(unknown.json()["error"]) == {"message", "type", "param", "code"}
    wrong = client.get(f"{simulator.url}/moderations")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert client.delete(f"{simulator.url}/models").status_code == 405
    assert client.post(f"{simulator.url}/models/gpt-4o").status_code == 405
    assert client.get(simulator.url.removesuffix("/v1") + "/chat/completions").status_code == 404
    broken = client.post(f"{simulator.url}/chat/completions", content=b"{not json",
                       headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    assert simulator.calls_by_route() == {"POST /embeddingz": 1, "GET /moderations": 1, "DELETE /models": 1,
                                          "POST /models/{model}": 1, "POST /chat/completions": 1}


def test_keep_alive_serves_several_requests_on_one_connection(simulator: Simulator) -> None:
    """Correct Content-Length on every answer, or the second request on the socket would fail."""
    host, port = simulator.url.removeprefix("http://").split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for path, body in (("/v1/models", None), ("/v1/chat/completions", CHAT), ("/v1/nowhere", None),
                           ("/v1/moderations", {"input": "hi"})):
            payload = json.dumps(body).encode() if body is not None else None
            connection.request("POST" if body else "GET", path, body=payload,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            assert json.loads(response.read()), path
            assert response.getheader("Connection") != "close"
        assert simulator.calls == 4
    finally:
        connection.close()


# ---------------------------------------------------------------- validation against the official spec


@pytest.mark.parametrize(("path", "body", "param", "words"), [
    ("/chat/completions", CHAT | {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role",
     ("'robot'", "'user'", "'assistant'")),
    ("/chat/completions", CHAT | {"temperature": "hot"}, "temperature", ("number", "string")),
    ("/chat/completions", CHAT | {"temperature": 3}, "temperature", ("<= 2",)),
    ("/chat/completions", {"model": "gpt-4o"}, "messages", ("Missing required parameter",)),
    ("/chat/completions", CHAT | {"messages": [{"role": "user"}]}, "messages[0].content", ("Missing",)),
    ("/chat/completions", CHAT | {"messages": [{"role": "user", "content": 5}]}, "messages[0].content",
     ("integer",)),
    ("/chat/completions", CHAT | {"tools": [{"type": "func", "function": {"name": "f"}}]}, "tools[0].type",
     ("'function'",)),
    ("/chat/completions", CHAT | {"response_format": {"type": "json_schema"}}, "response_format.json_schema",
     ("Missing",)),
    ("/completions", {"model": "gpt-3.5-turbo-instruct"}, "prompt", ("Missing",)),
    ("/images/generations", {"prompt": "x", "response_format": "png"}, "response_format", ("'b64_json'",)),
    ("/images/generations", {"prompt": "x", "n": 0}, "n", (">= 1",)),
    ("/moderations", {"input": [{"type": "video", "url": "x"}]}, "input[0].type", ("'image_url'",)),
    ("/edits", {"model": "text-davinci-edit-001"}, "instruction", ("Missing",)),
])
def test_invalid_bodies_get_openai_400_naming_the_param(simulator: Simulator, client: httpx.Client, path: str,
                                                        body: dict[str, Any], param: str,
                                                        words: tuple[str, ...]) -> None:
    response = post(client, simulator, path, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] is None
    assert error["param"] == param
    assert f"'{param}'" in error["message"] and all(word in error["message"] for word in words), error["message"]
    assert response.headers["x-request-id"].startswith("req_sim_")


def test_unknown_parameter_is_refused_like_openai(simulator: Simulator, client: httpx.Client) -> None:
    error = post(client, simulator, "/chat/completions", CHAT | {"temprature": 0.5}).json()["error"]
    assert error == {"message": "Unknown parameter: 'temprature'.", "type": "invalid_request_error",
                     "param": "temprature", "code": "unknown_parameter"}


REAL_WORLD_BODIES = [
    ("/chat/completions", CHAT | {"temperature": 0.2, "top_p": 1, "n": 1, "max_tokens": 50, "presence_penalty": 0,
                                  "frequency_penalty": 0.5, "logit_bias": {"50256": -100}, "stop": "\n", "user": "u1",
                                  "seed": 7, "metadata": {"ticket": "42"}, "store": False}),
    ("/chat/completions", CHAT | {"stop": ["END", "STOP"], "max_completion_tokens": 100, "stream": False}),
    ("/chat/completions", {"model": "gpt-4o", "messages": [
        {"role": "developer", "content": "be brief"}, {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}]}),
    ("/chat/completions", CHAT | {"response_format": {"type": "json_object"}}),
    ("/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "stop": None, "echo": True,
                      "logprobs": 2, "suffix": "!"}),
    ("/images/generations", {"prompt": "x", "model": "dall-e-3", "size": "1792x1024", "quality": "hd",
                             "style": "natural", "response_format": "url", "n": 1}),
    ("/moderations", {"input": "plain text"}),
    ("/edits", {"model": "text-davinci-edit-001", "instruction": "Fix", "input": None, "n": 1, "temperature": 0.5,
                "top_p": 1}),
]


@pytest.mark.parametrize(("path", "body"), REAL_WORLD_BODIES, ids=[f"{p}-{i}" for i, (p, _) in
                                                                    enumerate(REAL_WORLD_BODIES)])
def test_valid_real_world_bodies_are_accepted(simulator: Simulator, client: httpx.Client, path: str,
                                              body: dict[str, Any]) -> None:
    response = post(client, simulator, path, body)
    assert response.status_code == 200, response.text


TICKET_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["category", "urgency", "summary", "tags", "steps"],
    "properties": {
        "category": {"type": "string", "enum": ["hardware", "software", "network"]},
        "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string"},
        "billable": {"type": ["boolean", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
    },
    "$defs": {"step": {"type": "object", "properties": {"order": {"type": "number"}, "text": {"type": "string"}},
                       "required": ["order", "text"], "additionalProperties": False}},
}


def test_json_schema_response_format_gets_content_that_fits(simulator: Simulator, client: httpx.Client) -> None:
    body = CHAT | {"response_format": {"type": "json_schema", "json_schema": {"name": "ticket", "strict": True,
                                                                              "schema": TICKET_SCHEMA}}}
    response = post(client, simulator, "/chat/completions", body)
    assert response.status_code == 200, response.text
    content = json.loads(response.json()["choices"][0]["message"]["content"])
    Draft202012Validator(TICKET_SCHEMA).validate(content)
    assert content["category"] == "hardware" and len(content["tags"]) == 1
    as_object = post(client, simulator, "/chat/completions", CHAT | {"response_format": {"type": "json_object"}})
    assert json.loads(as_object.json()["choices"][0]["message"]["content"])["result"].startswith("Simulated")


def test_tools_get_a_tool_call_with_fitting_arguments(simulator: Simulator, client: httpx.Client) -> None:
    parameters = {"type": "object", "properties": {"city": {"type": "string"},
                                                   "unit": {"type": "string", "enum": ["c", "f"]}},
                  "required": ["city", "unit"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": parameters}},
             {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                                                                                    "properties": {}}}}]
    choice = post(client, simulator, "/chat/completions", CHAT | {"tools": tools}).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
    Draft202012Validator(parameters).validate(json.loads(call["function"]["arguments"]))
    named = post(client, simulator, "/chat/completions", CHAT | {"tools": tools, "tool_choice": {
        "type": "function", "function": {"name": "get_time"}}}).json()["choices"][0]
    assert named["message"]["tool_calls"][0]["function"]["name"] == "get_time"
    plain = post(client, simulator, "/chat/completions", CHAT | {"tools": tools, "tool_choice": "none"}).json()
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["choices"][0]["message"]["content"]


def test_sample_for_covers_common_schema_shapes() -> None:
    assert sample_for({"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]}) == 3
    assert sample_for({"type": "array", "minItems": 2, "items": {"const": "x"}}) == ["x", "x"]
    assert sample_for({"allOf": [{"properties": {"a": {"type": "boolean"}}}, {"properties": {"b": {}}}]}) == {
        "a": True, "b": "simulated"}
    loop = {"type": "object", "properties": {"child": {"$ref": "#"}}}
    assert isinstance(sample_for(loop), dict)  # a recursive schema ends (depth cap) instead of looping


# ---------------------------------------------------------------- auth placements


AUTH_CASES = [
    ({"placement": "bearer"}, lambda key: {"headers": {"Authorization": f"Bearer {key}"}}),
    ({"placement": "header", "name": "X-Api-Key"}, lambda key: {"headers": {"X-Api-Key": key}}),
    ({"placement": "header", "name": "X-Proxy-Auth", "prefix": "Token "},
     lambda key: {"headers": {"X-Proxy-Auth": f"Token {key}"}}),
    ({"placement": "query", "name": "api_key"}, lambda key: {"params": {"api_key": key}}),
]


@pytest.mark.parametrize(("auth", "carry"), AUTH_CASES, ids=["bearer", "header", "header-prefix", "query"])
def test_auth_placements_accept_the_right_key_only(auth: dict[str, str], carry: Any, client: httpx.Client) -> None:
    wrong = CANARY_KEY[::-1]
    with Simulator(api_key=CANARY_KEY, auth=auth) as sim:
        assert client.get(f"{sim.url}/models", **carry(CANARY_KEY)).status_code == 200
        for attempt in (carry(wrong), {}, carry(CANARY_KEY + "x")):
            refused = client.get(f"{sim.url}/models", **attempt)
            assert refused.status_code == 401
            error = refused.json()["error"]
            assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
            assert error["param"] is None
            assert CANARY_KEY not in refused.text and wrong not in refused.text
            assert CANARY_KEY[-6:] not in refused.text and wrong[-6:] not in refused.text
        if auth["placement"] != "bearer":  # the key in the wrong place does not count
            assert client.get(f"{sim.url}/models", headers={"Authorization": f"Bearer {CANARY_KEY}"}).status_code == 401
        assert sim.calls == 4 + (auth["placement"] != "bearer")
        assert CANARY_KEY not in json.dumps(sim.requests)
        assert "<api-key>" in json.dumps(sim.requests[0])
        assert client.get(f"{sim.url}/_sim/stats").status_code == 200  # control routes need no key


def test_recorded_requests_mask_the_key_everywhere_and_keep_org_headers(keyed_simulator: Simulator,
                                                                        client: httpx.Client) -> None:
    body = CHAT | {"messages": [{"role": "user", "content": f"my key is {CANARY_KEY}"}]}
    response = client.post(f"{keyed_simulator.url}/chat/completions", json=body, params={"echo": CANARY_KEY},
                         headers={"Authorization": f"Bearer {CANARY_KEY}", "OpenAI-Organization": "org-acme",
                                  "OpenAI-Project": "proj_1"})
    assert response.status_code == 200  # query parameters are not body parameters: ignored
    assert CANARY_KEY not in response.text and "<api-key>" in response.text  # the reply quotes the prompt, masked
    (record,) = keyed_simulator.requests
    assert record["method"] == "POST" and record["path"] == "/v1/chat/completions"
    assert record["headers"]["authorization"] == "Bearer <api-key>"
    assert record["headers"]["openai-organization"] == "org-acme" and record["headers"]["openai-project"] == "proj_1"
    assert record["query"] == {"echo": "<api-key>"}
    assert record["body"]["messages"][0]["content"] == "my key is <api-key>"
    assert CANARY_KEY not in json.dumps(keyed_simulator.requests)


# ---------------------------------------------------------------- streaming


def sse_events(response: httpx.Response) -> list[Any]:
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("data: [DONE]\n\n")
    events = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: ")
            events.append(block[6:])
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_chat_stream_is_openai_chunks_then_done(simulator: Simulator, client: httpx.Client) -> None:
    plain = post(client, simulator, "/chat/completions", CHAT).json()
    with client.stream("POST", f"{simulator.url}/chat/completions",
                     json=CHAT | {"stream": True, "stream_options": {"include_usage": True}}) as response:
        response.read()
    events = sse_events(response)
    assert response.headers["x-request-id"].startswith("req_sim_")
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "gpt-4o-mini" for e in events)
    assert len({e["id"] for e in events}) == 1
    deltas = [e["choices"][0] for e in events if e["choices"]]
    assert deltas[0]["delta"]["role"] == "assistant"
    pieces = [d["delta"]["content"] for d in deltas[1:] if d["delta"].get("content")]
    assert len(pieces) == 3 and "".join(pieces) == plain["choices"][0]["message"]["content"]
    assert deltas[-1]["finish_reason"] == "stop" and deltas[-1]["delta"] == {}
    assert events[-1]["choices"] == [] and events[-1]["usage"] == plain["usage"]
    assert all(e["usage"] is None for e in events[:-1])
    # the connection stays usable after a chunked stream
    assert post(client, simulator, "/models", None).status_code == 405


def test_completion_stream_and_tool_call_stream(simulator: Simulator, client: httpx.Client) -> None:
    response = post(client, simulator, "/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi",
                                                      "stream": True})
    events = sse_events(response)
    assert all(e["object"] == "text_completion" for e in events)
    assert "".join(e["choices"][0]["text"] for e in events).startswith(" Simulated")
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "integer"}}}}}]
    events = sse_events(post(client, simulator, "/chat/completions", CHAT | {"tools": tools, "stream": True}))
    calls = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "f" and calls[0]["id"].startswith("call_")
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"x": 1}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


# ---------------------------------------------------------------- faults


def test_status_fault_with_retry_after_then_normal(simulator: Simulator, client: httpx.Client) -> None:
    simulator.add_fault({"path": "/chat/completions", "kind": "status", "status": 429, "times": 1,
                         "headers": {"Retry-After": "1"}, "error_code": "rate_limit_exceeded"})
    first = post(client, simulator, "/chat/completions", CHAT)
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert first.json()["error"]["code"] == "rate_limit_exceeded" and first.json()["error"]["type"] == "requests"
    assert first.headers["x-request-id"].startswith("req_sim_")
    assert post(client, simulator, "/chat/completions", CHAT).status_code == 200
    assert simulator.calls == 2  # the faulted request was received and counted


@pytest.mark.parametrize(("status", "error_code", "kind", "code"), [
    (429, "insufficient_quota", "insufficient_quota", "insufficient_quota"),
    (500, None, "server_error", None),
    (503, None, "server_error", None),
    (401, None, "invalid_request_error", "invalid_api_key"),
    (400, None, "invalid_request_error", None),
])
def test_status_fault_error_bodies(simulator: Simulator, client: httpx.Client, status: int, error_code: str | None,
                                   kind: str, code: str | None) -> None:
    simulator.add_fault({"kind": "status", "status": status, "error_code": error_code})
    response = client.get(f"{simulator.url}/models")
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind and response.json()["error"]["code"] == code


def test_status_fault_with_scripted_body(simulator: Simulator, client: httpx.Client) -> None:
    simulator.add_fault({"kind": "status", "status": 502, "body": "<html>bad gateway</html>"})
    simulator.add_fault({"kind": "status", "status": 409, "body": {"error": {"message": "busy", "type": "x",
                                                                             "param": None, "code": "c"}}})
    assert client.get(f"{simulator.url}/models").text == "<html>bad gateway</html>"
    assert client.get(f"{simulator.url}/models").json()["error"]["message"] == "busy"


def test_drop_closes_without_answer_but_counts(simulator: Simulator, client: httpx.Client) -> None:
    simulator.add_fault({"kind": "drop", "path": "/images/generations"})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(client, simulator, "/images/generations", {"prompt": "x"})
    assert simulator.calls == 1 and simulator.requests[0]["body"] == {"prompt": "x"}
    assert post(client, simulator, "/images/generations", {"prompt": "x"}).status_code == 200


def test_malformed_is_200_json_content_type_but_not_json(simulator: Simulator, client: httpx.Client) -> None:
    simulator.add_fault({"kind": "malformed", "method": "POST"})
    response = post(client, simulator, "/chat/completions", CHAT)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_latency_fault_delays_then_answers(simulator: Simulator, client: httpx.Client) -> None:
    simulator.add_fault({"kind": "latency", "latency": 0.2})
    started = time.monotonic()
    assert client.get(f"{simulator.url}/models").status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    client.get(f"{simulator.url}/models")
    assert time.monotonic() - started < 0.2  # used up


def test_hang_times_the_client_out_and_stop_does_not_wait_for_it() -> None:
    with Simulator() as sim:
        sim.add_fault({"kind": "hang", "latency": 0.4})
        with httpx.Client(timeout=httpx.Timeout(5, read=0.1)) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.get(f"{sim.url}/models")
            assert client.get(f"{sim.url}/models", timeout=5).status_code == 200
        sim.add_fault({"kind": "hang"})  # default 30 s
        outcome: list[BaseException] = []

        def hung_call() -> None:
            try:
                httpx.get(f"{sim.url}/models", timeout=10)
            except httpx.TransportError as exc:  # stop() closes the connection: no answer, as expected
                outcome.append(exc)

        thread = threading.Thread(target=hung_call, daemon=True)
        thread.start()
        deadline = time.monotonic() + 2
        while sim.stats()["calls"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
    assert time.monotonic() - started < 2  # stop() woke the hanging handler instead of waiting 30 s
    thread.join(2)
    assert not thread.is_alive() and isinstance(outcome[0], httpx.RemoteProtocolError | httpx.ReadError)


def test_times_counting_matching_and_forever(simulator: Simulator, client: httpx.Client) -> None:
    simulator.add_fault({"kind": "status", "status": 500, "times": 2, "method": "POST", "path": "/moderations"})
    simulator.add_fault({"kind": "status", "status": 418, "times": -1, "path": "/v1/models"})
    assert client.get(f"{simulator.url}/models").status_code == 418
    assert client.get(f"{simulator.url}/models/gpt-4o").status_code == 418  # a path prefix covers sub-paths
    statuses = [post(client, simulator, "/moderations", {"input": "x"}).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert post(client, simulator, "/chat/completions", CHAT).status_code == 200
    assert [client.get(f"{simulator.url}/models").status_code for _ in range(3)] == [418] * 3
    assert simulator.faults[0]["times"] == 0 and simulator.faults[1]["times"] == -1
    with pytest.raises(ValueError, match="kind"):
        simulator.add_fault({"kind": "explode"})


def test_faults_fire_before_auth_and_count(client: httpx.Client) -> None:
    with Simulator(api_key=CANARY_KEY, auth={"placement": "bearer"}) as sim:
        sim.add_fault({"kind": "status", "status": 503})
        assert client.get(f"{sim.url}/models").status_code == 503
        assert client.get(f"{sim.url}/models").status_code == 401
        assert sim.calls == 2


# ---------------------------------------------------------------- control endpoints, counters, rate limit


def test_control_endpoints_over_http(simulator: Simulator, client: httpx.Client) -> None:
    added = client.post(f"{simulator.url}/_sim/faults", json={"kind": "status", "status": 503, "times": 1,
                                                            "path": "/moderations"})
    assert added.status_code == 200
    assert client.post(f"{simulator.url}/_sim/faults", json={"kind": "nope"}).status_code == 400
    assert client.post(f"{simulator.url}/_sim/faults", content=b"[1]").status_code == 400
    assert post(client, simulator, "/moderations", {"input": "x"}).status_code == 503
    assert post(client, simulator, "/moderations", {"input": "x"}).status_code == 200
    stats = client.get(f"{simulator.url}/_sim/stats").json()
    assert stats == {"calls": 2, "by_route": {"POST /moderations": 2}, "in_flight": 0, "max_in_flight": 1}
    assert client.post(f"{simulator.url}/_sim/reset").json() == {"ok": True}
    assert client.get(f"{simulator.url}/_sim/stats").json()["calls"] == 0
    assert simulator.requests == [] and simulator.faults == []
    assert client.get(f"{simulator.url}/_sim/nothing").status_code == 404
    assert simulator.calls == 0  # control routes are not API calls


def test_calls_by_route_and_reset(simulator: Simulator, client: httpx.Client) -> None:
    post(client, simulator, "/chat/completions", CHAT)
    post(client, simulator, "/chat/completions", CHAT)
    client.get(f"{simulator.url}/models/gpt-4o")
    client.get(f"{simulator.url}/models/o3-mini")
    assert simulator.calls_by_route() == {"POST /chat/completions": 2, "GET /models/{model}": 2}
    assert simulator.calls == 4 and len(simulator.requests) == 4
    simulator.reset()
    assert simulator.calls == 0 and simulator.calls_by_route() == {} and simulator.requests == []


def test_max_in_flight_sees_concurrency(simulator: Simulator, client: httpx.Client) -> None:
    simulator.add_fault({"kind": "latency", "latency": 0.15, "times": -1})
    threads = [threading.Thread(target=lambda: client.get(f"{simulator.url}/models")) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert simulator.calls == 6 and simulator.in_flight == 0 and simulator.stats()["in_flight"] == 0
    assert 1 < simulator.max_in_flight <= 6


def test_a_request_hanging_from_before_a_reset_is_not_counted_after_it(simulator: Simulator) -> None:
    """A hang left by an earlier test must not inflate the next test's in_flight / max_in_flight."""
    simulator.add_fault({"kind": "hang", "latency": 3, "times": 1})
    hung = threading.Thread(target=_ignore_timeout, args=(f"{simulator.url}/models",))
    hung.start()
    for _ in range(100):  # bounded wait until the server holds the hung request
        if simulator.in_flight == 1:
            break
        time.sleep(0.02)
    assert simulator.in_flight == 1
    simulator.reset()
    assert simulator.in_flight == 0 and simulator.max_in_flight == 0
    with httpx.Client() as fresh:
        assert fresh.get(f"{simulator.url}/models").status_code == 200
    assert simulator.max_in_flight == 1 and simulator.in_flight == 0
    hung.join(5)


def _ignore_timeout(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=0.5)


def test_rate_limit_rpm_gives_429_with_retry_after(client: httpx.Client) -> None:
    with Simulator(rate_limit_rpm=2) as sim:
        first = client.get(f"{sim.url}/models")
        second = client.get(f"{sim.url}/models")
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert [first.headers["x-ratelimit-remaining-requests"],
                second.headers["x-ratelimit-remaining-requests"]] == ["1", "0"]
        assert second.headers["x-ratelimit-reset-requests"].endswith("s")
        third = client.get(f"{sim.url}/models")
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "rate_limit_exceeded"
        assert 59_000 <= int(third.headers["retry-after-ms"]) <= 60_000 and third.headers["retry-after"] == "60"
        assert sim.calls == 3
    with Simulator() as unlimited:
        assert int(client.get(f"{unlimited.url}/models").headers["x-ratelimit-remaining-requests"]) > 1000


# ---------------------------------------------------------------- the extraction step and the CLI


def test_converter_keeps_refs_and_drops_openapi_isms() -> None:
    node = {"type": "object", "description": "prose", "x-oaiMeta": {}, "example": {},
            "properties": {"title": {"type": "string", "nullable": True},
                           "child": {"$ref": "#/components/schemas/Node"},
                           "kind": {"oneOf": [{"type": "string"}, {"type": "string", "enum": ["a", "b"]}]},
                           "mode": {"type": "string", "enum": ["x"], "nullable": True},
                           "ref_nullable": {"$ref": "#/components/schemas/Leaf", "nullable": True},
                           "ref_described": {"$ref": "#/components/schemas/Leaf", "description": "d"}},
            "discriminator": {"propertyName": "kind"}, "required": ["title"]}
    schema = spec_extract.to_json_schema(node)
    assert schema["properties"]["title"] == {"type": ["string", "null"]}  # a property *named* title is kept
    assert schema["properties"]["child"] == {"$ref": "#/$defs/Node"}  # recursion stays a ref: nothing to cut
    assert schema["properties"]["kind"] == {"type": "string"}
    assert schema["properties"]["mode"] == {"type": ["string", "null"], "enum": ["x", None]}
    assert schema["properties"]["ref_nullable"] == {"anyOf": [{"$ref": "#/$defs/Leaf"}, {"type": "null"}]}
    assert schema["properties"]["ref_described"] == {"$ref": "#/$defs/Leaf"}
    text = json.dumps(schema)
    assert all(word not in text for word in ("description", "x-oaiMeta", "discriminator", "example",
                                             "#/components"))
    Draft202012Validator.check_schema(schema)


def _keywords(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _keywords(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key in ("properties", "$defs"):  # property names are data ("description" of a tool), not keywords
                for sub in value.values():
                    yield from _keywords(sub)
            elif key not in ("enum", "const", "required"):
                yield from _keywords(value)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_committed_spec_data_covers_every_operation_and_is_small() -> None:
    data = json.loads(spec_extract.DATA_FILE.read_text(encoding="utf-8"))
    operations = data["operations"]
    assert "createEdit" in operations and operations["createEdit"]["spec"] == "2023-12"
    assert len([o for o in operations.values() if o["spec"] == "2026-08"]) == 288  # every operation of the spec
    for manifest in actions.registry().values():  # so a new manifest never needs a re-extraction
        if manifest.name != "openai_request":  # the generic request binds no operation of the spec
            assert manifest.openapi.operationId in operations, manifest.name
    for defs in data["defs"].values():
        Draft202012Validator.check_schema({"$defs": defs})
    for operation in operations.values():
        for schema in [*(operation["request"] or {}).values(), (operation["response"] or {}).get("schema")]:
            if schema is not None:
                Draft202012Validator.check_schema(schema)
                assert all(ref.removeprefix("#/$defs/") in data["defs"][operation["spec"]]
                           for ref in _refs(schema))
    found = set(_keywords(data["defs"])) | set(_keywords(operations))
    assert not found & {"description", "title", "example", "examples", "nullable", "discriminator", "oneOf"}
    assert not [k for k in found if k.startswith("x-")]
    assert spec_extract.DATA_FILE.stat().st_size < 600_000


def test_committed_spec_data_is_what_extract_spec_writes(tmp_path: Any) -> None:
    if not (SHARED_OPENAPI / "openai-2026-08.yaml").exists():
        pytest.skip("shared/openapi is not next to the repository")
    output = tmp_path / "operations.json"
    assert simulator_package.main(["extract-spec", str(SHARED_OPENAPI), "--output", str(output)]) == 0
    assert output.read_bytes() == spec_extract.DATA_FILE.read_bytes(), "run: python -m actions.simulator extract-spec"


def test_cli_prints_the_banner_and_serves() -> None:
    process = subprocess.Popen([sys.executable, "-m", "actions.simulator", "--port", "0"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url_line = process.stdout.readline()
        assert "OpenAI API SIMULATOR — not the real API" in banner
        url = url_line.split()[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert httpx.get(f"{url}/models", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=5)
    assert process.returncode is not None


def test_cli_refuses_any_other_interface_and_an_unset_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        simulator_package.main(["--host", "0.0.0.0"])
    assert exited.value.code == 2 and "127.0.0.1" in capsys.readouterr().err
    assert simulator_package.main(["--api-key-env", "SIMULATOR_TEST_UNSET_VARIABLE"]) == 2
    assert "SIMULATOR_TEST_UNSET_VARIABLE" in capsys.readouterr().err
    assert simulator_package.main(["--rate-limit-rpm", "0"]) == 2


def test_serve_takes_the_key_and_its_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options `openai-pack simulate` exposes: key from a variable, custom header with a prefix."""
    monkeypatch.setenv("SIMULATOR_TEST_KEY", CANARY_KEY)
    lines: list[str] = []
    done = threading.Event()
    thread = threading.Thread(target=simulator_package.serve, kwargs={
        "port": 0, "api_key_env": "SIMULATOR_TEST_KEY", "auth": "header", "auth_name": "X-Proxy-Auth",
        "auth_prefix": "Token ", "announce": lines.append, "until": done}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        url = next(line.split()[-1] for line in lines if line.startswith("base URL"))
        assert "X-Proxy-Auth" in lines[2] and CANARY_KEY not in "".join(lines)
        assert httpx.get(f"{url}/models", headers={"X-Proxy-Auth": f"Token {CANARY_KEY}"}).status_code == 200
        assert httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {CANARY_KEY}"}).status_code == 401
        kept = httpx.get(f"{url}/_sim/requests").json()["data"]
        assert [r["headers"].get("x-proxy-auth") for r in kept] == ["Token <api-key>", None]
    finally:
        done.set()
        thread.join(10)
    assert not thread.is_alive()


# ---------------------------------------------------------------- every manifest, from the registry


MANIFESTS = sorted(actions.registry().values(), key=lambda m: m.name)


def http_request(manifest: actions.ActionManifest, inputs: dict[str, Any]) -> tuple[str, str, dict[str, Any],
                                                                                   dict[str, Any] | None]:
    """(method, path, query, JSON body) the binding makes of inputs, built here from the manifest alone."""
    binding = manifest.http
    sent = {k: v for k, v in inputs.items() if k not in manifest.pack_only_fields}
    path = binding.path
    for name in binding.path_params:
        path = path.replace("{" + name + "}", str(sent.pop(name)))
    query = {name: sent.pop(name) for name in binding.query if name in sent}
    return binding.method, path, query, (sent if binding.encoding == "json" else None)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_every_manifest_route_answers_its_examples_in_the_output_shape(simulator: Simulator, client: httpx.Client,
                                                                       manifest: actions.ActionManifest) -> None:
    if manifest.http.encoding == "multipart":
        pytest.skip("a multipart example is sent as a form by the binder (tests/test_actions.py runs those end to end)")
    output = Draft202012Validator(manifest.output)
    for example in manifest.examples:
        method, path, query, body = http_request(manifest, example.input)
        if body is not None:
            assert validate_request(manifest.openapi.operationId, body) is None, example.title
        response = client.request(method, f"{simulator.url}{path}", params=query, json=body)
        assert response.status_code == 200, (example.title, response.text)
        if manifest.http.answer == "empty":  # the spec declares no body, and none comes
            assert response.content == b"", example.title
            continue
        if manifest.http.answer == "binary":  # the bytes the example output shows
            assert response.content == base64.b64decode(example.output["base64"]), example.title
            assert response.headers["content-type"].startswith(example.output["content_type"])
            continue
        answer = response.json()
        problems = [e.message for e in output.iter_errors(answer)]
        assert not problems, (example.title, problems)
    assert simulator.calls_by_route() == {f"{manifest.http.method} {manifest.http.path}": len(manifest.examples)}


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_every_manifest_default_answer_has_the_output_shape(manifest: actions.ActionManifest) -> None:
    """What an operation answers when no behaviour is registered: its example output (else synthesized)."""
    answer = behaviours.default_answer(manifest)
    if manifest.http.answer == "empty":
        assert answer is None
    elif manifest.http.answer == "binary":
        assert isinstance(answer, behaviours.Download) and answer.content
    else:
        assert not list(Draft202012Validator(manifest.output).iter_errors(answer))


def test_a_new_manifest_is_served_with_no_other_file(client: httpx.Client) -> None:
    """A pass-through manifest (no example output to copy): route, spec validation and a synthesized answer."""
    embedding = actions.ActionManifest.model_validate({
        "name": "create_embedding", "title": "Create Embedding", "category": "Embeddings",
        "description": "Embed a text.", "openapi": {"operationId": "createEmbedding"},
        "http": {"method": "POST", "path": "/embeddings"},
        "input": {"type": "object", "additionalProperties": False, "required": ["model", "input"],
                  "properties": {"model": {"type": "string"}, "input": {"type": "string"}}},
        "output": {"type": "object"},
        "examples": [{"title": "One text", "input": {"model": "text-embedding-3-small", "input": "hi"},
                      "output": {}}],
    })
    with Simulator(manifests={"create_embedding": embedding}) as sim:
        answer = client.post(f"{sim.url}/embeddings", json={"model": "text-embedding-3-small", "input": "hi"})
        assert answer.status_code == 200
        body = answer.json()
        assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
        assert client.post(f"{sim.url}/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}
                           ).json() == body  # deterministic
        refused = client.post(f"{sim.url}/embeddings", json={"input": "hi"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
        assert client.get(f"{sim.url}/models").status_code == 404  # only the manifests given are served


def test_every_spec_operation_synthesizes_an_answer_that_fits_its_response_schema() -> None:
    operations = spec.operations()
    misfits = []
    for operation_id, operation in operations.items():
        if operation.response_schema is None:
            continue
        answer = operation.synthesized_answer()
        validator = Draft202012Validator({"$defs": operation.defs, "allOf": [operation.response_schema]})
        if not validator.is_valid(answer):
            misfits.append(operation_id)
        assert operation.synthesized_answer() == answer  # deterministic
    assert not misfits


def test_multipart_bodies_are_read_as_the_spec_types(simulator: Simulator) -> None:
    """An operation whose spec takes multipart/form-data: text fields get the spec's types, files their name."""
    operation = spec.operation("createImageEdit")
    assert operation is not None and "multipart/form-data" in operation.content_types
    types = operation.field_types("multipart/form-data")
    form = bodies.parse_multipart(
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nadd a hat\r\n'
        b'--B\r\nContent-Disposition: form-data; name="n"\r\n\r\n2\r\n'
        b'--B\r\nContent-Disposition: form-data; name="image[]"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--B--\r\n", "multipart/form-data; boundary=B", types)
    assert form == {"prompt": "add a hat", "n": 2, "image": ["a.png"]}
    assert validate_request("createImageEdit", form, "multipart/form-data") is None
    problem = validate_request("createImageEdit", form | {"n": 0}, "multipart/form-data")
    assert problem is not None and problem[1] == "n"


def test_kept_requests_are_served_by_the_requests_control_route(keyed_simulator: Simulator,
                                                                client: httpx.Client) -> None:
    """Headers and bodies as the simulator received them: the configured key masked, nothing else hidden."""
    client.get(f"{keyed_simulator.url}/models", headers={"Authorization": f"Bearer {CANARY_KEY}",
                                                         "OpenAI-Project": "proj_1"})
    client.post(f"{keyed_simulator.url}/moderations", json={"input": "hi"},
                headers={"Authorization": "Bearer sk-someone-else"})
    kept = client.get(f"{keyed_simulator.url}/_sim/requests")
    assert kept.status_code == 200
    first, second = kept.json()["data"]
    assert first["method"] == "GET" and first["path"] == "/v1/models" and first["body"] is None
    assert first["headers"]["authorization"] == "Bearer <api-key>" and first["headers"]["openai-project"] == "proj_1"
    assert second["body"] == {"input": "hi"} and second["headers"]["authorization"] == "Bearer sk-someone-else"
    assert CANARY_KEY not in kept.text
    assert client.get(f"{keyed_simulator.url}/_sim/requests", params={"limit": 1}).json()["data"] == [second]
    assert client.get(f"{keyed_simulator.url}/_sim/requests", params={"limit": "x"}).status_code == 400
    listed = client.get(f"{keyed_simulator.url}/_sim/faults").json()
    assert listed == {"faults": []}
    assert keyed_simulator.calls == 2  # control routes are not calls


def test_in_flight_is_settled_when_the_client_has_its_answer(simulator: Simulator, client: httpx.Client) -> None:
    """The counter used to drop after the answer was written, so a client could read a stale in_flight."""
    stale = []
    for _ in range(1000):  # the old server showed a stale count on ~2% of answers
        client.get(f"{simulator.url}/models")
        if simulator.in_flight != 0:
            stale.append(simulator.in_flight)
    with client.stream("POST", f"{simulator.url}/chat/completions", json=CHAT | {"stream": True}) as response:
        response.read()
    stale += [simulator.in_flight] if simulator.in_flight else []
    simulator.add_fault({"kind": "drop"})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(f"{simulator.url}/models")
    stale += [simulator.in_flight] if simulator.in_flight else []
    assert not stale


# ---------------------------------------------------------------- the public surface, documented


def test_simulate_help_and_docs_name_every_option_and_control_route() -> None:
    helped = subprocess.run([sys.executable, "-m", "workers.cli", "simulate", "--help"], cwd=REPO_ROOT, text=True,
                            capture_output=True, timeout=60, env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    docs = (REPO_ROOT / "docs" / "simulator.md").read_text(encoding="utf-8")
    flags = ["--" + name.replace("_", "-") for name in options.HELP]
    assert len(flags) == 8
    for option in flags:
        assert option in helped and f"`{option}" in docs, option
    for route, _ in options.CONTROL_ROUTE_HELP:
        method, path = route.split()
        assert route in helped and f"`{method} {path}`" in docs, route
    assert "not redacted" in helped and "nothing redacted" in docs


@pytest.mark.parametrize(("args", "field"), [(["--latency", "nan"], "latency"), (["--port", "70000"], "port"),
                                             (["--rate-limit-rpm", "0"], "rate_limit_rpm"),
                                             (["--api-key-env", "SIMULATOR_TEST_UNSET_VARIABLE"], "api_key_env"),
                                             (["--api-key-env", "SIMULATOR_TEST_CR_KEY"], "api_key_env")])
def test_simulate_refuses_bad_options_with_a_field_named_error(args: list[str], field: str) -> None:
    env = {**os.environ, "SIMULATOR_TEST_CR_KEY": CANARY_KEY + "\rEXTRA"}
    done = subprocess.run([sys.executable, "-m", "workers.cli", "simulate", *args], cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=60, check=False, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert json.loads(done.stderr)["error"]["field"] == field
    assert CANARY_KEY not in done.stderr


@pytest.mark.parametrize("raw", [b'{"model": "gpt-4o-mini", "temperature": NaN}', b'{"n": Infinity}',
                                 b"[" * 100_000 + b"]" * 100_000, b"[" * 200 + b"]" * 200, b'{"a": "\xff"}'],
                         ids=["nan", "infinity", "100k-deep", "200-deep", "not-utf8"])
def test_bodies_the_api_cannot_read_get_a_400_not_a_500(simulator: Simulator, client: httpx.Client,
                                                        raw: bytes) -> None:
    response = client.post(f"{simulator.url}/chat/completions", content=raw,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert simulator.calls == 1 and simulator.in_flight == 0


def test_a_stream_without_a_registered_chunker_is_the_answer_as_one_event(client: httpx.Client) -> None:
    images = actions.ActionManifest.model_validate({  # createImage streams upstream; no chunker is registered
        "name": "create_image", "title": "Create Image", "category": "Images",
        "description": "Draw.", "openapi": {"operationId": "createImage"},
        "http": {"method": "POST", "path": "/images/generations", "stream": {"flag": "stream", "assemble": "image"}},
        "input": {"type": "object", "additionalProperties": False,
                  "properties": {"prompt": {"type": "string"}, "model": {"type": "string"},
                                 "stream": {"type": "boolean"}}},
        "output": {"type": "object"},
        "examples": [{"title": "Hi", "input": {"prompt": "a cat"}, "output": {"created": 1}}],
    })
    assert "createImage" not in behaviours.STREAMS
    with Simulator(manifests={"create_image": images}) as sim:
        plain = client.post(f"{sim.url}/images/generations", json={"prompt": "a cat", "model": "gpt-image-1"}).json()
        streamed = client.post(f"{sim.url}/images/generations",
                               json={"prompt": "a cat", "model": "gpt-image-1", "stream": True})
        events = sse_events(streamed)
        assert len(events) == 1 and events[0]["data"] == plain["data"]


def test_kept_requests_are_bounded(simulator: Simulator, client: httpx.Client,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actions.simulator.state.MAX_REQUESTS_KEPT", 3)
    for n in range(7):
        client.post(f"{simulator.url}/moderations", json={"input": f"text {n}"})
    assert simulator.calls == 7
    assert [r["body"]["input"] for r in simulator.requests] == ["text 4", "text 5", "text 6"]


def test_an_operation_outside_the_spec_is_served_unvalidated(client: httpx.Client) -> None:
    extra = actions.ActionManifest.model_validate({
        "name": "create_widget", "title": "Create Widget", "category": "Extras",
        "description": "An OpenAI-compatible server's extra.", "openapi": {"operationId": "createWidget"},
        "http": {"method": "POST", "path": "/widgets"},
        "input": {"type": "object", "additionalProperties": False, "properties": {"size": {"type": "integer"}}},
        "output": {"type": "object"},
        "examples": [{"title": "One", "input": {"size": 1}, "output": {"id": "widget_1"}}],
    })
    with Simulator(manifests={"create_widget": extra}) as sim:
        answer = client.post(f"{sim.url}/widgets", json={"anything": ["goes"]})
        assert answer.status_code == 200 and answer.json() == {"id": "widget_1"}


def test_speech_answers_bytes_of_the_requested_format(simulator: Simulator, client: httpx.Client) -> None:
    kinds = {"mp3": ("audio/mpeg", b"\xff\xfb"), "wav": ("audio/wav", b"RIFF"), "opus": ("audio/opus", b"OggS"),
             "flac": ("audio/flac", b"fLaC"), "aac": ("audio/aac", b"\xff\xf1"), "pcm": ("audio/pcm", b"\x00\x00")}
    for response_format, (media_type, magic) in kinds.items():
        answer = client.post(f"{simulator.url}/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "alloy",
                                                                    "response_format": response_format})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media_type)
        assert answer.content.startswith(magic), response_format
    refused = client.post(f"{simulator.url}/audio/speech", json={"model": "tts-1", "voice": "alloy"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input"


def test_streamed_responses_and_transcriptions_are_the_apis_events(simulator: Simulator,
                                                                    client: httpx.Client) -> None:
    streamed = client.post(f"{simulator.url}/responses", json={"model": "gpt-4o-mini", "input": "hello", "stream": True})
    events = sse_events(streamed)
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    final = events[-1]["response"]
    text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert text == final["output"][0]["content"][0]["text"] and final["usage"]
    fetched = client.get(f"{simulator.url}/responses/{final['id']}", params={"stream": "true"})
    assert sse_events(fetched)[-1]["response"]["id"] == final["id"]
    files = {"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")}
    spoken = client.post(f"{simulator.url}/audio/transcriptions", files=files,
                         data={"model": "gpt-4o-transcribe", "stream": "true"})
    events = sse_events(spoken)
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]


def test_an_operation_without_a_body_answers_an_empty_200(simulator: Simulator, client: httpx.Client) -> None:
    answer = client.post(f"{simulator.url}/realtime/calls/rtc_1/hangup")
    assert answer.status_code == 200 and answer.content == b""
    answer = client.delete(f"{simulator.url}/containers/cntr_1")
    assert answer.status_code == 200 and answer.content == b""
