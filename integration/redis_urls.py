"""Redis URLs (run store, broker, integration store), read in one place so every process agrees on them.

Two families:

- one Redis server, as redis-py reads it: ``redis://[[user]:password@]host:port/db``,
  ``rediss://…`` (TLS; ``?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem``, plus
  ``ssl_certfile``/``ssl_keyfile`` for a client certificate) and ``unix://[:password@]/path?db=N``;
- Redis with Sentinel::

      sentinel://[[user]:password@]host:port[;sentinel://host:port…][/db]?master_name=NAME[&sentinel_password=SECRET]

  (``redis+sentinel://`` is the same). The hosts are the *sentinels*; the master is looked up by
  ``master_name`` and looked up again after a failover. The userinfo password is the one of the
  Redis servers (``requirepass`` of master and replicas), as in kombu's ``sentinel://`` transport;
  ``sentinel_password`` is the sentinels' own (``requirepass`` in sentinel.conf), when they have one.
  The ``/db`` path and the query may follow any of the hosts (usually the last).

Passwords are never put in an error message: errors print the URL through ``redact_url``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from integration.errors import ConfigError
from integration.redact import redact_url

__all__ = ["REDIS_SCHEMES", "SENTINEL_SCHEMES", "SentinelURL", "check_url", "connect", "describe_error",
           "is_redis_url", "is_sentinel_url", "celery_sentinel", "parse_sentinel_url", "scheme_of"]

REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("sentinel", "redis+sentinel")
DEFAULT_SENTINEL_PORT = 26379
_SPLIT = re.compile(r"[;,](?=[A-Za-z][A-Za-z0-9+.-]*://)")
_KNOWN_PARAMS = {"master_name", "sentinel_password", "sentinel_username", "db"}


def scheme_of(url: str) -> str:
    """The URL's scheme in lower case ("" when it has none)."""
    head, sep, _ = url.partition("://")
    return head.strip().lower() if sep else ""


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and scheme_of(url or "") in SENTINEL_SCHEMES


def is_redis_url(url: str | None) -> bool:
    """Any URL that means Redis: one server or a Sentinel-managed master."""
    return bool(url) and scheme_of(url or "") in REDIS_SCHEMES + SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``sentinel://`` URL; the passwords stay out of ``repr``."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    def sentinel_kwargs(self, **options: Any) -> dict[str, Any]:
        """Connection options for the sentinels themselves (their own password, not the master's)."""
        kwargs = dict(options)
        if self.sentinel_password is not None:
            kwargs["password"] = self.sentinel_password
            if self.sentinel_username is not None:
                kwargs["username"] = self.sentinel_username
        return kwargs


def parse_sentinel_url(url: str, *, field: str) -> SentinelURL:
    """Parse ``sentinel://…`` (see the module docstring); a malformed one is a ``ConfigError`` naming ``field``."""
    shown = redact_url(url)

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{field}: {reason} in {shown} (expected sentinel://[:password@]host:port"
                           "[;sentinel://host:port…][/db]?master_name=NAME)", field=field)

    sentinels: list[tuple[str, int]] = []
    params: dict[str, str] = {}
    db_path = ""
    username = password = None
    for part in _SPLIT.split(url.strip()):
        if scheme_of(part) not in SENTINEL_SCHEMES:
            raise bad(f"every host must be a sentinel:// URL, not {scheme_of(part) or 'schemeless'!r}")
        try:
            parts = urlsplit("http://" + part.split("://", 1)[1])
            port = parts.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise bad("a host's port is not a number between 0 and 65535") from None
        if not parts.hostname:
            raise bad("a sentinel host is missing")
        sentinels.append((parts.hostname, port))
        if parts.password is not None and password is None:
            username, password = unquote(parts.username or "") or None, unquote(parts.password)
        if parts.path.strip("/"):
            db_path = parts.path.strip("/")
        params.update(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - _KNOWN_PARAMS)
    if unknown:
        raise bad(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_PARAMS))})")
    master_name = params.get("master_name", "").strip()
    if not master_name:
        raise bad("the master name is missing (add ?master_name=NAME, the name in `sentinel monitor NAME …`)")
    raw_db = params.get("db", db_path) or "0"
    if not raw_db.isdigit():
        raise bad(f"the database must be a number, got {raw_db!r}")
    return SentinelURL(sentinels=tuple(sentinels), master_name=master_name, db=int(raw_db), username=username,
                       password=password or None, sentinel_username=params.get("sentinel_username") or None,
                       sentinel_password=params.get("sentinel_password") or None)


_CERT_REQS = {"none", "optional", "required"}
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")


