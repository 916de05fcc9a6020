"""Answers with behaviour, registered per operationId: the one place the simulator knows an operation.

Every other bound operation answers with its manifest's example output, or, without one, with an
answer synthesized from the spec's response schema (``default_answer``). An operation earns a behaviour
here only when tests or demos need its answer to depend on the request (chat with tools and JSON
schemas, completions, edits, moderation, images, models). Streams are registered the same way.

Moderation flags a text (category ``violence``) when it contains one of ``FLAG_WORDS``, case-insensitive,
so tests can take both branches: "how do I kill a process" is flagged, "hello" is not.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import actions
from actions import ActionManifest
from actions.simulator.bodies import Upload
from actions.simulator.media import example_content, skill_zip, speech_audio, video_asset
from actions.simulator.spec import operation, sample_for
from actions.simulator.store import Store

__all__ = ["BEHAVIOURS", "FLAG_WORDS", "MODELS", "MODERATION_CATEGORIES", "STREAMS", "Call", "Context", "Download",
           "Reply", "default_answer", "png_bytes", "tokens"]

FLAG_WORDS = ("kill", "violence", "bomb")
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
#: Categories omni-moderation also scores on images (the others apply to text only).
IMAGE_CATEGORIES = frozenset({"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "violence",
                              "violence/graphic"})
MODELS = (
    ("gpt-4o", 1715367049, "system"), ("gpt-4o-mini", 1721172741, "system"), ("gpt-4.1", 1744316542, "system"),
    ("o3-mini", 1737146383, "system"), ("gpt-3.5-turbo-instruct", 1692901427, "system"),
    ("dall-e-2", 1698798177, "system"), ("dall-e-3", 1698785189, "system"), ("gpt-image-1", 1745517030, "system"),
    ("omni-moderation-latest", 1731689265, "system"), ("text-moderation-latest", 1677532384, "openai"),
    ("text-embedding-3-small", 1705948997, "system"), ("whisper-1", 1677532384, "openai"),
)
MAX_IMAGES_KEPT = 512


@dataclass
class Reply:
    """An answer other than 200 (a behaviour's own 404, say)."""

    status: int
    body: Any


@dataclass
class Download:
    """A 200 answer of bytes (a file's content), not JSON."""

    content: bytes
    media_type: str = "application/octet-stream"


@dataclass
class Call:
    """One request as a behaviour sees it: the validated body, path parameters, query parameters and the files of
    a multipart body."""

    body: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)


@dataclass
class Context:
    """What a behaviour may use besides the request: fresh ids, the base URL, the image store, and the store of
    issued objects and long jobs (``store.py``)."""

    base_url: str = ""
    images: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    store: Store = field(default_factory=Store)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _n: int = 0

    def next_id(self) -> int:
        """Ids from a counter: unique and repeatable per server."""
        with self._lock:
            self._n += 1
            return self._n

    def keep_image(self, name: str, png: bytes) -> None:
        with self._lock:
            self.images[name] = png
            while len(self.images) > MAX_IMAGES_KEPT:
                self.images.popitem(last=False)


Body = dict[str, Any]
Behaviour = Callable[[Context, Call], Any]
Chunker = Callable[[Any, Body], list[Any]]

#: operationId → answer(context, call): a JSON value (200), a Reply or a Download.
BEHAVIOURS: dict[str, Behaviour] = {}
#: operationId → the stream events of an answer (without the final ``[DONE]``).
STREAMS: dict[str, Chunker] = {}


def behaviour(operation_id: str) -> Callable[[Behaviour], Behaviour]:
    def register(function: Behaviour) -> Behaviour:
        BEHAVIOURS[operation_id] = function
        return function
    return register


def stream(operation_id: str) -> Callable[[Chunker], Chunker]:
    def register(function: Chunker) -> Chunker:
        STREAMS[operation_id] = function
        return function
    return register


