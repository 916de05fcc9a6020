"""Request bodies as the API reads them: JSON (strict: no NaN, bounded depth) or multipart/form-data, whose
text fields take the types the spec gives them."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from starlette.requests import Request

from actions.simulator.spec import MULTIPART, operation

__all__ = ["MAX_BODY_BYTES", "MAX_JSON_DEPTH", "Upload", "parse_body", "parse_multipart", "read_body"]

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_JSON_DEPTH = 128


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart body: what the file store keeps (validation sees only its name)."""

    filename: str
    content: bytes
    content_type: str


async def read_body(request: Request) -> bytes | None:
    """The whole body; None when it is larger than MAX_BODY_BYTES."""
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(part)
    return b"".join(parts)


def parse_multipart(raw: bytes, content_type: str, field_types: dict[str, set[str]],
                    uploads: dict[str, Upload] | None = None) -> dict[str, Any]:
    """A multipart/form-data body as the JSON object the spec describes: files become their file name, text
    fields the type the spec gives them (``n=2`` is the integer 2), repeated fields (``image[]``) a list. The
    files themselves go to ``uploads`` (field name → Upload; the first of a repeated field)."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                   + raw)
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        if filename is not None and uploads is not None:
            uploads.setdefault(name.removesuffix("[]"), Upload(filename, payload, part.get_content_type()))
        value: Any = filename if filename is not None else _form_value(payload.decode("utf-8"),
                                                                       field_types.get(name.removesuffix("[]"), set()))
        key = name.removesuffix("[]")
        if name.endswith("[]") or key in form:
            existing = form.get(key)
            form[key] = [*(existing if isinstance(existing, list) else [] if existing is None else [existing]), value]
        else:
            form[key] = value
    return form


def _form_value(text: str, types: set[str]) -> Any:
    if "string" in types or not types:
        return text
    with contextlib.suppress(ValueError):
        if "integer" in types and text.lstrip("-").isdigit():
            return int(text)
        if "number" in types:
            return float(text)
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    if types & {"object", "array"}:
        with contextlib.suppress(ValueError):
            return json.loads(text)
    return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python reads them, the API does not


def _depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (iteratively: the value may be deeper than the recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack += [(child, level + 1) for child in node.values()]
        elif isinstance(node, list):
            stack += [(child, level + 1) for child in node]
    return deepest


def parse_body(raw: bytes, content_type: str, operation_id: str | None,
               uploads: dict[str, Upload] | None = None) -> tuple[Any, str | None]:
    """(body, None) or (None, why it could not be read); a multipart body's files go to ``uploads``."""
    if not raw:
        return None, None
    if content_type.startswith(MULTIPART):
        spec_operation = operation(operation_id) if operation_id else None
        try:
            types = spec_operation.field_types(MULTIPART) if spec_operation else {}
            return parse_multipart(raw, content_type, types, uploads), None
        except (ValueError, UnicodeDecodeError):
            return None, "We could not parse the multipart body of your request."
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, ("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                      "using your HTTP library correctly.)")
    if _depth(body) > MAX_JSON_DEPTH:
        return None, f"The JSON body of your request is nested more than {MAX_JSON_DEPTH} levels deep."
    return body, None
