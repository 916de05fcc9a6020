"""The on-disk integration store: round-trips, encryption at rest, rotation, locking, and resolve()."""

from __future__ import annotations

import json
import multiprocessing
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.fernet import Fernet

from integration.errors import ConfigError
from integration.model import Integration
from integration.store import IntegrationStore, resolve

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

#: A recognisable fake key: it must never appear in clear in the store file or in an error.
CANARY = "sk-canary-STORE-0123456789abcdef"
OTHER_KEY = "sk-other-STORE-fedcba9876543210"
ENV_VARS = ("OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_BASE_URL")


def new_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def fernet_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = new_key()
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", key)
    return key


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A not-yet-existing pack home, so the store's own directory creation is exercised."""
    pack_home = tmp_path / "pack-home"
    monkeypatch.setenv("OPENAI_PACK_HOME", str(pack_home))
    monkeypatch.delenv("OPENAI_PACK_FERNET_KEYS", raising=False)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return pack_home


def acme(key: str = CANARY, name: str = "acme", **fields: object) -> Integration:
    return Integration(name=name, api_key=key, **fields)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- add / get / list / remove / default ------------------------------------------------------


def test_add_get_list_remove_and_default(home: Path, fernet_key: str) -> None:
    store = IntegrationStore()
    assert store.path == home / "integrations.json"
    assert store.list() == []
    assert store.default_name() is None

    store.add(acme(name="zeta", key=OTHER_KEY))
    store.add(acme(name="acme"))
    assert store.default_name() == "zeta", "the first one added becomes the default"
    assert [i.name for i in store.list()] == ["acme", "zeta"]
    assert store.get("acme").api_key.get_secret_value() == CANARY
    assert store.get("zeta").api_key.get_secret_value() == OTHER_KEY

    store.set_default("acme")
    assert store.default_name() == "acme"
    store.remove("acme")
    assert store.default_name() is None, "removing the default leaves no default"
    assert store.names() == ["zeta"]


def test_add_existing_needs_replace_and_make_default(fernet_key: str) -> None:
    store = IntegrationStore()
    store.add(acme(name="first"))
    store.add(acme())
    with pytest.raises(ConfigError, match="'acme' already exists"):
        store.add(acme(key=OTHER_KEY))
    assert store.get("acme").api_key.get_secret_value() == CANARY

    store.add(acme(key=OTHER_KEY), replace=True, make_default=True)
    assert store.get("acme").api_key.get_secret_value() == OTHER_KEY
    assert store.default_name() == "acme"


def test_missing_name_lists_the_known_ones(fernet_key: str) -> None:
    store = IntegrationStore()
    with pytest.raises(ConfigError, match="none are stored yet"):
        store.get("nope")
    store.add(acme(name="beta"))
    store.add(acme(name="alpha"))
    for call in (store.get, store.remove, store.set_default):
        with pytest.raises(ConfigError) as info:
            call("nope")
        assert "'nope'" in str(info.value)
        assert "known: alpha, beta" in str(info.value)
        assert info.value.details["known"] == ["alpha", "beta"]


def test_all_public_fields_round_trip(fernet_key: str) -> None:
    original = Integration(
        name="proxy", api_key=CANARY, organization_id="org-1", project_id="proj-1",
        base_url="https://llm.example.com/v1/", auth={"placement": "header", "name": "X-Api-Key",
                                                       "prefix": "Token "},
        timeout={"connect": 3, "read": 30}, max_retries=5, extra_headers={"X-Customer": "acme"},
        legacy_edits=True, rate_limits={"requests_per_minute": 60},
    )
    store = IntegrationStore()
    store.add(original)
    loaded = store.get("proxy")
    assert loaded == original
    assert loaded.api_key.get_secret_value() == CANARY


