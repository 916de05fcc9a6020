"""Named integrations kept on disk (an MSP keeps one per customer), with each API key encrypted at rest.

The store is one JSON file, ``$OPENAI_PACK_HOME/integrations.json`` (home defaults to ``~/.openai-pack``)::

    {"version": 1, "default": "acme" | null,
     "integrations": {"acme": {...Integration.public_dict() minus has_api_key...,
                               "api_key_sealed": "gAAAA..." | null}}}

Keys are sealed with Fernet. The Fernet keys come from ``OPENAI_PACK_FERNET_KEYS`` (comma-separated; the
first encrypts, all decrypt, so a key is rotated by putting a new one first and calling ``rotate()``).
When that variable is unset, a key file ``fernet.key`` beside the store file (``$OPENAI_PACK_HOME/fernet.key``
by default) is created on first use with mode 0600. That fallback is weaker than a key from the
environment or a secret manager: key and ciphertext sit side by side, so anyone who can read the
directory can read the keys. It only keeps keys out of backups, greps and screenshots of the JSON.

Writes hold an ``fcntl`` lock (``integrations.json.lock``) for the whole read-modify-write and replace the
file atomically, so two processes adding at once both land and a reader never sees half a file.
Reads take no lock: ``os.replace`` guarantees they see the old file or the new one.

This module never reads a key in clear; ``integration.auth`` seals and opens them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from integration.auth import open_secret, seal_secret
from integration.errors import ConfigError
from integration.model import Integration

__all__ = ["FORMAT_VERSION", "IntegrationStore", "default_home", "resolve"]

FORMAT_VERSION = 1
HOME_ENV = "OPENAI_PACK_HOME"
KEYS_ENV = "OPENAI_PACK_FERNET_KEYS"
STORE_FILENAME = "integrations.json"
KEY_FILENAME = "fernet.key"
LOCK_TIMEOUT = 30.0
_ADD_HINT = "add one with `openai-pack integrations add NAME`"
_KEYGEN_HINT = ('generate one with `python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`')


def default_home() -> Path:
    """``$OPENAI_PACK_HOME`` or ``~/.openai-pack``, read now (not at import) so tests can redirect it."""
    home = os.environ.get(HOME_ENV, "").strip()
    return Path(home).expanduser() if home else Path("~/.openai-pack").expanduser()


@dataclass(frozen=True)
class _Keys:
    """The MultiFernet in use and where it came from, so errors can say which knob to turn."""

    fernet: MultiFernet
    source: str  # "env", "argument" or "file"


_decoded: dict[tuple[Any, ...], Integration] = {}


class IntegrationStore:
    """Many named integrations in one JSON file; the API key of each is Fernet-encrypted at rest."""

    def __init__(self, path: Path | None = None, fernet_keys: str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_home() / STORE_FILENAME
        self._fernet_keys = fernet_keys

    def __repr__(self) -> str:
        return f"IntegrationStore(path={str(self.path)!r})"

    @property
    def key_file(self) -> Path:
        """The fallback key file, beside the store so a custom path never touches the real home."""
        return self.path.parent / KEY_FILENAME

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # ---- queries -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Stored names, sorted, without decrypting anything (for listings and error messages)."""
        return sorted(self._load()["integrations"])

    def list(self) -> list[Integration]:
        """Every stored integration, sorted by name, keys decrypted into SecretStr."""
        data = self._load()
        return [self._decode(name, data["integrations"][name]) for name in sorted(data["integrations"])]

    def get(self, name: str) -> Integration:
        """One integration by name; a missing name is a ConfigError that lists the known ones.

        Workers resolve an integration for every step: the decrypted result is reused while the
        file is unchanged (same size and modification time), so a step costs no file read or
        decryption.
        """
        try:
            info = self.path.stat()
            try:
                key_info: tuple[int, int] | None = (self.key_file.stat().st_ino, self.key_file.stat().st_mtime_ns)
            except OSError:
                key_info = None
            signature: tuple[Any, ...] | None = (str(self.path), name, info.st_ino, info.st_mtime_ns, info.st_size,
                                                 key_info, os.environ.get(KEYS_ENV, ""), self._fernet_keys)
        except OSError:
            signature = None
        cached = _decoded.get(signature) if signature else None
        if cached is not None:
            return cached
        integration = self._get_uncached(name)
        if signature:
            if len(_decoded) > 256:
                _decoded.clear()
            _decoded[signature] = integration
        return integration

    def _get_uncached(self, name: str) -> Integration:
        data = self._load()
        entry = data["integrations"].get(name)
        if entry is None:
            raise self._missing(name, data)
        return self._decode(name, entry)

    def default_name(self) -> str | None:
        """The name ``resolve()`` uses when none is given, or None."""
        default: str | None = self._load()["default"]
        return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._load()["integrations"]

    # ---- changes -------------------------------------------------------------------------------

    def add(self, integration: Integration, *, make_default: bool = False, replace: bool = False) -> None:
        """Store ``integration`` under its name; the first one added to an empty store becomes the default."""
        with self._locked():
            data = self._load()
            name = integration.name
            if name in data["integrations"] and not replace:
                raise ConfigError(f"integration {name!r} already exists in {self.path}; "
                                  "pass replace=True (--replace) to overwrite it",
                                  field="name", integration=name)
            entry = integration.public_dict()
            entry.pop("has_api_key", None)
            entry["api_key_sealed"] = (seal_secret(integration.api_key, self._keys(create=True).fernet)
                                       if integration.api_key is not None else None)
            was_empty = not data["integrations"]
            data["integrations"][name] = entry
            if make_default or was_empty:
                data["default"] = name
            self._save(data)

    def remove(self, name: str) -> None:
        """Delete one integration; if it was the default, the store is left with no default."""
        with self._locked():
            data = self._load()
            if name not in data["integrations"]:
                raise self._missing(name, data)
            del data["integrations"][name]
            if data["default"] == name:
                data["default"] = None
            self._save(data)

    def set_default(self, name: str | None) -> None:
        """Make ``name`` the default (None clears it); the name must be stored already."""
        with self._locked():
            data = self._load()
            if name is not None and name not in data["integrations"]:
                raise self._missing(name, data)
            data["default"] = name
            self._save(data)

    def rotate(self) -> int:
        """Re-encrypt every stored key with the current first Fernet key; returns how many were rotated.

        All or nothing: if one key cannot be decrypted, nothing is written.
        """
        with self._locked():
            data = self._load()
            sealed = {n: e["api_key_sealed"] for n, e in data["integrations"].items() if e["api_key_sealed"]}
            if not sealed:
                return 0
            keys = self._keys(create=False)
            for name, token in sealed.items():
                try:
                    data["integrations"][name]["api_key_sealed"] = keys.fernet.rotate(token.encode()).decode()
                except InvalidToken:
                    raise self._undecryptable(name, keys) from None
            self._save(data)
            return len(sealed)

    # ---- keys ----------------------------------------------------------------------------------

    def _keys(self, *, create: bool) -> _Keys:
        """The MultiFernet from the argument, else the env variable, else the key file.

        Only sealing creates the key file: creating one to open existing data could never succeed.
        """
        if self._fernet_keys is not None and self._fernet_keys.strip():
            return _Keys(_multifernet(self._fernet_keys, "the fernet_keys argument"), "argument")
        env_value = os.environ.get(KEYS_ENV, "")
        if env_value.strip():
            return _Keys(_multifernet(env_value, KEYS_ENV), "env")
        key = self._read_key_file() if not create else self._key_file_create()
        if key is None:
            raise ConfigError(f"no encryption key: {KEYS_ENV} is unset and the key file {self.key_file} "
                              f"does not exist, so stored API keys cannot be decrypted; set {KEYS_ENV} "
                              "to the key they were sealed with", field=KEYS_ENV)
        return _Keys(_multifernet(key, f"the key file {self.key_file}"), "file")

    def _read_key_file(self) -> str | None:
        try:
            return self.key_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the key file {self.key_file}: {type(exc).__name__}",
                              field=KEYS_ENV) from None

    def _key_file_create(self) -> str:
        """Read the key file, or create it race-free: write a temp file, then hard-link it into place."""
        existing = self._read_key_file()
        if existing is not None:
            return existing
        self._ensure_dir()
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

    # ---- file I/O ------------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Exclusive lock for a read-modify-write; bounded so a hung process cannot block us forever."""
        self._ensure_dir()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConfigError(f"the integration store {self.path} is locked by another process "
                                          f"(waited {timeout:g}s on {self._lock_path})") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _load(self) -> dict[str, Any]:
        """Parse and shape-check the file; errors name the file and line but never quote its contents."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"version": FORMAT_VERSION, "default": None, "integrations": {}}
        except OSError as exc:
            raise ConfigError(f"cannot read the integration store {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"the integration store {self.path} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the integration store {self.path} is not valid JSON: {exc.msg} at line "
                              f"{exc.lineno}, column {exc.colno}", line=exc.lineno) from None
        return self._check_shape(data)

    def _check_shape(self, data: Any) -> dict[str, Any]:
        where = f"the integration store {self.path}"
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
            sealed = entry.setdefault("api_key_sealed", None)
            if sealed is not None and not isinstance(sealed, str):
                raise ConfigError(f"{where}: integration {name!r}: api_key_sealed must be a string or null",
                                  integration=name)
        default = data.get("default")
        if default is not None and default not in integrations:
            raise ConfigError(f"{where}: the default {default!r} is not a stored integration")
        return {"version": FORMAT_VERSION, "default": default, "integrations": integrations}

    def _save(self, data: dict[str, Any]) -> None:
        """Write to a 0600 temp file in the same directory, fsync, then rename over the old file."""
        self._ensure_dir()
        body = {"version": FORMAT_VERSION, "default": data["default"],
                "integrations": {n: data["integrations"][n] for n in sorted(data["integrations"])}}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=2)
                fh.write("\n")
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

    # ---- decoding and errors -------------------------------------------------------------------

    def _decode(self, name: str, entry: dict[str, Any]) -> Integration:
        fields = {k: v for k, v in entry.items() if k not in {"api_key_sealed", "has_api_key"}}
        if fields.setdefault("name", name) != name:
            raise ConfigError(f"the integration store {self.path}: entry {name!r} holds the name "
                              f"{fields['name']!r}", integration=name)
        token = entry.get("api_key_sealed")
        if token:
            keys = self._keys(create=False)
            try:
                fields["api_key"] = open_secret(token, keys.fernet)
            except InvalidToken:
                raise self._undecryptable(name, keys) from None
        try:
            return Integration.build(**fields)
        except ConfigError as exc:
            # the model says "integration ...": the store names the entry itself
            reason = exc.message.removeprefix("integration: ").removeprefix("integration ")
            raise ConfigError(f"the integration store {self.path}: integration {name!r}: {reason}",
                              field=exc.field, integration=name) from None

    def _undecryptable(self, name: str, keys: _Keys) -> ConfigError:
        message = (f"cannot decrypt the key of integration {name!r}: {KEYS_ENV} does not hold the key "
                   "it was sealed with")
        if keys.source == "file":
            message += f" ({KEYS_ENV} is unset, so the key file {self.key_file} was tried)"
        elif keys.source == "argument":
            message += " (the fernet_keys argument was used instead of the variable)"
        return ConfigError(message, field=KEYS_ENV, integration=name)

    def _missing(self, name: str, data: Mapping[str, Any]) -> ConfigError:
        known = sorted(data["integrations"])
        listing = f"known: {', '.join(known)}" if known else f"none are stored yet; {_ADD_HINT}"
        return ConfigError(f"no integration named {name!r} in {self.path} ({listing})",
                           field="integration", integration=name, known=known)


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
            raise ConfigError(f"no integration named 'default' in {store.path} and OPENAI_API_KEY is not "
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


INTEGRATIONS_URL_ENV = "OPENAI_PACK_INTEGRATIONS_URL"


class RedisIntegrationStore(IntegrationStore):
    """The same document in one Redis key, so workers on many machines share one set of integrations.

    Keys stay Fernet-sealed; the encryption keys must come from ``OPENAI_PACK_FERNET_KEYS`` (or the
    argument), since a key file on one machine is useless to the others.
    """

    def __init__(self, url: str, key: str = "opk:integrations", fernet_keys: str | None = None) -> None:
        import redis

        super().__init__(path=Path(f"redis-{key}"), fernet_keys=fernet_keys)
        self.url, self.key = url, key
        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def __repr__(self) -> str:
        return f"RedisIntegrationStore(key={self.key!r})"

    def _keys(self, *, create: bool) -> _Keys:
        if (self._fernet_keys and self._fernet_keys.strip()) or os.environ.get(KEYS_ENV, "").strip():
            return super()._keys(create=create)
        raise ConfigError(f"the Redis integration store needs {KEYS_ENV} (a key file cannot be shared between "
                          "machines)", field=KEYS_ENV)

    @contextlib.contextmanager
    def _locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        lock = self.redis.lock(self.key + ":lock", timeout=30, blocking_timeout=timeout)
        if not lock.acquire():
            raise ConfigError(f"the integration store {self.key} is locked by another process (waited {timeout:g}s)")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                lock.release()

    def _load(self) -> dict[str, Any]:
        raw = self.redis.get(self.key)
        if raw is None:
            return {"version": FORMAT_VERSION, "default": None, "integrations": {}}
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"the integration store {self.key} is not valid JSON") from None
        return self._check_shape(data)

    def _save(self, data: dict[str, Any]) -> None:
        body = {"version": FORMAT_VERSION, "default": data["default"],
                "integrations": {n: data["integrations"][n] for n in sorted(data["integrations"])}}
        self.redis.set(self.key, json.dumps(body))


def open_store() -> IntegrationStore:
    """The configured store: Redis when ``OPENAI_PACK_INTEGRATIONS_URL`` is set, else the local file."""
    url = os.environ.get(INTEGRATIONS_URL_ENV, "").strip()
    return RedisIntegrationStore(url) if url else IntegrationStore()
