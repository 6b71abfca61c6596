"""The state store's storage: keys and msgpack values in three scopes, with TTLs and per-owner
quotas, in one SQLite file. No kernel here: :class:`StateStore` takes an owner name and a clock,
so unit tests drive it directly; :mod:`clove.kernel.services.state` puts it on the kernel.

The file's layout (one ``kv`` table, its session twin in an attached ``:memory:`` database),
its journal mode and its opening are :mod:`clove.kernel.services.stateschema`'s. Every
operation is at most three indexed statements (point lookups, a range on the primary key, a seek
on ``kv_expiry``); nothing on the request path scans a table.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from clove.errors import InternalError, InvalidArguments, QuotaExceeded
from clove.kernel.services.stateschema import open_database

log = logging.getLogger(__name__)

SCOPES: Final = ("global", "agent", "session")
#: The order in which fetch and delete without a scope look for a key.
RESOLUTION: Final = ("agent", "session", "global")
MAX_KEY_CHARS: Final = 256
MAX_VALUE_BYTES: Final = 1 << 20
MAX_KEYS_PER_OWNER: Final = 10_000
MAX_BYTES_PER_OWNER: Final = 64 << 20
MAX_LIST: Final = 10_000
PURGE_BATCH: Final = 500
# Greater than every key of at most MAX_KEY_CHARS characters that starts with a given prefix:
# SQLite compares TEXT as UTF-8 bytes, which orders like code points, and U+10FFFF is the top.
_TOP: Final = "\U0010ffff" * (MAX_KEY_CHARS + 1)

_LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"


@dataclass(frozen=True, slots=True)
class Removed:
    """A key that left the store (deleted or expired): enough to tell its watchers."""

    scope: str
    owner: str  #: the private scope's owner; ``''`` for global and session keys
    key: str


def check_key(key: object, argument: str = "key") -> str:
    """:raises InvalidArguments: not a string of 1-256 characters without NUL."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or "\x00" in key or not _utf8(key):
        shown = f"{len(key)} characters" if isinstance(key, str) else type(key).__name__
        raise InvalidArguments(
            f"a {argument} is a string of 1-{MAX_KEY_CHARS} characters without NUL, got {shown}",
            details={"argument": argument, "max_chars": MAX_KEY_CHARS},
        )
    return key


def check_prefix(prefix: object) -> str:
    if prefix == "":
        return ""
    return check_key(prefix, "prefix")


def check_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise InvalidArguments(
            f"scope must be one of {', '.join(SCOPES)}, got {scope!r}",
            details={"argument": "scope", "scopes": list(SCOPES)},
        )
    return str(scope)