def test_keyless_integration_stores_null(fernet_key: str) -> None:
    store = IntegrationStore()
    store.add(Integration(name="local", base_url="http://127.0.0.1:8080/v1", auth={"placement": "none"}))
    raw = json.loads(store.path.read_text())
    assert raw["integrations"]["local"]["api_key_sealed"] is None
    assert store.get("local").api_key is None


# ---- at rest ------------------------------------------------------------------------------------


def test_file_format_modes_and_no_clear_key(home: Path, fernet_key: str) -> None:
    store = IntegrationStore()
    store.add(acme(organization_id="org-9"))
    data = store.path.read_bytes()
    assert CANARY.encode() not in data
    assert b"sk-canary" not in data

    raw = json.loads(data)
    assert raw["version"] == 1
    assert raw["default"] == "acme"
    entry = raw["integrations"]["acme"]
    assert "has_api_key" not in entry and "api_key" not in entry
    assert entry["api_key_sealed"].startswith("gAAAA")
    expected = acme(organization_id="org-9").public_dict()
    del expected["has_api_key"], expected["has_admin_key"]
    assert {k: v for k, v in entry.items() if k != "api_key_sealed"} == expected

    assert mode(home) == 0o700
    assert mode(store.path) == 0o600
    assert not (home / "fernet.key").exists(), "no key file when the env variable holds the keys"
    names = {p.name for p in home.iterdir()}
    assert names == {"integrations.json", "integrations.json.lock"}, "atomic writes leave no temp files"


def test_key_file_fallback(home: Path) -> None:
    store = IntegrationStore()
    store.add(acme())
    key_file = home / "fernet.key"
    assert mode(key_file) == 0o600
    assert CANARY.encode() not in store.path.read_bytes()
    assert store.get("acme").api_key.get_secret_value() == CANARY

    key_file.unlink()
    with pytest.raises(ConfigError, match="key file .* does not exist") as info:
        IntegrationStore().get("acme")
    assert CANARY not in str(info.value)
    assert not key_file.exists(), "reading never creates a key that could not open the data anyway"


def test_custom_path_keeps_key_file_beside_it(tmp_path: Path, home: Path) -> None:
    store = IntegrationStore(tmp_path / "custom" / "store.json")
    store.add(acme())
    assert (tmp_path / "custom" / "fernet.key").exists()
    assert not home.exists(), "a custom path never touches the pack home"


def test_fernet_keys_argument_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    IntegrationStore(fernet_keys=key).add(acme())
    assert IntegrationStore(fernet_keys=key).get("acme").api_key.get_secret_value() == CANARY
    with pytest.raises(ConfigError, match="cannot decrypt"):
        IntegrationStore().get("acme")


# ---- wrong keys and rotation --------------------------------------------------------------------


def test_wrong_key_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch, fernet_key: str) -> None:
    IntegrationStore().add(acme())
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    with pytest.raises(ConfigError) as info:
        IntegrationStore().get("acme")
    err = info.value
    assert str(err) == ("cannot decrypt the key of integration 'acme': OPENAI_PACK_FERNET_KEYS does not "
                        "hold the key it was sealed with")
    assert err.__cause__ is None and err.__suppress_context__, "no InvalidToken traceback rides along"
    assert CANARY not in str(err) and CANARY not in json.dumps(err.to_dict())
    with pytest.raises(ConfigError, match="cannot decrypt the key of integration 'acme'"):
        IntegrationStore().list()


def test_invalid_fernet_key_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = "not-a-fernet-key-SECRETISH"
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", f"{new_key()},{bogus}")
    with pytest.raises(ConfigError, match="key 2 of 2 is not a Fernet key") as info:
        IntegrationStore().add(acme())
    assert bogus not in str(info.value)


