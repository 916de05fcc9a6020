"""File fields (``format: binary`` in a manifest): what a workflow gives, turned into an upload.

A workflow cannot hold bytes, so a file field takes text in one of three forms:

- a local path (``/data/call.mp3``) or the same with ``@`` (``@/data/call.mp3``), read when the
  call is made (the worker's filesystem), so a run record never holds the file;
- a data URL (``data:audio/mpeg;base64,...``), for content produced by an earlier step.

The size is checked against the field's ``x-max-bytes`` (default ``DEFAULT_MAX_BYTES``) before
anything is read whole, and a missing, unreadable or oversized file is an InputError naming
the field, raised before any request is sent.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from pathlib import Path
from typing import Any

from integration.errors import InputError

__all__ = ["DEFAULT_MAX_BYTES", "read_file_field"]

#: OpenAI's own upload limit for most endpoints (images are smaller, set per field with x-max-bytes).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*);base64,(?P<data>.*)$",
                       re.DOTALL)


def _refuse(field: str, reason: str, action: str | None) -> InputError:
    return InputError([{"field": field, "reason": reason}], action=action)


def _from_data_url(text: str, field: str, limit: int, action: str | None) -> tuple[str, bytes, str]:
    match = _DATA_URL.match(text)
    if not match:
        raise _refuse(field, "is a data: URL that is not base64 (write data:<type>;base64,<data>)", action)
    encoded = match["data"].strip()
    if len(encoded) * 3 // 4 > limit + 3:
        raise _refuse(field, f"holds more than {limit} bytes", action)
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(field, "is a data: URL whose base64 does not decode", action) from None
    mime = match["mime"] or "application/octet-stream"
    extension = mimetypes.guess_extension(mime) or ".bin"
    return f"upload{extension}", content, mime


def read_file_field(value: Any, field: str, schema: dict[str, Any], *, action: str | None = None,
                    ) -> tuple[str, bytes, str]:
    """(file name, bytes, content type) for one file field value, or an InputError naming ``field``."""
    limit = int(schema.get("x-max-bytes") or (schema.get("items") or {}).get("x-max-bytes") or DEFAULT_MAX_BYTES)
    if not isinstance(value, str) or not value.strip():
        raise _refuse(field, "must be a file: a local path, @path, or a data: URL", action)
    text = value.strip()
    if text.startswith("data:"):
        return _from_data_url(text, field, limit, action)
    path = Path(text.removeprefix("@")).expanduser()
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise _refuse(field, f"{str(path)!r} is not a file", action)
        if size > limit:
            raise _refuse(field, f"file {str(path)!r} is {size} bytes, more than the {limit} this field takes",
                          action)
        content = path.read_bytes()
    except FileNotFoundError:
        raise _refuse(field, f"file {str(path)!r} does not exist", action) from None
    except OSError as exc:
        raise _refuse(field, f"cannot read {str(path)!r}: {exc.strerror or exc}", action) from None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, content, mime