def default_answer(manifest: ActionManifest) -> Any:
    """The manifest's first example output, or an answer synthesized from the spec's response schema; for an
    operation that answers nothing, None (an empty 200), and for one that answers bytes, its example bytes."""
    if manifest.http.answer == "empty":
        return None
    if manifest.http.answer == "binary":
        return Download(*example_content(manifest.openapi.operationId))
    for example in manifest.examples:
        if example.output:
            return copy.deepcopy(example.output)
    spec_operation = operation(manifest.openapi.operationId)
    return spec_operation.synthesized_answer() if spec_operation else {}


def is_example_request(manifest: ActionManifest, call: Call) -> bool:
    """Whether a request is one of the manifest's examples: every example field it sends (path, query or body)
    has the example's value, and it sends at least one.

    Why: examples name made-up ids (``file_abc123``) so they can be read and run anywhere; the stateful behaviours
    would answer those 404, so such a request answers with the example output instead and every example still
    runs end to end. Any other unknown id stays a 404."""
    for example in manifest.examples:
        matched, differs = 0, False
        for key, value in example.input.items():
            if key in call.params:
                sent: Any = call.params[key]
                expected: Any = str(value)
            elif key in call.query:
                sent, expected = call.query[key], str(value)
            elif key in call.body:
                sent, expected = call.body[key], value
            else:
                continue  # a pack-only field (save_to, fetch_all) or one the binder left out
            if sent != expected and not (isinstance(sent, str) and sent == str(expected)):
                differs = True
                break
            matched += 1
        if matched and not differs:
            return True
    return False


# ---------------------------------------------------------------- helpers


def tokens(text: str) -> int:
    """A rough token count (about 4 tokens per 3 words), so usage is plausible and deterministic."""
    return max(1, round(len(text.split()) * 4 / 3))