def test_rotate_moves_every_key_to_the_new_first_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key_a, key_b = new_key(), new_key()
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", key_a)
    store = IntegrationStore()
    store.add(acme())
    store.add(acme(name="beta", key=OTHER_KEY))
    store.add(Integration(name="local", base_url="http://127.0.0.1:1/v1", auth={"placement": "none"}))
    before = json.loads(store.path.read_text())["integrations"]

    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", f"{key_b},{key_a}")
    assert store.rotate() == 2
    after = json.loads(store.path.read_text())["integrations"]
    assert after["acme"]["api_key_sealed"] != before["acme"]["api_key_sealed"]
    assert mode(store.path) == 0o600

    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", key_b)
    assert store.get("acme").api_key.get_secret_value() == CANARY
    assert store.get("beta").api_key.get_secret_value() == OTHER_KEY
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", key_a)
    with pytest.raises(ConfigError, match="cannot decrypt the key of integration 'acme'"):
        store.get("acme")


def test_rotate_without_the_old_key_writes_nothing(monkeypatch: pytest.MonkeyPatch, fernet_key: str) -> None:
    store = IntegrationStore()
    store.add(acme())
    before = store.path.read_bytes()
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    with pytest.raises(ConfigError, match="cannot decrypt the key of integration 'acme'"):
        store.rotate()
    assert store.path.read_bytes() == before


# ---- corrupt files ------------------------------------------------------------------------------


def test_corrupt_json_names_file_and_line_without_contents(home: Path) -> None:
    home.mkdir()
    path = home / "integrations.json"
    path.write_text('{\n  "version": 1,\n  "integrations": {"acme": "' + CANARY + '"\n  ,,\n}\n')
    with pytest.raises(ConfigError) as info:
        IntegrationStore().list()
    message = str(info.value)
    assert str(path) in message
    assert "line 4" in message
    assert CANARY not in message and CANARY not in json.dumps(info.value.to_dict())


@pytest.mark.parametrize(("content", "fragment"), [
    ("[]", "must hold a JSON object"),
    ('{"version": 99, "integrations": {}}', "format version 99"),
    ('{"version": 1, "default": "ghost", "integrations": {}}', "default 'ghost'"),
    ('{"version": 1, "integrations": {"a": {"api_key_sealed": null}}}', "integration 'a': api_key"),
    (b'\xff\xfe', "not UTF-8"),
])
def test_malformed_store_is_a_config_error(home: Path, content: str | bytes, fragment: str) -> None:
    home.mkdir()
    path = home / "integrations.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=fragment) as info:
        IntegrationStore().list()
    assert str(path) in str(info.value)


# ---- resolve() ----------------------------------------------------------------------------------


def test_resolve_passes_an_integration_through(home: Path) -> None:
    given = acme()
    assert resolve(given) is given
    assert not home.exists(), "no store is touched"


def test_resolve_precedence(fernet_key: str) -> None:
    env = {"OPENAI_API_KEY": "sk-from-env-000000", "OPENAI_ORG_ID": "org-env",
           "OPENAI_PROJECT_ID": "proj-env", "OPENAI_BASE_URL": "https://proxy.example.com/v1"}
    store = IntegrationStore()

    from_env = resolve(environ=env)
    assert from_env.api_key.get_secret_value() == "sk-from-env-000000"
    assert (from_env.organization_id, from_env.project_id, from_env.base_url) == (
        "org-env", "proj-env", "https://proxy.example.com/v1")
    assert resolve("default", environ=env).organization_id == "org-env"

    store.add(acme(name="first"))
    store.add(acme(name="second", key=OTHER_KEY))
    assert resolve(environ=env).name == "first", "the store's default beats the environment"
    assert resolve("second", environ=env).api_key.get_secret_value() == OTHER_KEY
    assert resolve("default", environ=env).organization_id == "org-env", "no stored 'default': env"

    store.add(acme(name="default"))
    assert resolve("default", environ=env).api_key.get_secret_value() == CANARY, "a stored 'default' wins"

    store.set_default(None)
    assert resolve(environ=env).organization_id == "org-env", "no default: env"
    with pytest.raises(ConfigError, match="no integration named 'nope'.*known: default, first, second"):
        resolve("nope", environ=env)


