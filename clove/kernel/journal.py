"""The kernel's audit journal: an append-only, hash-chained JSONL file and a ring of recent records.

Every syscall (allowed or denied) and every agent lifecycle event becomes one record; the format,
the chain and the offline readers live in :mod:`clove.kernel.journal_verify`, re-exported here.

Threads: :meth:`Journal.append` runs on the kernel's event loop and never touches the disk. It builds
the record, chains it and hands the encoded line to one writer thread over a
:class:`queue.SimpleQueue`. The writer owns the file descriptor: it writes whatever is queued in one
``write`` as soon as it arrives and ``fdatasync``\\ s at most about once a second and on close. The
ring that :meth:`Journal.query` reads belongs to the loop thread alone; the threads share only the
queue and three counters under a condition.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, final

from clove.errors import InternalError
from clove.kernel.journal_verify import (
    DECISIONS,
    GENESIS_HASH,
    Category,
    VerifyResult,
    canonical_bytes,
    clip_text,
    parse_record,
    read_journal,
    read_tail,
    record_hash,
    summarize_args,
    verify_journal,
)

__all__ = [
    "MAX_QUERY_LIMIT",
    "Category",
    "Journal",
    "VerifyResult",
    "read_journal",
    "summarize_args",
    "verify_journal",
]

log = logging.getLogger(__name__)

#: :meth:`Journal.query` never returns more records than this.
MAX_QUERY_LIMIT: Final = 10_000
_FSYNC_INTERVAL = 1.0  # seconds between fdatasync calls while records keep arriving
_RETRY_INTERVAL = 1.0  # seconds between write attempts after a failed write
_MAX_PENDING_BYTES = 64 * 1024 * 1024  # unwritable records kept for retry before the oldest are dropped
_CLOSE_TIMEOUT = 5.0
_MAX_BATCH = 256  # lines batched before a hand-off regardless of time
_MAX_NAME = 200  # event_type, agent_name, syscall and code are clipped to this many characters


def _write_fully(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; the writer thread's only write, patched by tests."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


@final
class Journal:
    """The audit journal: an append-only JSONL file plus a ring of recent records for queries.

    Life cycle: ``open()``, then any number of ``append()`` and ``query()`` calls from the loop
    thread, then ``close()``. Records returned by ``append`` and ``query`` are shared with the ring:
    treat them as read-only.

    :param path: the JSONL file, normally ``<state dir>/journal.jsonl``.
    :param ring_size: how many recent records :meth:`query` can see.
    :param clock: returns the epoch seconds stamped on each record.
    :param log: where to log write failures and repairs (default: this module's logger).
    :raises ValueError: ``ring_size`` is below 1.
    """

    def __init__(
        self,
        path: Path,
        *,
        ring_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
        batch: bool = False,
    ) -> None:
        """:param batch: keep appended lines until :meth:`hand_off` (the kernel calls it every
            couple of milliseconds), so a burst of records wakes the writer thread once instead
            of once per record. Without it every append is handed off at once."""
        if ring_size < 1:
            raise ValueError(f"ring_size must be >= 1, got {ring_size}")
        self._path = Path(path)
        self._clock = clock
        self._log = log if log is not None else logging.getLogger(__name__)
        self._ring: deque[dict[str, Any]] = deque(maxlen=ring_size)
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._state = "new"  # "new" -> "open" -> "closed"
        self._fd = -1
        self._size = 0  # bytes of complete records on disk; the writer's after open()
        self._last_id = 0
        self._last_hash = GENESIS_HASH
        self._thread: threading.Thread | None = None
        self._batching = batch
        self._batch: list[bytes] = []
        self._cond = threading.Condition()  # guards the three fields below
        self._written_id = 0
        self._write_errors = 0
        self._writer_done = False

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    @property
    def last_id(self) -> int:
        """The id of the newest record appended (or found on disk), 0 for an empty journal."""
        return self._last_id

    @property
    def write_errors(self) -> int:
        """How many disk writes or syncs have failed since :meth:`open`."""
        return self._write_errors

    def open(self) -> None:
        """Create the journal file or continue an existing one, and start the writer thread.

        The file is created with mode 0600 and its directory, if missing, with 0700. An existing
        file is continued from its last complete record (ids and the chain go on). A trailing partial
        line, left by a crash in the middle of a write, is cut off and recorded as a ``SECURITY``
        ``journal.tail_repaired`` record naming the bytes dropped. Up to ``ring_size`` recent
        records are loaded for :meth:`query`.

        :raises RuntimeError: the journal was already opened.
        :raises InternalError: another process holds the journal, or its last complete line is
            not a journal record (run ``verify_journal`` and move the file aside).
        :raises OSError: the directory or file cannot be created or read.
        """
        if self._state != "new":
            raise RuntimeError(f"journal {self._path} was already opened")
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = not self._path.exists()
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self._path, flags, 0o600)
        try:
            dropped = self._load(fd)
            if created:
                _fsync_dir(self._path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._written_id = self._last_id
        self._state = "open"
        repaired_at = self._size  # read before the writer thread owns it
        self._thread = threading.Thread(target=self._run_writer, name="clove-journal-writer", daemon=True)
        self._thread.start()
        if dropped:
            self.append(Category.SECURITY, "journal.tail_repaired", decision="n/a",
                        details={"dropped_bytes": dropped, "offset": repaired_at})  # fmt: skip

    def _load(self, fd: int) -> int:
        """Lock the file, cut a partial last line, load the ring and the chain head; bytes dropped."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InternalError(
                f"journal {self._path} is in use by another process", details={"path": str(self._path)}
            ) from None
        os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        end, lines = read_tail(fd, size, self._ring.maxlen or 1)
        if lines:
            last = parse_record(lines[-1])
            if last is None or not isinstance(last.get("hash"), str):
                raise InternalError(
                    f"journal {self._path}: the last complete line is not a journal record",
                    details={"path": str(self._path), "offset": end - len(lines[-1]) - 1},
                )
            if record_hash(last) != last["hash"]:
                self._log.warning("journal %s: record %d does not match its hash; run verify",
                                  self._path, last["id"])  # fmt: skip
            records = [record for record in map(parse_record, lines) if record is not None]
            if len(records) < len(lines):
                self._log.warning("journal %s: skipped %d unreadable recent lines; run verify",
                                  self._path, len(lines) - len(records))  # fmt: skip
            self._ring.extend(records)
            self._last_id, self._last_hash = last["id"], last["hash"]
        dropped = size - end
        if dropped:
            self._log.warning("journal %s: cut %d bytes of a partial last line at offset %d",
                              self._path, dropped, end)  # fmt: skip
            os.ftruncate(fd, end)
            os.fsync(fd)
        self._size = end
        return dropped

    def append(
        self,
        category: Category | str,
        event_type: str,
        *,
        agent_id: int | None = None,
        agent_name: str | None = None,
        syscall: str | None = None,
        args: Any = None,
        decision: str = "allowed",
        code: str = "ok",
        duration_us: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one event; returns at once, the writer thread puts it on disk.

        ``args`` goes through :func:`summarize_args`; ``details`` likewise with generous bounds.
        Strings that may come from an agent (``syscall``, ``agent_name``) are clipped to 200
        characters. A failing disk is logged and counted in :attr:`write_errors`, never raised.

        :param category: a :class:`Category` or its value.
        :param decision: ``"allowed"``, ``"denied"`` or ``"n/a"``.
        :param code: ``"ok"`` or the error code of the reply, such as ``"perm.denied"``.
        :returns: the record, as stored in the ring (read-only).
        :raises ValueError: unknown ``category`` or ``decision``; nothing is recorded.
        :raises RuntimeError: the journal is not open.
        """
        if self._state != "open":
            raise RuntimeError(f"journal {self._path} is not open")
        category = Category(category)
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, got {decision!r}")
        record: dict[str, Any] = {
            "id": self._last_id + 1,
            "timestamp": float(self._clock()),
            "category": category.value,
            "event_type": clip_text(event_type, _MAX_NAME),
            "agent_id": None if agent_id is None else int(agent_id),
            "agent_name": None if agent_name is None else clip_text(agent_name, _MAX_NAME),
            "syscall": None if syscall is None else clip_text(syscall, _MAX_NAME),
            "args": self._summarize(args, 200, 20, 4),
            "decision": decision,
            "code": clip_text(code, _MAX_NAME),
            "duration_us": None if duration_us is None else int(duration_us),
            "details": self._summarize(details or {}, 2000, 100, 6),
            "prev_hash": self._last_hash,
        }
        record["hash"] = hashlib.sha256(canonical_bytes(record)).hexdigest()
        line = canonical_bytes(record) + b"\n"
        self._last_id, self._last_hash = record["id"], record["hash"]
        self._batch.append(line)
        if not self._batching or len(self._batch) >= _MAX_BATCH:
            self.hand_off()
        self._ring.append(record)
        return record

    def _summarize(self, value: Any, max_str: int, max_items: int, max_depth: int) -> Any:
        try:
            return summarize_args(value, max_str=max_str, max_items=max_items, max_depth=max_depth)
        except Exception:  # e.g. a container whose len() or iteration raises
            self._log.exception("journal: cannot summarize %s", type(value).__name__)
            return f"<unsummarizable {type(value).__name__}>"

    def query(
        self,
        *,
        category: str | None = None,
        agent_id: int | None = None,
        since_id: int = 0,
        limit: int = 100,
        event_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Recent records from the ring with ``id > since_id`` that match every given filter.

        :param limit: at most this many records (capped at :data:`MAX_QUERY_LIMIT`).
        :returns: matching records, oldest first (read-only).
        """
        limit = min(limit, MAX_QUERY_LIMIT)
        if limit <= 0 or since_id >= self._last_id:
            return []
        wanted = category.value if isinstance(category, Category) else category
        found: list[dict[str, Any]] = []
        for record in self._ring:
            if (
                record["id"] > since_id
                and (wanted is None or record.get("category") == wanted)
                and (agent_id is None or record.get("agent_id") == agent_id)
                and (event_type is None or record.get("event_type") == event_type)
            ):
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    def snapshot(self) -> list[dict[str, Any]]:
        """The ring's records, oldest first, as a new list (the records are shared: read-only).
        A C-level copy, so the loop can hand it to another thread that filters it at leisure,
        as a post-mortem does for one agent's records."""
        return list(self._ring)

    def set_ring_size(self, size: int) -> None:
        """Keep the ``size`` most recent records for :meth:`query` (``set_audit_config``)."""
        if size < 1:
            raise ValueError(f"ring size must be >= 1, got {size}")
        self._ring = deque(self._ring, maxlen=size)

    @property
    def batch_pending(self) -> bool:
        """Records appended but not yet handed to the writer thread."""
        return bool(self._batch)

    def hand_off(self) -> None:
        """Give the batched lines to the writer thread in one piece (one wake-up)."""
        if self._batch and self._state == "open":
            data, self._batch = b"".join(self._batch), []
            self._queue.put((self._last_id, data))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record appended so far has been written to the file.

        :returns: ``True`` once written (not necessarily synced), ``False`` on timeout, for
            example while the disk is full, or if the writer thread has stopped.
        """
        if self._state != "open":
            return self._written_id >= self._last_id
        self.hand_off()
        target = self._last_id
        with self._cond:
            self._cond.wait_for(lambda: self._written_id >= target or self._writer_done, timeout)
            return self._written_id >= target

    def close(self) -> None:
        """Write what is queued, sync, stop the writer thread and close the file. Idempotent.

        Records that cannot be written (the disk stays full) are logged as lost.
        """
        if self._state != "open":
            self._state = "closed"
            return
        self.hand_off()
        self._state = "closed"
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(_CLOSE_TIMEOUT)
            if self._thread.is_alive():
                self._log.error("journal %s: writer thread did not stop within %.0f s",
                                self._path, _CLOSE_TIMEOUT)  # fmt: skip
                return  # the thread still owns the descriptor
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run_writer(self) -> None:
        try:
            self._write_loop()
        except Exception:
            self._log.exception("journal %s: writer thread failed; records are no longer written", self._path)
        finally:
            with self._cond:
                self._writer_done = True
                self._cond.notify_all()

    def _write_loop(self) -> None:
        """The writer thread: the only code that touches the file after :meth:`open`."""
        pending: deque[tuple[int, bytes]] = deque()
        retry_at = 0.0
        synced_at = time.monotonic()
        dirty = stopping = False
        while not stopping:
            deadlines = ([retry_at] if pending else []) + ([synced_at + _FSYNC_INTERVAL] if dirty else [])
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            stopping = self._drain(pending, timeout)
            if pending and (stopping or time.monotonic() >= retry_at):
                if self._write_pending(pending):
                    dirty = True
                else:
                    retry_at = time.monotonic() + _RETRY_INTERVAL
            if dirty and (stopping or time.monotonic() - synced_at >= _FSYNC_INTERVAL):
                try:
                    os.fdatasync(self._fd)
                except OSError as err:
                    self._write_failed(f"fdatasync failed ({err})")
                dirty, synced_at = False, time.monotonic()
        if pending:
            self._log.error("journal %s: records %d..%d could not be written and are lost",
                            self._path, pending[0][0], pending[-1][0])  # fmt: skip

    def _drain(self, pending: deque[tuple[int, bytes]], timeout: float | None) -> bool:
        """Move everything queued onto ``pending``, waiting up to ``timeout`` for the first item.

        :returns: ``True`` if :meth:`close` asked the writer to stop.
        """
        stop = False
        try:
            item = self._queue.get(timeout=timeout)
            while True:
                if item is None:
                    stop = True
                else:
                    pending.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return stop

    def _write_pending(self, pending: deque[tuple[int, bytes]]) -> bool:
        """Write all pending lines in one go; on failure keep them, dropping the oldest past a cap."""
        data = b"".join(line for _, line in pending)
        try:
            _write_fully(self._fd, data)
        except OSError as err:
            self._write_failed(f"write failed ({err}); {len(pending)} records kept for retry")
            excess, first_lost = len(data) - _MAX_PENDING_BYTES, pending[0][0]
            while excess > 0:
                lost_id, lost = pending.popleft()
                excess -= len(lost)
                if excess <= 0:  # the file will show a chain break where these records were
                    self._log.error("journal %s: records %d..%d dropped after repeated write failures",
                                    self._path, first_lost, lost_id)  # fmt: skip
            return False
        self._size += len(data)
        with self._cond:
            self._written_id = pending[-1][0]
            self._cond.notify_all()
        pending.clear()
        return True

    def _write_failed(self, message: str) -> None:
        with self._cond:
            self._write_errors += 1
        self._log.error("journal %s: %s", self._path, message)
        try:  # never leave half a line behind, or the next write would glue onto it
            if os.fstat(self._fd).st_size > self._size:
                os.ftruncate(self._fd, self._size)
        except OSError as trunc_err:
            self._log.error("journal %s: cannot cut a partial write: %s", self._path, trunc_err)


def _fsync_dir(directory: Path) -> None:
    """Make a newly created file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