def png_bytes(seed: str, size: int = 8) -> bytes:
    """A small valid PNG, one solid colour taken from ``seed``'s hash (stdlib only: zlib + struct)."""
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    rows = b"".join(b"\x00" + bytes((red, green, blue)) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _text_of(content: Any) -> str:
    """The text of a message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _usage(prompt: str, completion: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = tokens(prompt), tokens(completion) if completion else 0
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _model(model_id: str) -> dict[str, Any] | None:
    for name, created, owner in MODELS:
        if name == model_id:
            return {"id": name, "object": "model", "created": created, "owned_by": owner}
    return None


# ---------------------------------------------------------------- behaviours


@behaviour("createChatCompletion")
def chat(context: Context, call: Call) -> Any:
    body = call.body
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    prompt = " ".join(_text_of(m.get("content")) for m in messages)
    last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), prompt)
    reply = f"Simulated reply to: {last_user[:60]}"
    response_format = body.get("response_format") or {}
    functions = [t["function"] for t in body.get("tools") or []
                 if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)]
    tool_choice = body.get("tool_choice", "auto")
    answered_tool = bool(messages) and messages[-1].get("role") == "tool"  # the model saw the result: answer
    finish, tool_calls, content = "stop", None, reply
    if functions and tool_choice != "none" and not answered_tool:
        function = functions[0]
        if isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
            wanted = tool_choice["function"].get("name")
            function = next((f for f in functions if f.get("name") == wanted), function)
        arguments = sample_for(function.get("parameters") or {"type": "object", "properties": {}})
        tool_calls = [{"id": f"call_sim{context.next_id()}", "type": "function",
                       "function": {"name": function.get("name"), "arguments": json.dumps(arguments)}}]
        content, finish = None, "tool_calls"
    elif response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        content = json.dumps(sample_for(schema))
    elif response_format.get("type") == "json_object":
        content = json.dumps({"result": reply})
    choices = []
    for index in range(int(body.get("n") or 1)):
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
    completion = (content or json.dumps(tool_calls)) * len(choices)
    return {"id": f"chatcmpl-sim{context.next_id()}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "choices": choices, "usage": _usage(prompt, completion),
            "service_tier": "default", "system_fingerprint": "fp_sim"}


@behaviour("createCompletion")
def completion(context: Context, call: Call) -> Any:
    body = call.body
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, str):
        prompts = [prompt]
    else:  # token arrays or null: one prompt, described
        prompts = [json.dumps(prompt)]
    n = int(body.get("n") or 1)
    choices, produced = [], ""
    for text_in in prompts:
        text = f" Simulated continuation of: {text_in[:40]}"
        if body.get("echo"):
            text = text_in + text
        for _ in range(n):
            choices.append({"index": len(choices), "text": text, "logprobs": None, "finish_reason": "stop"})
            produced += text
    return {"id": f"cmpl-sim{context.next_id()}", "object": "text_completion", "created": int(time.time()),
            "model": body.get("model"), "choices": choices, "usage": _usage(" ".join(prompts), produced),
            "system_fingerprint": "fp_sim"}


@behaviour("createEdit")
def edit(_context: Context, call: Call) -> Any:
    body = call.body
    text = str(body.get("input") or "")
    instruction = str(body.get("instruction") or "")
    edited = text.replace("wek", "week").replace("teh", "the") if text else f"Simulated edit: {instruction[:60]}"
    n = int(body.get("n") or 1)
    return {"object": "edit", "created": int(time.time()),
            "choices": [{"text": edited, "index": i, "finish_reason": "stop"} for i in range(n)],
            "usage": _usage(f"{text} {instruction}", edited * n)}


@behaviour("createImage")
def image(context: Context, call: Call) -> Any:
    body = call.body
    prompt = str(body.get("prompt"))
    model = body.get("model") or "dall-e-2"
    data = []
    for i in range(int(body.get("n") or 1)):
        png = png_bytes(f"{prompt}:{i}")
        if str(model).startswith("gpt-image") or body.get("response_format") == "b64_json":
            item: dict[str, Any] = {"b64_json": base64.b64encode(png).decode()}
        else:
            name = f"img-sim{context.next_id()}.png"
            context.keep_image(name, png)
            item = {"url": f"{context.base_url}/_sim/images/{name}"}
        if model == "dall-e-3":
            item["revised_prompt"] = f"{prompt} (simulated revision)"
        data.append(item)
    out: dict[str, Any] = {"created": int(time.time()), "data": data}
    if str(model).startswith("gpt-image"):
        out["usage"] = {"input_tokens": tokens(prompt), "output_tokens": 272 * len(data),
                        "total_tokens": tokens(prompt) + 272 * len(data)}
    return out


@behaviour("createModeration")
def moderation(context: Context, call: Call) -> Any:
    body = call.body
    raw = body.get("input")
    if isinstance(raw, list) and raw and all(isinstance(part, dict) for part in raw):
        inputs: list[tuple[str, bool]] = [(" ".join(str(p.get("text", "")) for p in raw),
                                           any(p.get("type") == "image_url" for p in raw))]  # one multimodal input
    else:
        inputs = [(str(text), False) for text in ([raw] if isinstance(raw, str) else list(raw or []))]
    results = []
    for text, has_image in inputs:
        hit = any(word in text.lower() for word in FLAG_WORDS)
        applied = {}
        for category in MODERATION_CATEGORIES:
            kinds = ["text"] if text else []
            if has_image and category in IMAGE_CATEGORIES:
                kinds.append("image")
            applied[category] = kinds
        results.append({
            "flagged": hit,
            "categories": {c: hit and c == "violence" for c in MODERATION_CATEGORIES},
            "category_scores": {c: (0.91 if hit and c == "violence" else 0.0004) for c in MODERATION_CATEGORIES},
            "category_applied_input_types": applied,
        })
    return {"id": f"modr-sim{context.next_id()}", "model": body.get("model") or "omni-moderation-latest",
            "results": results}


@behaviour("listModels")
def list_models(_context: Context, _call: Call) -> Any:
    return {"object": "list", "data": [_model(name) for name, _, _ in MODELS]}


@behaviour("retrieveModel")
def retrieve_model(_context: Context, call: Call) -> Any:
    params = call.params
    model_id = next(iter(params.values()), "")
    found = _model(model_id)
    if found is None:
        return Reply(404, {"error": {"message": f"The model '{model_id[:100]}' does not exist or you do not have "
                                                "access to it.", "type": "invalid_request_error", "param": "model",
                                     "code": "model_not_found"}})
    return found


# ---------------------------------------------------------------- streams


def _thirds(text: str) -> list[str]:
    cut = max(1, len(text) // 3)
    return [p for p in (text[:cut], text[cut:2 * cut], text[2 * cut:]) if p]


def _with_usage(base: dict[str, Any], events: list[dict[str, Any]], answer: Any, body: Body) -> list[Any]:
    """One chunk per event; ``stream_options.include_usage`` adds ``usage: null`` to each and a final usage chunk."""
    usage_requested = bool((body.get("stream_options") or {}).get("include_usage"))
    chunks = [base | {"choices": [event]} | ({"usage": None} if usage_requested else {}) for event in events]
    if usage_requested:
        chunks.append(base | {"choices": [], "usage": answer["usage"]})
    return chunks


@stream("createChatCompletion")
def chat_chunks(answer: Any, body: Body) -> list[Any]:
    """OpenAI's chunks: role, content in ~3 pieces (or tool-call pieces), finish_reason, optional usage."""
    base = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"],
            "model": answer["model"], "system_fingerprint": "fp_sim"}
    events: list[dict[str, Any]] = []
    for choice in answer["choices"]:
        index, message = choice["index"], choice["message"]
        opening = "" if message.get("content") is not None else None  # tool calls open with null content
        events.append({"index": index, "delta": {"role": "assistant", "content": opening, "refusal": None},
                       "finish_reason": None, "logprobs": None})
        for piece in _thirds(message.get("content") or ""):
            events.append({"index": index, "delta": {"content": piece}, "finish_reason": None, "logprobs": None})
        for n, call in enumerate(message.get("tool_calls") or []):
            events.append({"index": index, "finish_reason": None, "logprobs": None, "delta": {"tool_calls": [
                {"index": n, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}]}})
            for piece in _thirds(call["function"]["arguments"]):
                events.append({"index": index, "finish_reason": None, "logprobs": None, "delta": {
                    "tool_calls": [{"index": n, "function": {"arguments": piece}}]}})
        events.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"], "logprobs": None})
    return _with_usage(base, events, answer, body)