def test_resolve_with_nothing_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={})
    assert str(info.value) == ("no integration configured: set OPENAI_API_KEY, or add one with "
                               "`openai-pack integrations add NAME`")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        resolve("default", environ={})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-process-env-0000")
    assert resolve().api_key.get_secret_value() == "sk-process-env-0000", "environ=None reads os.environ"


def test_resolve_reads_home_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         fernet_key: str) -> None:
    for sub in ("one", "two"):
        monkeypatch.setenv("OPENAI_PACK_HOME", str(tmp_path / sub))
        IntegrationStore().add(acme(name=f"tenant-{sub}"))
    assert resolve(environ={}).name == "tenant-two"
    monkeypatch.setenv("OPENAI_PACK_HOME", str(tmp_path / "one"))
    assert resolve(environ={}).name == "tenant-one"
    assert resolve("tenant-one", store=IntegrationStore(tmp_path / "one" / "integrations.json")).name == (
        "tenant-one")


# ---- concurrency --------------------------------------------------------------------------------

PER_PROCESS = 12


def _add_many(path: str, keys: str, prefix: str, start: Event) -> None:
    start.wait(10)
    store = IntegrationStore(Path(path), fernet_keys=keys)
    for i in range(PER_PROCESS):
        store.add(Integration(name=f"{prefix}-{i:02d}", api_key=f"{CANARY}-{prefix}-{i}"))


def test_concurrent_adds_from_two_processes_both_survive(home: Path) -> None:
    keys = new_key()
    path = home / "integrations.json"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    workers = [ctx.Process(target=_add_many, args=(str(path), keys, prefix, start)) for prefix in ("p", "q")]
    for worker in workers:
        worker.start()
    start.set()
    try:
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0, f"worker exit code {worker.exitcode}"
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(5)

    store = IntegrationStore(path, fernet_keys=keys)
    expected = sorted(f"{prefix}-{i:02d}" for prefix in ("p", "q") for i in range(PER_PROCESS))
    assert store.names() == expected
    assert store.get("q-07").api_key.get_secret_value() == f"{CANARY}-q-7"
    assert store.default_name() in {"p-00", "q-00"}
    assert mode(path) == 0o600
    assert CANARY.encode() not in path.read_bytes()
    assert {p.name for p in home.iterdir()} == {"integrations.json", "integrations.json.lock"}


