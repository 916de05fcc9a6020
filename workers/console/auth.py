"""Who may use the console, and proof that a POST came from one of its own pages.

The console token (``OPENAI_PACK_CONSOLE_TOKEN``) is the one credential. A browser trades it once
at ``/console/login`` for a session cookie (``HttpOnly``, ``SameSite=Strict``, path ``/console``)
holding an expiry and an HMAC of it under the token, so the token itself is never stored in the
browser and a cookie stops working when the token changes. Scripts may send the token as a
bearer header instead; such requests carry no ambient credential, so they need no CSRF proof.

Every POST made with the cookie must carry the page's CSRF value (an HMAC of the session under
the token) and, when the browser sends one, an ``Origin`` equal to the console's own. The Host
header is checked against the names the console was bound to, so a DNS-rebinding page cannot
talk to a loopback console through a name it controls.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass

__all__ = ["COOKIE", "MIN_TOKEN_LENGTH", "SESSION_SECONDS", "TOKEN_ENV", "ConsoleAuth", "is_loopback"]

TOKEN_ENV = "OPENAI_PACK_CONSOLE_TOKEN"
#: Shorter tokens are refused: they can be guessed (the webhook secrets' rule).
MIN_TOKEN_LENGTH = 16
COOKIE = "opk_console"
#: A session lasts a working day; then the token is asked for again.
SESSION_SECONDS = 12 * 3600


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a Host header's name) only reaches this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8080`` → ``::1``, ``127.0.0.1:80`` → ``127.0.0.1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass(frozen=True)
class ConsoleAuth:
    """The token's checks. ``loopback_only``: accept only loopback names in the Host header."""

    token: str
    loopback_only: bool = True

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self.token.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str | None) -> bool:
        """Constant-time comparison of a presented token (text that does not encode still compares)."""
        return hmac.compare_digest((given or "").encode("utf-8", "surrogateescape"), self.token.encode())

    def new_session(self, now: float | None = None) -> str:
        """A cookie value: ``<expiry>.<hmac>``; nothing to store server-side."""
        expiry = str(int((time.time() if now is None else now) + SESSION_SECONDS))
        return f"{expiry}.{self._mac('session', expiry)}"

    def session_valid(self, cookie: str | None, now: float | None = None) -> bool:
        expiry, _, mac = (cookie or "").partition(".")
        if not expiry.isdigit() or len(expiry) > 12:
            return False
        if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), self._mac("session", expiry).encode()):
            return False
        return int(expiry) > (time.time() if now is None else now)

    def csrf_for(self, session: str) -> str:
        """The value every form of this session carries."""
        return self._mac("csrf", session)

    def csrf_valid(self, session: str, given: str | None) -> bool:
        return hmac.compare_digest((given or "").encode("utf-8", "surrogateescape"), self.csrf_for(session).encode())

    def host_allowed(self, host_header: str | None) -> bool:
        """Loopback names only when bound to loopback (DNS rebinding); any host otherwise."""
        if not self.loopback_only:
            return True
        return bool(host_header) and is_loopback(_host_name(host_header or ""))

    @staticmethod
    def origin_allowed(origin: str | None, host_header: str | None) -> bool:
        """A browser's ``Origin`` must be this console's own (absent: a same-origin form in older browsers)."""
        if origin is None:
            return True
        if origin == "null" or not host_header:
            return False
        return origin.split("://", 1)[-1].lower() == host_header.strip().lower()