@stream("createCompletion")
def completion_chunks(answer: Any, body: Body) -> list[Any]:
    base = {"id": answer["id"], "object": "text_completion", "created": answer["created"], "model": answer["model"],
            "system_fingerprint": "fp_sim"}
    events: list[dict[str, Any]] = []
    for choice in answer["choices"]:
        for piece in _thirds(choice["text"]):
            events.append({"index": choice["index"], "text": piece, "logprobs": None, "finish_reason": None})
        events.append({"index": choice["index"], "text": "", "logprobs": None, "finish_reason": "stop"})
    return _with_usage(base, events, answer, body)


# ---------------------------------------------------------------- audio to text: JSON, or plain text for text, srt, vtt

#: The transcript the simulator "hears" in any audio.
TRANSCRIPT = "Hello, this is the simulator's transcript of your audio."
#: Subtitles of that transcript, as the real API answers ``srt`` and ``vtt``.
_SUBTITLES = {
    "srt": f"1\n00:00:00,000 --> 00:00:03,000\n{TRANSCRIPT}\n",
    "vtt": f"WEBVTT\n\n00:00:00.000 --> 00:00:03.000\n{TRANSCRIPT}\n",
}


def _audio_text(action: str, call: Call) -> Any:
    """``response_format`` text, srt and vtt are answered as plain text (not JSON), as the real API does;
    the JSON formats get the action's usual answer."""
    form = call.body.get("response_format")
    if form == "text":
        return Download(f"{TRANSCRIPT}\n".encode(), "text/plain; charset=utf-8")
    if form in _SUBTITLES:
        return Download(_SUBTITLES[form].encode(), "text/plain; charset=utf-8")
    return default_answer(actions.get(action))


@behaviour("createTranscription")
def transcription(_context: Context, call: Call) -> Any:
    return _audio_text("create_transcription", call)


@behaviour("createTranslation")
def translation(_context: Context, call: Call) -> Any:
    return _audio_text("create_translation", call)


# ---------------------------------------------------------------- answers that are bytes


@behaviour("createSpeech")
def speech(_context: Context, call: Call) -> Any:
    return Download(*speech_audio(call.body.get("response_format")))