def test_redis_store_keeps_keys_sealed_and_is_shared(redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers on several machines read one store in Redis; the key is sealed there too."""
    import redis as redis_client
    from cryptography.fernet import Fernet

    from integration.errors import ConfigError
    from integration.store import RedisIntegrationStore, open_store, resolve
    from tests.conftest import CANARY_KEY

    url = redis_server.rsplit("/", 1)[0] + "/5"
    redis_client.Redis.from_url(url).flushdb()
    monkeypatch.setenv("OPENAI_PACK_INTEGRATIONS_URL", url)
    with pytest.raises(ConfigError, match="OPENAI_PACK_FERNET_KEYS"):
        open_store().add(Integration(name="acme", api_key=CANARY_KEY))
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", Fernet.generate_key().decode())
    store = open_store()
    assert isinstance(store, RedisIntegrationStore)
    store.add(Integration(name="acme", api_key=CANARY_KEY, organization_id="org-1"), make_default=True)
    assert RedisIntegrationStore(url).get("acme").api_key.get_secret_value() == CANARY_KEY
    assert resolve(None).name == "acme"
    raw = redis_client.Redis.from_url(url).get("opk:integrations")
    assert raw and CANARY_KEY.encode() not in raw


# ---- the process-level resolver cache (issue 9, item 7) -----------------------------------------


def test_file_store_resolves_from_cache_until_the_file_or_the_keys_change(
        monkeypatch: pytest.MonkeyPatch, fernet_key: str) -> None:
    """A step resolves its integration every time: unchanged store, same decoded object, no decryption."""
    store = IntegrationStore()
    store.add(acme(organization_id="org-1"))
    first = resolve("acme")
    assert resolve("acme") is first and resolve(None) is first
    assert IntegrationStore().get("acme") is first, "the cache is per process, not per store object"

    store.add(acme(organization_id="org-2"), replace=True)
    second = resolve("acme")
    assert second.organization_id == "org-2", "a write is seen at once"
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", f"{new_key()},{fernet_key}")
    assert resolve("acme") is not second, "a changed key ring is a new cache entry"
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    with pytest.raises(ConfigError, match="cannot decrypt"):
        resolve("acme")


def _connections_received(url: str) -> int:
    import redis as redis_client

    return int(redis_client.Redis.from_url(url).info("stats")["total_connections_received"])


def test_redis_resolve_neither_reconnects_nor_decrypts_per_call(
        redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: each resolve() built a new RedisIntegrationStore (a new connection) and decrypted the key."""
    import redis as redis_client

    url = redis_server.rsplit("/", 1)[0] + "/6"
    redis_client.Redis.from_url(url).flushdb()
    monkeypatch.setenv("OPENAI_PACK_INTEGRATIONS_URL", url)
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    from integration.store import RedisIntegrationStore, open_store

    open_store().add(acme(organization_id="org-1"), make_default=True)
    first = resolve("acme")
    before = _connections_received(url)
    resolved = [resolve("acme") for _ in range(3)] + [resolve(None) for _ in range(3)]
    assert _connections_received(url) - before == 1, "only the counting connection itself is new"
    assert all(item is first for item in resolved), "decoded once, then served from the cache"

    RedisIntegrationStore(url).add(acme(organization_id="org-2"), replace=True)  # "another machine"
    assert resolve("acme").organization_id == "org-2", "the version counter tells every process"
    assert int(redis_client.Redis.from_url(url).get("opk:integrations:version")) == 2


def test_redis_store_unreachable_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from integration.errors import StoreUnavailableError
    from integration.store import RedisIntegrationStore

    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisIntegrationStore(f"redis://127.0.0.1:{port}/0", fernet_keys=new_key())
    with pytest.raises(StoreUnavailableError, match="cannot be reached") as info:
        store.get("acme")
    assert info.value.exit_code == 1 and info.value.retryable


# ---- D6: add and rotate check the key ring against what is stored ------------------------------


def _snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir()) if p.is_file()}


def test_add_after_the_key_file_is_deleted_is_refused_and_writes_nothing(home: Path) -> None:
    from integration.errors import KeyRingError

    IntegrationStore().add(acme())
    (home / "fernet.key").unlink()
    before = _snapshot(home)
    with pytest.raises(KeyRingError, match="no encryption key") as info:
        IntegrationStore().add(acme(name="beta", key=OTHER_KEY))
    assert info.value.field == "OPENAI_PACK_FERNET_KEYS" and info.value.exit_code == 2
    assert _snapshot(home) == before, "no new key file, no new entry"
    assert not (home / "fernet.key").exists()
    assert CANARY not in str(info.value) and OTHER_KEY not in str(info.value)


def test_add_with_wrong_fernet_keys_is_refused_and_writes_nothing(
        home: Path, monkeypatch: pytest.MonkeyPatch, fernet_key: str) -> None:
    from integration.errors import KeyRingError

    store = IntegrationStore()
    store.add(acme())
    store.add(Integration(name="local", base_url="http://127.0.0.1:1/v1", auth={"placement": "none"}))
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    before = _snapshot(home)
    with pytest.raises(KeyRingError, match="integration 'acme'.*nothing was written"):
        store.add(acme(name="beta", key=OTHER_KEY))
    assert _snapshot(home) == before
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", f"{new_key()},{fernet_key}")
    store.add(acme(name="beta", key=OTHER_KEY))  # a ring that still holds the old key may add
    assert store.get("acme").api_key.get_secret_value() == CANARY


