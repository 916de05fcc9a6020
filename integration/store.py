"""Named integrations (an MSP keeps one per customer), each API key Fernet-sealed at rest.

The store is composed of three parts, each with one job:

- a **backend** holds one JSON document and says which version of it is current: ``FileBackend``
  (``$OPENAI_PACK_HOME/integrations.json``, home defaulting to ``~/.openai-pack``; the version is the
  file's inode, mtime and size) or ``RedisBackend`` (one key, plus a counter bumped by every write);
- a **key ring** says where the Fernet keys come from: the ``fernet_keys`` argument, else
  ``OPENAI_PACK_FERNET_KEYS`` (comma-separated; the first seals, all open, so a key is rotated by
  putting a new one first and calling ``rotate()``), else, for the file backend only, a key file
  ``fernet.key`` beside the store, created with mode 0600 when the first key is sealed. That fallback
  is weaker than a key from the environment or a secret manager: key and ciphertext sit side by side.
  It only keeps keys out of backups, greps and screenshots of the JSON;
- the **store** shapes, seals and opens entries, and keeps a process-level cache of decoded
  integrations keyed on (backend, document version, key ring version, name). A worker resolves an
  integration for every step; while nothing changed that costs a ``stat`` (file) or one ``GET`` on a
  pooled connection (Redis), never a new connection or a decryption. ``open_store()`` hands out one
  store per location, so one Redis connection pool per process.

The document::

    {"version": 1, "default": "acme" | null,
     "integrations": {"acme": {...Integration.public_dict() minus has_api_key and has_admin_key...,
                               "api_key_sealed": "gAAAA..." | null,
                               "admin_key_sealed": "gAAAA..."}}}     (only when it has an Admin API key)

Writes hold a lock (``fcntl`` on ``integrations.json.lock``, or a Redis lock) for the whole
read-modify-write and replace the document atomically, so two processes adding at once both land and a
reader never sees half a file. Before sealing a new key, ``add`` checks that the key ring opens every key
already stored: sealing with a different key would strand them.

This module never reads a key in clear; ``integration.auth`` seals and opens them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from integration.auth import api_key_from_text, open_secret, register_key_fingerprint, register_sealed_key, seal_secret
from integration.errors import ConfigError, KeyRingError, StoreUnavailableError
from integration.model import Integration
from integration.redis_urls import connect

__all__ = ["FORMAT_VERSION", "FileBackend", "IntegrationStore", "KeyRing", "RedisBackend",
           "RedisIntegrationStore", "default_home", "open_store", "register_store_secrets", "resolve"]

FORMAT_VERSION = 1
HOME_ENV = "OPENAI_PACK_HOME"
KEYS_ENV = "OPENAI_PACK_FERNET_KEYS"
INTEGRATIONS_URL_ENV = "OPENAI_PACK_INTEGRATIONS_URL"
STORE_FILENAME = "integrations.json"
KEY_FILENAME = "fernet.key"
LOCK_TIMEOUT = 30.0
_CACHE_LIMIT = 256
#: The sealed fields of an integration's ``reconify`` override.
_RECONIFY_SEALED = ("app_key_sealed", "api_key_sealed")
_ADD_HINT = "add one with `openai-pack integrations add NAME`"
#: Each sealed key an entry may hold: the API key, and the Admin API key of the /organization actions.
_SEALED_FIELDS = {"api_key_sealed": "api_key", "admin_key_sealed": "admin_key"}
_KEYGEN_HINT = ('generate one with `python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`')


def default_home() -> Path:
    """``$OPENAI_PACK_HOME`` or ``~/.openai-pack``, read now (not at import) so tests can redirect it."""
    home = os.environ.get(HOME_ENV, "").strip()
    return Path(home).expanduser() if home else Path("~/.openai-pack").expanduser()


def _empty_document() -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "default": None, "integrations": {}}


def _serialise(data: Mapping[str, Any]) -> bytes:
    body = {"version": FORMAT_VERSION, "default": data["default"],
            "integrations": {n: data["integrations"][n] for n in sorted(data["integrations"])}}
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


# ---------------------------------------------------------------- backends


class Backend(Protocol):
    """Where the document lives. ``version()`` must change whenever the document does."""

    identity: str  #: names this store in process-level caches
    where: str  #: names it in messages

    def version(self) -> Hashable: ...
    def read(self) -> tuple[Hashable, bytes | None]: ...
    def write(self, body: bytes) -> None: ...
    def locked(self, timeout: float = LOCK_TIMEOUT) -> contextlib.AbstractContextManager[None]: ...


class FileBackend:
    """One JSON file, replaced atomically (0600 temp file, fsync, rename) under an ``fcntl`` lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = f"file:{path}"
        self.where = str(path)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def version(self) -> Hashable:
        """Inode, mtime and size: every write renames a new file into place, so the inode alone changes."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the integration store {self.path}: {exc.strerror}") from None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def read(self) -> tuple[Hashable, bytes | None]:
        version = self.version()  # first: the bytes read next are at least this new
        try:
            return version, self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise ConfigError(f"cannot read the integration store {self.path}: {exc.strerror}") from None

    def ensure_dir(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(self, body: bytes) -> None:
        self.ensure_dir()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable; not possible everywhere
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Exclusive lock for a read-modify-write; bounded so a hung process cannot block us forever."""
        self.ensure_dir()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConfigError(f"the integration store {self.path} is locked by another process "
                                          f"(waited {timeout:g}s on {self.lock_path})") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock


