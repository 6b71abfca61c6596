"""The kernel's audit journal: an append-only, hash-chained JSONL file and a ring of recent records.

Every syscall (allowed or denied) and every agent lifecycle event becomes one record. This module
is the facade the kernel uses: it builds and chains records, keeps the ring :meth:`Journal.query`
reads and writes the ``journal.gap`` records, and composes one module per job:

* :mod:`~clove.kernel.audit.handoff`: the loop's batching and group commit;
* :mod:`~clove.kernel.audit.writer`: the writer thread, which owns the files after ``open()``;
* :mod:`~clove.kernel.audit.resume`: what ``open()`` finds on disk;
* :mod:`~clove.kernel.audit.retention`: when to rotate, which rotated files to delete;
* :mod:`~clove.kernel.audit.denials`: denials counted into ``denials.aggregated`` records;
* :mod:`~clove.kernel.audit.space`: the disk reserve behind :attr:`Journal.space_low`.

The record format lives in :mod:`~clove.kernel.audit.format`, the files and offline readers in
:mod:`~clove.kernel.audit.files`, verification in :mod:`~clove.kernel.audit.verify`; the names
the kernel's callers use are re-exported here.

Threads: :meth:`Journal.append` runs on the kernel's event loop and never touches the disk. It builds
the record, chains it and hands the encoded line to one writer thread over a
:class:`queue.SimpleQueue`. The writer owns the file descriptor: it writes whatever is queued in
one ``write`` as soon as it arrives and ``fdatasync``\\ s at most about once a second and on close.
The ring, the chain head and every part but the writer belong to the loop thread alone; the
threads share only the queue and a few counters under a condition (``writer.py`` names them).

Containment (docs/audit.md): the loop decides when the active file is full and queues a rotation
for the writer, followed by the ``journal.rotated`` record that opens the next file; retention
deletes the oldest rotated files after a ``journal.retention`` record naming them is on disk.
Denials beyond a burst are counted, not written one by one (:meth:`Journal.tick` closes their
windows). A record the writer cannot write is never dropped silently: the writer gives up on it
only past a memory cap and asks the loop for a ``journal.gap`` record, which chains from the last
record written and names the ids lost. :attr:`Journal.space_low` tells the kernel to stop taking
new work before the disk is full.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, final

from clove.config import JournalSection
from clove.kernel.audit.denials import Denials
from clove.kernel.audit.files import read_journal
from clove.kernel.audit.format import (
    AGGREGATED_EVENT,
    DECISIONS,
    GAP_EVENT,
    GENESIS_HASH,
    RETENTION_EVENT,
    ROTATED_EVENT,
    Category,
    canonical_bytes,
)
from clove.kernel.audit.handoff import HandOff
from clove.kernel.audit.resume import resume
from clove.kernel.audit.retention import FileSet, RotatedFile
from clove.kernel.audit.space import SpaceReserve
from clove.kernel.audit.summarize import clip_text, summarize_args
from clove.kernel.audit.verify import VerifyResult, verify_journal
from clove.kernel.audit.writer import Delete, Item, Rotate, Writer

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

#: :meth:`Journal.query` never returns more records than this.
MAX_QUERY_LIMIT: Final = 10_000
_CLOSE_TIMEOUT = 5.0
_MAX_NAME = 200  # event_type, agent_name, syscall and code are clipped to this many characters
_TICK_INTERVAL = 0.05  # tick() does its work at most this often (it is called every loop turn)
_CATEGORY_VALUES: Final = {c.value: c.value for c in Category}  # by value or member: no Enum call per record
# "hash" goes before "id" in a record's canonical JSON; nothing after "id" (a number, hex, one JSON
# string, a number) can hold these bytes, so the last match is the record's own key.
_ID_KEY: Final = b',"id":'


@final
class Journal:
    """The audit journal: an append-only JSONL file plus a ring of recent records for queries.

    Life cycle: ``open()``, then any number of ``append()`` and ``query()`` calls from the loop
    thread, then ``close()``. Records returned by ``append`` and ``query`` are shared with the ring:
    treat them as read-only.

    :param path: the active JSONL file, normally ``<state dir>/journal.jsonl``; rotated files
        go beside it (:func:`~clove.kernel.audit.files.rotated_name`).
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
        settings = settings if settings is not None else JournalSection()
        self._log = log if log is not None else logging.getLogger(__name__)
        self._ring: deque[dict[str, Any]] = deque(maxlen=ring_size)
        self._queue: queue.SimpleQueue[list[Item] | None] = queue.SimpleQueue()
        self._state = "new"  # "new" -> "open" -> "closed"
        self._last_id = 0
        self._last_hash = GENESIS_HASH
        self._tick_due = -math.inf
        #: Called on the loop thread with ``(low, details)`` each time :attr:`space_low` changes.
        self.on_space_change: Callable[[bool, dict[str, Any]], None] | None = None
        # One job each. The writer thread owns the files after open() and shares with the loop
        # only what writer.py names; the others are the loop thread's alone.
        self._writer = Writer(self._path, self._queue, self._log)
        self._handoff = HandOff(self._writer, batching=batch)  # batching and group commit
        self._files = FileSet(self._path, settings, clock)  # rotation and retention decisions
        self._denials = Denials(settings, clock=clock, monotonic=monotonic,
                                append=self._append, summarize=self._summarize)  # fmt: skip
        self._space = SpaceReserve(self._path, settings, lambda: self._writer.failing, self._log)

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
        return self._writer.write_errors

    @property
    def rotated_files(self) -> list[str]:
        """Names of the rotated files the journal keeps (as far as the loop knows), oldest first."""
        return [rotated.name for rotated in self._files.rotated]

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
            if self._space.due(now):
                self._check_space(now)
        return self._space.low

    @property
    def space_free_bytes(self) -> int | None:
        """Free bytes on the journal's filesystem at the last check (``None``: not checked, or
        ``statvfs`` failed)."""
        return self._space.free_bytes

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
        found = resume(self._path, self._ring.maxlen or 1, self._log)
        self._ring.extend(found.records)
        self._last_id, self._last_hash = found.last_id, found.last_hash
        self._files.resumed(found.first_id, found.size, found.rotated)
        self._state = "open"
        self._writer.start(found.fd, found.size, self._last_id, self._last_hash)
        if found.dropped:
            self.append(Category.SECURITY, "journal.tail_repaired", decision="n/a",
                        details={"dropped_bytes": found.dropped, "offset": found.size})  # fmt: skip
        if self._files.bytes == 0 and self._files.rotated:
            self._append_header(self._files.rotated[-1])  # every rotated-to file opens with its link back
        self._apply_retention()
        self._check_space(self._monotonic())

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
        category_value = _CATEGORY_VALUES.get(category)
        if category_value is None:
            raise ValueError(f"{category!r} is not a valid Category")
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, got {decision!r}")
        if self._writer.gap_requested:
            self._record_gap()
        event_type = clip_text(event_type, _MAX_NAME)
        agent_name = None if agent_name is None else clip_text(agent_name, _MAX_NAME)
        syscall = None if syscall is None else clip_text(syscall, _MAX_NAME)
        code = clip_text(code, _MAX_NAME)
        agent_id = None if agent_id is None else int(agent_id)
        if decision == "denied":  # the reason is only for the aggregation of denials
            reason = (details or {}).get("reason")
            reason = clip_text(reason, _MAX_NAME) if isinstance(reason, str) else None
            if self._denials.count(category_value, event_type, agent_id, agent_name, syscall, code, reason):
                return None
        return self._append(
            {
                "timestamp": float(self._clock()),
                "category": category_value,
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
        if self._files.full(len(line)) and not self._handoff.gap_next:  # a journal.gap record must follow the last record written
            self._rotate()
            record, line = self._seal(fields)  # after the journal.rotated record: a new id and link
        hand_now = self._handoff.add(record["id"], record["hash"], line)
        self._last_id, self._last_hash = record["id"], record["hash"]
        self._files.added(record["id"], len(line))
        if hand_now:
            self.hand_off()
        self._ring.append(record)
        return record

    def _seal(self, fields: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """Chain ``fields`` (the caller's own dict, completed in place): the record and its line,
        encoded once with the hash spliced in where it sorts (what :func:`canonical_bytes` gives)."""
        fields.pop("hash", None)  # sealed again after a rotation: a new id and link
        fields["id"] = self._last_id + 1
        fields["prev_hash"] = self._last_hash
        body = canonical_bytes(fields)
        digest = hashlib.sha256(body).hexdigest()
        fields["hash"] = digest
        cut = body.rfind(_ID_KEY)
        return fields, b"".join((body[:cut], b',"hash":"', digest.encode(), b'"', body[cut:], b"\n"))

    # ---- rotation and retention (loop thread: decides; the writer carries out) ---------------

    def _rotate(self) -> None:
        """Close the active file at the last record appended; the next opens a new one."""
        previous = self._files.rotate(self._last_id)
        self._command(Rotate(previous.name))
        self._append_header(previous)
        self._apply_retention()

    def _append_header(self, previous: RotatedFile) -> None:
        """The first record of a new active file: its link back, readable after the previous
        file is deleted (verify takes it as an acknowledged truncation)."""
        self._note(Category.SECURITY, ROTATED_EVENT, {
            "previous_file": previous.name, "previous_first_id": previous.first_id,
            "previous_last_id": self._last_id, "previous_last_hash": self._last_hash,
        })  # fmt: skip
        self._files.header_added()

    def _apply_retention(self) -> None:
        """Delete rotated files past ``keep_files`` or older than ``keep_days``, oldest first:
        a ``journal.retention`` record names them and the writer deletes them once it is synced."""
        victims = self._files.expire()
        if not victims:
            return
        for details in self._files.retention_details(victims):
            self._note(Category.SECURITY, RETENTION_EVENT, details)
        self._command(Delete([victim.name for victim in victims]))

    def _command(self, item: Rotate | Delete) -> None:
        if self._handoff.command(item):
            self.hand_off()

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
        if self._writer.gap_requested:
            self._record_gap()
        now = self._monotonic() if now is None else now
        if now < self._tick_due:
            return
        self._tick_due = now + _TICK_INTERVAL
        self._denials.roll_ended(now)
        if self._space.due(now):
            self._check_space(now)
        if self._files.retention_due(now):
            self._apply_retention()

    def _check_space(self, now: float) -> None:
        details = self._space.check(now)
        if details is None:
            return
        low = self._space.low
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
        request = self._writer.take_gap_request()
        if request is None:
            return
        written_id, written_hash, reason = request
        first, last = written_id + 1, self._last_id
        if last < first:
            return
        self._handoff.start_gap()  # lines before it go to the writer, which discards them
        self._last_hash = written_hash
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
        return self._writer.written_id

    def written_fd(self) -> int:
        """An eventfd that becomes readable each time the writer has written records, so the
        loop can release replies it held until their records were written (group commit).
        Created on first use; closed by :meth:`close`."""
        return self._writer.written_fd()

    @property
    def batch_pending(self) -> bool:
        """Records appended but not yet handed to the writer thread."""
        return self._handoff.pending

    def hand_off(self) -> None:
        """Give the batched lines (and any rotation or deletion among them) to the writer thread
        in one piece (one wake-up)."""
        if self._state == "open":
            self._handoff.hand_off(self._queue)

    def write_now(self) -> bool:
        """Write the records appended so far on the calling (loop) thread, if the writer thread
        holds nothing older: one ``write`` to the page cache, no thread hand-off. This is the
        group commit of the replies a loop turn held until their records were written.

        :returns: ``True`` when every record appended so far is written (now or before);
            ``False`` when that is up to the writer thread (it is busy, a rotation or deletion
            is due, writes are failing): :meth:`hand_off`, and wait for :meth:`written_fd`.
        """
        if self._state != "open" or self._writer.gap_requested or self._writer.failing:
            return False
        written = self._handoff.write_now(self._queue)
        return self._writer.written_id >= self._last_id if written is None else written

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record appended so far has been written to the file.

        Aggregated denials are not records until their window ends (:meth:`tick`). If the writer
        gives up on records meanwhile, the ``journal.gap`` record naming them is what gets written.

        :returns: ``True`` once written (not necessarily synced), ``False`` on timeout, for
            example while the disk is full, or if the writer thread has stopped.
        """
        if self._state != "open":
            return self._writer.written_id >= self._last_id
        deadline = time.monotonic() + timeout
        while True:
            if self._writer.gap_requested:
                self._record_gap()
            self.hand_off()
            written = self._writer.wait_written(self._last_id, deadline)
            if written is not None:
                return written

    def close(self) -> None:
        """Write the open denial aggregates and what is queued, sync, stop the writer thread and
        close the file. Idempotent.

        Records that still cannot be written (the disk stays full) are named lost by a last
        ``journal.gap`` record written directly, if even that fits; otherwise in the log only.
        """
        if self._state != "open":
            self._state = "closed"
            return
        self._denials.flush_all()
        if self._writer.gap_requested:
            self._record_gap()
        self.hand_off()
        self._state = "closed"
        self._queue.put(None)
        if not self._writer.join(_CLOSE_TIMEOUT):
            self._log.error("journal %s: writer thread did not stop within %.0f s",
                            self._path, _CLOSE_TIMEOUT)  # fmt: skip
            return  # the thread still owns the descriptor
        if self._writer.written_id < self._last_id:
            self._write_final_gap()
        self._writer.close_files()

    def _write_final_gap(self) -> None:
        """At close, with the writer stopped: one small ``journal.gap`` record for what it could
        not write, chained from the last record on disk (a nearly full disk may take it)."""
        first, last = self._writer.written_id + 1, self._last_id
        self._last_hash = self._writer.written_hash
        record, line = self._seal({
            "timestamp": float(self._clock()), "category": Category.SECURITY.value, "event_type": GAP_EVENT,
            "agent_id": None, "agent_name": None, "syscall": None, "args": None, "decision": "n/a", "code": "ok",
            "duration_us": None,
            "details": {"first_id": first, "last_id": last, "count": last - first + 1, "reason": "not written when the journal closed"},
        })  # fmt: skip
        try:
            self._writer.write_final(line, record["id"], record["hash"])
        except OSError as err:
            self._writer.write_failed(f"records {first}..{last} are lost and the journal.gap record naming them "
                                      f"could not be written either ({err})")  # fmt: skip
            return
        self._last_id, self._last_hash = record["id"], record["hash"]
        self._ring.append(record)
        self._log.error("journal %s: records %d..%d could not be written; journal.gap record %d names them",
                        self._path, first, last, record["id"])  # fmt: skip

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