def test_add_replacing_the_only_sealed_entry_needs_no_old_key(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fernet_key: str) -> None:
    """Nothing else would be stranded, and an empty store still gets its first key."""
    store = IntegrationStore()
    store.add(acme())
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    store.add(acme(key=OTHER_KEY), replace=True)
    assert store.get("acme").api_key.get_secret_value() == OTHER_KEY


def test_rotate_after_the_key_file_is_deleted_creates_no_key(home: Path) -> None:
    from integration.errors import KeyRingError

    IntegrationStore().add(acme())
    (home / "fernet.key").unlink()
    before = _snapshot(home)
    with pytest.raises(KeyRingError, match="no encryption key"):
        IntegrationStore().rotate()
    assert _snapshot(home) == before


# ---- D5: keys with control characters are refused, not trimmed ---------------------------------

CR_CANARY = "sk-proj-CANARY123\rEXTRA"


@pytest.mark.parametrize(("key", "what"), [
    (CR_CANARY, "carriage return"),
    ("sk-proj-CANARY123\nEXTRA", "line break"),
    ("sk-proj-CANARY123\x00EXTRA", "control character (U+0000)"),
    ("sk-proj-CANARY123\x1bEXTRA", "control character (U+001B)"),
    ("sk-proj-CANARY123\u0085EXTRA", "control character (U+0085)"),
    ("sk-proj-CANARY123 EXTRA", "a space"),
    ("sk-proj-CANARY123\u2028EXTRA", "non-ASCII"),
    ("sk-proj-CANARY123\n", "line break"),
])
def test_a_key_with_a_control_character_is_refused_naming_the_field(key: str, what: str,
                                                                    fernet_key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(what)) as info:
        Integration.build(name="cr", api_key=key)
    assert info.value.field == "api_key"
    text = str(info.value) + json.dumps(info.value.to_dict())
    assert "CANARY" not in text and "EXTRA" not in text
    with pytest.raises(ConfigError, match=re.escape(what)) as env_info:
        Integration.from_env({"OPENAI_API_KEY": key})
    assert env_info.value.field == "OPENAI_API_KEY"
    assert "CANARY" not in str(env_info.value)


def test_stdin_key_text_one_line_only() -> None:
    from integration.auth import api_key_from_text

    assert api_key_from_text(CANARY + "\n", field="--key-stdin", line_ending=True).get_secret_value() == CANARY
    assert api_key_from_text("\n", field="--key-stdin", line_ending=True) is None
    for text, reason in ((CANARY + "\n" + OTHER_KEY + "\n", "more than one line"),
                         (CR_CANARY + "\n", "carriage return"), (CANARY + "\r\n", "carriage return"),
                         (" " + CANARY, "a space")):
        with pytest.raises(ConfigError, match=reason) as info:
            api_key_from_text(text, field="--key-stdin", line_ending=True)
        assert info.value.field == "--key-stdin" and CANARY not in str(info.value)


def test_escaped_and_repr_forms_of_a_secret_are_redacted() -> None:
    """D5's leak: httpx quoted the header as b'Bearer sk-...\\rEXTRA', which plain matching missed."""
    from integration.redact import register_secret, scrub, scrub_data

    secret = 'whsec-CANARY-"quoted"\\back\u00e9\r\nEXTRA'
    register_secret(secret)
    leaks = [
        secret, repr(secret), ascii(secret), json.dumps(secret), json.dumps(secret, ensure_ascii=False),
        f"Illegal header value {('Bearer ' + secret).encode()!r}", secret.encode("unicode_escape").decode(),
        str({"headers": {"Authorization": secret}}),
    ]
    for leak in leaks:
        assert "CANARY" not in scrub(leak), leak
    assert "CANARY" not in json.dumps(scrub_data({"log": [repr(secret)], "raw": secret}))


# ---- D12: scrubbing stored keys without holding them in clear ----------------------------------