class RedisBackend:
    """The document in one Redis key, and ``<key>:version``, a counter each write bumps in the same
    transaction; readers compare the counter (one ``GET``) instead of fetching the document.

    A write by a pack older than the counter does not bump it: upgrade every writer together.
    """

    def __init__(self, url: str, key: str = "opk:integrations") -> None:
        self.url, self.key = url, key
        self.identity = f"redis:{url}#{key}"
        self.where = key
        # Any Redis URL form, Sentinel included (integration.redis_urls)
        self.redis = connect(url, field=INTEGRATIONS_URL_ENV, socket_timeout=10, socket_connect_timeout=5)

    @property
    def version_key(self) -> str:
        return self.key + ":version"

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"the integration store {self.key} in Redis cannot be reached: "
                                        f"{type(exc).__name__}") from None

    def version(self) -> Hashable:
        with self._reachable():
            raw: Hashable = self.redis.get(self.version_key)
        return raw or 0

    def read(self) -> tuple[Hashable, bytes | None]:
        with self._reachable():
            raw_version, body = self.redis.mget([self.version_key, self.key])
        return raw_version or 0, body

    def write(self, body: bytes) -> None:
        with self._reachable():
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.key, body)
            pipe.incr(self.version_key)
            pipe.execute()

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        with self._reachable():
            lock = self.redis.lock(self.key + ":lock", timeout=30, blocking_timeout=timeout)
            acquired = lock.acquire()
        if not acquired:
            raise ConfigError(f"the integration store {self.key} is locked by another process (waited {timeout:g}s)")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                lock.release()


# ---------------------------------------------------------------- key ring


@dataclass(frozen=True)
class _Keys:
    """The MultiFernet in use and where it came from, so errors can say which knob to turn."""

    fernet: MultiFernet
    source: str  # "env", "argument" or "file"


