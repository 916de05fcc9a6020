"""Microsoft Entra ID tokens for Azure OpenAI: client credentials from the environment, cached until they expire.

The client id, tenant and secret are read from the variables an integration's ``azure.entra`` names
(``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET`` by default) when a token is needed,
so the pack never stores the secret. The token request is made from inside the httpx auth flow (it is
yielded like any request), so it works the same for a sync and an async client and never blocks an
event loop. A token is reused until ``REFRESH_MARGIN`` seconds before it expires; a 401 on a cached
token drops it and retries once with a new one (the API refused it, so nothing was processed).

The secret and every token are registered with the redactor before use and never put in an error.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import httpx

from integration.errors import AuthenticationError, ConfigError
from integration.model import DEFAULT_AUTHORITY_HOST
from integration.redact import fingerprint, register_secret, scrub

if TYPE_CHECKING:
    from integration.model import Integration

__all__ = ["AUTHORITY_HOST_ENV", "REFRESH_MARGIN", "TOKEN_CACHE", "EntraAuth", "TokenCache"]

AUTHORITY_HOST_ENV = "AZURE_AUTHORITY_HOST"
#: Refresh this many seconds before a token expires (azure-identity refreshes 5 minutes early too).
REFRESH_MARGIN = 300.0
_CacheKey = tuple[str, str, str, str, str]


class TokenCache:
    """Tokens by (authority, tenant, client, scope, secret fingerprint), shared by every client of the process."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now  # a test moves the clock past an expiry instead of sleeping
        self._tokens: dict[_CacheKey, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: _CacheKey) -> str | None:
        with self._lock:
            held = self._tokens.get(key)
        if held is None or self.now() >= held[1] - REFRESH_MARGIN:
            return None
        return held[0]

    def put(self, key: _CacheKey, token: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[key] = (token, self.now() + expires_in)

    def drop(self, key: _CacheKey, token: str) -> None:
        """Forget ``token`` (the API refused it) unless another thread already replaced it."""
        with self._lock:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


TOKEN_CACHE = TokenCache()


class EntraAuth(httpx.Auth):
    """``Authorization: Bearer <Entra token>``; never an ``api-key`` header alongside it."""

    requires_request_body = True  # a request refused for a stale token is sent again whole
    requires_response_body = True  # the token endpoint's answer is read inside the flow

    def __init__(self, integration: Integration) -> None:
        assert integration.azure is not None and integration.azure.entra is not None
        self._settings = integration.azure.entra
        self._integration = integration.name

    def __repr__(self) -> str:
        return f"EntraAuth(integration={self._integration!r})"

    def _authority(self) -> str:
        host = self._settings.authority_host or os.environ.get(AUTHORITY_HOST_ENV, "").strip() or DEFAULT_AUTHORITY_HOST
        return host.rstrip("/")

    def _credentials(self) -> tuple[str, str, str]:
        """(tenant, client id, secret) from the environment; a missing one is named, never its value."""
        values = []
        for variable in (self._settings.tenant_id_env, self._settings.client_id_env, self._settings.client_secret_env):
            value = os.environ.get(variable, "").strip()
            if not value:
                raise ConfigError(f"integration {self._integration!r} uses Entra ID, but the environment variable "
                                  f"{variable} is empty or not set", field=variable, integration=self._integration)
            values.append(value)
        register_secret(values[2])
        return values[0], values[1], values[2]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        tenant, client_id, secret = self._credentials()
        authority = self._authority()
        key = (authority, tenant, client_id, self._settings.scope, fingerprint(secret))
        token = TOKEN_CACHE.get(key)
        fresh = token is None
        if token is None:
            token = yield from self._fetch(authority, tenant, client_id, secret, key)
        request.headers.pop("api-key", None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and not fresh:
            TOKEN_CACHE.drop(key, token)
            token = yield from self._fetch(authority, tenant, client_id, secret, key)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _fetch(self, authority: str, tenant: str, client_id: str, secret: str,
               key: _CacheKey) -> Generator[httpx.Request, httpx.Response, str]:
        """One client-credentials token request (OAuth 2.0, Microsoft identity platform v2 endpoint)."""
        where = f"{authority}/{tenant}/oauth2/v2.0/token"
        token_request = httpx.Request("POST", where, data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
            "scope": self._settings.scope}, headers={"Accept": "application/json"})
        response = yield token_request
        try:
            payload = response.json()
        except ValueError:
            payload = None
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            code = payload.get("error") if isinstance(payload, dict) and isinstance(payload.get("error"), str) else None
            raise AuthenticationError(scrub(f"Entra ID gave no token for integration {self._integration!r} "
                                            f"(HTTP {response.status_code}{', ' + code if code else ''}) from "
                                            f"{where}: check the tenant, client id and secret variables"),
                                      status=response.status_code)
        register_secret(token)
        expires_in = payload.get("expires_in", 3600)
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = 3600.0
        TOKEN_CACHE.put(key, token, lifetime)
        return token
