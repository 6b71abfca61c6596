"""The kernel's audit journal: an append-only, hash-chained JSONL file and a ring of recent records.

Every syscall (allowed or denied) and every agent lifecycle event becomes one record; the format,
the chain and the offline readers live in :mod:`clove.kernel.audit.verify`, re-exported here.

Threads: :meth:`Journal.append` runs on the kernel's event loop and never touches the disk. It builds
the record, chains it and hands the encoded line to one writer thread over a
:class:`queue.SimpleQueue`. The writer owns the file descriptor: it writes whatever is queued in one
``write`` as soon as it arrives and ``fdatasync``\\ s at most about once a second and on close. The
ring that :meth:`Journal.query` reads belongs to the loop thread alone; the threads share only the
queue and a few counters under a condition.

Containment (docs/audit.md): the loop decides when the active file is full and queues a rotation
for the writer, followed by the ``journal.rotated`` record that opens the next file; retention
deletes the oldest rotated files after a ``journal.retention`` record naming them is on disk.
Denials beyond a burst are counted, not written one by one, and written as one
``denials.aggregated`` record per window (:meth:`Journal.tick` closes windows). A record the
writer cannot write is never dropped silently: the writer gives up on it only past a memory cap
and asks the loop for a ``journal.gap`` record, which chains from the last record written and
names the ids lost. :attr:`Journal.space_low` tells the kernel to stop taking new work before
the disk is full.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast, final

from clove.config import JournalSection
from clove.errors import InternalError
from clove.kernel.audit.verify import (
    AGGREGATED_EVENT,
    DECISIONS,
    GAP_EVENT,
    GENESIS_HASH,
    RETENTION_EVENT,
    ROTATED_EVENT,
    Category,
    VerifyResult,
    canonical_bytes,
    clip_text,
    parse_record,
    read_journal,
    read_tail,
    record_hash,
    rotated_files,
    rotated_name,
    summarize_args,
    verify_journal,
)

__all__ = [
    "AGGREGATED_EVENT",
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
#: The event of the record that sums up denials counted instead of written.
_FSYNC_INTERVAL = 1.0  # seconds between fdatasync calls while records keep arriving
_RETRY_INTERVAL = 1.0  # seconds between write attempts after a failed write
_MAX_PENDING_BYTES = 64 * 1024 * 1024  # unwritable records kept for retry before they become a journal.gap
_CLOSE_TIMEOUT = 5.0
_MAX_BATCH = 256  # lines batched before a hand-off regardless of time
_MAX_NAME = 200  # event_type, agent_name, syscall and code are clipped to this many characters
_SPACE_INTERVAL = 0.5  # seconds between statvfs checks: space_low is read on every agent request
_TICK_INTERVAL = 0.05  # tick() does its work at most this often (it is called every loop turn)
_RETENTION_INTERVAL = 60.0  # seconds between keep_days checks (rotations check at once)
_MAX_DENIAL_KEYS = 32  # (syscall, code) pairs counted apart per agent and window; agents choose syscall names
_MAX_DELETED_PER_RECORD = 50  # journal.retention names at most this many files (details lists clip at 100)
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW


def _write_fully(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; the writer thread's only write, patched by tests."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


@final
class _Lines:
    """Encoded records ``first_id..last_id`` for the writer; ``starts_gap``: the first is a
    ``journal.gap`` record (the writer, discarding after a drop, writes again from it)."""

    __slots__ = ("data", "first_id", "last_hash", "last_id", "starts_gap")

    def __init__(self, first_id: int, last_id: int, last_hash: str, data: bytes, starts_gap: bool) -> None:
        self.first_id, self.last_id, self.last_hash = first_id, last_id, last_hash
        self.data, self.starts_gap = data, starts_gap


@final
class _Rotate:
    """Sync the active file, rename it to ``name`` and continue in a fresh active file."""

    __slots__ = ("name", "renamed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.renamed = False  # a failed open after a good rename is retried without renaming


@final
class _Delete:
    """Retention: sync (the ``journal.retention`` record naming them is before this), then delete."""

    __slots__ = ("names",)

    def __init__(self, names: list[str]) -> None:
        self.names = names


_Item = _Lines | _Rotate | _Delete


@dataclass(slots=True)
class _RotatedFile:
    name: str
    first_id: int
    last_id: int
    closed_at: float  # wall clock: keep_days counts from here


@dataclass(slots=True)
class _DenialBucket:
    category: str
    event_type: str
    agent_name: str | None
    first_time: float
    last_time: float
    count: int = 0
    other_syscalls: bool = False  # past _MAX_DENIAL_KEYS: several syscall names share this count


@dataclass(slots=True)
class _DenialWindow:
    start: float  # monotonic
    count: int = 0  # denials in this window, written or counted
    aggregating: bool = False
    buckets: dict[tuple[str | None, str, str | None], _DenialBucket] = field(default_factory=dict)


@final
class Journal:
    """The audit journal: an append-only JSONL file plus a ring of recent records for queries.

    Life cycle: ``open()``, then any number of ``append()`` and ``query()`` calls from the loop
    thread, then ``close()``. Records returned by ``append`` and ``query`` are shared with the ring:
    treat them as read-only.

    :param path: the active JSONL file, normally ``<state dir>/journal.jsonl``; rotated files
        go beside it (:func:`~clove.kernel.audit.verify.rotated_name`).
    :param ring_size: how many recent records :meth:`query` can see.
    :param clock: returns the epoch seconds stamped on each record.
    :param log: where to log write failures and repairs (default: this module's logger).
    :param settings: rotation, retention, denial aggregation and the disk reserve (the kernel
        passes ``config.journal``; the defaults otherwise).
    :param monotonic: the clock of denial windows and of the space checks (tests pass a fake).
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
        settings: JournalSection | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """:param batch: keep appended lines until :meth:`hand_off` (the kernel calls it every
            couple of milliseconds), so a burst of records wakes the writer thread once instead
            of once per record. Without it every append is handed off at once."""
        if ring_size < 1:
            raise ValueError(f"ring_size must be >= 1, got {ring_size}")
        self._path = Path(path)
        self._clock = clock
        self._monotonic = monotonic
        self._settings = settings if settings is not None else JournalSection()
        self._log = log if log is not None else logging.getLogger(__name__)
        self._ring: deque[dict[str, Any]] = deque(maxlen=ring_size)
        self._queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._state = "new"  # "new" -> "open" -> "closed"
        self._fd = -1
        self._size = 0  # bytes of complete records in the active file; the writer's after open()
        self._last_id = 0
        self._last_hash = GENESIS_HASH
        self._thread: threading.Thread | None = None
        self._batching = batch
        self._batch: list[bytes] = []
        self._batch_first_id = 0
        self._outbox: list[_Item] = []  # cut batches and commands, in order, for the next hand-off
        self._next_lines_gap = False
        # The loop's view of the files: what it has queued, written or not.
        self._rotated: list[_RotatedFile] = []
        self._file_first_id: int | None = None
        self._file_bytes = 0
        self._header_bytes = 0  # a file holding only its journal.rotated record is not rotated again
        self._denials: dict[int | None, _DenialWindow] = {}
        self._tick_due = -math.inf
        self._retention_due = -math.inf
        self._space_low = False
        self._space_free: int | None = None
        self._space_checked_at = -math.inf
        self._space_saw_failing = False
        #: Called on the loop thread with ``(low, details)`` each time :attr:`space_low` changes.
        self.on_space_change: Callable[[bool, dict[str, Any]], None] | None = None
        # The writer thread's own state.
        self._pending_bytes = 0
        self._dirty = False
        self._discarding = False  # after a drop: skip lines until the journal.gap record comes
        self._writer_failing = False  # the last write, sync or rotation failed (read by the loop)
        self._cond = threading.Condition()  # guards the fields below
        self._written_id = 0
        self._written_hash = GENESIS_HASH
        self._write_errors = 0
        self._writer_done = False
        self._gap_request: tuple[int, str, str] | None = None  # (last id written, its hash, why)
        self._written_fd = -1  # an eventfd the writer bumps after each write (see written_fd())
        # Items handed to the writer (loop thread) and finished by it (under _write_lock): equal
        # when the writer holds nothing, so the loop may write the next lines itself (write_now).
        self._handed = 0
        self._done = 0
        self._write_lock = threading.Lock()

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

    @property
    def rotated_files(self) -> list[str]:
        """Names of the rotated files the journal keeps (as far as the loop knows), oldest first."""
        return [rotated.name for rotated in self._rotated]

    @property
    def space_low(self) -> bool:
        """True while the journal must not be handed more work than the kernel's own records.

        That is: the filesystem holding the journal has less than ``disk_reserve_bytes`` free
        (``os.statvfs``, ``f_bavail``), or the writer's last write, sync or rotation failed (a full
        disk, EIO). Cheap enough for every request: ``statvfs`` runs at most every 0.5 s, and at
        once after a write failure. Each change appends a ``journal.space_low`` or
        ``journal.space_ok`` record and calls :attr:`on_space_change`. The kernel refuses agents'
        new work with ``resource.exhausted`` while it is true, so the reserve is left for the
        records of what is already running. Loop thread only; ``False`` unless open.
        """
        if self._state == "open":
            now = self._monotonic()
            if now >= self._space_checked_at + _SPACE_INTERVAL or self._writer_failing != self._space_saw_failing:
                self._check_space(now)
        return self._space_low

    @property
    def space_free_bytes(self) -> int | None:
        """Free bytes on the journal's filesystem at the last check (``None``: not checked, or
        ``statvfs`` failed)."""
        return self._space_free

    def open(self) -> None:
        """Create the journal file or continue an existing one, and start the writer thread.

        The file is created with mode 0600 and its directory, if missing, with 0700. An existing
        file is continued from its last complete record (ids and the chain go on). A trailing partial
        line, left by a crash in the middle of a write, is cut off and recorded as a ``SECURITY``
        ``journal.tail_repaired`` record naming the bytes dropped. Rotated files beside it are
        found by name: an empty active file continues the chain of the newest one (a crash between
        a rename and the next record), and retention applies at once. Up to ``ring_size`` recent
        records, from the active file and then the rotated ones, are loaded for :meth:`query`.

        :raises RuntimeError: the journal was already opened.
        :raises InternalError: another process holds the journal, or its last complete line is
            not a journal record (run ``verify_journal`` and move the file aside).
        :raises OSError: the directory or file cannot be created or read.
        """
        if self._state != "new":
            raise RuntimeError(f"journal {self._path} was already opened")
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = not self._path.exists()
        fd = os.open(self._path, _OPEN_FLAGS, 0o600)
        try:
            dropped = self._load(fd)
            if created:
                _fsync_dir(self._path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._written_id, self._written_hash = self._last_id, self._last_hash
        self._state = "open"
        repaired_at = self._size  # read before the writer thread owns it
        self._thread = threading.Thread(target=self._run_writer, name="clove-journal-writer", daemon=True)
        self._thread.start()
        if dropped:
            self.append(Category.SECURITY, "journal.tail_repaired", decision="n/a",
                        details={"dropped_bytes": dropped, "offset": repaired_at})  # fmt: skip
        if self._file_bytes == 0 and self._rotated:
            self._append_header(self._rotated[-1])  # every rotated-to file opens with its link back
        self._apply_retention()
        self._check_space(self._monotonic())

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
        want = self._ring.maxlen or 1
        end, lines = read_tail(fd, size, want)
        records = self._tail_records(self._path, end, lines)
        if records:
            self._file_first_id = _first_id(fd) or records[0]["id"]
        dropped = size - end
        if dropped:
            self._log.warning("journal %s: cut %d bytes of a partial last line at offset %d",
                              self._path, dropped, end)  # fmt: skip
            os.ftruncate(fd, end)
            os.fsync(fd)
        self._size = self._file_bytes = end
        for found, first, last in rotated_files(self._path):
            try:
                closed_at = found.stat().st_mtime
            except OSError:
                continue
            self._rotated.append(_RotatedFile(found.name, first, last, closed_at))
        # Fill the ring (and, for an empty active file, find the chain head) from the newest
        # rotated files: query() sees across a rotation just as before it.
        for rotated in reversed(self._rotated):
            if len(records) >= want and records:
                break
            older = self._rotated_tail(rotated, want - len(records))
            records = older + records
        self._ring.extend(records[-want:])
        return dropped

    def _tail_records(self, path: Path, end: int, lines: list[bytes]) -> list[dict[str, Any]]:
        """The records of a file's last lines; the newest becomes the chain head."""
        if not lines:
            return []
        last = parse_record(lines[-1])
        if last is None or not isinstance(last.get("hash"), str):
            raise InternalError(
                f"journal {path}: the last complete line is not a journal record",
                details={"path": str(path), "offset": end - len(lines[-1]) - 1},
            )
        if record_hash(last) != last["hash"]:
            self._log.warning("journal %s: record %d does not match its hash; run verify", path, last["id"])
        records = [record for record in map(parse_record, lines) if record is not None]
        if len(records) < len(lines):
            self._log.warning("journal %s: skipped %d unreadable recent lines; run verify",
                              path, len(lines) - len(records))  # fmt: skip
        if self._last_id == 0:
            self._last_id, self._last_hash = last["id"], last["hash"]
        return records

    def _rotated_tail(self, rotated: _RotatedFile, want: int) -> list[dict[str, Any]]:
        path = self._path.with_name(rotated.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as err:
            self._log.warning("journal %s: cannot read %s: %s", self._path, rotated.name, err)
            return []
        try:
            end, lines = read_tail(fd, os.fstat(fd).st_size, max(1, want))
        finally:
            os.close(fd)
        try:
            return self._tail_records(path, end, lines)[-max(1, want):]
        except InternalError:
            if self._last_id == 0:
                raise  # the chain head was to come from this file
            self._log.warning("journal %s: the last line of %s is not a record; run verify", self._path, rotated.name)
            return []

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
    ) -> dict[str, Any] | None:
        """Record one event; returns at once, the writer thread puts it on disk.

        ``args`` goes through :func:`summarize_args`; ``details`` likewise with generous bounds.
        Strings that may come from an agent (``syscall``, ``agent_name``) are clipped to 200
        characters. A failing disk is logged and counted in :attr:`write_errors`, never raised.

        Denials (``decision="denied"``) beyond ``denial_burst`` from one agent within
        ``denial_window`` seconds are counted instead of written: one ``denials.aggregated``
        record per (syscall, code) and window sums them up (:meth:`tick` writes it when the window
        ends, :meth:`close` at the latest). A window that counted denials makes the next one count
        from its first denial, so a steady flood costs one record per window.

        :param category: a :class:`Category` or its value.
        :param decision: ``"allowed"``, ``"denied"`` or ``"n/a"``.
        :param code: ``"ok"`` or the error code of the reply, such as ``"perm.denied"``.
        :returns: the record, as stored in the ring (read-only); ``None`` for a denial that was
            counted into an aggregate.
        :raises ValueError: unknown ``category`` or ``decision``; nothing is recorded.
        :raises RuntimeError: the journal is not open.
        """
        if self._state != "open":
            raise RuntimeError(f"journal {self._path} is not open")
        category = Category(category)
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, got {decision!r}")
        if self._gap_request is not None:
            self._record_gap()
        event_type = clip_text(event_type, _MAX_NAME)
        agent_name = None if agent_name is None else clip_text(agent_name, _MAX_NAME)
        syscall = None if syscall is None else clip_text(syscall, _MAX_NAME)
        code = clip_text(code, _MAX_NAME)
        agent_id = None if agent_id is None else int(agent_id)
        reason = (details or {}).get("reason")
        reason = clip_text(reason, _MAX_NAME) if isinstance(reason, str) else None
        if decision == "denied" and self._count_denial(category.value, event_type, agent_id, agent_name, syscall, code, reason):
            return None
        return self._append(
            {
                "timestamp": float(self._clock()),
                "category": category.value,
                "event_type": event_type,
                "agent_id": agent_id,
                "agent_name": agent_name,
                "syscall": syscall,
                "args": self._summarize(args, 200, 20, 4),
                "decision": decision,
                "code": code,
                "duration_us": None if duration_us is None else int(duration_us),
                "details": self._summarize(details or {}, 2000, 100, 6),
            }
        )

    def _note(self, category: Category, event_type: str, details: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Append one of the journal's own records (never counted as a denial)."""
        record: dict[str, Any] = {"timestamp": float(self._clock()), "category": category.value, "event_type": event_type,
                                  "agent_id": None, "agent_name": None, "syscall": None, "args": None, "decision": "n/a",
                                  "code": "ok", "duration_us": None}  # fmt: skip
        record.update(fields)
        record["details"] = self._summarize(details, 2000, 100, 6)
        return self._append(record)

    def _append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Chain ``fields`` (every key but ``id``, ``prev_hash`` and ``hash``) and queue the line,
        rotating first if the line would take the active file past ``max_file_bytes``."""
        record, line = self._seal(fields)
        if (
            self._file_bytes + len(line) > self._settings.max_file_bytes
            and self._file_bytes > self._header_bytes
            and not self._next_lines_gap  # a journal.gap record must follow the last record written
        ):
            self._rotate()
            record, line = self._seal(fields)  # after the journal.rotated record: a new id and link
        if not self._batch:
            self._batch_first_id = record["id"]
        self._batch.append(line)
        self._last_id, self._last_hash = record["id"], record["hash"]
        if self._file_first_id is None:
            self._file_first_id = record["id"]
        self._file_bytes += len(line)
        if not self._batching or len(self._batch) >= _MAX_BATCH:
            self.hand_off()
        self._ring.append(record)
        return record

    def _seal(self, fields: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        record = dict(fields)
        record["id"] = self._last_id + 1
        record["prev_hash"] = self._last_hash
        record["hash"] = hashlib.sha256(canonical_bytes(record)).hexdigest()
        return record, canonical_bytes(record) + b"\n"

    # ---- rotation and retention (loop thread: decides; the writer carries out) ---------------

    def _rotate(self) -> None:
        """Close the active file at the last record appended; the next opens a new one."""
        first = self._file_first_id if self._file_first_id is not None else self._last_id
        previous = _RotatedFile(rotated_name(self._path, first, self._last_id), first, self._last_id, self._clock())
        self._command(_Rotate(previous.name))
        self._rotated.append(previous)
        self._file_first_id, self._file_bytes, self._header_bytes = None, 0, 0
        self._append_header(previous)
        self._apply_retention()

    def _append_header(self, previous: _RotatedFile) -> None:
        """The first record of a new active file: its link back, readable after the previous
        file is deleted (verify takes it as an acknowledged truncation)."""
        self._note(Category.SECURITY, ROTATED_EVENT, {
            "previous_file": previous.name, "previous_first_id": previous.first_id,
            "previous_last_id": self._last_id, "previous_last_hash": self._last_hash,
        })  # fmt: skip
        self._header_bytes = self._file_bytes

    def _apply_retention(self) -> None:
        """Delete rotated files past ``keep_files`` or older than ``keep_days``, oldest first:
        a ``journal.retention`` record names them and the writer deletes them once it is synced."""
        keep_files, keep_days = self._settings.keep_files, self._settings.keep_days
        doomed = max(0, len(self._rotated) - keep_files)
        if keep_days > 0:
            cutoff = self._clock() - keep_days * 86400.0
            # Only a prefix: deleting a younger file in the middle would look like tampering.
            while doomed < len(self._rotated) and self._rotated[doomed].closed_at < cutoff:
                doomed += 1
        if not doomed:
            return
        victims, self._rotated = self._rotated[:doomed], self._rotated[doomed:]
        for start in range(0, len(victims), _MAX_DELETED_PER_RECORD):
            chunk = victims[start : start + _MAX_DELETED_PER_RECORD]
            self._note(Category.SECURITY, RETENTION_EVENT, {
                "deleted": [{"file": v.name, "first_id": v.first_id, "last_id": v.last_id} for v in chunk],
                "keep_files": keep_files, "keep_days": keep_days,
            })  # fmt: skip
        self._command(_Delete([victim.name for victim in victims]))

    def _command(self, item: _Rotate | _Delete) -> None:
        self._cut_batch()
        self._outbox.append(item)
        if not self._batching:
            self.hand_off()

    def _cut_batch(self) -> None:
        if self._batch:
            data, self._batch = b"".join(self._batch), []
            self._outbox.append(_Lines(self._batch_first_id, self._last_id, self._last_hash, data, self._next_lines_gap))
            self._next_lines_gap = False

    # ---- denial aggregation (loop thread) ------------------------------------------------------

    def _count_denial(self, category: str, event_type: str, agent_id: int | None, agent_name: str | None,
                      syscall: str | None, code: str, reason: str | None = None) -> bool:  # fmt: skip
        """Count a denial in its agent's window; ``True`` if it is aggregated, not written.
        Counts are kept per (syscall, code, reason): a denial's ``details.reason`` (a risk check's
        name, say) is what an operator asks about, so an aggregate keeps it."""
        now = self._monotonic()
        window = self._denials.get(agent_id)
        if window is not None and now >= window.start + self._settings.denial_window:
            window = self._roll_window(agent_id, window, now)
        if window is None:
            window = self._denials[agent_id] = _DenialWindow(start=now)
        window.count += 1
        if not window.aggregating:
            if window.count <= self._settings.denial_burst:
                return False
            window.aggregating = True
        key = (syscall, code, reason)
        bucket = window.buckets.get(key)
        other = False
        if bucket is None and len(window.buckets) >= _MAX_DENIAL_KEYS:
            key, other = (None, code, None), True  # an agent inventing syscall names gets one count per code
            bucket = window.buckets.get(key)
        wall = float(self._clock())
        if bucket is None:
            bucket = window.buckets[key] = _DenialBucket(category, event_type, agent_name, wall, wall)
        bucket.count += 1
        bucket.last_time = wall
        bucket.other_syscalls |= other
        return True

    def _roll_window(self, agent_id: int | None, window: _DenialWindow, now: float) -> _DenialWindow | None:
        """Write the ended window's aggregates; the agent's next window, or ``None`` if idle."""
        self._flush_denials(agent_id, window)
        span = self._settings.denial_window
        end = window.start + span
        if window.count == 0:
            del self._denials[agent_id]
            return None
        follows = now < end + span  # the next window has begun, not passed: a flood carries over
        nxt = _DenialWindow(start=end if follows else now, aggregating=follows and window.count > self._settings.denial_burst)
        self._denials[agent_id] = nxt
        return nxt

    def _flush_denials(self, agent_id: int | None, window: _DenialWindow) -> None:
        for (syscall, code, reason), bucket in window.buckets.items():
            details: dict[str, Any] = {"count": bucket.count, "first_time": bucket.first_time, "last_time": bucket.last_time,
                                       "window_s": self._settings.denial_window, "burst": self._settings.denial_burst,
                                       "event_type": bucket.event_type}  # fmt: skip
            if bucket.other_syscalls:
                details["other_syscalls"] = True
            if reason is not None:
                details["reason"] = reason
            self._append({"timestamp": float(self._clock()), "category": bucket.category, "event_type": AGGREGATED_EVENT,
                          "agent_id": agent_id, "agent_name": bucket.agent_name, "syscall": syscall, "args": None,
                          "decision": "denied", "code": code, "duration_us": None,
                          "details": self._summarize(details, 2000, 100, 6)})  # fmt: skip
        window.buckets.clear()

    # ---- periodic work and the disk reserve ------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Periodic work; the kernel calls it every loop turn (it returns at once unless due).

        Writes the ``denials.aggregated`` records of denial windows that have ended, refreshes
        :attr:`space_low` (raising its change), applies ``keep_days`` retention about once a
        minute, and writes a ``journal.gap`` record the writer asked for. Loop thread only.

        :param now: the monotonic clock's now (default: read it).
        """
        if self._state != "open":
            return
        if self._gap_request is not None:
            self._record_gap()
        now = self._monotonic() if now is None else now
        if now < self._tick_due:
            return
        self._tick_due = now + _TICK_INTERVAL
        if self._denials:
            span = self._settings.denial_window
            for agent_id, window in list(self._denials.items()):
                if now >= window.start + span:
                    self._roll_window(agent_id, window, now)
        if now >= self._space_checked_at + _SPACE_INTERVAL or self._writer_failing != self._space_saw_failing:
            self._check_space(now)
        if self._settings.keep_days > 0 and now >= self._retention_due:
            self._retention_due = now + _RETENTION_INTERVAL
            self._apply_retention()

    def _check_space(self, now: float) -> None:
        self._space_checked_at = now
        failing = self._space_saw_failing = self._writer_failing
        try:
            stats = os.statvfs(self._path.parent)
            self._space_free = stats.f_bavail * stats.f_frsize
        except OSError as err:
            self._log.warning("journal %s: statvfs failed: %s", self._path, err)
            self._space_free = None
        reserve = self._settings.disk_reserve_bytes
        low = failing or (self._space_free is not None and self._space_free < reserve)
        if low == self._space_low:
            return
        self._space_low = low
        details = {"low": low, "free_bytes": self._space_free, "reserve_bytes": reserve,
                   "writer_failing": failing, "path": str(self._path.parent)}  # fmt: skip
        (self._log.error if low else self._log.warning)(
            "journal %s: %s (%s bytes free, reserve %d, writer %s)", self._path,
            "space low: agents' new work is refused" if low else "space ok again",
            self._space_free, reserve, "failing" if failing else "ok")  # fmt: skip
        self._note(Category.RESOURCE, "journal.space_low" if low else "journal.space_ok", details)
        if self.on_space_change is not None:
            try:
                self.on_space_change(low, details)
            except Exception:
                self._log.exception("journal: on_space_change failed")

    # ---- gaps ------------------------------------------------------------------------------------

    def _record_gap(self) -> None:
        """Append the ``journal.gap`` record the writer asked for after giving up on records.

        It chains from the last record on disk, so the chain stays verifiable; every record
        appended since then (the writer discards them until this one) is named lost.
        """
        with self._cond:
            request, self._gap_request = self._gap_request, None
        if request is None:
            return
        written_id, written_hash, reason = request
        first, last = written_id + 1, self._last_id
        if last < first:
            return
        self._cut_batch()  # lines before it go to the writer, which discards them
        self._last_hash = written_hash
        self._next_lines_gap = True
        self._note(Category.SECURITY, GAP_EVENT, {"first_id": first, "last_id": last, "count": last - first + 1,
                                                  "reason": reason})  # fmt: skip
        self._log.error("journal %s: records %d..%d were lost (%s); journal.gap record %d names them",
                        self._path, first, last, reason, self._last_id)  # fmt: skip

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
    def written_id(self) -> int:
        """The id of the newest record the writer has handed to the OS (``write`` returned: it
        survives a crash of this process; ``fdatasync`` follows within about a second)."""
        return self._written_id

    def written_fd(self) -> int:
        """An eventfd that becomes readable each time the writer has written records, so the
        loop can release replies it held until their records were written (group commit).
        Created on first use; closed by :meth:`close`."""
        if self._written_fd < 0:
            self._written_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return self._written_fd

    @property
    def batch_pending(self) -> bool:
        """Records appended but not yet handed to the writer thread."""
        return bool(self._batch or self._outbox)

    def hand_off(self) -> None:
        """Give the batched lines (and any rotation or deletion among them) to the writer thread
        in one piece (one wake-up)."""
        if self._state == "open":
            self._cut_batch()
            if self._outbox:
                items, self._outbox = self._outbox, []
                self._handed += len(items)
                self._queue.put(items)

    def write_now(self) -> bool:
        """Write the records appended so far on the calling (loop) thread, if the writer thread
        holds nothing older: one ``write`` to the page cache, no thread hand-off. This is the
        group commit of the replies a loop turn held until their records were written.

        :returns: ``True`` when every record appended so far is written (now or before);
            ``False`` when that is up to the writer thread (it is busy, a rotation or deletion
            is due, writes are failing): :meth:`hand_off`, and wait for :meth:`written_fd`.
        """
        if self._state != "open" or self._gap_request is not None or self._writer_failing:
            return False
        self._cut_batch()
        if not self._outbox:
            return self._written_id >= self._last_id
        if not all(isinstance(item, _Lines) for item in self._outbox):
            return False
        if not self._write_lock.acquire(blocking=False):
            return False  # the writer is writing or syncing: never wait for it on the loop
        try:
            if self._done != self._handed or self._discarding:
                return False
            lines = cast("list[_Lines]", self._outbox)
            data = lines[0].data if len(lines) == 1 else b"".join(line.data for line in lines)
            try:
                _write_fully(self._fd, data)
            except OSError as err:
                self._write_failed(f"write failed ({err}); the writer thread retries")
                return False
            self._outbox = []
            self._size += len(data)
            wake_writer = not self._dirty  # it syncs within _FSYNC_INTERVAL once it knows
            self._dirty = True
            with self._cond:
                self._written_id, self._written_hash = lines[-1].last_id, lines[-1].last_hash
                self._cond.notify_all()
        finally:
            self._write_lock.release()
        if wake_writer:
            self._queue.put([])
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record appended so far has been written to the file.

        Aggregated denials are not records until their window ends (:meth:`tick`). If the writer
        gives up on records meanwhile, the ``journal.gap`` record naming them is what gets written.

        :returns: ``True`` once written (not necessarily synced), ``False`` on timeout, for
            example while the disk is full, or if the writer thread has stopped.
        """
        if self._state != "open":
            return self._written_id >= self._last_id
        deadline = time.monotonic() + timeout
        while True:
            if self._gap_request is not None:
                self._record_gap()
            self.hand_off()
            target = self._last_id
            with self._cond:
                self._cond.wait_for(
                    lambda: self._written_id >= target or self._writer_done or self._gap_request is not None,  # noqa: B023 - waited on within this iteration
                    max(0.0, deadline - time.monotonic()),
                )
                if self._written_id >= target:
                    return True
                if self._writer_done or self._gap_request is None or time.monotonic() >= deadline:
                    return False

    def close(self) -> None:
        """Write the open denial aggregates and what is queued, sync, stop the writer thread and
        close the file. Idempotent.

        Records that still cannot be written (the disk stays full) are named lost by a last
        ``journal.gap`` record written directly, if even that fits; otherwise in the log only.
        """
        if self._state != "open":
            self._state = "closed"
            return
        for agent_id, window in list(self._denials.items()):
            self._flush_denials(agent_id, window)
        self._denials.clear()
        if self._gap_request is not None:
            self._record_gap()
        self.hand_off()
        self._state = "closed"
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(_CLOSE_TIMEOUT)
            if self._thread.is_alive():
                self._log.error("journal %s: writer thread did not stop within %.0f s",
                                self._path, _CLOSE_TIMEOUT)  # fmt: skip
                return  # the thread still owns the descriptor
        if self._written_id < self._last_id:
            self._write_final_gap()
        os.close(self._fd)
        self._fd = -1
        if self._written_fd >= 0:
            os.close(self._written_fd)
            self._written_fd = -1

    def _write_final_gap(self) -> None:
        """At close, with the writer stopped: one small ``journal.gap`` record for what it could
        not write, chained from the last record on disk (a nearly full disk may take it)."""
        first, last = self._written_id + 1, self._last_id
        self._last_hash = self._written_hash
        record, line = self._seal({
            "timestamp": float(self._clock()), "category": Category.SECURITY.value, "event_type": GAP_EVENT,
            "agent_id": None, "agent_name": None, "syscall": None, "args": None, "decision": "n/a", "code": "ok",
            "duration_us": None,
            "details": {"first_id": first, "last_id": last, "count": last - first + 1, "reason": "not written when the journal closed"},
        })  # fmt: skip
        try:
            _write_fully(self._fd, line)
            os.fdatasync(self._fd)
        except OSError as err:
            self._write_failed(f"records {first}..{last} are lost and the journal.gap record naming them "
                               f"could not be written either ({err})")  # fmt: skip
            return
        self._last_id = self._written_id = record["id"]
        self._last_hash = self._written_hash = record["hash"]
        self._ring.append(record)
        self._log.error("journal %s: records %d..%d could not be written; journal.gap record %d names them",
                        self._path, first, last, record["id"])  # fmt: skip

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
        """The writer thread: the only code that touches the files after :meth:`open`."""
        pending: deque[_Item] = deque()
        retry_at = 0.0
        synced_at = time.monotonic()
        stopping = False
        while not stopping:
            deadlines = ([retry_at] if pending else []) + ([synced_at + _FSYNC_INTERVAL] if self._dirty else [])
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            stopping = self._drain(pending, timeout)
            if pending and (stopping or time.monotonic() >= retry_at):
                with self._write_lock:
                    written = self._write_pending(pending)
                if not written:
                    retry_at = time.monotonic() + _RETRY_INTERVAL
            if self._dirty and (stopping or time.monotonic() - synced_at >= _FSYNC_INTERVAL):
                with self._write_lock:  # write_now() may set _dirty meanwhile: not lost
                    try:
                        os.fdatasync(self._fd)
                    except OSError as err:
                        self._write_failed(f"fdatasync failed ({err})")
                    self._dirty, synced_at = False, time.monotonic()
        lines = [item for item in pending if isinstance(item, _Lines)]
        if lines:  # close() names them in a journal.gap record if it can
            self._log.error("journal %s: records %d..%d could not be written before close",
                            self._path, lines[0].first_id, lines[-1].last_id)  # fmt: skip

    def _drain(self, pending: deque[_Item], timeout: float | None) -> bool:
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
                    pending.extend(item)
                    self._pending_bytes += sum(len(part.data) for part in item if isinstance(part, _Lines))
                item = self._queue.get_nowait()
        except queue.Empty:
            return stop

    def _write_pending(self, pending: deque[_Item]) -> bool:
        """Write the pending lines (consecutive ones in one go) and carry out the rotations and
        deletions between them, in order. On a failed write keep the rest for a retry, unless
        that passes :data:`_MAX_PENDING_BYTES`: then give up on the lines and ask for a gap record.

        :returns: ``True`` once nothing is pending.
        """
        while pending:
            head = pending[0]
            if isinstance(head, _Rotate):
                if not self._rotate_file(head):
                    return False
                pending.popleft()
                self._done += 1
                continue
            if isinstance(head, _Delete):
                self._delete_files(head)
                pending.popleft()
                self._done += 1
                continue
            if self._discarding and not head.starts_gap:
                pending.popleft()  # chained to records already lost: the journal.gap record names it
                self._pending_bytes -= len(head.data)
                self._done += 1
                continue
            self._discarding = False
            chunks: list[_Lines] = []
            for item in pending:
                if not isinstance(item, _Lines):
                    break
                chunks.append(item)
            data = chunks[0].data if len(chunks) == 1 else b"".join(chunk.data for chunk in chunks)
            try:
                _write_fully(self._fd, data)
            except OSError as err:
                count = chunks[-1].last_id - chunks[0].first_id + 1
                self._write_failed(f"write failed ({err}); {count} records kept for retry")
                if self._pending_bytes > _MAX_PENDING_BYTES:
                    self._give_up(pending, f"write failed: {err}")
                return False
            for _ in chunks:
                pending.popleft()
            self._done += len(chunks)
            self._pending_bytes -= len(data)
            self._size += len(data)
            self._dirty = True
            self._writer_failing = False
            with self._cond:
                self._written_id, self._written_hash = chunks[-1].last_id, chunks[-1].last_hash
                self._cond.notify_all()
            if self._written_fd >= 0:
                with contextlib.suppress(OSError):  # closed at shutdown: nobody waits any more
                    os.eventfd_write(self._written_fd, 1)
        return True

    def _give_up(self, pending: deque[_Item], reason: str) -> None:
        """Drop the pending lines (memory is bounded) and ask the loop for a ``journal.gap``
        record; later lines chain to the dropped ones, so they are discarded until it comes.
        Rotations stay queued; deletions go (their journal.retention record is among the lost)."""
        lines = [item for item in pending if isinstance(item, _Lines)]
        kept = [item for item in pending if isinstance(item, _Rotate)]
        self._done += len(pending) - len(kept)
        pending.clear()
        pending.extend(kept)
        self._pending_bytes = 0
        self._discarding = True
        with self._cond:
            self._gap_request = (self._written_id, self._written_hash, reason)
            self._cond.notify_all()
        self._log.error("journal %s: gave up on records %d..%d after repeated write failures; a journal.gap record will name them",
                        self._path, lines[0].first_id, lines[-1].last_id)  # fmt: skip

    def _rotate_file(self, item: _Rotate) -> bool:
        """Sync the active file, rename it to its rotated name, open a fresh active file."""
        try:
            if not item.renamed:
                os.fdatasync(self._fd)  # a rotated file is complete on disk under its final name
                try:
                    os.rename(self._path, self._path.with_name(item.name))
                except FileNotFoundError:
                    self._log.error("journal %s: vanished before its rotation to %s", self._path, item.name)
                item.renamed = True
            fd = os.open(self._path, _OPEN_FLAGS, 0o600)
        except OSError as err:
            self._write_failed(f"rotation to {item.name} failed ({err})")
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._log.error("journal %s: cannot lock the new file: %s", self._path, err)
        os.close(self._fd)
        self._fd, self._size, self._dirty = fd, 0, False
        try:
            _fsync_dir(self._path.parent)
        except OSError as err:
            self._log.error("journal %s: cannot sync its directory after a rotation: %s", self._path, err)
        return True

    def _delete_files(self, item: _Delete) -> None:
        """Retention: the record naming the files is written; make it durable, then delete."""
        try:
            os.fdatasync(self._fd)
        except OSError as err:
            self._write_failed(f"fdatasync failed ({err}); keeping {', '.join(item.names)}")
            return
        for name in item.names:
            try:
                os.unlink(self._path.with_name(name))
            except FileNotFoundError:
                pass
            except OSError as err:
                self._log.error("journal %s: cannot delete %s: %s", self._path, name, err)
        try:
            _fsync_dir(self._path.parent)
        except OSError as err:
            self._log.error("journal %s: cannot sync its directory after deleting: %s", self._path, err)

    def _write_failed(self, message: str) -> None:
        self._writer_failing = True
        with self._cond:
            self._write_errors += 1
        self._log.error("journal %s: %s", self._path, message)
        try:  # never leave half a line behind, or the next write would glue onto it
            if os.fstat(self._fd).st_size > self._size:
                os.ftruncate(self._fd, self._size)
        except OSError as trunc_err:
            self._log.error("journal %s: cannot cut a partial write: %s", self._path, trunc_err)


def _first_id(fd: int) -> int | None:
    """The id of a file's first record (``None`` if its first line is not one)."""
    data, offset = b"", 0
    while b"\n" not in data and len(data) < (16 << 20):
        chunk = os.pread(fd, 64 * 1024, offset)
        if not chunk:
            return None
        data += chunk
        offset += len(chunk)
    record = parse_record(data.split(b"\n", 1)[0])
    return None if record is None else int(record["id"])


def _fsync_dir(directory: Path) -> None:
    """Make a newly created file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