_REGISTER_IN_A_FRESH_PROCESS = r"""
import json, sys
from integration import redact
from integration.store import register_store_secrets
count = register_store_secrets()
pasted = json.loads(sys.stdin.read())
print(json.dumps({"count": count, "clear_values_held": len(redact._secrets),
                  "scrubbed": redact.scrub_data(pasted), "text": redact.scrub(json.dumps(pasted))}))
"""


def _register_in_child(env_extra: dict[str, str], pasted: object) -> dict[str, object]:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", _REGISTER_IN_A_FRESH_PROCESS], input=json.dumps(pasted),
                          env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_register_store_secrets_scrubs_stored_keys_by_fingerprint(home: Path, fernet_key: str) -> None:
    """``serve`` learns the stored keys without holding any in clear, and scrubs them from payloads."""
    store = IntegrationStore()
    store.add(acme())
    store.add(acme(name="short", key="abc123xyz"))
    env_key = "sk-env-CANARY-00000000000000001"
    pasted = {"ticket": f"my key is {CANARY}, please fix", "nested": [CANARY, f"x{CANARY}y", "abc123xyz"],
              "env": env_key, "near": CANARY[:-1] + "!", "prefix_only": "sk-c"}
    seen = _register_in_child({"OPENAI_PACK_HOME": str(home), "OPENAI_PACK_FERNET_KEYS": fernet_key,
                               "OPENAI_API_KEY": env_key}, pasted)
    assert seen["count"] == 2
    assert seen["clear_values_held"] == 0, "only fingerprints are kept"
    out = json.dumps(seen)
    assert CANARY not in out and "abc123xyz" not in out and env_key not in out
    assert seen["scrubbed"]["ticket"] == "my key is [REDACTED], please fix"
    assert seen["scrubbed"]["nested"] == ["[REDACTED]", "x[REDACTED]y", "[REDACTED]"]
    assert seen["scrubbed"]["near"] == CANARY[:-1] + "!", "a different text of the same shape is kept"
    assert seen["scrubbed"]["prefix_only"] == "sk-c"


def test_register_store_secrets_picks_up_keys_added_later_and_refuses_a_wrong_ring(
        home: Path, monkeypatch: pytest.MonkeyPatch, fernet_key: str) -> None:
    from integration.errors import KeyRingError
    from integration.redact import scrub
    from integration.store import register_store_secrets

    store = IntegrationStore()
    assert register_store_secrets(store, environ={}) == 0
    store.add(acme())
    assert register_store_secrets(store, environ={}) == 1
    later = "sk-later-CANARY-abcdefghijklmnop"
    store.add(acme(name="later", key=later))
    assert register_store_secrets(store, environ={}) == 2
    assert "CANARY" not in scrub(f"{later} {CANARY}")
    monkeypatch.setenv("OPENAI_PACK_FERNET_KEYS", new_key())
    with pytest.raises(KeyRingError, match="cannot decrypt"):
        register_store_secrets(store, environ={})


# ---- one reader of the key in clear -------------------------------------------------------------


def test_only_auth_reads_the_key_in_clear() -> None:
    """Issue 9: model.py read the key and client.py hashed it; both now use the fingerprint auth computes."""
    repo = Path(__file__).resolve().parents[1]
    readers = []
    for path in sorted([*repo.glob("integration/*.py"), *repo.glob("actions/**/*.py"),
                        *repo.glob("workers/**/*.py")]):
        text = path.read_text(encoding="utf-8")
        if re.search(r"get_secret_value\(|hash\([^)]*api_key", text):
            readers.append(path.relative_to(repo).as_posix())
    assert readers == ["integration/auth.py"]


def test_clients_are_pooled_per_key_fingerprint(fernet_key: str) -> None:
    from integration.client import client_for

    one, same, other = acme(), acme(), acme(key=OTHER_KEY)
    assert one.key_fingerprint == same.key_fingerprint != other.key_fingerprint
    assert CANARY not in (one.key_fingerprint or "")
    assert client_for(one) is client_for(same)
    assert client_for(one) is not client_for(other)
    swapped = one.model_copy(update={"api_key": other.api_key})
    assert swapped.key_fingerprint == other.key_fingerprint, "a copied model never keeps a stale fingerprint"


