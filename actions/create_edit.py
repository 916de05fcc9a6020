"""Create Edit: OpenAI shut ``POST /edits`` down in January 2024, so the edit runs as a chat completion.

Workflows built on the seed's "Create Edit" keep working unchanged: same inputs (model,
instruction, input, n, temperature, top_p), same ``edit`` response shape. The mapping:

- ``instruction`` and ``input`` become a system prompt that asks for the edited text only, and a
  user message holding the text between markers, so the instruction cannot be confused with it;
- the retired edit models (``text-davinci-edit-001``, ``code-davinci-edit-001``) become
  ``gpt-4o-mini``; any other model id is passed through;
- ``n``, ``temperature`` and ``top_p`` pass through unchanged;
- the answer becomes ``{"object": "edit", "created", "choices": [{"index", "text",
  "finish_reason"}], "usage"}``, each choice's text being the message content.

An integration whose server still serves ``/edits`` (feature ``legacy_edits``) gets the real call.
"""

from __future__ import annotations

from typing import Any

from actions._binding import Call

RETIRED_EDIT_MODELS = {"text-davinci-edit-001", "code-davinci-edit-001"}
REPLACEMENT_MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = (
    "You are a text editor. Apply the user's instruction to the text between <text> and </text>. "
    "Reply with the edited text only: no explanations, no quotes, no markers."
)


def chat_request(inputs: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request that carries out one edit."""
    model = inputs["model"]
    body: dict[str, Any] = {
        "model": REPLACEMENT_MODEL if model in RETIRED_EDIT_MODELS else model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user",
             "content": f"Instruction: {inputs['instruction']}\n\n<text>\n{inputs.get('input', '')}\n</text>"},
        ],
    }
    for key in ("n", "temperature", "top_p"):
        if key in inputs:
            body[key] = inputs[key]
    return body


def run(call: Call) -> dict[str, Any]:
    if call.integration.feature("legacy_edits"):
        return call.default()
    chat = call.expect_object(call.send("POST", "/chat/completions", json_body=chat_request(call.inputs)))
    return {
        "object": "edit",
        "created": chat.get("created"),
        "choices": [
            {"index": choice.get("index", i), "text": (choice.get("message") or {}).get("content") or "",
             "finish_reason": choice.get("finish_reason")}
            for i, choice in enumerate(chat.get("choices") or [])
        ],
        "usage": chat.get("usage"),
    }
