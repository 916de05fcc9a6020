"""Values given on the command line (``--input '{…}'`` or ``--input @file.json``), checked before use.

Whatever a user types or points at, the answer is a value or an ``InputError`` naming the option
and, inside the JSON, the path of the bad value (``--input.ticket.priority``): never a traceback.
Refused: a file that cannot be read or is not UTF-8 (no fallback decoding), text that is not JSON,
``NaN``/``Infinity`` (Python's ``json`` accepts them; the API and the run store cannot carry them),
lone surrogates (``"\\ud800"``, or undecodable bytes in an argument: not text, never replaced), and
nesting deeper than ``MAX_DEPTH`` (a 100,000-deep document is an error, not a RecursionError).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from integration.errors import InputError

__all__ = ["MAX_DEPTH", "check_json_value", "parse_json_text", "read_json_object", "read_text_file"]

#: Deepest nesting accepted in a value given on the command line.
MAX_DEPTH = 64


def _refuse(field: str, reason: str) -> InputError:
    return InputError([{"field": field, "reason": reason}])


def read_text_file(path: str | Path, field: str) -> str:
    """A file's text for ``field`` (``--input @file``): strict UTF-8 without BOM, or an InputError."""
    location = Path(path).expanduser()
    try:
        raw = location.read_bytes()
    except OSError as exc:
        raise _refuse(field, f"cannot read {str(location)!r}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise _refuse(field, f"file {str(location)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                             f"{exc.start}); convert it to UTF-8") from None


def _path(field: str, parts: list[Any]) -> str:
    return field + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _not_text(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}, which is not text"
    return None


def check_json_value(value: Any, field: str) -> None:
    """Refuse, naming the path, what JSON cannot carry: NaN/±Infinity, lone surrogates, deep nesting.

    Iterative, so the depth of ``value`` never reaches Python's recursion limit here.
    """
    pending: list[tuple[Any, list[Any]]] = [(value, [])]
    while pending:
        current, parts = pending.pop()
        if isinstance(current, str):
            if reason := _not_text(current):
                raise _refuse(_path(field, parts), reason)
        elif isinstance(current, float):
            if not math.isfinite(current):
                raise _refuse(_path(field, parts), f"must be a finite number, not {current!r} (JSON has no NaN "
                                                   "or Infinity)")
        elif isinstance(current, dict | list):
            if len(parts) >= MAX_DEPTH:
                raise _refuse(_path(field, parts[:3]) + "…", f"nests deeper than {MAX_DEPTH} levels")
            if isinstance(current, list):
                pending.extend((item, [*parts, index]) for index, item in enumerate(current))
                continue
            for key, item in current.items():
                if reason := _not_text(key):
                    raise _refuse(_path(field, parts), f"has a key that {reason.removeprefix('contains ')}")
                pending.append((item, [*parts, key]))


def parse_json_text(text: str, field: str) -> Any:
    """Strict JSON text to a value, or an InputError naming ``field`` (and the path inside it)."""
    if reason := _not_text(text):  # undecodable bytes in an argument arrive as lone surrogates
        raise _refuse(field, reason)
    try:
        value = json.loads(text)  # NaN/Infinity parse here and are refused below, with their path
    except json.JSONDecodeError as exc:
        raise _refuse(field, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:  # the C decoder stops at the interpreter's limit, cleanly
        raise _refuse(field, f"nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise _refuse(field, f"is not valid JSON ({exc})") from None
    check_json_value(value, field)
    return value


def read_json_object(raw: str | None, field: str) -> dict[str, Any]:
    """An option holding a JSON object inline or as ``@file``; absent means ``{}``."""
    if raw is None:
        return {}
    text = read_text_file(raw[1:], field) if raw.startswith("@") else raw
    value = parse_json_text(text, field)
    if not isinstance(value, dict):
        raise _refuse(field, "must be a JSON object of input values ({\"name\": value, …})")
    return value