@behaviour("RetrieveVideoContent")
def video_content(_context: Context, call: Call) -> Any:
    return Download(*video_asset(call.query.get("variant")))


@behaviour("GetSkillContent")
def skill_content(_context: Context, call: Call) -> Any:
    return Download(skill_zip(call.params["skill_id"]), "application/zip")


@behaviour("GetSkillVersionContent")
def skill_version_content(_context: Context, call: Call) -> Any:
    return Download(skill_zip(call.params["skill_id"]), "application/zip")


# ---------------------------------------------------------------- streams of the Responses API, audio, images, runs


def _response_events(answer: Any, _body: Body) -> list[Any]:
    """The Responses API's events for a finished response: created, in progress, the output text in pieces, then
    the terminal state (completed, incomplete or failed) carrying the whole response."""
    opening = {**answer, "status": "in_progress", "output": [], "usage": None}
    events: list[Any] = [{"type": "response.created", "sequence_number": 0, "response": {**opening,
                                                                                         "status": "queued"}},
                         {"type": "response.in_progress", "sequence_number": 1, "response": opening}]
    for index, item in enumerate(answer.get("output") or []):
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        for part_index, part in enumerate(item.get("content") or [] if isinstance(item, dict) else []):
            text = part.get("text") if isinstance(part, dict) else None
            for piece in _thirds(text or ""):
                events.append({"type": "response.output_text.delta", "item_id": item.get("id"), "output_index": index,
                               "content_index": part_index, "delta": piece})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    status = answer.get("status")
    terminal = status if status in ("completed", "incomplete", "failed") else "completed"
    events.append({"type": f"response.{terminal}", "response": answer})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


STREAMS["createResponse"] = _response_events
STREAMS["getResponse"] = _response_events


@stream("createTranscription")
def transcription_events(answer: Any, _body: Body) -> list[Any]:
    text = str(answer.get("text") or "")
    events: list[Any] = [{"type": "transcript.text.delta", "delta": piece} for piece in _thirds(text)]
    usage = answer.get("usage") or {"type": "tokens", "input_tokens": tokens(text), "output_tokens": tokens(text),
                                    "total_tokens": 2 * tokens(text)}
    return [*events, {"type": "transcript.text.done", "text": text, "usage": usage}]


@stream("createImageEdit")
def image_edit_events(answer: Any, body: Body) -> list[Any]:
    """One partial image (when asked for) then one completed event per image, as gpt-image models stream."""
    events: list[Any] = []
    facts = {key: answer.get(key) or default for key, default in (("size", "1024x1024"), ("quality", "high"),
                                                                  ("background", "opaque"),
                                                                  ("output_format", "png"))}
    for index, item in enumerate(answer.get("data") or []):
        b64 = item.get("b64_json") or base64.b64encode(png_bytes(f"edit:{index}")).decode()
        if int(body.get("partial_images") or 0) > 0:
            events.append({"type": "image_edit.partial_image", "b64_json": b64, "partial_image_index": 0,
                           "created_at": answer.get("created"), **facts})
        events.append({"type": "image_edit.completed", "b64_json": b64, "created_at": answer.get("created"), **facts,
                       "usage": answer.get("usage") or {"input_tokens": 10, "output_tokens": 272, "total_tokens": 282,
                                                        "input_tokens_details": {"text_tokens": 10,
                                                                                 "image_tokens": 0}}})
    return events


def _run_events(answer: Any, _body: Body) -> list[Any]:
    """An Assistants run's events: the run created, in progress, then completed (each carries the run)."""
    return [{**answer, "status": status} for status in ("queued", "in_progress")] + [{**answer,
                                                                                       "status": "completed"}]


for _operation_id in ("createThreadAndRun", "createRun", "submitToolOuputsToRun"):
    STREAMS[_operation_id] = _run_events


# The stateful behaviours (files, batches, vector stores, responses, conversations) register themselves into the
# same registry; importing them here makes the registry complete whenever this module is imported.
from actions.simulator import stateful as _stateful  # noqa: E402,F401
from actions.simulator import usage as _usage_reports  # noqa: E402,F401 - the usage reports, paged by page token
