"""Answers that are not a JSON object, turned into one a workflow step can hand on.

- **Empty answers** (``http.answer: empty``; e.g. ``DELETE /containers/{id}``, the realtime call controls): the
  spec declares no body, so the step returns ``{"id": <the last path id>, "status": <HTTP status>}`` plus
  ``"deleted": true`` for a DELETE and ``"ok": true`` otherwise (a JSON object the API sends anyway is merged in).
- **Binary answers** (``http.answer: binary``; speech, file content, video content, skill zips): the bytes are
  streamed to a temporary file beside their destination as they arrive (never held whole in memory), then
  with ``save_to`` linked into place, or without it returned as ``base64`` (up to ``MAX_INLINE_BYTES``). The
  output always says ``content_type``, ``bytes`` and ``sha256``; ``parse: jsonl`` adds the lines as
  ``records`` (batch output and error files), ``parse: text`` the content as ``text``.

Files are written whole or not at all and never replace an existing file: ``save_to`` naming an existing file is
refused before the (paid) call, and the final step is a hard link, which fails rather than overwrite if a file
appeared meanwhile. ``create_image`` saves its images with the same functions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.errors import InputError, ResponseShapeError

__all__ = ["MAX_INLINE_BYTES", "MAX_PARSED_BYTES", "BinaryBody", "BinarySink", "SaveTarget", "binary_output",
           "discard", "empty_result", "prepare_directory", "prepare_save_to", "save_in_directory"]

#: Largest answer returned as base64 without ``save_to`` (base64 adds a third, and run records keep outputs).
MAX_INLINE_BYTES = 16 * 1024 * 1024
#: Largest file ``parse`` reads into the output (a parsed list is held whole).
MAX_PARSED_BYTES = 64 * 1024 * 1024
_PARTIAL_PREFIX = ".partial-"
#: Extensions for content types ``mimetypes`` does not know or names oddly.
_EXTENSIONS = {"audio/mpeg": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/opus": ".opus",
               "audio/aac": ".aac", "audio/flac": ".flac", "audio/pcm": ".pcm", "application/zip": ".zip",
               "video/mp4": ".mp4", "image/webp": ".webp", "image/jpeg": ".jpg", "image/png": ".png",
               "application/jsonl": ".jsonl", "application/octet-stream": ".bin", "text/plain": ".txt"}


def _refuse(reason: str, action: str | None, field: str = "save_to") -> InputError:
    return InputError([{"field": field, "reason": reason}], action=action)


# ---------------------------------------------------------------- empty answers


def empty_result(method: str, path_values: dict[str, Any], status: int, body: Any = None) -> dict[str, Any]:
    """The small result of an answer without a body (see the module docstring)."""
    result: dict[str, Any] = {}
    if path_values:
        result["id"] = str(list(path_values.values())[-1])
    result["deleted" if method == "DELETE" else "ok"] = True
    result["status"] = status
    if isinstance(body, dict):
        result.update(body)
    return result


# ---------------------------------------------------------------- writing files


def _link_new(temp: Path, target: Path) -> bool:
    """Put ``temp`` at ``target`` unless something is there already (False then); atomic where links exist."""
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: check, then rename (a narrow race, never a partial file)
        if target.exists():
            return False
        os.replace(temp, target)
        return True
    temp.unlink(missing_ok=True)
    return True


def _write_temp(directory: Path, suffix: str, chunks: Iterable[bytes]) -> tuple[Path, int, str]:
    """(temp path, size, sha256) of the chunks written to a hidden temporary file in ``directory``."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=_PARTIAL_PREFIX, suffix=suffix)
    temp, size, digest = Path(name), 0, hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
                digest.update(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, size, digest.hexdigest()


def save_in_directory(directory: Path, stem: str, ext: str, chunks: Iterable[bytes]) -> Path:
    """Write a new file ``<stem>.<ext>`` in ``directory`` (``<stem>-1.<ext>``… if taken), whole or not at all."""
    temp, _, _ = _write_temp(directory, f".{ext}", chunks)
    try:
        return _place_free(temp, directory, stem, f".{ext}")
    finally:
        temp.unlink(missing_ok=True)


def _safe_stem(name: str) -> str:
    """A file name part from an id or a header: no separators, no leading dot (it stays in its directory)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")[:120]
    return cleaned or "download"


def _place_free(temp: Path, directory: Path, stem: str, suffix: str) -> Path:
    counter = 0
    while True:
        target = directory / (f"{stem}{suffix}" if counter == 0 else f"{stem}-{counter}{suffix}")
        if _link_new(temp, target):
            return target
        counter += 1


def prepare_directory(value: str, action: str | None, field: str = "save_to") -> Path:
    """The directory ``value`` names, created if missing and checked writable, before any paid call."""
    directory = Path(value).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refuse(f"cannot create directory {str(directory)!r}: {exc.strerror or exc}", action, field) from None
    if not os.access(directory, os.W_OK):
        raise _refuse(f"directory {str(directory)!r} is not writable", action, field)
    return directory


@dataclass(frozen=True)
class SaveTarget:
    """Where a binary answer goes: a new file at ``path``, or a free name in ``directory``."""

    directory: Path
    path: Path | None = None


def prepare_save_to(value: str, action: str | None) -> SaveTarget:
    """``save_to`` checked before the call: an existing directory (or a path ending in ``/``) receives a new file;
    any other path is the file to create, refused if it exists (a file is never overwritten)."""
    text = value.strip()
    target = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or target.is_dir():
        return SaveTarget(prepare_directory(text, action))
    if target.exists() or target.is_symlink():
        raise _refuse(f"{str(target)!r} already exists; a file is never overwritten (give a new file name, or a "
                      "directory to write a new file in)", action)
    return SaveTarget(prepare_directory(str(target.parent), action), target)


# ---------------------------------------------------------------- reading binary answers


def _content_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower() or \
        "application/octet-stream"


def _extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"


def _filename(headers: dict[str, str]) -> str | None:
    """The file name a Content-Disposition header suggests (its last path part only)."""
    disposition = headers.get("content-disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value.strip('"'):
            return Path(value.strip('"')).name or None
    return None


@dataclass
class BinaryBody:
    """A binary answer as received: a complete temporary file (removed by ``binary_output``) and its facts."""

    temp: Path
    size: int
    sha256: str
    content_type: str
    filename: str | None


class BinarySink:
    """The client's body reader for one binary call: streams each attempt into a fresh temporary file."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def __call__(self, headers: dict[str, str], chunks: Iterator[bytes]) -> BinaryBody:
        content_type = _content_type(headers)
        directory = self.directory or Path(tempfile.gettempdir())
        temp, size, digest = _write_temp(directory, _extension(content_type), chunks)
        return BinaryBody(temp, size, digest, content_type, _filename(headers))


def discard(body: Any) -> None:
    """Remove a binary answer's temporary file when the call fails after it arrived (anything else: nothing)."""
    if isinstance(body, BinaryBody):
        body.temp.unlink(missing_ok=True)


def _parsed(temp: Path, how: str, action: str) -> dict[str, Any]:
    if temp.stat().st_size > MAX_PARSED_BYTES:
        raise ResponseShapeError(f"{action}: the file is larger than the {MAX_PARSED_BYTES} bytes parse reads; "
                                 "leave parse out and use save_to")
    if how == "text":
        return {"text": temp.read_bytes().decode("utf-8", "replace")}
    records: list[Any] = []
    with temp.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                records.append(json.loads(raw))
            except (ValueError, UnicodeDecodeError):
                raise ResponseShapeError(f"{action}: line {number} of the file is not JSON (parse: jsonl); leave "
                                         "parse out to get the bytes") from None
    return {"records": records}


def binary_output(body: Any, target: SaveTarget | None, parse: str | None, action: str,
                  stem: str) -> dict[str, Any]:
    """The step's output for a binary answer; the temporary file is placed or removed whatever happens."""
    if not isinstance(body, BinaryBody):
        raise ResponseShapeError(f"{action}: the API answered without the file's bytes")
    try:
        output: dict[str, Any] = {"content_type": body.content_type, "bytes": body.size, "sha256": body.sha256}
        if body.filename:
            output["filename"] = body.filename
        if parse:
            output.update(_parsed(body.temp, parse, action))
        if target is not None:
            if target.path is not None:
                if not _link_new(body.temp, target.path):
                    raise _refuse(f"{str(target.path)!r} appeared while the answer arrived; a file is never "
                                  "overwritten, so nothing was saved", action)
                placed = target.path
            else:
                name = Path(body.filename).stem if body.filename else stem
                placed = _place_free(body.temp, target.directory, _safe_stem(name),
                                     Path(body.filename or "").suffix or _extension(body.content_type))
            output["path"] = str(placed.resolve())
        elif not parse:
            if body.size > MAX_INLINE_BYTES:
                raise ResponseShapeError(f"{action}: the answer is {body.size} bytes, more than the "
                                         f"{MAX_INLINE_BYTES} returned as base64; give save_to to keep it as a file")
            output["base64"] = base64.b64encode(body.temp.read_bytes()).decode("ascii")
        return output
    finally:
        body.temp.unlink(missing_ok=True)
