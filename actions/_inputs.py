"""Raw input as it arrives from outside (CLI text, files, webhooks, workflow values), checked before use.

Every value that reaches coercion is plain JSON that can be encoded and sent: no NaN or
±Infinity (JSON has none, and the encoder would fail after validation passed), no lone
surrogate (it cannot be encoded as UTF-8; it is refused, never replaced), no nesting deeper
than ``MAX_DEPTH`` (a 100,000-deep document must be an error naming the field, not a
RecursionError). Files are read as strict UTF-8: no fallback decoding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from integration.errors import InputError

__all__ = ["MAX_DEPTH", "check_value", "parse_json_text", "read_text_file"]

_CONTAINERS = (dict, list)
_SCALARS = (str, float)
#: Deepest nesting accepted anywhere in an input (OpenAI's own request schemas nest far less).
MAX_DEPTH = 64


def _refuse(field: str, reason: str, action: str | None) -> InputError:
    return InputError([{"field": field, "reason": reason}], action=action)


def _text_depth_error(text: str) -> int | None:
    """The character offset where JSON text nests deeper than ``MAX_DEPTH``, else None (no recursion)."""
    depth = 0
    in_string = escaped = False
    for offset, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return offset
        elif char in "]}":
            depth -= 1
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed: JSON has no NaN or Infinity")


def parse_json_text(text: str, field: str, *, action: str | None = None) -> Any:
    """Parse JSON text strictly, or raise an InputError naming ``field`` (or the path inside the text).

    Refused: invalid JSON, ``NaN``/``Infinity``/``-Infinity`` (Python's json accepts them), nesting
    deeper than ``MAX_DEPTH``, and lone surrogates such as ``"\\ud800"``.
    """
    if text.count("[") + text.count("{") > MAX_DEPTH:  # only then can it nest too deep; the scan never recurses
        offset = _text_depth_error(text)
        if offset is not None:
            raise _refuse(field, f"nests deeper than {MAX_DEPTH} levels (at character {offset})", action)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _refuse(field, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                      action) from None
    except ValueError as exc:
        raise _refuse(field, f"is not valid JSON ({exc})", action) from None
    try:
        check_value(value, action=action)  # paths inside the text are field paths (messages[0].content)
    except InputError as exc:
        if exc.problems and not exc.problems[0]["field"]:
            raise _refuse(field, exc.problems[0]["reason"], action) from None
        raise
    return value


def _path(field: str, parts: list[Any]) -> str:
    text = field
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unlink(link: tuple[Any, ...] | None) -> list[Any]:
    """The path parts of a (key, parent) chain, built only when something is refused."""
    parts: list[Any] = []
    while link is not None:
        parts.append(link[0])
        link = link[1]
    return parts[::-1]


def _bad_string(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}, which is not text"
    return None


def check_value(value: Any, field: str = "", *, action: str | None = None) -> None:
    """Refuse what JSON cannot carry, naming the path: NaN/±Infinity, lone surrogates, excessive depth.

    Iterative (no recursion), so a 100,000-deep value is refused rather than crashing. Scalars are
    checked where they sit and paths are only spelt out for a refusal, so a valid chat input costs
    a few microseconds. Keys are checked like values. ``field`` prefixes every reported path.
    """
    _check_scalar(value, field, None, None, action)
    if not isinstance(value, _CONTAINERS):
        return
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(value, 0, None)]
    while stack:
        current, depth, link = stack.pop()
        if depth >= MAX_DEPTH:
            raise _too_deep(field, link, action)
        pairs = current.items() if isinstance(current, dict) else enumerate(current)
        for key, item in pairs:
            if isinstance(key, str) and not key.isascii() and (reason := _bad_string(key)):
                shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                raise _refuse(_path(field, [*_unlink(link), shown]), f"is a field name that {reason}", action)
            if isinstance(item, _CONTAINERS):
                stack.append((item, depth + 1, (key, link)))
            elif isinstance(item, _SCALARS):
                _check_scalar(item, field, key, link, action)


def _check_scalar(item: Any, field: str, key: Any, link: tuple[Any, ...] | None, action: str | None) -> None:
    reason = None
    if isinstance(item, str):
        reason = _bad_string(item)
    elif isinstance(item, float) and not math.isfinite(item):
        reason = f"must be a finite number (got {item!r}; JSON has no NaN or Infinity)"
    if reason:
        parts = _unlink(link) + ([] if key is None and link is None else [key])
        raise _refuse(_path(field, parts), reason, action)


def _too_deep(field: str, link: tuple[Any, ...] | None, action: str | None) -> InputError:
    parts = _unlink(link)
    shown = _path(field, parts[:3]) + ("..." if len(parts) > 3 else "")
    return _refuse(shown, f"nests deeper than {MAX_DEPTH} levels", action)


def read_text_file(path: str | Path, field: str, *, action: str | None = None) -> str:
    """A file's text for ``field`` (e.g. ``--input @file``): strict UTF-8, or an InputError naming the field."""
    location = Path(path).expanduser()
    try:
        raw = location.read_bytes()
    except OSError as exc:
        raise _refuse(field, f"cannot read {str(location)!r}: {exc.strerror or exc}", action) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(field, f"file {str(location)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                             f"{exc.start}); convert it to UTF-8", action) from None
    return text.removeprefix("\ufeff")