class KeyRing:
    """The Fernet keys: the argument, else ``OPENAI_PACK_FERNET_KEYS``, else the key file (if allowed)."""

    def __init__(self, *, fernet_keys: str | None = None, key_file: Path | None = None,
                 needs_shared_keys: str | None = None) -> None:
        self.fernet_keys = fernet_keys
        self.key_file = key_file
        #: set for stores shared between machines: why a key file will not do
        self.needs_shared_keys = needs_shared_keys

    def _given(self) -> tuple[str, str] | None:
        if self.fernet_keys is not None and self.fernet_keys.strip():
            return self.fernet_keys, "argument"
        env_value = os.environ.get(KEYS_ENV, "")
        return (env_value, "env") if env_value.strip() else None

    def version(self) -> Hashable:
        """Changes whenever the keys in use may have: a digest of the given keys, or the key file's stat."""
        given = self._given()
        if given is not None:
            return (given[1], hashlib.sha256(given[0].encode("utf-8", "surrogatepass")).hexdigest())
        if self.key_file is None:
            return None
        try:
            info = self.key_file.stat()
        except OSError:
            return ("file", None)
        return ("file", info.st_ino, info.st_mtime_ns, info.st_size)

    def keys(self, *, create: bool) -> _Keys:
        """The MultiFernet; ``create`` makes the key file if there is none (only when nothing is sealed yet)."""
        given = self._given()
        if given is not None:
            source = "the fernet_keys argument" if given[1] == "argument" else KEYS_ENV
            return _Keys(_multifernet(given[0], source), given[1])
        if self.key_file is None:
            raise ConfigError(self.needs_shared_keys or f"{KEYS_ENV} is not set", field=KEYS_ENV)
        key = self._create_key_file() if create else self._read_key_file()
        if key is None:
            raise KeyRingError(f"no encryption key: {KEYS_ENV} is unset and the key file {self.key_file} "
                               f"does not exist, so stored API keys cannot be decrypted; set {KEYS_ENV} "
                               "to the key they were sealed with", field=KEYS_ENV)
        return _Keys(_multifernet(key, f"the key file {self.key_file}"), "file")

    def describe(self, keys: _Keys) -> str:
        if keys.source == "file":
            return f" ({KEYS_ENV} is unset, so the key file {self.key_file} was tried)"
        if keys.source == "argument":
            return " (the fernet_keys argument was used instead of the variable)"
        return ""

    def _read_key_file(self) -> str | None:
        assert self.key_file is not None
        try:
            return self.key_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the key file {self.key_file}: {type(exc).__name__}",
                              field=KEYS_ENV) from None

    def _create_key_file(self) -> str:
        """Read the key file, or create it race-free: write a temp file, then hard-link it into place."""
        assert self.key_file is not None
        existing = self._read_key_file()
        if existing is not None:
            return existing
        self.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fernet.", suffix=".tmp", dir=self.key_file.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):  # another process won the race: use its key
                os.link(tmp, self.key_file)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        key = self._read_key_file()
        assert key is not None  # just linked, or linked by the process that won
        return key


