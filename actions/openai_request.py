"""OpenAI API Request: any method and path under the integration's base URL, Rewst's generic action.

It goes through the same ``Call.send`` as every action, so retries, the ledger, redaction and the rate
budget apply. Two rules keep the integration's key at home, checked before anything is sent:

- ``path`` is relative: an absolute URL, a scheme, ``..`` or ``.`` segments, ``//``, a backslash, a
  query or fragment, or a percent-encoded dot or slash is refused (each could point the request, and the
  key on it, somewhere else);
- ``headers`` may not set a credential (Authorization, api-key, the integration's own key header) or a
  header the transport owns (Host, Cookie, the length headers).

GET, HEAD and DELETE are repeat-safe; any other method is a paid call unless ``repeat_safe`` says so
(``repeat_safe()`` below is what the workers' ledger asks).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

from actions._binding import Call
from actions._files import read_file_field
from actions._outputs import prepare_directory, save_in_directory
from integration.errors import InputError, ResponseShapeError

__all__ = ["repeat_safe", "run"]

_REPEAT_SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_TRANSPORT_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "cookie", "host",
                                "content-length", "transfer-encoding", "connection"})
_SAFE_RESPONSE_HEADERS = ("content-type", "x-request-id", "openai-", "x-ratelimit-", "retry-after")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_EXTENSIONS = {"application/pdf": "pdf", "audio/mpeg": "mp3", "audio/wav": "wav", "image/png": "png",
               "image/jpeg": "jpeg", "image/webp": "webp", "application/octet-stream": "bin"}


def repeat_safe(inputs: dict[str, Any]) -> bool:
    """Whether a lost answer may be retried: GET, HEAD, DELETE, or a call marked ``repeat_safe``."""
    return inputs.get("method") in _REPEAT_SAFE_METHODS or inputs.get("repeat_safe") is True


def _refuse(field: str, reason: str) -> InputError:
    return InputError([{"field": field, "reason": reason}], action="openai_request")


def checked_path(path: str) -> str:
    """The path, made relative (``models`` -> ``/models``), or an InputError if it could leave the base URL."""
    text = path.strip()
    if _SCHEME.match(text) or text.startswith("//"):
        raise _refuse("path", "must be a path relative to the integration's base URL, not an absolute URL: the "
                              "key is only ever sent to that URL")
    if any(ch in text for ch in "\\?#") or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
        raise _refuse("path", "must not hold a backslash, '?', '#', a space or a control character (give the "
                              "query in query)")
    if re.search(r"%(2e|2f|5c)", text, re.IGNORECASE):
        raise _refuse("path", "must not hold a percent-encoded '.', '/' or '\\'")
    segments = text.strip("/").split("/")
    if "//" in text.strip("/") or any(s in ("", ".", "..") for s in segments):
        raise _refuse("path", "must not hold empty, '.' or '..' segments: it may not leave the base URL")
    return "/" + text.lstrip("/")


def checked_headers(headers: dict[str, str], call: Call) -> dict[str, str]:
    own = (call.integration.auth.name or "").lower()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _TRANSPORT_HEADERS or (own and lowered == own):
            raise _refuse(f"headers.{name}", "is set by the integration (its credential or the transport), never by "
                                             "a step: the key cannot be replaced or copied")
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise _refuse(f"headers.{name}", "is not a valid HTTP header name")
        if any(ord(ch) < 0x20 and ch != "\t" for ch in value) or "\x7f" in value:
            raise _refuse(f"headers.{name}", "holds a line break or a control character")
    return dict(headers)


def _query(raw: dict[str, Any]) -> dict[str, str]:
    return {k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in raw.items()}


def run(call: Call) -> dict[str, Any]:
    inputs = call.inputs
    method: str = inputs["method"]
    path = checked_path(inputs["path"])
    headers = checked_headers(inputs.get("headers") or {}, call)
    files_given = inputs.get("files") or {}
    if files_given and "body" in inputs:
        raise _refuse("body", "give a JSON body or files (a multipart body), not both")
    if inputs.get("form") and not files_given:
        raise _refuse("form", "form fields go with files (a multipart body); use body for JSON")
    parts: list[tuple[str, Any]] | None = None
    if files_given:
        parts = [(name, (None, text)) for name, text in _query(inputs.get("form") or {}).items()]
        for name, value in files_given.items():
            parts.append((name, read_file_field(value, f"files.{name}", {}, action=call.manifest.name)))
    save_to = inputs.get("save_to")
    directory = prepare_directory(save_to, call.manifest.name) if save_to else None  # before the call
    response = call.send(method, path, json_body=inputs.get("body"), params=_query(inputs.get("query") or {}) or None,
                         files=parts, idempotent=repeat_safe(inputs), body_reader=_whole_answer,
                         headers=headers or None)
    answer_headers, content = response.body if isinstance(response.body, tuple) else ({}, b"")
    content_type = answer_headers.get("content-type", "")
    kept = {k: v for k, v in answer_headers.items() if k.startswith(_SAFE_RESPONSE_HEADERS)}
    output: dict[str, Any] = {"status": response.status, "headers": kept}
    mime = content_type.split(";")[0].strip().lower()
    if not content:
        output["body"] = None
    elif mime == "application/json" or mime.endswith("+json"):
        output["body"] = _json_body(content, response)
    elif mime.startswith("text/") or mime in ("application/x-ndjson", "application/jsonl"):
        output["body"] = content.decode("utf-8", "replace")
    elif directory is not None:
        target = save_in_directory(directory, "response", _EXTENSIONS.get(mime, "bin"), [content])
        output["path"] = str(target.resolve())
    else:
        output["body_base64"] = base64.b64encode(content).decode("ascii")
    if isinstance(output.get("body"), dict):  # the ledger and budget read usage like any action's
        usage = output["body"].get("usage")
        if isinstance(usage, dict):
            for key, value in usage.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    call.usage[key] = call.usage.get(key, 0) + value
    return output


def _whole_answer(headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[dict[str, str], bytes]:
    """The answer's headers and bytes, whatever its type: this action decides how to read it."""
    return headers, b"".join(chunks)


def _json_body(content: bytes, response: Any) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise ResponseShapeError("openai_request: the answer says it is JSON but is not",
                                 status=response.status, request_id=response.request_id) from None
