"""The one module that reads an API key in clear: to place it on a request, or to seal it at rest."""

from __future__ import annotations

from collections.abc import Generator

import httpx
from cryptography.fernet import MultiFernet
from pydantic import SecretStr

from integration.model import AuthPlacement, Integration
from integration.redact import register_secret

__all__ = ["ApiKeyAuth", "open_secret", "seal_secret"]


class ApiKeyAuth(httpx.Auth):
    """Puts the key where the integration says: bearer header, custom header, query parameter, or nowhere."""

    def __init__(self, integration: Integration) -> None:
        self._auth = integration.auth
        self._key = integration.api_key.get_secret_value() if integration.api_key else None
        register_secret(self._key)

    def __repr__(self) -> str:
        return f"ApiKeyAuth(placement={self._auth.placement.value!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key, placement = self._key, self._auth.placement
        if key is not None:
            if placement == AuthPlacement.bearer:
                request.headers["Authorization"] = f"Bearer {key}"
            elif placement == AuthPlacement.header:
                request.headers[self._auth.name or ""] = f"{self._auth.prefix}{key}"
            elif placement == AuthPlacement.query:
                request.url = request.url.copy_merge_params({self._auth.name or "": key})
        yield request


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
