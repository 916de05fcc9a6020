"""The few key-value operations run state needs, on Redis (production) or SQLite (embedded default).

The engine keeps every run's state here, never in Celery messages, so a step can be dispatched
from saved state by any worker. Each operation is atomic on its own; the engine is written so
that no read-modify-write spans two operations where two workers could race (counters, set-if-
absent flags and per-field hash writes are enough).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from redis.exceptions import RedisError

from integration.aio import in_bridge
from integration.errors import ConfigError, StoreError, StoreUnavailableError
from integration.redis_urls import check_url, connect, describe_error, is_redis_url, is_sentinel_url
from workers.state.bridged import SharedPipelines

__all__ = ["KV", "Op", "RedisKV", "SqliteKV", "StoreError", "open_kv", "store_failures"]

log = logging.getLogger("openai_pack.store")
T = TypeVar("T")
C = TypeVar("C", bound=type)
#: One write of a ``KV.batch``: (method name, positional args, keyword args).
Op = tuple[str, tuple[Any, ...], dict[str, Any]]


@contextmanager
def store_failures() -> Iterator[None]:
    """Re-raise a driver's failure inside the block as ``StoreUnavailableError`` (for code that talks to Redis
    itself). Every ``KV`` method does the same, so callers tell "retry when the store is back" from a
    step's failure with one ``except StoreError`` (``integration.errors``; re-exported here)."""
    try:
        yield
    except (RedisError, sqlite3.Error) as exc:
        raise StoreUnavailableError(f"run store: {describe_error(exc)}") from exc


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Re-raise the driver's failures as ``StoreUnavailableError`` (the cause stays chained for the log)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except (RedisError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"run store: {describe_error(exc)}") from exc

    return wrapper


def _store_failures(cls: type[C]) -> type[C]:
    """Apply ``_translated`` to every public method of a ``KV`` implementation."""
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, _translated(value))
    return cls


class KV(Protocol):
    """String values only; callers serialise JSON themselves."""

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, *, nx: bool = False, ttl: float | None = None) -> bool: ...
    def claim(self, key: str, value: str, ttl: float) -> bool:
        """Set ``key`` unless it holds another value. ``value`` must be unique to the caller (a token),
        so finding it means the caller's own write: a write retried after its answer was lost (a
        failover) still succeeds instead of reporting someone else's claim."""
        ...
    def delete(self, *keys: str) -> None: ...
    def delete_if(self, key: str, value: str) -> None: ...
    def hset_if_first(self, flags: str, flag: str, writes: list[tuple[str, str, str]]) -> bool: ...
    def extend_if(self, key: str, value: str, ttl: float) -> bool: ...
    def extend_all(self, leases: list[tuple[str, str, float]]) -> list[bool]: ...
    def incr(self, key: str, amount: int = 1) -> int: ...
    def hget(self, key: str, field: str) -> str | None: ...
    def hset(self, key: str, mapping: dict[str, str]) -> None: ...
    def hmget(self, key: str, fields: list[str]) -> list[str | None]: ...
    def hsetnx(self, key: str, field: str, value: str) -> bool: ...
    def hgetall(self, key: str) -> dict[str, str]: ...
    def hincrby(self, key: str, field: str, amount: int = 1) -> int: ...
    def zadd(self, key: str, member: str, score: float) -> None: ...
    def zrevrange(self, key: str, start: int, stop: int) -> list[str]: ...
    def scan(self, prefix: str) -> Iterator[str]: ...
    def ping(self) -> bool: ...
    def batch(self, calls: list[Op]) -> list[Any]: ...
    def finish_item(self, flags: str, counters: str, step: str, index: int) -> tuple[int, int, bool]: ...
    def end_step(self, flags: str, counters: str, step: str) -> tuple[int, bool]: ...