def check_ttl(ttl: object) -> float | None:
    """``None`` (no expiry) or a finite number of seconds above zero."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (0 < ttl < math.inf):
        raise InvalidArguments(
            f"ttl must be a number of seconds above 0, got {ttl!r}", details={"argument": "ttl"}
        )
    return float(ttl)


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: SQLite could not store the key
        return False
    return True


def _encode(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as err:
        raise InvalidArguments(f"value cannot be stored: {err}", details={"argument": "value"}) from None


def _decode(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _where(scope: str, owner: str) -> tuple[str, str]:
    """The database and ``owner`` column value that hold ``scope`` for this caller."""
    if scope == "agent":
        return "main", owner
    return ("mem" if scope == "session" else "main"), ""


class StateStore:
    """Keys and values in three scopes, persisted at ``path`` (global and agent scopes).

    Every method takes ``owner``: the caller's private-scope name (an agent's name, or
    ``"@operator"``). It is also whose quota a write counts against: ``max_keys`` keys and
    ``max_bytes`` bytes of encoded values across all scopes, charged to the key's last writer.

    :param clock: wall-clock seconds; TTL deadlines are stored as epoch times so they survive
        restarts.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        max_value_bytes: int = MAX_VALUE_BYTES,
        max_keys: int = MAX_KEYS_PER_OWNER,
        max_bytes: int = MAX_BYTES_PER_OWNER,
        max_list: int = MAX_LIST,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.max_value_bytes = max_value_bytes
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.max_list = max_list
        #: The earliest deadline that may still be in the store (``inf``: none).
        self.next_expiry = math.inf
        self._db: sqlite3.Connection | None = None
        self._usage: dict[str, list[int]] = {}  # writer -> [keys, bytes]
        self._keys_sql: dict[tuple[str, ...], str] = {}

    # ---- open and close -------------------------------------------------------------------

    def open(self) -> StateStore:
        """Open (or create) the file (:func:`.stateschema.open_database`) and count what each
        writer holds. A file that is not a database is renamed aside, with an error in the log,
        and a new one started: the kernel boots either way.

        :raises ConfigError: the file cannot be opened (permissions, locked, disk full) or was
            written by a newer schema; nothing is changed then.
        """
        self._db = open_database(self.path)
        self._usage = {
            writer: [int(keys), int(size)]
            for writer, keys, size in self._db.execute(
                "SELECT writer, count(*), total(size) FROM main.kv GROUP BY writer"
            )
        }
        self._refresh_next_expiry()
        return self

    def close(self) -> None:
        """Close the file (the WAL is checkpointed into it). Safe to call twice."""
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise InternalError("the state store is closed")
        return self._db

    # ---- operations -----------------------------------------------------------------------

    def store(
        self, owner: str, key: str, value: Any, *, scope: str = "global", ttl: float | None = None
    ) -> None:
        """Set ``key`` in ``scope``; its value and TTL replace any earlier ones.

        :raises InvalidArguments: bad key, scope or ttl, or a value msgpack cannot carry.
        :raises QuotaExceeded: the value is above ``max_value_bytes``, or ``owner`` would go
            above its key or byte quota. Nothing is changed then.
        """
        check_key(key)
        check_scope(scope)
        ttl = check_ttl(ttl)
        blob = _encode(value)
        size = len(blob)
        if size > self.max_value_bytes:
            raise QuotaExceeded(
                f"value is {size} bytes encoded; at most {self.max_value_bytes} are allowed",
                details={"size": size, "limit": self.max_value_bytes},
            )
        db_name, ns = _where(scope, owner)
        old = self.db.execute(
            f"SELECT writer, size FROM {db_name}.kv WHERE owner = ? AND key = ?", (ns, key)
        ).fetchone()
        keys, used = self._usage.get(owner, (0, 0))
        new_keys, new_used = (
            (keys, used + size - old[1]) if old is not None and old[0] == owner else (keys + 1, used + size)
        )
        if new_keys > self.max_keys and new_keys > keys:
            raise QuotaExceeded(
                f"{owner} already has {keys} keys; at most {self.max_keys} are allowed",
                details={"keys": keys, "limit": self.max_keys, "owner": owner},
            )
        if new_used > self.max_bytes and new_used > used:
            raise QuotaExceeded(
                f"{owner} would hold {new_used} bytes of values; at most {self.max_bytes} are allowed",
                details={"bytes": used, "size": size, "limit": self.max_bytes, "owner": owner},
            )
        expires = None if ttl is None else self.clock() + ttl
        self._write(
            f"INSERT INTO {db_name}.kv (owner, key, value, size, expires_at, writer)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (owner, key) DO UPDATE SET value = excluded.value, size = excluded.size,"
            " expires_at = excluded.expires_at, writer = excluded.writer",
            (ns, key, blob, size, expires, owner),
        )
        if old is not None:
            self._charge(old[0], -1, -old[1])
        self._charge(owner, 1, size)
        if expires is not None and expires < self.next_expiry:
            self.next_expiry = expires

    def fetch(self, owner: str, key: str, scope: str | None = None) -> tuple[str, Any] | None:
        """``(scope, value)`` of the first live match (``scope`` given: that scope only)."""
        check_key(key)
        now = self.clock()
        for where in RESOLUTION if scope is None else (check_scope(scope),):
            db_name, ns = _where(where, owner)
            row = self.db.execute(
                f"SELECT value FROM {db_name}.kv WHERE owner = ? AND key = ? AND {_LIVE}", (ns, key, now)
            ).fetchone()
            if row is not None:
                return where, _decode(row[0])
        return None

    def delete(self, owner: str, key: str, scope: str | None = None) -> Removed | None:
        """Delete the first live match, as :meth:`fetch` finds it; ``None`` when there is none
        (an expired key is left to :meth:`purge_expired`, which reports it)."""
        check_key(key)
        now = self.clock()
        for where in RESOLUTION if scope is None else (check_scope(scope),):
            db_name, ns = _where(where, owner)
            row = self.db.execute(
                f"SELECT rowid, writer, size FROM {db_name}.kv WHERE owner = ? AND key = ? AND {_LIVE}",
                (ns, key, now),
            ).fetchone()
            if row is not None:
                self._write(f"DELETE FROM {db_name}.kv WHERE rowid = ?", (row[0],))
                self._charge(row[1], -1, -row[2])
                return Removed(where, ns, key)
        return None

    def keys(self, owner: str, prefix: str = "", scope: str | None = None) -> tuple[list[str], bool]:
        """Live key names starting with ``prefix`` in every scope visible to ``owner`` (or in
        ``scope``): sorted, each name once however many scopes hold it, at most ``max_list``.

        :returns: ``(keys, truncated)``.
        """
        check_prefix(prefix)
        scopes = RESOLUTION if scope is None else (check_scope(scope),)
        sql = self._keys_sql.get(scopes)
        if sql is None:
            part = f"SELECT key FROM {{}}.kv WHERE owner = ? AND key >= ? AND key < ? AND {_LIVE}"
            sql = self._keys_sql[scopes] = (
                " UNION ".join(part.format(_where(s, "")[0]) for s in scopes) + " ORDER BY key LIMIT ?"
            )
        now, top = self.clock(), prefix + _TOP
        params: list[Any] = []
        for where in scopes:
            params += (_where(where, owner)[1], prefix, top, now)
        names = [row[0] for row in self.db.execute(sql, (*params, self.max_list + 1))]
        return names[: self.max_list], len(names) > self.max_list

    def purge_expired(self, limit: int = PURGE_BATCH) -> list[Removed]:
        """Delete up to ``limit`` keys whose deadline has passed, earliest first."""
        now = self.clock()
        if now < self.next_expiry:
            return []
        gone: list[Removed] = []
        for db_name in ("main", "mem"):
            rows = self.db.execute(
                f"SELECT rowid, owner, key, writer, size FROM {db_name}.kv"
                " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
                (now, limit - len(gone)),
            ).fetchall()
            if not rows:
                continue
            self._write(f"DELETE FROM {db_name}.kv WHERE rowid = ?", [(row[0],) for row in rows], many=True)
            for _, ns, key, writer, size in rows:
                self._charge(writer, -1, -size)
                gone.append(Removed("session" if db_name == "mem" else "agent" if ns else "global", ns, key))
            if len(gone) >= limit:
                break
        self._refresh_next_expiry()
        return gone

    def usage(self, owner: str) -> tuple[int, int]:
        """``(keys, bytes)`` charged to ``owner``, expired keys included until purged."""
        keys, size = self._usage.get(owner, (0, 0))
        return keys, size

    # ---- internals ------------------------------------------------------------------------

    def _charge(self, writer: str, keys: int, size: int) -> None:
        entry = self._usage.setdefault(writer, [0, 0])
        entry[0] += keys
        entry[1] += size
        if entry[0] <= 0:
            del self._usage[writer]

    def _refresh_next_expiry(self) -> None:
        found = [
            row[0]
            for db_name in ("main", "mem")
            for row in self.db.execute(f"SELECT min(expires_at) FROM {db_name}.kv")
            if row[0] is not None
        ]
        self.next_expiry = min(found, default=math.inf)

    def _write(self, sql: str, params: Any, *, many: bool = False) -> None:
        """One statement (or one per row of ``params``) in one transaction; nothing is
        changed when it fails.

        :raises QuotaExceeded: the disk under the store is full.
        :raises InternalError: any other SQLite failure (the kernel log has it).
        """
        db = self.db
        try:
            if many:
                db.execute("BEGIN")
                try:
                    db.executemany(sql, params)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            else:
                db.execute(sql, params)
        except sqlite3.OperationalError as err:
            log.error("state store %s: %s", self.path, err)
            if "full" in str(err):
                raise QuotaExceeded("the disk holding the state store is full") from None
            raise InternalError(f"the state store failed: {err}") from None
