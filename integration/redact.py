"""Redaction by value: every live secret is scrubbed from log records and any text we emit.

Redacting by header or field name misses the key once it has been copied into a URL, an error
message or a traceback; knowing the values themselves catches it wherever it travels.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "install_log_redaction", "register_secret", "scrub", "scrub_data"]

MASK = "[REDACTED]"
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_installed = False
#: True while no secret holds a character JSON would escape, so a search of the JSON text finds them all.
_json_searchable = True


def register_secret(value: str | None) -> None:
    """Remember a secret value (and its URL-encoded forms) so it is scrubbed from now on."""
    global _pattern
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    forms = {value, quote(value, safe=""), quote_plus(value)}
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        global _json_searchable
        _json_searchable = all(json.dumps(s, ensure_ascii=False) == f'"{s}"' for s in _secrets)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``[REDACTED]``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def scrub_data(value: Any) -> Any:
    """Scrub every string inside a JSON-like value (results, run records, error details)."""
    pattern = _pattern
    if pattern is None:
        return value
    if isinstance(value, dict | list) and _json_searchable:
        # One C-speed search over the serialised value; the walk below runs only on a hit.
        try:
            if not pattern.search(json.dumps(value, ensure_ascii=False, default=str)):
                return value
        except (TypeError, ValueError):
            pass
    return _scrub_walk(value)


def _scrub_walk(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {_scrub_walk(k): _scrub_walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_walk(v) for v in value]
    return value


def _redacting_factory(base: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = base(*args, **kwargs)
        if _pattern is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return record

    factory.__pack_redacting__ = True  # type: ignore[attr-defined]
    return factory


def install_log_redaction() -> None:
    """Scrub every log record at creation, whichever logger or handler it goes to (idempotent)."""
    global _installed
    with _lock:
        current = logging.getLogRecordFactory()
        if _installed and getattr(current, "__pack_redacting__", False):
            return
        logging.setLogRecordFactory(_redacting_factory(current))
        _installed = True