#: RunStore.finish_item on Redis: count a fan-out item once, claim the next index once (atomic).
#: ARGV[3], when not empty, marks the claim as this call's, so a call retried after its reply was lost
#: (a failover) still learns that the claim is its own instead of stopping its fan-out slot.
_FINISH_ITEM = """
local step, index = ARGV[1], ARGV[2]
local done
if redis.call('hsetnx', KEYS[1], 'item_done:' .. step .. ':' .. index, '1') == 1 then
  done = redis.call('hincrby', KEYS[2], 'done:' .. step, 1)
else
  done = tonumber(redis.call('hget', KEYS[2], 'done:' .. step) or '0')
end
local claimed = redis.call('hget', KEYS[1], 'next_of:' .. step .. ':' .. index)
if claimed then
  local mine = ARGV[3] ~= '' and redis.call('hget', KEYS[1], 'next_by:' .. step .. ':' .. index) == ARGV[3]
  return {done, tonumber(claimed), mine and 1 or 0}
end
local following = redis.call('hincrby', KEYS[2], 'next:' .. step, 1) - 1
redis.call('hset', KEYS[1], 'next_of:' .. step .. ':' .. index, following)
if ARGV[3] ~= '' then redis.call('hset', KEYS[1], 'next_by:' .. step .. ':' .. index, ARGV[3]) end
return {done, following, 1}
"""


#: RunStore.end_step on Redis: the step leaves the active count once; the run's "finished" flag goes to whoever
#: sees the count reach 0 first. ARGV[2] marks that flag as this call's (a retry after a failover is still its own).
_END_STEP = """
local remaining
if redis.call('hsetnx', KEYS[1], 'finished:' .. ARGV[1], '1') == 1 then
  remaining = redis.call('hincrby', KEYS[2], 'active', -1)
else
  remaining = tonumber(redis.call('hget', KEYS[2], 'active') or '0')
end
if remaining > 0 then return {remaining, 0} end
if redis.call('hsetnx', KEYS[1], 'finished', '1') == 1 then
  redis.call('hset', KEYS[1], 'finished_by', ARGV[2])
  return {remaining, 1}
end
return {remaining, redis.call('hget', KEYS[1], 'finished_by') == ARGV[2] and 1 or 0}
"""