# ---- features replace per-action fields ---------------------------------------------------------


def test_features_replace_legacy_edits_and_old_entries_still_load(home: Path, fernet_key: str) -> None:
    assert Integration(name="a", auth={"placement": "none"}, legacy_edits=True).features == {"legacy_edits": True}
    assert Integration(name="a", auth={"placement": "none"}, legacy_edits=False).features == {}
    assert "legacy_edits" not in Integration(name="a", auth={"placement": "none"}).public_dict()
    with pytest.raises(ConfigError, match="features") as info:
        Integration.build(name="a", auth={"placement": "none"}, features={"Bad Name": True})
    assert info.value.field.startswith("features")
    home.mkdir()
    (home / "integrations.json").write_text(json.dumps({"version": 1, "default": None, "integrations": {
        "old": {"base_url": "http://127.0.0.1:1/v1", "auth": {"placement": "none"}, "legacy_edits": True}}}))
    old = IntegrationStore().get("old")
    assert old.feature("legacy_edits") and not old.feature("anything_else")


# ---- the CLI shares the same checks ------------------------------------------------------------


def _cli_env(home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_PACK_HOME"] = str(home)
    return env


@pytest.mark.parametrize(("args", "stdin", "env_key", "field"), [
    (["--key-stdin"], "sk-proj-CANARY123\rEXTRA\n", None, "--key-stdin"),
    (["--key-stdin"], "sk-proj-CANARY123\nsk-proj-CANARY456\n", None, "--key-stdin"),
    (["--key-env", "CUSTOMER_KEY"], None, "sk-proj-CANARY123\rEXTRA", "CUSTOMER_KEY"),
    (["--key-env", "CUSTOMER_KEY"], None, "sk-proj-CANARY123\x07", "CUSTOMER_KEY"),
])
def test_cli_add_refuses_a_key_with_control_characters(home: Path, args: list[str], stdin: str | None,
                                                        env_key: str | None, field: str) -> None:
    """D5: `printf 'sk-proj-CANARY123\\rEXTRA\\n' | openai-pack integrations add cr --key-stdin` was accepted."""
    from tests.conftest import run_cli

    env = _cli_env(home)
    if env_key is not None:
        env["CUSTOMER_KEY"] = env_key
    done = run_cli(env, "integrations", "add", "cr", *args, input_text=stdin)
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stderr)["error"]
    assert error["field"] == field and error["type"] == "ConfigError"
    assert "CANARY" not in done.stdout + done.stderr and "EXTRA" not in done.stderr
    assert "Traceback" not in done.stderr
    assert not (home / "integrations.json").exists(), "nothing was stored"


def test_cli_add_after_the_key_file_is_gone_exits_2_and_keeps_the_store(home: Path) -> None:
    """D6: `add` used to exit 0, create a new key file and strand the stored entries."""
    from tests.conftest import run_cli

    env = _cli_env(home)
    first = run_cli(env, "integrations", "add", "acme", "--key-stdin", input_text=CANARY + "\n")
    assert first.returncode == 0, first.stderr
    (home / "fernet.key").unlink()
    before = _snapshot(home)
    again = run_cli(env, "integrations", "add", "beta", "--key-stdin", input_text=OTHER_KEY + "\n")
    assert again.returncode == 2, again.stderr
    error = json.loads(again.stderr)["error"]
    assert error["type"] == "KeyRingError" and error["field"] == "OPENAI_PACK_FERNET_KEYS"
    assert _snapshot(home) == before and not (home / "fernet.key").exists()
    assert CANARY not in again.stderr + again.stdout and OTHER_KEY not in again.stderr + again.stdout