def _multifernet(value: str, source: str) -> MultiFernet:
    """Parse a comma-separated key list; a bad entry is named by position, never echoed."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    fernets = []
    for index, part in enumerate(parts, start=1):
        try:
            fernets.append(Fernet(part.encode("ascii")))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ConfigError(f"{source}: key {index} of {len(parts)} is not a Fernet key (32 url-safe "
                              f"base64-encoded bytes); {_KEYGEN_HINT}", field=KEYS_ENV) from None
    if not fernets:
        raise ConfigError(f"{source} holds no Fernet key; {_KEYGEN_HINT}", field=KEYS_ENV)
    return MultiFernet(fernets)


# ---------------------------------------------------------------- the store

#: identity -> (document version, parsed document): names and defaults without re-reading
_documents: dict[str, tuple[Hashable, dict[str, Any]]] = {}
#: (identity, document version, key ring version, name) -> decoded integration
_resolved: dict[tuple[Hashable, ...], Integration] = {}
#: identity -> (document version, key ring version) whose keys the redactor knows by fingerprint
_fingerprinted: dict[str, tuple[Hashable, Hashable]] = {}


def _sealed(data: Mapping[str, Any], *, skip: str | None = None) -> dict[tuple[str, str], str]:
    """Every sealed key of the document by (integration, field), but those of ``skip``."""
    return {(name, field): entry[field] for name, entry in data["integrations"].items() if name != skip
            for field in _SEALED_FIELDS if entry.get(field)}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


class IntegrationStore:
    """Many named integrations in one document; the API key of each is Fernet-sealed at rest.

    ``IntegrationStore(path, fernet_keys)`` is the file store; pass ``backend`` and ``keyring`` to
    compose another (``RedisIntegrationStore`` does).
    """

    def __init__(self, path: Path | None = None, fernet_keys: str | None = None, *,
                 backend: Backend | None = None, keyring: KeyRing | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_home() / STORE_FILENAME
        self.backend: Backend = backend if backend is not None else FileBackend(self.path)
        self.keyring = keyring if keyring is not None else KeyRing(fernet_keys=fernet_keys, key_file=self.key_file)

    def __repr__(self) -> str:
        return f"IntegrationStore(path={str(self.path)!r})"

    @property
    def key_file(self) -> Path:
        """The fallback key file, beside the store so a custom path never touches the real home."""
        return self.path.parent / KEY_FILENAME

    @property
    def where(self) -> str:
        return self.backend.where

    # ---- queries -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Stored names, sorted, without decrypting anything (for listings and error messages)."""
        return sorted(self._document()[1]["integrations"])

    def list(self) -> list[Integration]:
        """Every stored integration, sorted by name, keys decrypted into SecretStr."""
        version, data = self._document()
        ring = self.keyring.version()
        return [self._decoded(name, data["integrations"][name], version, ring)
                for name in sorted(data["integrations"])]

    def get(self, name: str) -> Integration:
        """One integration by name; a missing name is a ConfigError that lists the known ones.

        Reused from the process-level cache while the document and the key ring are unchanged.
        """
        version = self.backend.version()
        ring = self.keyring.version()
        cached = _resolved.get((self.backend.identity, version, ring, name))
        if cached is not None:
            return cached
        version, data = self._document(version)
        entry = data["integrations"].get(name)
        if entry is None:
            raise self._missing(name, data)
        return self._decoded(name, entry, version, ring)

    def default_name(self) -> str | None:
        """The name ``resolve()`` uses when none is given, or None."""
        default: str | None = self._document()[1]["default"]
        return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._document()[1]["integrations"]

    # ---- changes -------------------------------------------------------------------------------

    def add(self, integration: Integration, *, make_default: bool = False, replace: bool = False) -> None:
        """Store ``integration`` under its name; the first one added to an empty store becomes the default.

        The key ring must open every key already stored (other than the one replaced), else nothing is
        written: sealing with another key would strand them. Only a store with no sealed key may get a
        new key file.
        """
        with self.backend.locked():
            data = self._load_fresh()
            name = integration.name
            if name in data["integrations"] and not replace:
                raise ConfigError(f"integration {name!r} already exists in {self.where}; "
                                  "pass replace=True (--replace) to overwrite it",
                                  field="name", integration=name)
            entry = integration.public_dict()
            entry.pop("has_api_key", None)
            entry.pop("has_admin_key", None)
            sealed = _sealed(data, skip=name)
            entry["api_key_sealed"] = None
            for field, secret in (("api_key_sealed", integration.api_key), ("admin_key_sealed", integration.admin_key)):
                if secret is not None:
                    keys = self._keys_that_open(sealed, writing=True) if sealed else self.keyring.keys(create=True)
                    entry[field] = seal_secret(secret, keys.fernet)
            if integration.reconify is not None:  # the Reconify keys are sealed like the API key
                entry["reconify"] = self._sealed_reconify(integration, sealed)
            was_empty = not data["integrations"]
            data["integrations"][name] = entry
            if make_default or was_empty:
                data["default"] = name
            self.backend.write(_serialise(data))

    def remove(self, name: str) -> None:
        """Delete one integration; if it was the default, the store is left with no default."""
        with self.backend.locked():
            data = self._load_fresh()
            if name not in data["integrations"]:
                raise self._missing(name, data)
            del data["integrations"][name]
            if data["default"] == name:
                data["default"] = None
            self.backend.write(_serialise(data))

    def set_default(self, name: str | None) -> None:
        """Make ``name`` the default (None clears it); the name must be stored already."""
        with self.backend.locked():
            data = self._load_fresh()
            if name is not None and name not in data["integrations"]:
                raise self._missing(name, data)
            data["default"] = name
            self.backend.write(_serialise(data))

    def rotate(self) -> int:
        """Re-encrypt every stored key with the current first Fernet key; returns how many were rotated.

        All or nothing: every key is checked to open with the key ring first, and nothing is written (no
        key file created either) if one does not.
        """
        with self.backend.locked():
            data = self._load_fresh()
            sealed = _sealed(data)
            if not sealed:
                return 0
            keys = self._keys_that_open(sealed, writing=True)
            for (name, field), token in sealed.items():
                data["integrations"][name][field] = keys.fernet.rotate(token.encode()).decode()
            for entry in data["integrations"].values():
                reconify = entry.get("reconify")
                for field in _RECONIFY_SEALED:
                    if isinstance(reconify, dict) and reconify.get(field):
                        reconify[field] = keys.fernet.rotate(reconify[field].encode()).decode()
            self.backend.write(_serialise(data))
            return len(sealed)

    def register_secrets(self) -> int:
        """Teach the redactor every stored key by fingerprint (see ``register_store_secrets``)."""
        version, data = self._document()
        ring = self.keyring.version()
        sealed = _sealed(data)
        if _fingerprinted.get(self.backend.identity) == (version, ring) or not sealed:
            return len(sealed)
        keys = self._keys_that_open(sealed, writing=False)
        for token in sealed.values():
            register_sealed_key(token, keys.fernet)
        for entry in data["integrations"].values():
            reconify = entry.get("reconify")
            for field in _RECONIFY_SEALED:
                if isinstance(reconify, dict) and isinstance(reconify.get(field), str):
                    with contextlib.suppress(InvalidToken):
                        register_sealed_key(reconify[field], keys.fernet)
        _remember(_fingerprinted, self.backend.identity, (version, ring))
        return len(sealed)

    # ---- internals -----------------------------------------------------------------------------

    def _sealed_reconify(self, integration: Integration, sealed: Mapping[tuple[str, str], str]) -> dict[str, Any]:
        """The integration's Reconify override as stored: its URL in clear, its two keys sealed."""
        sink = integration.reconify
        assert sink is not None
        stored: dict[str, Any] = {"url": sink.url, "app_key_sealed": None, "api_key_sealed": None}
        for field, secret in (("app_key_sealed", sink.app_key), ("api_key_sealed", sink.api_key)):
            if secret is not None:
                keys = self._keys_that_open(sealed, writing=True) if sealed else self.keyring.keys(create=True)
                stored[field] = seal_secret(secret, keys.fernet)
        return stored

    def _opened_reconify(self, name: str, stored: dict[str, Any]) -> dict[str, Any]:
        opened: dict[str, Any] = {"url": stored.get("url")}
        for field in _RECONIFY_SEALED:
            token = stored.get(field)
            if token:
                keys = self.keyring.keys(create=False)
                try:
                    opened[field.removesuffix("_sealed")] = open_secret(token, keys.fernet)
                except InvalidToken:
                    raise self._undecryptable(name, keys) from None
        return opened

    def _keys_that_open(self, sealed: Mapping[tuple[str, str], str], *, writing: bool) -> _Keys:
        """The key ring, checked against each sealed key by its signature (nothing is decrypted)."""
        keys = self.keyring.keys(create=False)
        for (name, _field), token in sorted(sealed.items()):
            try:
                keys.fernet.extract_timestamp(token.encode())
            except InvalidToken:
                raise self._undecryptable(name, keys, writing=writing) from None
        return keys

    def _document(self, version: Hashable = ...) -> tuple[Hashable, dict[str, Any]]:
        """The parsed document and its version, parsed once per version in this process."""
        identity = self.backend.identity
        if version is ...:
            version = self.backend.version()
        cached = _documents.get(identity)
        if cached is not None and cached[0] == version and version is not None:
            return cached
        version, raw = self.backend.read()
        data = self._parse(raw)
        if version is not None:
            _remember(_documents, identity, (version, data))
        return version, data

    def _load_fresh(self) -> dict[str, Any]:
        """A private copy of the current document, for a read-modify-write under the lock."""
        return self._parse(self.backend.read()[1])

    def _parse(self, raw: bytes | None) -> dict[str, Any]:
        """Parse and shape-check; errors name the store and line but never quote its contents."""
        if raw is None:
            return _empty_document()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"the integration store {self.where} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the integration store {self.where} is not valid JSON: {exc.msg} at line "
                              f"{exc.lineno}, column {exc.colno}", line=exc.lineno) from None
        except RecursionError:
            raise ConfigError(f"the integration store {self.where} is nested too deeply") from None
        return self._check_shape(data)

    def _check_shape(self, data: Any) -> dict[str, Any]:
        where = f"the integration store {self.where}"
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object")
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ConfigError(f"{where} has format version {version!r}; this pack reads version "
                              f"{FORMAT_VERSION} (was it written by a newer pack?)")
        integrations = data.get("integrations", {})
        if not isinstance(integrations, dict):
            raise ConfigError(f"{where}: 'integrations' must be an object of name -> integration")
        for name, entry in integrations.items():
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: integration {name!r} must be an object", integration=name)
            entry.setdefault("api_key_sealed", None)
            for field in _SEALED_FIELDS:
                sealed = entry.get(field)
                if sealed is not None and not isinstance(sealed, str):
                    raise ConfigError(f"{where}: integration {name!r}: {field} must be a string or null",
                                      integration=name)
        default = data.get("default")
        if default is not None and default not in integrations:
            raise ConfigError(f"{where}: the default {default!r} is not a stored integration")
        return {"version": FORMAT_VERSION, "default": default, "integrations": integrations}

    def _decoded(self, name: str, entry: dict[str, Any], version: Hashable, ring: Hashable) -> Integration:
        key = (self.backend.identity, version, ring, name)
        cached = _resolved.get(key)
        if cached is None:
            cached = self._decode(name, entry)
            if version is not None:
                _remember(_resolved, key, cached)
        return cached

    def _decode(self, name: str, entry: dict[str, Any]) -> Integration:
        fields = {k: v for k, v in entry.items() if k not in {*_SEALED_FIELDS, "has_api_key", "has_admin_key"}}
        if fields.setdefault("name", name) != name:
            raise ConfigError(f"the integration store {self.where}: entry {name!r} holds the name "
                              f"{fields['name']!r}", integration=name)
        for sealed_field, field in _SEALED_FIELDS.items():
            token = entry.get(sealed_field)
            if token:
                keys = self.keyring.keys(create=False)
                try:
                    fields[field] = open_secret(token, keys.fernet)
                except InvalidToken:
                    raise self._undecryptable(name, keys) from None
        if isinstance(fields.get("reconify"), dict):
            fields["reconify"] = self._opened_reconify(name, fields["reconify"])
        try:
            return Integration.build(**fields)
        except ConfigError as exc:
            # the model says "integration ...": the store names the entry itself
            reason = exc.message.removeprefix("integration: ").removeprefix("integration ")
            raise ConfigError(f"the integration store {self.where}: integration {name!r}: {reason}",
                              field=exc.field, integration=name) from None

    def _undecryptable(self, name: str, keys: _Keys, *, writing: bool = False) -> KeyRingError:
        message = (f"cannot decrypt the key of integration {name!r}: {KEYS_ENV} does not hold the key "
                   "it was sealed with") + self.keyring.describe(keys)
        if writing:
            message += "; nothing was written, since sealing with another key would strand the stored ones"
        return KeyRingError(message, field=KEYS_ENV, integration=name)

    def _missing(self, name: str, data: Mapping[str, Any]) -> ConfigError:
        known = sorted(data["integrations"])
        listing = f"known: {', '.join(known)}" if known else f"none are stored yet; {_ADD_HINT}"
        return ConfigError(f"no integration named {name!r} in {self.where} ({listing})",
                           field="integration", integration=name, known=known)