#: KV.claim on Redis: set if absent, or succeed when the key already holds this very (unique) value.
_CLAIM = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('get', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""


#: KV.hset_if_first on Redis: set the flag and make the writes only when the flag was not set yet.
_HSET_IF_FIRST = """
if redis.call('hsetnx', KEYS[1], ARGV[1], '1') == 0 then return 0 end
for i = 2, #KEYS do redis.call('hset', KEYS[i], ARGV[2 * i - 2], ARGV[2 * i - 1]) end
return 1
"""


class _Replicas:
    """``WAIT`` for a replica after the writes a Sentinel failover must not lose.

    Redis replicates asynchronously: a write the master acknowledged a moment before it died can be
    missing on the replica Sentinel promotes. For a ledger claim that would mean paying twice (the
    claim is gone, so a retry calls again), so with Sentinel the claim, the answer's write and a
    fan-out item's bookkeeping return only once a replica has them. ``WAIT`` is skipped while the
    master has no replica connected (nothing could be promoted, so nothing is gained by waiting; after
    a failover with a single replica that is the case until the old master rejoins); a replica that
    does not confirm within ``timeout_ms`` is logged, and the write goes on (availability over a
    second failure in the same second).
    """

    def __init__(self, client: Any, timeout_ms: int = 1000, recheck: float = 5.0) -> None:
        self.client = client
        self.timeout_ms = timeout_ms
        self.recheck = recheck
        self._connected: int | None = None
        self._master: Any = None
        self._checked = 0.0
        self._warned = False

    def add_wait(self, pipe: Any) -> bool:
        """Append ``WAIT 1 timeout`` to ``pipe`` when a replica is connected; True if it was appended.

        How many replicas the master has is looked up again every few seconds and whenever the
        sentinels named another master (a failover)."""
        now = time.monotonic()
        master = getattr(self.client.connection_pool, "master_address", None)
        if self._connected is None or master != self._master or now - self._checked > self.recheck:
            self._connected = int(self.client.info("replication").get("connected_slaves", 0))
            self._master = getattr(self.client.connection_pool, "master_address", None)
            self._checked = now
        if not self._connected:
            return False
        pipe.execute_command("WAIT", 1, self.timeout_ms)
        return True

    def acknowledged(self, replicas: Any) -> None:
        if int(replicas) >= 1:
            self._warned = False
            return
        if not self._warned:
            self._warned = True
            log.warning("run store: no replica confirmed a write within %d ms; a failover now could lose it",
                        self.timeout_ms)
        self._connected = None  # look again: the replica may be gone


@_store_failures
class RedisKV:
    """Redis: shared by every worker, beat and webhook process on every machine."""

    def __init__(self, url: str) -> None:
        import redis

        from workers.state.bridged import BridgedConnection

        self.url = url
        check_url(url, field="OPENAI_PACK_STORE_URL")
        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 10, "socket_connect_timeout": 5,
                                   "health_check_interval": 30}
        #: Set with Sentinel: the writes a failover must not lose wait for a replica (see ``_Replicas``).
        self._replicas: _Replicas | None = None
        if is_sentinel_url(url):
            self.redis = connect(url, field="OPENAI_PACK_STORE_URL", blocking=True, max_connections=2048,
                                 timeout=30, **options)
            self._replicas = _Replicas(self.redis)
        else:
            # A blocking pool: with hundreds of worker threads, a thread waits for a connection instead of
            # failing with "Too many connections".
            # Plain TCP connections wait on the event loop inside the in-flight executor's greenlets
            # (workers.state.bridged); a chain holds its connection only for one command.
            bridged = {"connection_class": BridgedConnection} if url.startswith("redis://") else {}
            pool = redis.BlockingConnectionPool.from_url(url, max_connections=2048, timeout=30, **options,
                                                         **bridged)
            self.redis = redis.Redis(connection_pool=pool)
        self._groups = SharedPipelines(self._pipeline)
        self._finish_item = self.redis.register_script(_FINISH_ITEM)
        self._end_step = self.redis.register_script(_END_STEP)
        self._claim = self.redis.register_script(_CLAIM)
        self._delete_if = self.redis.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0")
        self._hset_if_first = self.redis.register_script(_HSET_IF_FIRST)
        self._extend_if = self.redis.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end"
            " return 0")

    def get(self, key: str) -> str | None:
        if in_bridge():  # one of the loop's shared pipelines
            return self.batch([("get", (key,), {})])[0]  # type: ignore[no-any-return]
        return self.redis.get(key)  # type: ignore[return-value]

    def set(self, key: str, value: str, *, nx: bool = False, ttl: float | None = None) -> bool:
        px = int(ttl * 1000) if ttl else None
        return bool(self.redis.set(key, value, nx=nx, px=px))

    def claim(self, key: str, value: str, ttl: float) -> bool:
        """See ``KV.claim``; with Sentinel it returns only once a replica has the claim (``_Replicas``)."""
        return self.batch([("claim", (key, value, ttl), {})])[0]  # type: ignore[no-any-return]

    def _replicated(self, write: Callable[[Any, dict[int, tuple[Any, list[str], list[Any]]]], None]) -> list[Any]:
        """Make ``write``'s commands on one connection, then ``WAIT`` until a replica has them (and
        everything written before them, by any client: replication is one ordered stream). A command's
        error is its result; a failed ``WAIT`` raises."""
        import redis

        assert self._replicas is not None
        pipe = self.redis.pipeline(transaction=False)
        scripted: dict[int, tuple[Any, list[str], list[Any]]] = {}
        write(pipe, scripted)
        waiting = self._replicas.add_wait(pipe)
        results = list(pipe.execute(raise_on_error=False))
        replicas = results.pop() if waiting else 1
        rerun = False
        for position, (script, keys, args) in scripted.items():
            if isinstance(results[position], redis.exceptions.NoScriptError):  # a new master: load it, run it
                results[position] = script(keys=keys, args=args)
                rerun = True
        if isinstance(replicas, Exception):
            raise replicas
        if waiting:
            if rerun:  # those ran after the WAIT: wait again, behind a write of that connection
                mark = self.redis.pipeline(transaction=False)
                mark.set("opk:replication-mark", "1")
                mark.execute_command("WAIT", 1, self._replicas.timeout_ms)
                replicas = mark.execute()[1]
            self._replicas.acknowledged(replicas)
        return results

    def delete(self, *keys: str) -> None:
        if keys:
            self.redis.delete(*keys)

    def delete_if(self, key: str, value: str) -> None:
        """Compare-and-delete in one round trip (a lease is released only by its owner)."""
        self._delete_if(keys=[key], args=[value])

    def hset_if_first(self, flags: str, flag: str, writes: list[tuple[str, str, str]]) -> bool:
        """Set-once ``flag`` in ``flags``; only the first caller's hash ``writes`` (key, field, value) happen."""
        return bool(self._hset_if_first(*self._hset_if_first_call(flags, flag, writes)))

    @staticmethod
    def _hset_if_first_call(flags: str, flag: str, writes: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
        keys, args = [flags], [flag]
        for key, field, value in writes:
            keys.append(key)
            args += [field, value]
        return keys, args

    @staticmethod
    def _queue_script(pipe: Any, script: Any, keys: list[str], args: list[Any],
                      scripted: dict[int, tuple[Any, list[str], list[Any]]]) -> None:
        """Queue a script in a pipeline by its digest alone.

        redis-py's own way (``script(client=pipe)``) first asks ``SCRIPT EXISTS`` in a round trip of its own
        on every pipeline: one extra round trip per fan-out item. ``_execute`` covers the case the check
        was for (Redis restarted and forgot the script)."""
        scripted[len(pipe.command_stack)] = (script, keys, args)
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    @staticmethod
    def _execute(pipe: Any, scripted: dict[int, tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """Run a pipeline; a script the server no longer knows is loaded and run again on its own."""
        results = RedisKV._results(pipe, scripted)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    @staticmethod
    def _results(pipe: Any, scripted: dict[int, tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """``_execute``, with each command's error as its result instead of raised."""
        import redis

        results = list(pipe.execute(raise_on_error=False))
        for position, (script, keys, args) in scripted.items():
            if isinstance(results[position], redis.exceptions.NoScriptError):
                try:
                    results[position] = script(keys=keys, args=args)  # loads it, then runs it
                except redis.exceptions.ResponseError as exc:
                    results[position] = exc
        return results

    def extend_if(self, key: str, value: str, ttl: float) -> bool:
        """Compare-and-expire in one round trip (a lease is kept alive only by its owner)."""
        return bool(self._extend_if(keys=[key], args=[value, int(ttl * 1000)]))

    def extend_all(self, leases: list[tuple[str, str, float]]) -> list[bool]:
        """``extend_if`` for each (key, value, ttl), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        scripted: dict[int, tuple[Any, list[str], list[Any]]] = {}
        for key, value, ttl in leases:
            self._queue_script(pipe, self._extend_if, [key], [value, int(ttl * 1000)], scripted)
        return [bool(alive) for alive in self._execute(pipe, scripted)]

    def finish_item(self, flags: str, counters: str, step: str, index: int) -> tuple[int, int, bool]:
        """See ``RunStore.finish_item``: one atomic script instead of six round trips."""
        return self.batch([("finish_item", (flags, counters, step, index), {})])[0]  # type: ignore[no-any-return]

    def end_step(self, flags: str, counters: str, step: str) -> tuple[int, bool]:
        """See ``RunStore.end_step``: one atomic script instead of three round trips."""
        return self.batch([("end_step", (flags, counters, step), {})])[0]  # type: ignore[no-any-return]

    def incr(self, key: str, amount: int = 1) -> int:
        return int(self.redis.incrby(key, amount))  # type: ignore[arg-type]

    def hget(self, key: str, field: str) -> str | None:
        return self.redis.hget(key, field)  # type: ignore[return-value]

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        if mapping:
            self.redis.hset(key, mapping=mapping)

    def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        return list(self.redis.hmget(key, fields))  # type: ignore[arg-type]

    def hsetnx(self, key: str, field: str, value: str) -> bool:
        return bool(self.redis.hsetnx(key, field, value))

    def hgetall(self, key: str) -> dict[str, str]:
        return self.redis.hgetall(key)  # type: ignore[return-value]

    def hincrby(self, key: str, field: str, amount: int = 1) -> int:
        return int(self.redis.hincrby(key, field, amount))  # type: ignore[arg-type]

    def zadd(self, key: str, member: str, score: float) -> None:
        self.redis.zadd(key, {member: score})

    def zrevrange(self, key: str, start: int, stop: int) -> list[str]:
        return list(self.redis.zrevrange(key, start, stop))  # type: ignore[arg-type]

    def scan(self, prefix: str) -> Iterator[str]:
        yield from self.redis.scan_iter(match=prefix + "*", count=500)  # type: ignore[misc]

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def batch(self, calls: list[Op]) -> list[Any]:
        """Several commands in one round trip (a pipeline, not a transaction: each stays atomic on its own).

        Besides the plain commands, ``claim``, ``delete_if``, ``hset_if_first``, ``finish_item`` and ``end_step``
        may be batched; each result has the shape its method returns. Inside a bridged greenlet the batches
        of every chain that asks in the same turn of the loop share one pipeline (``workers.state.bridged``)."""
        results = self._groups.run(calls) if in_bridge() else self._pipeline(calls)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [_SHAPES[method](result) if method in _SHAPES else result
                for (method, _, _), result in zip(calls, results, strict=True)]

    def _pipeline(self, calls: list[Op]) -> list[Any]:
        """``calls`` in one pipeline: their results, a command's error as its result."""
        if self._replicas is not None:  # a paid call's answer and its record: on a replica before going on
            return self._replicated(lambda pipe, scripted: self._add_calls(pipe, calls, scripted))
        pipe = self.redis.pipeline(transaction=False)
        scripted: dict[int, tuple[Any, list[str], list[Any]]] = {}
        self._add_calls(pipe, calls, scripted)
        return self._results(pipe, scripted)

    def _add_calls(self, pipe: Any, calls: list[Op], scripted: dict[int, tuple[Any, list[str], list[Any]]]) -> None:
        for method, args, kwargs in calls:
            if method == "set":
                key, value = args
                ttl = kwargs.get("ttl")
                pipe.set(key, value, nx=kwargs.get("nx", False), px=int(ttl * 1000) if ttl else None)
            elif method == "hset":
                pipe.hset(args[0], mapping=args[1])
            elif method == "delete":
                pipe.delete(*args)
            elif method == "zadd":
                pipe.zadd(args[0], {args[1]: args[2]})
            elif method == "hset_if_first":
                self._queue_script(pipe, self._hset_if_first, *self._hset_if_first_call(*args), scripted)
            elif method == "claim":
                key, value, ttl = args
                self._queue_script(pipe, self._claim, [key], [value, int(ttl * 1000)], scripted)
            elif method == "delete_if":
                self._queue_script(pipe, self._delete_if, [args[0]], [args[1]], scripted)
            elif method == "end_step":
                flags, counters, step = args
                self._queue_script(pipe, self._end_step, [flags, counters], [step, uuid.uuid4().hex], scripted)
            elif method == "finish_item":
                flags, counters, step, index = args
                # with Sentinel, redis-py retries a command after a failover: see _FINISH_ITEM
                token = uuid.uuid4().hex if self._replicas is not None else ""
                self._queue_script(pipe, self._finish_item, [flags, counters], [step, index, token], scripted)
            else:
                getattr(pipe, method)(*args, **kwargs)


#: How ``RedisKV.batch`` gives back a script's reply: as the method of the same name returns it.
_SHAPES: dict[str, Callable[[Any], Any]] = {
    "claim": bool, "hset_if_first": bool, "delete_if": lambda _: None,
    "finish_item": lambda reply: (int(reply[0]), int(reply[1]), bool(reply[2])),
    "end_step": lambda reply: (int(reply[0]), bool(reply[1])),
}


@_store_failures
class SqliteKV:
    """A local file with the same semantics, for the embedded default (one machine, no server)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL, expires REAL)")
            db.execute("CREATE TABLE IF NOT EXISTS h (k TEXT, f TEXT, v TEXT NOT NULL, PRIMARY KEY (k, f))")
            db.execute("CREATE TABLE IF NOT EXISTS z (k TEXT, m TEXT, s REAL NOT NULL, PRIMARY KEY (k, m))")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: object, *_: object) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> SqliteKV._Tx:
        return self._Tx(self._db())

    def get(self, key: str) -> str | None:
        row = self._db().execute("SELECT v, expires FROM kv WHERE k = ?", (key,)).fetchone()
        if row is None or (row[1] is not None and row[1] < time.time()):
            return None
        return str(row[0])

    def set(self, key: str, value: str, *, nx: bool = False, ttl: float | None = None) -> bool:
        expires = time.time() + ttl if ttl else None
        with self._tx() as db:
            if nx:
                row = db.execute("SELECT expires FROM kv WHERE k = ?", (key,)).fetchone()
                if row is not None and (row[0] is None or row[0] >= time.time()):
                    return False
            db.execute("INSERT OR REPLACE INTO kv (k, v, expires) VALUES (?, ?, ?)", (key, value, expires))
        return True

    def delete(self, *keys: str) -> None:
        with self._tx() as db:
            for key in keys:
                db.execute("DELETE FROM kv WHERE k = ?", (key,))
                db.execute("DELETE FROM h WHERE k = ?", (key,))
                db.execute("DELETE FROM z WHERE k = ?", (key,))

    def claim(self, key: str, value: str, ttl: float) -> bool:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT v, expires FROM kv WHERE k = ?", (key,)).fetchone()
            if row is not None and (row[1] is None or row[1] >= now):
                return str(row[0]) == value
            db.execute("INSERT OR REPLACE INTO kv (k, v, expires) VALUES (?, ?, ?)", (key, value, now + ttl))
        return True

    def delete_if(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM kv WHERE k = ? AND v = ?", (key, value))

    def hset_if_first(self, flags: str, flag: str, writes: list[tuple[str, str, str]]) -> bool:
        with self._tx() as db:
            if db.execute("INSERT OR IGNORE INTO h (k, f, v) VALUES (?, ?, '1')", (flags, flag)).rowcount != 1:
                return False
            db.executemany("INSERT OR REPLACE INTO h (k, f, v) VALUES (?, ?, ?)", writes)
            return True

    def extend_all(self, leases: list[tuple[str, str, float]]) -> list[bool]:
        return [self.extend_if(key, value, ttl) for key, value, ttl in leases]

    def extend_if(self, key: str, value: str, ttl: float) -> bool:
        now = time.time()
        with self._tx() as db:
            cursor = db.execute("UPDATE kv SET expires = ? WHERE k = ? AND v = ? AND (expires IS NULL OR expires >= ?)",
                                (now + ttl, key, value, now))
            return cursor.rowcount == 1

    def finish_item(self, flags: str, counters: str, step: str, index: int) -> tuple[int, int, bool]:
        """The Redis script's logic in one SQLite transaction."""
        with self._tx() as db:
            def hget(key: str, field: str) -> str | None:
                row = db.execute("SELECT v FROM h WHERE k = ? AND f = ?", (key, field)).fetchone()
                return None if row is None else str(row[0])

            def hput(key: str, field: str, value: str) -> None:
                db.execute("INSERT OR REPLACE INTO h (k, f, v) VALUES (?, ?, ?)", (key, field, value))

            def hincr(key: str, field: str) -> int:
                value = int(hget(key, field) or 0) + 1
                hput(key, field, str(value))
                return value

            if hget(flags, f"item_done:{step}:{index}") is None:
                hput(flags, f"item_done:{step}:{index}", "1")
                done = hincr(counters, f"done:{step}")
            else:
                done = int(hget(counters, f"done:{step}") or 0)
            claimed = hget(flags, f"next_of:{step}:{index}")
            if claimed is not None:
                return done, int(claimed), False
            following = hincr(counters, f"next:{step}") - 1
            hput(flags, f"next_of:{step}:{index}", str(following))
            return done, following, True

    def end_step(self, flags: str, counters: str, step: str) -> tuple[int, bool]:
        """The Redis script's logic in one SQLite transaction."""
        with self._tx() as db:
            row = db.execute("SELECT v FROM h WHERE k = ? AND f = 'active'", (counters,)).fetchone()
            remaining = int(row[0]) if row else 0
            if db.execute("INSERT OR IGNORE INTO h (k, f, v) VALUES (?, ?, '1')",
                          (flags, f"finished:{step}")).rowcount == 1:
                remaining -= 1
                db.execute("INSERT OR REPLACE INTO h (k, f, v) VALUES (?, 'active', ?)", (counters, str(remaining)))
            if remaining > 0:
                return remaining, False
            won = db.execute("INSERT OR IGNORE INTO h (k, f, v) VALUES (?, 'finished', '1')", (flags,)).rowcount == 1
            return remaining, won

    def incr(self, key: str, amount: int = 1) -> int:
        with self._tx() as db:
            row = db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
            value = (int(row[0]) if row else 0) + amount
            db.execute("INSERT OR REPLACE INTO kv (k, v, expires) VALUES (?, ?, NULL)", (key, str(value)))
        return value

    def hget(self, key: str, field: str) -> str | None:
        row = self._db().execute("SELECT v FROM h WHERE k = ? AND f = ?", (key, field)).fetchone()
        return None if row is None else str(row[0])

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO h (k, f, v) VALUES (?, ?, ?)",
                           [(key, f, v) for f, v in mapping.items()])

    def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        return [self.hget(key, f) for f in fields]

    def hsetnx(self, key: str, field: str, value: str) -> bool:
        with self._tx() as db:
            cursor = db.execute("INSERT OR IGNORE INTO h (k, f, v) VALUES (?, ?, ?)", (key, field, value))
            return cursor.rowcount == 1

    def hgetall(self, key: str) -> dict[str, str]:
        return {str(f): str(v) for f, v in self._db().execute("SELECT f, v FROM h WHERE k = ?", (key,))}

    def hincrby(self, key: str, field: str, amount: int = 1) -> int:
        with self._tx() as db:
            row = db.execute("SELECT v FROM h WHERE k = ? AND f = ?", (key, field)).fetchone()
            value = (int(row[0]) if row else 0) + amount
            db.execute("INSERT OR REPLACE INTO h (k, f, v) VALUES (?, ?, ?)", (key, field, str(value)))
        return value

    def zadd(self, key: str, member: str, score: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO z (k, m, s) VALUES (?, ?, ?)", (key, member, score))

    def zrevrange(self, key: str, start: int, stop: int) -> list[str]:
        limit = -1 if stop < 0 else stop - start + 1
        rows = self._db().execute("SELECT m FROM z WHERE k = ? ORDER BY s DESC LIMIT ? OFFSET ?",
                                  (key, limit, start))
        return [str(r[0]) for r in rows]

    def scan(self, prefix: str) -> Iterator[str]:
        like = prefix.replace("%", r"\%").replace("_", r"\_") + "%"
        for table in ("kv", "h", "z"):
            rows = self._db().execute(f"SELECT DISTINCT k FROM {table} WHERE k LIKE ? ESCAPE '\\'", (like,))
            yield from (str(r[0]) for r in rows.fetchall())

    def ping(self) -> bool:
        self._db().execute("SELECT 1")
        return True

    def batch(self, calls: list[Op]) -> list[Any]:
        return [getattr(self, method)(*args, **kwargs) for method, args, kwargs in calls]


def open_kv(url: str) -> KV:
    """``redis://…``, ``rediss://…``, ``unix://…``, ``sentinel://…`` or ``sqlite:///path``; anything else is a
    configuration error naming the URL's scheme (see ``integration.redis_urls`` for the Redis forms)."""
    scheme = urlparse(url).scheme
    if is_redis_url(url):
        return RedisKV(url)
    if scheme == "sqlite":
        return SqliteKV(url.removeprefix("sqlite:///").removeprefix("sqlite://") or "runs.sqlite3")
    raise ConfigError(f"OPENAI_PACK_STORE_URL: unsupported scheme {scheme!r} (use redis://, rediss://, "
                      "sentinel:// or sqlite:///path)",
                      field="OPENAI_PACK_STORE_URL")
