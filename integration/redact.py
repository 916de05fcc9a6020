"""Redaction by value: every live secret is scrubbed from log records and any text we emit.

Redacting by header or field name misses the key once it has been copied into a URL, an error
message or a traceback; knowing the values themselves catches it wherever it travels, in clear,
URL-encoded, JSON- or backslash-escaped, or as Python's ``repr`` of the text or of its bytes.

A process that must scrub keys it never sends (``serve``) registers them by *fingerprint* instead:
a few leading characters, the length and a keyed digest (``hmac-sha256`` with a random per-process
key). ``scrub`` then hashes only the windows of text that start with a known prefix, so such a
process holds no key in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

__all__ = ["MASK", "fingerprint", "install_log_redaction", "redact_url", "register_fingerprint", "register_secret",
           "register_url_secrets", "scrub", "scrub_data"]

MASK = "[REDACTED]"
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_installed = False
#: True while no secret holds a character JSON would escape, so a search of the JSON text finds them all.
_json_searchable = True

#: The key of fingerprints: random per process, so a fingerprint means nothing outside it.
_PEPPER = os.urandom(32)
#: prefix -> {(length, digest)} of the keys registered by fingerprint.
_fingerprints: dict[str, set[tuple[int, str]]] = {}
_prefix_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    """The ways a secret is written out: as is, URL-encoded, JSON/backslash-escaped, repr of text or bytes."""
    forms = {value, quote(value, safe=""), quote_plus(value)}
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(repr(value)[1:-1])
    forms.add(ascii(value)[1:-1])
    forms.add(value.encode("unicode_escape").decode("ascii"))
    forms.add(repr(value.encode("utf-8", "surrogatepass"))[2:-1])
    return {form for form in forms if len(form) >= _MIN_SECRET_LENGTH}


def register_secret(value: str | None) -> None:
    """Remember a secret value (and its encoded and escaped forms) so it is scrubbed from now on."""
    global _pattern
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    forms = _forms(value)
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        global _json_searchable
        _json_searchable = all(json.dumps(s, ensure_ascii=False) == f'"{s}"' for s in _secrets)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def fingerprint(value: str) -> str:
    """The keyed digest of a text; equal texts have equal fingerprints in this process only."""
    return hmac.new(_PEPPER, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _prefix_length(length: int) -> int:
    return 4 if length >= 16 else 2


def register_fingerprint(value: str | None) -> None:
    """Remember a secret by (prefix, length, keyed digest) only; ``value`` itself is not kept."""
    global _prefix_pattern
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    prefix, entry = value[:_prefix_length(len(value))], (len(value), fingerprint(value))
    with _lock:
        known = _fingerprints.setdefault(prefix, set())
        if entry in known:
            return
        known.add(entry)
        global _json_searchable
        if json.dumps(value, ensure_ascii=False) != f'"{value}"':
            _json_searchable = False
        ordered = sorted(_fingerprints, key=len, reverse=True)
        _prefix_pattern = re.compile("(?=(" + "|".join(re.escape(p) for p in ordered) + "))")


def _scrub_fingerprinted(text: str, pattern: re.Pattern[str]) -> str:
    """Replace each window that starts with a known prefix and hashes to a registered fingerprint."""
    spans: list[tuple[int, int]] = []
    for match in pattern.finditer(text):
        start = match.start()
        if spans and start < spans[-1][1]:
            continue
        for length, digest in sorted(_fingerprints.get(match.group(1), ()), reverse=True):
            window = text[start:start + length]
            if len(window) == length and hmac.compare_digest(fingerprint(window), digest):
                spans.append((start, start + length))
                break
    if not spans:
        return text
    parts, last = [], 0
    for start, end in spans:
        parts += [text[last:start], MASK]
        last = end
    parts.append(text[last:])
    return "".join(parts)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``[REDACTED]``."""
    if not text:
        return text
    pattern, prefixes = _pattern, _prefix_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if prefixes is not None:
        text = _scrub_fingerprinted(text, prefixes)
    return text


def scrub_data(value: Any) -> Any:
    """Scrub every string inside a JSON-like value (results, run records, error details)."""
    pattern, prefixes = _pattern, _prefix_pattern
    if pattern is None and prefixes is None:
        return value
    if isinstance(value, dict | list) and _json_searchable:
        # One C-speed search over the serialised value; the walk below runs only on a hit.
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
            if not ((pattern is not None and pattern.search(text))
                    or (prefixes is not None and prefixes.search(text))):
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
        if _pattern is None and _prefix_pattern is None:
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


#: Query parameters of broker and store URLs that carry a credential (``?password=`` in redis-py, sentinel passwords).
_URL_SECRET_PARAMS = re.compile(r"(?i)^(password|passwd|pass|sentinel_password|token|secret)$")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/;]*):(?P<password>[^@/]*)@")


def redact_url(url: str) -> str:
    """A broker or store URL fit to print: the password of each ``user:password@`` and credential
    parameters masked, whatever their length (short passwords are not scrubbed by value).

    Works on the multi-host forms too (``sentinel://:pw@h1:26379;sentinel://:pw@h2:26379``)."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@" if m["password"] else m[0], url)
    if "?" in masked:
        head, _, query = masked.partition("?")
        parts = [part.split("=", 1) for part in query.split("&")]
        query = "&".join(f"{p[0]}={MASK}" if len(p) == 2 and _URL_SECRET_PARAMS.match(unquote(p[0])) else "=".join(p)
                         for p in parts)
        masked = f"{head}?{query}"
    return masked


def register_url_secrets(url: str | None) -> None:
    """Scrub a URL's passwords from logs and errors from now on (every host of a multi-host URL)."""
    if not url:
        return
    for single in re.split(r"[;,](?=[A-Za-z][A-Za-z0-9+.-]*://)", url):
        try:
            parts = urlsplit(single)
            register_secret(unquote(parts.password) if parts.password else None)
            for name, value in parse_qsl(parts.query):
                if _URL_SECRET_PARAMS.match(name):
                    register_secret(value)
        except ValueError:  # an unparsable URL is refused where it is used; nothing to learn from it here
            continue