class RedisIntegrationStore(IntegrationStore):
    """The same document in one Redis key, so workers on many machines share one set of integrations.

    Keys stay Fernet-sealed; the encryption keys must come from ``OPENAI_PACK_FERNET_KEYS`` (or the
    argument), since a key file on one machine is useless to the others.
    """

    def __init__(self, url: str, key: str = "opk:integrations", fernet_keys: str | None = None) -> None:
        backend = RedisBackend(url, key)
        keyring = KeyRing(fernet_keys=fernet_keys, needs_shared_keys=(
            f"the Redis integration store needs {KEYS_ENV} (a key file cannot be shared between machines)"))
        super().__init__(path=Path(f"redis-{key}"), backend=backend, keyring=keyring)
        self.url, self.key, self.redis = url, key, backend.redis

    def __repr__(self) -> str:
        return f"RedisIntegrationStore(key={self.key!r})"


_open_stores: dict[str, IntegrationStore] = {}
_stores_by_settings: dict[tuple[str, str, str], IntegrationStore] = {}


def open_store() -> IntegrationStore:
    """The configured store, one per location per process: Redis when ``OPENAI_PACK_INTEGRATIONS_URL``
    is set, else the local file (reusing it is what keeps one Redis connection pool per process)."""
    environ = os.environ
    settings = (environ.get(INTEGRATIONS_URL_ENV, ""), environ.get(HOME_ENV, ""), environ.get("HOME", ""))
    store = _stores_by_settings.get(settings)  # every call of every step: no path arithmetic when nothing changed
    if store is not None:
        return store
    url = settings[0].strip()
    location = f"redis:{url}" if url else f"file:{default_home() / STORE_FILENAME}"
    store = _open_stores.get(location)
    if store is None:
        store = RedisIntegrationStore(url) if url else IntegrationStore()
        _remember(_open_stores, location, store)
    _remember(_stores_by_settings, settings, store)
    return store


