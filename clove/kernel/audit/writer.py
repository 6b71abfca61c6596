"""The journal's writer thread and everything it does on disk: writes, fdatasync, rotation, deletion.

Threads: after :meth:`Journal.open <clove.kernel.audit.journal.Journal.open>`, :class:`Writer`'s
thread is the only code that touches the journal's files, with two exceptions that take its
``_write_lock`` first or come after it stopped: :meth:`Writer.write_on_loop` (the loop's group
commit, which never waits for the lock) and :meth:`Writer.write_final` (at close).

What the threads share, and how:

* the queue: the loop (the journal) puts lists of :data:`Item` on it (``None``: stop); the writer
  gets them, writes whatever is queued in one ``write`` as soon as it arrives and
  ``fdatasync``\\ s at most about once a second and on close;
* ``_write_lock``: held by the writer while it writes, syncs, rotates or deletes, and by the loop
  while it writes in :meth:`Writer.write_on_loop`;
* ``_cond`` guards ``_written_id``/``_written_hash``, ``_write_errors``, ``_writer_done`` and
  ``_gap_request``; the loop waits on it in :meth:`Writer.wait_written`;
* ``_done`` (under ``_write_lock``) counts the items the writer has finished; the loop counts
  those it handed; equal, the writer holds nothing and the loop may write the next lines itself;
* ``_writer_failing`` (the last write, sync or rotation failed) is set by the writer, read by the
  loop; ``_written_fd`` (an eventfd) is created by the loop and bumped by the writer.

A record the writer cannot write is never dropped silently: it keeps unwritten lines for a retry
up to :data:`_MAX_PENDING_BYTES`, then gives up on them and asks the loop for a ``journal.gap``
record (``_gap_request``), discarding later lines until that record comes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Final, final

from clove.kernel.audit.format import GENESIS_HASH

__all__ = ["OPEN_FLAGS", "Delete", "Item", "Lines", "Rotate", "Writer", "fsync_dir"]

_FSYNC_INTERVAL = 1.0  # seconds between fdatasync calls while records keep arriving
_RETRY_INTERVAL = 1.0  # seconds between write attempts after a failed write
_MAX_PENDING_BYTES = 64 * 1024 * 1024  # unwritable records kept for retry before they become a journal.gap
#: How the journal's active file is opened (by the journal at open, by the writer at a rotation).
OPEN_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW


def _write_fully(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; the writer thread's only write, patched by tests."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


@final
class Lines:
    """Encoded records ``first_id..last_id`` for the writer; ``starts_gap``: the first is a
    ``journal.gap`` record (the writer, discarding after a drop, writes again from it)."""

    __slots__ = ("data", "first_id", "last_hash", "last_id", "starts_gap")

    def __init__(self, first_id: int, last_id: int, last_hash: str, data: bytes, starts_gap: bool) -> None:
        self.first_id, self.last_id, self.last_hash = first_id, last_id, last_hash
        self.data, self.starts_gap = data, starts_gap


@final
class Rotate:
    """Sync the active file, rename it to ``name`` and continue in a fresh active file."""

    __slots__ = ("name", "renamed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.renamed = False  # a failed open after a good rename is retried without renaming


@final
class Delete:
    """Retention: sync (the ``journal.retention`` record naming them is before this), then delete."""

    __slots__ = ("names",)

    def __init__(self, names: list[str]) -> None:
        self.names = names


#: What the loop hands the writer, in order: lines to write, a rotation, a deletion.
Item = Lines | Rotate | Delete


@final
class Writer:
    """The journal's writer thread and the state it shares with the loop thread.

    Life cycle: built by the journal with the queue it puts work on, :meth:`start`\\ ed with the
    descriptor of the opened active file, stopped by a ``None`` on the queue and :meth:`join`,
    then :meth:`close_files`.

    :param path: the active file; rotated files go beside it.
    :param work: the queue the loop puts lists of items on (``None``: stop).
    :param log: where to log write failures (the journal's logger).
    """

    def __init__(self, path: Path, work: queue.SimpleQueue[list[Item] | None], log: logging.Logger) -> None:
        self._path = path
        self._queue = work
        self._log = log
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._size = 0  # bytes of complete records in the active file; the writer's after start()
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
        # Items finished by the writer (under _write_lock); the loop counts the items it handed
        # (HandOff._handed): equal when the writer holds nothing, so the loop may write the next
        # lines itself (write_on_loop).
        self._done = 0
        self._write_lock = threading.Lock()

    # ---- the loop thread's side --------------------------------------------------------------------

    def start(self, fd: int, size: int, written_id: int, written_hash: str) -> None:
        """Take over ``fd`` (the active file, ``size`` bytes of complete records ending in record
        ``written_id``) and start the thread."""
        self._fd, self._size = fd, size
        self._written_id, self._written_hash = written_id, written_hash
        self._thread = threading.Thread(target=self._run_writer, name="clove-journal-writer", daemon=True)
        self._thread.start()

    @property
    def failing(self) -> bool:
        """The last write, sync or rotation failed (read without a lock, as a hint)."""
        return self._writer_failing

    @property
    def gap_requested(self) -> bool:
        """The writer gave up on records and waits for the loop's ``journal.gap`` record."""
        return self._gap_request is not None

    @property
    def written_id(self) -> int:
        """The id of the newest record handed to the OS."""
        return self._written_id

    @property
    def written_hash(self) -> str:
        """The hash of record :attr:`written_id`."""
        return self._written_hash

    @property
    def write_errors(self) -> int:
        """How many writes or syncs have failed."""
        return self._write_errors

    def take_gap_request(self) -> tuple[int, str, str] | None:
        """The writer's request for a ``journal.gap`` record, cleared: ``(last id written, its
        hash, why)``, or ``None``."""
        with self._cond:
            request, self._gap_request = self._gap_request, None
        return request

    def written_fd(self) -> int:
        """The eventfd the writer bumps after each write; created on first use."""
        if self._written_fd < 0:
            self._written_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return self._written_fd

    def write_on_loop(self, lines: list[Lines], handed: int) -> tuple[bool, bool]:
        """Write ``lines`` on the calling (loop) thread, if the writer holds nothing older
        (``handed``: the items the loop has handed it so far) and is not writing or syncing right
        now: the loop never waits for it.

        :returns: ``(written, wake)``: whether the lines were written; ``wake``: the writer does
            not know it has something to sync yet, so put an empty list on the queue.
        """
        if not self._write_lock.acquire(blocking=False):
            return False, False  # the writer is writing or syncing: never wait for it on the loop
        try:
            if self._done != handed or self._discarding:
                return False, False
            data = lines[0].data if len(lines) == 1 else b"".join(line.data for line in lines)
            try:
                _write_fully(self._fd, data)
            except OSError as err:
                self.write_failed(f"write failed ({err}); the writer thread retries")
                return False, False
            self._size += len(data)
            wake_writer = not self._dirty  # it syncs within _FSYNC_INTERVAL once it knows
            self._dirty = True
            with self._cond:
                self._written_id, self._written_hash = lines[-1].last_id, lines[-1].last_hash
                self._cond.notify_all()
        finally:
            self._write_lock.release()
        return True, wake_writer

    def wait_written(self, target: int, deadline: float) -> bool | None:
        """Wait until record ``target`` is written, the writer stops or asks for a ``journal.gap``
        record, or ``deadline`` (:func:`time.monotonic`) passes.

        :returns: ``True`` once written; ``False`` if the writer stopped or the time is up;
            ``None`` if a ``journal.gap`` record is asked for (append it, then wait again).
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._written_id >= target or self._writer_done or self._gap_request is not None,
                max(0.0, deadline - time.monotonic()),
            )
            if self._written_id >= target:
                return True
            if self._writer_done or self._gap_request is None or time.monotonic() >= deadline:
                return False
            return None

    def join(self, timeout: float) -> bool:
        """Wait for the thread to stop (after the loop put ``None`` on the queue); ``False`` if it
        is still running after ``timeout`` seconds (it still owns the descriptor)."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        return True

    def write_final(self, line: bytes, record_id: int, record_hash: str) -> None:
        """After :meth:`join`: write and sync ``line`` (record ``record_id``) on the calling thread.

        :raises OSError: the write or the sync failed.
        """
        _write_fully(self._fd, line)
        os.fdatasync(self._fd)
        self._written_id, self._written_hash = record_id, record_hash

    def close_files(self) -> None:
        """After :meth:`join`: close the active file and the eventfd."""
        os.close(self._fd)
        self._fd = -1
        if self._written_fd >= 0:
            os.close(self._written_fd)
            self._written_fd = -1

    # ---- the writer thread ---------------------------------------------------------------------------

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
        """The writer thread: the only code that touches the files while the journal is open."""
        pending: deque[Item] = deque()
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
                        self.write_failed(f"fdatasync failed ({err})")
                    self._dirty, synced_at = False, time.monotonic()
        lines = [item for item in pending if isinstance(item, Lines)]
        if lines:  # close() names them in a journal.gap record if it can
            self._log.error("journal %s: records %d..%d could not be written before close",
                            self._path, lines[0].first_id, lines[-1].last_id)  # fmt: skip

    def _drain(self, pending: deque[Item], timeout: float | None) -> bool:
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
                    self._pending_bytes += sum(len(part.data) for part in item if isinstance(part, Lines))
                item = self._queue.get_nowait()
        except queue.Empty:
            return stop

    def _write_pending(self, pending: deque[Item]) -> bool:
        """Write the pending lines (consecutive ones in one go) and carry out the rotations and
        deletions between them, in order. On a failed write keep the rest for a retry, unless
        that passes :data:`_MAX_PENDING_BYTES`: then give up on the lines and ask for a gap record.

        :returns: ``True`` once nothing is pending.
        """
        while pending:
            head = pending[0]
            if isinstance(head, Rotate):
                if not self._rotate_file(head):
                    return False
                pending.popleft()
                self._done += 1
                continue
            if isinstance(head, Delete):
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
            chunks: list[Lines] = []
            for item in pending:
                if not isinstance(item, Lines):
                    break
                chunks.append(item)
            data = chunks[0].data if len(chunks) == 1 else b"".join(chunk.data for chunk in chunks)
            try:
                _write_fully(self._fd, data)
            except OSError as err:
                count = chunks[-1].last_id - chunks[0].first_id + 1
                self.write_failed(f"write failed ({err}); {count} records kept for retry")
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

    def _give_up(self, pending: deque[Item], reason: str) -> None:
        """Drop the pending lines (memory is bounded) and ask the loop for a ``journal.gap``
        record; later lines chain to the dropped ones, so they are discarded until it comes.
        Rotations stay queued; deletions go (their journal.retention record is among the lost)."""
        lines = [item for item in pending if isinstance(item, Lines)]
        kept = [item for item in pending if isinstance(item, Rotate)]
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

    def _rotate_file(self, item: Rotate) -> bool:
        """Sync the active file, rename it to its rotated name, open a fresh active file."""
        try:
            if not item.renamed:
                os.fdatasync(self._fd)  # a rotated file is complete on disk under its final name
                try:
                    os.rename(self._path, self._path.with_name(item.name))
                except FileNotFoundError:
                    self._log.error("journal %s: vanished before its rotation to %s", self._path, item.name)
                item.renamed = True
            fd = os.open(self._path, OPEN_FLAGS, 0o600)
        except OSError as err:
            self.write_failed(f"rotation to {item.name} failed ({err})")
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._log.error("journal %s: cannot lock the new file: %s", self._path, err)
        os.close(self._fd)
        self._fd, self._size, self._dirty = fd, 0, False
        try:
            fsync_dir(self._path.parent)
        except OSError as err:
            self._log.error("journal %s: cannot sync its directory after a rotation: %s", self._path, err)
        return True

    def _delete_files(self, item: Delete) -> None:
        """Retention: the record naming the files is written; make it durable, then delete."""
        try:
            os.fdatasync(self._fd)
        except OSError as err:
            self.write_failed(f"fdatasync failed ({err}); keeping {', '.join(item.names)}")
            return
        for name in item.names:
            try:
                os.unlink(self._path.with_name(name))
            except FileNotFoundError:
                pass
            except OSError as err:
                self._log.error("journal %s: cannot delete %s: %s", self._path, name, err)
        try:
            fsync_dir(self._path.parent)
        except OSError as err:
            self._log.error("journal %s: cannot sync its directory after deleting: %s", self._path, err)

    def write_failed(self, message: str) -> None:
        """Count and log a failed write, sync or rotation and cut any partial line it left; called
        by whichever thread holds the descriptor (the writer, or the loop under ``_write_lock`` or
        after :meth:`join`)."""
        self._writer_failing = True
        with self._cond:
            self._write_errors += 1
        self._log.error("journal %s: %s", self._path, message)
        try:  # never leave half a line behind, or the next write would glue onto it
            if os.fstat(self._fd).st_size > self._size:
                os.ftruncate(self._fd, self._size)
        except OSError as trunc_err:
            self._log.error("journal %s: cannot cut a partial write: %s", self._path, trunc_err)


def fsync_dir(directory: Path) -> None:
    """Make a newly created file's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
