"""Reassemble a streamed answer into the exact shape of the non-streamed one.

A workflow step needs one value to hand to the next step, so ``stream: true`` is consumed here
and the step still returns a ``chat.completion`` (or ``text_completion``) with its usage.
"""

from __future__ import annotations

from typing import Any

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


_ASSEMBLERS = {"chat_completion": _assemble_chat, "completion": _assemble_completion}


def assemble(kind: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """One response from the stream's chunks (``kind`` comes from the manifest's http.stream)."""
    return _ASSEMBLERS[kind](events)
