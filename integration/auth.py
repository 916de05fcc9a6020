"""The one module that reads an API key in clear.

It does so for five reasons only, each a function here: to check a key's characters when it enters
the pack, to fingerprint it (so other code can tell keys apart without reading them), to place it
on a request (an API call's auth, or a sink's payload: ``payload_key``), to seal it at rest, and to
open it again. Everything else holds a ``SecretStr`` and compares fingerprints.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import httpx
from cryptography.fernet import MultiFernet
from pydantic import SecretStr

from integration.errors import ConfigError
from integration.redact import fingerprint, register_fingerprint, register_secret

if TYPE_CHECKING:
    from integration.model import Integration

__all__ = ["ApiKeyAuth", "api_key_from_text", "api_key_problem", "checked_api_key", "key_fingerprint", "open_secret",
           "payload_key",
           "register_key_fingerprint", "register_sealed_key", "seal_secret"]

_NAMED_CHARACTERS = {"\r": "a carriage return (CR)", "\n": "a line break (LF)", "\t": "a tab",
                     " ": "a space", "\x7f": "a control character (DEL)"}


def api_key_problem(secret: SecretStr | str) -> str | None:
    """Why a key cannot be used, or None; the reason names the character class, never the key.

    A key travels in an HTTP header or a query string, so it must be printable ASCII without spaces:
    a CR or LF would split the header (httpx then quotes the whole value in its error), and anything
    else is a paste accident. Such keys are refused, never trimmed, so what is stored is what was given.
    """
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    for position, char in enumerate(value, start=1):
        if "!" <= char <= "~":
            continue
        if char in _NAMED_CHARACTERS:
            what = _NAMED_CHARACTERS[char]
        elif ord(char) < 0x20 or 0x80 <= ord(char) < 0xA0:
            what = f"a control character (U+{ord(char):04X})"
        else:
            what = "a non-ASCII character"
        return (f"contains {what} at character {position}: an API key is one line of printable ASCII "
                "without spaces; it is refused, not trimmed")
    return None


def checked_api_key(secret: SecretStr | None) -> SecretStr | None:
    """None for no key or a blank one, else the key itself; ValueError with the reason if it is unusable."""
    if secret is None or not secret.get_secret_value().strip():
        return None
    problem = api_key_problem(secret)
    if problem is not None:
        raise ValueError(problem)
    return secret


def api_key_from_text(text: str, *, field: str, line_ending: bool = False) -> SecretStr | None:
    """A key read from stdin or an environment variable; blank means none, a bad character is refused.

    ``line_ending`` allows the one final ``\\n`` that ends a line read from stdin; a second line is refused.
    """
    if line_ending and text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        return None
    if line_ending and "\n" in text:
        raise ConfigError(f"{field}: holds more than one line; give the API key alone on one line",
                          field=field)
    problem = api_key_problem(text)
    if problem is not None:
        raise ConfigError(f"{field}: the API key {problem}", field=field)
    return SecretStr(text)


def key_fingerprint(secret: SecretStr | None) -> str | None:
    """A keyed digest that tells keys apart in this process (client pooling, caches) without the key."""
    return None if secret is None else fingerprint(secret.get_secret_value())


class ApiKeyAuth(httpx.Auth):
    """Puts the key where the integration says: bearer header, custom header, query parameter, or nowhere.

    ``admin`` places the integration's Admin API key instead (OpenAI's /organization endpoints), the same way.
    """

    def __init__(self, integration: Integration, *, admin: bool = False) -> None:
        self._auth = integration.auth
        secret = integration.admin_key if admin else integration.api_key
        self._key = secret.get_secret_value() if secret else None
        self._admin = admin
        register_secret(self._key)

    def __repr__(self) -> str:
        return f"ApiKeyAuth(placement={self._auth.placement.value!r}, admin={self._admin})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key, placement = self._key, self._auth.placement
        if key is not None:
            if placement == "bearer":
                request.headers["Authorization"] = f"Bearer {key}"
            elif placement == "header":
                request.headers[self._auth.name or ""] = f"{self._auth.prefix}{key}"
            elif placement == "query":
                request.url = request.url.copy_merge_params({self._auth.name or "": key})
        yield request


def payload_key(secret: SecretStr | None) -> str | None:
    """A key a sink must put in its request body (Reconify's ``appKey``/``apiKey``), registered for redaction."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    register_secret(value)
    return value


def seal_secret(secret: SecretStr, fernet: MultiFernet) -> str:
    """Encrypt a key for storage; the clear value never leaves this module."""
    value = secret.get_secret_value()
    register_secret(value)
    return fernet.encrypt(value.encode()).decode()


def open_secret(token: str, fernet: MultiFernet) -> SecretStr:
    """Decrypt a stored key straight into a SecretStr, registering it for redaction."""
    value = fernet.decrypt(token.encode()).decode()
    register_secret(value)
    return SecretStr(value)


def register_key_fingerprint(secret: SecretStr) -> None:
    """Teach the redactor a key by fingerprint only (for a key this process holds but never sends)."""
    register_fingerprint(secret.get_secret_value())


def register_sealed_key(token: str, fernet: MultiFernet) -> None:
    """Teach the redactor a stored key by fingerprint only; the clear value is dropped at once.

    For processes that must scrub keys but never send them (``serve``): they then hold no key in clear.
    """
    register_fingerprint(fernet.decrypt(token.encode()).decode())