def resolve(integration: Integration | str | None = None, *, store: IntegrationStore | None = None,
            environ: Mapping[str, str] | None = None) -> Integration:
    """The integration an action should use.

    An Integration passes through. A name is looked up in the store, except that "default" with no stored
    "default" means the environment. None means the store's default, else the environment
    (OPENAI_API_KEY, OPENAI_ORG_ID, OPENAI_PROJECT_ID, OPENAI_BASE_URL). ``environ`` only replaces the
    environment for those variables; the store location and Fernet keys always come from ``os.environ``.
    """
    if isinstance(integration, Integration):
        return integration
    store = open_store() if store is None else store
    env = dict(environ) if environ is not None else None
    if isinstance(integration, str):
        if integration == "default" and integration not in store:
            from_env = Integration.from_env(env)
            if from_env is not None:
                return from_env
            raise ConfigError(f"no integration named 'default' in {store.where} and OPENAI_API_KEY is not "
                              f"set: set it, or {_ADD_HINT}", field="integration", integration="default")
        return store.get(integration)
    if integration is not None:
        kind = type(integration).__name__
        raise ConfigError(f"integration must be an Integration, a name or None, not {kind}",
                          field="integration")
    default = store.default_name()
    if default is not None:
        return store.get(default)
    from_env = Integration.from_env(env)
    if from_env is not None:
        return from_env
    raise ConfigError(f"no integration configured: set OPENAI_API_KEY, or {_ADD_HINT}", field="integration")


def register_store_secrets(store: IntegrationStore | None = None, *,
                           environ: Mapping[str, str] | None = None) -> int:
    """Make ``scrub``/``scrub_data`` catch every stored API key, and ``OPENAI_API_KEY``, in this process.

    For processes that receive text from outside and never call the API themselves (``serve``, the CLI
    showing runs): the keys are registered by fingerprint, so the process holds none in clear. Cheap to
    call again, e.g. per request: while the store and key ring are unchanged it costs one ``stat`` or one
    Redis ``GET``; keys added since are picked up. Returns how many stored keys are known. Raises
    ``KeyRingError`` if the key ring cannot open a stored key.
    """
    store = open_store() if store is None else store
    env = os.environ if environ is None else environ
    with contextlib.suppress(ConfigError):  # a malformed variable is refused where it is used, not here
        for variable in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY"):
            env_key = api_key_from_text(env.get(variable, ""), field=variable)
            if env_key is not None:
                register_key_fingerprint(env_key)
    return store.register_secrets()
