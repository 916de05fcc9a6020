"""Create Response, curated: file parts from paths or ids, ``output_text``, and a checked ``output_parsed``.

A workflow builder wants the answer's text and, with structured output, the object itself, not
the Responses API's list of output items; so the output adds:

- ``output_text``: every ``output_text`` part of the answer's messages, joined (the SDKs' property);
- ``output_parsed``: with ``text.format`` of type ``json_schema``, that text parsed as JSON and
  validated against the schema. A model that answers something else fails the step with
  ``OutputSchemaError`` (code ``output_schema_mismatch``) naming where the answer is wrong, instead
  of handing a broken object to the next step.

Files come in through three pack options, read before anything is sent (a missing or oversized
file is an input error naming ``files[i]``): ``files`` (local paths, ``@path`` or data URLs;
images become ``input_image`` parts, anything else ``input_file`` parts, both inlined as data
URLs), ``file_ids`` and ``image_file_ids`` (uploaded files). The parts join the last user message,
or a new one when the input is text.

A background response (``background: true``) answers ``queued``; the step's ``wait:`` option
polls it with ``get_response`` and ``finish`` (below) adds the same two fields to the final answer.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from actions._binding import Call
from actions._files import read_file_field
from actions._validate import problems_for
from integration.errors import PackError

__all__ = ["OutputSchemaError", "finish", "output_text", "request_body"]

FILE_OPTIONS = ("files", "file_ids", "image_file_ids")
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})


class OutputSchemaError(PackError):
    """The model's structured answer is not JSON, or does not fit the schema the step asked for."""

    code, category = "output_schema_mismatch", "api"


def output_text(response: dict[str, Any]) -> str | None:
    """The text of the answer's messages (None while nothing has been answered yet)."""
    items = response.get("output")
    if not isinstance(items, list) or not items:
        existing = response.get("output_text")
        return existing if isinstance(existing, str) else None
    texts = [part.get("text") or "" for item in items if isinstance(item, dict) and item.get("type") == "message"
             for part in item.get("content") or [] if isinstance(part, dict) and part.get("type") == "output_text"]
    return "".join(texts)


def _schema_format(text: Any) -> dict[str, Any] | None:
    text_format = text.get("format") if isinstance(text, dict) else None
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        return text_format
    return None


def finish(response: dict[str, Any], text: Any = None) -> dict[str, Any]:
    """Add ``output_text`` and, for a completed JSON-schema answer, the validated ``output_parsed``.

    ``text`` is the request's ``text`` option; when absent, the response's own echo of it is used
    (a polled background response carries it).
    """
    response["output_text"] = output_text(response)
    text_format = _schema_format(text if text is not None else response.get("text"))
    if text_format is None or response.get("status") not in (None, "completed"):
        return response
    name = text_format.get("name") or "the schema"
    raw = response["output_text"] or ""
    try:
        parsed = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise OutputSchemaError(f"create_response: the answer is not JSON, so it does not fit {name}: "
                                f"{exc.__class__.__name__} at character {getattr(exc, 'pos', '?')}",
                                schema=name, response_id=response.get("id")) from None
    schema = text_format.get("schema")
    problems = problems_for(parsed, schema) if isinstance(schema, dict) else []
    if problems:
        first = problems[0]
        where = first["field"] or "the answer"
        raise OutputSchemaError(f"create_response: the answer does not fit {name}: {where}: {first['reason']}",
                                schema=name, problems=problems[:20], response_id=response.get("id"))
    response["output_parsed"] = parsed
    return response


def _file_part(value: str, where: str, schema: dict[str, Any]) -> dict[str, Any]:
    filename, content, mime = read_file_field(value, where, schema, action="create_response")
    data_url = f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"
    if mime in _IMAGE_TYPES:
        return {"type": "input_image", "image_url": data_url, "detail": "auto"}
    return {"type": "input_file", "filename": filename, "file_data": data_url}


def _parts(inputs: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file part the options ask for, read now (so a bad file fails before the call)."""
    parts = [_file_part(value, f"files[{i}]", schema.get("files") or {})
             for i, value in enumerate(inputs.get("files") or [])]
    parts += [{"type": "input_file", "file_id": file_id} for file_id in inputs.get("file_ids") or []]
    parts += [{"type": "input_image", "file_id": file_id, "detail": "auto"}
              for file_id in inputs.get("image_file_ids") or []]
    return parts


def _with_parts(given: Any, parts: list[dict[str, Any]]) -> Any:
    """The input with ``parts`` added to its last user message (a new one when there is none)."""
    if isinstance(given, str) or given is None:
        text = [{"type": "input_text", "text": given}] if given else []
        return [{"role": "user", "content": [*text, *parts]}]
    items = copy.deepcopy(given)
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message":
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": "input_text", "text": content}]
            item["content"] = [*(content or []), *parts]
            return items
    return [*items, {"role": "user", "content": parts}]


def request_body(call: Call) -> dict[str, Any]:
    """What is sent: the API's fields, the input with its file parts."""
    inputs = call.inputs
    body = {k: v for k, v in inputs.items() if k not in call.manifest.pack_only_fields}
    parts = _parts(inputs, call.manifest.properties)
    if parts:
        body["input"] = _with_parts(inputs.get("input"), parts)
    return body


def run(call: Call) -> dict[str, Any]:
    body = request_body(call)
    stream = call.manifest.http.stream  # a streamed answer is assembled into the same response object
    streaming = stream is not None and body.get(stream.flag) is True
    answer = call.expect_object(call.send("POST", call.manifest.http.path, json_body=body,
                                          assemble_stream=stream.assemble if stream and streaming else None))
    return finish(answer, body.get("text"))