def check_url(url: str, *, field: str) -> None:
    """Refuse a malformed Redis URL now, naming ``field``, instead of failing on the first command as
    "store unavailable" (a wrong TLS option or a missing CA file is a configuration error, not an outage)."""
    from redis.connection import parse_url

    scheme = scheme_of(url)
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url, field=field)
        return
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(f"{field}: unsupported scheme {scheme!r} in {redact_url(url)} (use redis://, rediss://, "
                          "unix:// or sentinel://)", field=field)
    try:
        options = parse_url(url)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{field}: {_without_url(str(exc), url)} in {redact_url(url)}", field=field) from None
    reqs = options.get("ssl_cert_reqs")
    if isinstance(reqs, str) and reqs.lower() not in _CERT_REQS:
        raise ConfigError(f"{field}: ssl_cert_reqs must be one of {', '.join(sorted(_CERT_REQS))}, got {reqs!r} "
                          f"in {redact_url(url)}", field=field)
    for name in _TLS_FILES:
        path = options.get(name)
        if isinstance(path, str) and path and not Path(path).exists():
            raise ConfigError(f"{field}: {name} names a file that does not exist: {path}", field=field)


def _blocking_sentinel_pool() -> type:
    """A Sentinel pool that waits for a free connection instead of failing with "Too many connections"
    (what ``BlockingConnectionPool`` does for one server; hundreds of worker threads share a pool)."""
    import redis
    from redis.sentinel import SentinelConnectionPool

    class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
        pass

    return BlockingSentinelConnectionPool


def connect(url: str, *, field: str, blocking: bool = False, max_connections: int | None = None,
            timeout: float = 30, **options: Any) -> Any:
    """A ``redis.Redis`` for any Redis URL; ``options`` are connection options (timeouts, decode_responses).

    ``blocking`` makes a thread wait up to ``timeout`` for a pooled connection when ``max_connections``
    are in use. With Sentinel the client asks the sentinels for the master when it connects, and again
    after a connection to it fails or the server answers as a replica (a failover): redis-py's retries
    (about five seconds) ride out the switch, and callers ride out longer ones (``StoreUnavailableError``).
    """
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel, SentinelConnectionPool

    check_url(url, field=field)
    if scheme_of(url) in SENTINEL_SCHEMES:
        target = parse_sentinel_url(url, field=field)
        socket_options = {k: v for k, v in options.items() if k.startswith("socket_")}
        manager = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs(**socket_options))
        pool_options: dict[str, Any] = {"max_connections": max_connections} if max_connections else {}
        if blocking:
            pool_options["timeout"] = timeout
        # A failed command is retried on a new connection, which asks the sentinels where the master is
        # now; connecting retries the same way (~4 s), so a command rides out about half a minute of
        # failover before its caller sees the failure (and rides out the rest, see workers.app).
        retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=6)
        return manager.master_for(
            target.master_name, connection_pool_class=_blocking_sentinel_pool() if blocking else SentinelConnectionPool,
            db=target.db, username=target.username, password=target.password, retry=retry, **pool_options, **options)
    try:
        if blocking:
            pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections or 50,
                                                         timeout=timeout, **options)
        else:
            pool = redis.ConnectionPool.from_url(url, max_connections=max_connections, **options)
    except (ValueError, TypeError) as exc:  # e.g. ssl_cert_reqs=bogus, a port that is not a number
        raise ConfigError(f"{field}: {_without_url(str(exc), url)} in {redact_url(url)}", field=field) from None
    return redis.Redis(connection_pool=pool)


def describe_error(exc: BaseException) -> str:
    """A driver's failure in one line: redis-py appends the whole client's ``repr`` to "no master
    found" (passwords masked, but unreadable); the part before it says all."""
    text = str(exc)
    if type(exc).__name__ == "MasterNotFoundError":
        text = text.split(" : <", 1)[0] + " (are the sentinels reachable, and is that the name they monitor?)"
    return f"{type(exc).__name__}: {text}"


def _without_url(message: str, url: str) -> str:
    """A driver's message about a URL, with the URL (and so its password) replaced by its redacted form."""
    return message.replace(url, redact_url(url))


def celery_sentinel(url: str, *, field: str) -> tuple[str, dict[str, Any]]:
    """(URL, transport options) for Celery and kombu from a ``sentinel://`` URL (broker or result backend).

    kombu's Sentinel transport and Celery's Sentinel result backend take the sentinels as
    ``sentinel://h1:p1/db;sentinel://h2:p2/db`` (the Redis password on each), and the master name and
    the sentinels' password as transport options (``master_name``, ``sentinel_kwargs``).
    """
    target = parse_sentinel_url(url, field=field)
    auth = ""
    if target.password is not None:
        from urllib.parse import quote

        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    hosts = ";".join(f"sentinel://{auth}{_host(host)}:{port}/{target.db}" for host, port in target.sentinels)
    options: dict[str, Any] = {"master_name": target.master_name}
    sentinel_kwargs = target.sentinel_kwargs()
    if sentinel_kwargs:
        options["sentinel_kwargs"] = sentinel_kwargs
    return hosts, options


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
