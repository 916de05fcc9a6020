"""Reassemble a streamed answer into the exact shape of the non-streamed one.

A workflow step needs one value to hand to the next step, so ``stream: true`` is consumed here
and the step still returns what the same call without streaming returns, with its usage:

- ``chat_completion`` / ``completion``: the chunks' deltas merged into a ``chat.completion`` / ``text_completion``;
- ``response`` (Responses API): the ``response`` of the terminal event (``response.completed``, ``.incomplete``
  or ``.failed``); an ``error`` event is raised as the API's error;
- ``transcription``: the ``transcript.text.done`` event's text, usage and logprobs (the deltas if it is missing);
- ``image`` (generations and edits): one ``data`` item per ``*.completed`` event (partial images are previews);
- ``run`` (Assistants runs): the last ``thread.run`` object of the stream.
"""

from __future__ import annotations

from typing import Any

from integration.errors import ResponseShapeError, UpstreamError

__all__ = ["assemble"]

_HEAD_KEYS = ("id", "created", "model", "system_fingerprint", "service_tier")


def _head(events: list[dict[str, Any]], object_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"object": object_name}
    for event in events:
        for key in _HEAD_KEYS:
            if key not in out and event.get(key) is not None:
                out[key] = event[key]
    out["usage"] = next((e["usage"] for e in reversed(events) if e.get("usage")), None)
    return out


def _merge_tool_calls(message: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
    calls: list[dict[str, Any]] = message.setdefault("tool_calls", [])
    for delta in deltas:
        index = delta.get("index", len(calls))
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def _assemble_chat(events: list[dict[str, Any]]) -> dict[str, Any]:
    out = _head(events, "chat.completion")
    choices: dict[int, dict[str, Any]] = {}
    for event in events:
        for chunk in event.get("choices") or []:
            index = chunk.get("index", 0)
            choice = choices.setdefault(index, {"index": index, "message": {"role": "assistant", "content": None},
                                                "logprobs": None, "finish_reason": None})
            delta = chunk.get("delta") or {}
            message = choice["message"]
            if delta.get("role"):
                message["role"] = delta["role"]
            for key in ("content", "refusal"):
                if delta.get(key) is not None:
                    message[key] = (message.get(key) or "") + delta[key]
            if delta.get("tool_calls"):
                _merge_tool_calls(message, delta["tool_calls"])
            if chunk.get("logprobs"):
                logprobs = choice["logprobs"] or {"content": []}
                logprobs["content"] = (logprobs.get("content") or []) + (chunk["logprobs"].get("content") or [])
                choice["logprobs"] = logprobs
            if chunk.get("finish_reason"):
                choice["finish_reason"] = chunk["finish_reason"]
    out["choices"] = [choices[i] for i in sorted(choices)]
    return out


def _assemble_completion(events: list[dict[str, Any]]) -> dict[str, Any]:
    out = _head(events, "text_completion")
    choices: dict[int, dict[str, Any]] = {}
    for event in events:
        for chunk in event.get("choices") or []:
            index = chunk.get("index", 0)
            choice = choices.setdefault(index, {"index": index, "text": "", "logprobs": None,
                                                "finish_reason": None})
            choice["text"] += chunk.get("text") or ""
            if chunk.get("logprobs"):
                choice["logprobs"] = chunk["logprobs"]
            if chunk.get("finish_reason"):
                choice["finish_reason"] = chunk["finish_reason"]
    out["choices"] = [choices[i] for i in sorted(choices)]
    return out


def _raise_error_event(event: dict[str, Any]) -> None:
    """An ``error`` event mid-stream is the API's error answer, delivered late."""
    error = event.get("error") if isinstance(event.get("error"), dict) else event
    raise UpstreamError(str(error.get("message") or "the stream reported an error")[:2000],
                        error_code=error.get("code") if isinstance(error.get("code"), str) else None)


def _assemble_response(events: list[dict[str, Any]]) -> dict[str, Any]:
    latest: dict[str, Any] | None = None
    for event in events:
        if event.get("type") == "error":
            _raise_error_event(event)
        if isinstance(event.get("response"), dict):
            latest = event["response"]  # created, in_progress, then the terminal state with output and usage
    if latest is None:
        raise ResponseShapeError("the response stream carried no response object")
    return latest


def _assemble_transcription(events: list[dict[str, Any]]) -> dict[str, Any]:
    deltas: list[str] = []
    logprobs: list[Any] = []
    for event in events:
        kind = event.get("type")
        if kind == "error":
            _raise_error_event(event)
        if kind == "transcript.text.done":
            out: dict[str, Any] = {"text": event.get("text", "".join(deltas))}
            for key in ("usage", "logprobs"):
                if event.get(key) is not None:
                    out[key] = event[key]
            return out
        if kind == "transcript.text.delta":
            deltas.append(str(event.get("delta") or ""))
            logprobs += event.get("logprobs") or []
    return {"text": "".join(deltas), **({"logprobs": logprobs} if logprobs else {})}


_IMAGE_FACTS = ("size", "quality", "background", "output_format")


def _assemble_image(events: list[dict[str, Any]]) -> dict[str, Any]:
    finished = [e for e in events if str(e.get("type", "")).endswith(".completed")]
    for event in events:
        if event.get("type") == "error":
            _raise_error_event(event)
    if not finished:  # only previews arrived: the last one is the best there is
        finished = [e for e in events if str(e.get("type", "")).endswith(".partial_image")][-1:]
    if not finished:
        raise ResponseShapeError("the image stream carried no image")
    out: dict[str, Any] = {"created": finished[0].get("created_at"),
                           "data": [{"b64_json": e.get("b64_json")} for e in finished]}
    for key in _IMAGE_FACTS:
        if finished[-1].get(key) is not None:
            out[key] = finished[-1][key]
    usage = next((e["usage"] for e in reversed(finished) if e.get("usage")), None)
    if usage is not None:
        out["usage"] = usage
    return out


def _assemble_run(events: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [e for e in events if e.get("object") == "thread.run"]
    if not runs:
        raise ResponseShapeError("the run stream carried no run object")
    return runs[-1]


_ASSEMBLERS = {"chat_completion": _assemble_chat, "completion": _assemble_completion,
               "response": _assemble_response, "transcription": _assemble_transcription, "image": _assemble_image,
               "run": _assemble_run}


def assemble(kind: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """One response from the stream's chunks (``kind`` comes from the manifest's http.stream)."""
    return _ASSEMBLERS[kind](events)
