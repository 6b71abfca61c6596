"""The state store's file: its schema, its version, and how it is opened
(:func:`open_database`). :mod:`clove.kernel.services.statestore` runs the operations on it.

Layout: the persisted scopes live in the file's ``kv`` table (``owner`` is ``''`` for global,
the owner's name for a private scope); the session scope lives in the same schema in an
attached ``:memory:`` database, so it vanishes with the process and every query has one shape::

    kv(owner TEXT, key TEXT, value BLOB, size INT, expires_at REAL, writer TEXT)
       PRIMARY KEY (owner, key)   INDEX kv_expiry (expires_at)

The file runs in WAL mode with ``synchronous=NORMAL``: a commit is an append to the WAL without
an fsync, so a store costs a few microseconds instead of a disk flush on the kernel's loop. A
kernel crash (SIGKILL, OOM) loses nothing committed, since the WAL is already in the OS; a power
cut can lose the last commits since the previous checkpoint, but never corrupts the file. The
connection holds an exclusive lock for its life (``locking_mode=EXCLUSIVE``): one kernel per
state dir.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Final

from clove.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS {db}.kv (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_at REAL,
    writer TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX IF NOT EXISTS {db}.kv_expiry ON kv (expires_at);
"""


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the file. A file that is not a database is renamed aside, with an
    error in the log, and a new one started: the kernel boots either way.

    :raises ConfigError: the file cannot be opened (permissions, locked, disk full) or was
        written by a newer schema; nothing is changed then.
    """
    try:
        return _connect(path)
    except (OSError, sqlite3.OperationalError) as err:  # not ours to fix: say so and stop
        raise ConfigError(f"{path}: cannot open the state store: {err}", details={"path": str(path)}) from None
    except sqlite3.DatabaseError as err:  # not a database, or a corrupt one
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("state store %s is unreadable (%s); moved aside to %s, starting empty", path, err, aside)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.rename(f"{aside}{suffix}")
        return _connect(path)


def _connect(path: Path) -> sqlite3.Connection:
    # Private scopes are in here: the file (and the WAL file, which SQLite creates with
    # the database's mode) is the kernel's alone, whatever the umask.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    # Autocommit: one write, one commit. Exclusive locking, set before WAL mode: the WAL
    # index lives in this process's memory (no shm file, no fcntl per transaction, half
    # the cost of a commit), and a second kernel on the same state dir is refused at open.
    db = sqlite3.connect(path, isolation_level=None, timeout=1.0)
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{path}: state store schema {version} is newer than this Clove's ({SCHEMA_VERSION})",
                details={"path": str(path), "schema": version},
            )
        db.execute("ATTACH DATABASE ':memory:' AS mem")
        db.executescript(_SCHEMA.format(db="main") + _SCHEMA.format(db="mem"))
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db
