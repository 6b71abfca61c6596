"""Rotation and retention decisions (loop thread): the loop's view of the journal's files.

The loop decides when the active file is full (``max_file_bytes``) and which rotated files
retention deletes (past ``keep_files``, or older than ``keep_days``); the journal records each
decision and the writer thread carries it out in order with the records
(:mod:`clove.kernel.audit.writer`). The view is of what the loop has queued, written or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from clove.config import JournalSection
from clove.kernel.audit.files import rotated_name

__all__ = ["FileSet", "RotatedFile"]

_RETENTION_INTERVAL = 60.0  # seconds between keep_days checks (rotations check at once)
_MAX_DELETED_PER_RECORD = 50  # journal.retention names at most this many files (details lists clip at 100)


@dataclass(slots=True)
class RotatedFile:
    name: str
    first_id: int
    last_id: int
    closed_at: float  # wall clock: keep_days counts from here


@final
class FileSet:
    """The active file's fill and the rotated files kept, as the loop knows them. Loop thread only.

    :param path: the active file; rotated files go beside it (:func:`rotated_name`).
    :param settings: ``max_file_bytes``, ``keep_files`` and ``keep_days``.
    :param clock: the epoch seconds a file is closed at, and ``keep_days`` counts against.
    """

    def __init__(self, path: Path, settings: JournalSection, clock: Callable[[], float]) -> None:
        self._path = path
        self._settings = settings
        self._clock = clock
        #: The rotated files kept, oldest first.
        self.rotated: list[RotatedFile] = []
        self.first_id: int | None = None  # the active file's first record
        self.bytes = 0  # the active file's size, with what is queued
        self.header_bytes = 0  # a file holding only its journal.rotated record is not rotated again
        self._retention_due = -math.inf

    def resumed(self, first_id: int | None, size: int, rotated: list[RotatedFile]) -> None:
        """What :meth:`Journal.open <clove.kernel.audit.journal.Journal.open>` found on disk."""
        self.first_id, self.bytes = first_id, size
        self.rotated.extend(rotated)

    def full(self, line_bytes: int) -> bool:
        """The active file must rotate before a line of ``line_bytes`` (unless it holds only
        its ``journal.rotated`` record)."""
        return self.bytes + line_bytes > self._settings.max_file_bytes and self.bytes > self.header_bytes

    def added(self, record_id: int, line_bytes: int) -> None:
        """Record ``record_id``'s line goes to the active file."""
        if self.first_id is None:
            self.first_id = record_id
        self.bytes += line_bytes

    def rotate(self, last_id: int) -> RotatedFile:
        """Close the active file at record ``last_id``; the next record opens a new one."""
        first = self.first_id if self.first_id is not None else last_id
        previous = RotatedFile(rotated_name(self._path, first, last_id), first, last_id, self._clock())
        self.rotated.append(previous)
        self.first_id, self.bytes, self.header_bytes = None, 0, 0
        return previous

    def header_added(self) -> None:
        """The active file's ``journal.rotated`` record is appended."""
        self.header_bytes = self.bytes

    def retention_due(self, now: float) -> bool:
        """A ``keep_days`` check is due at ``now`` (monotonic); about once a minute."""
        if self._settings.keep_days > 0 and now >= self._retention_due:
            self._retention_due = now + _RETENTION_INTERVAL
            return True
        return False

    def expire(self) -> list[RotatedFile]:
        """The rotated files past ``keep_files`` or older than ``keep_days``, oldest first,
        forgotten here: the journal names them in ``journal.retention`` records and deletes them."""
        keep_files, keep_days = self._settings.keep_files, self._settings.keep_days
        doomed = max(0, len(self.rotated) - keep_files)
        if keep_days > 0:
            cutoff = self._clock() - keep_days * 86400.0
            # Only a prefix: deleting a younger file in the middle would look like tampering.
            while doomed < len(self.rotated) and self.rotated[doomed].closed_at < cutoff:
                doomed += 1
        if not doomed:
            return []
        victims, self.rotated = self.rotated[:doomed], self.rotated[doomed:]
        return victims

    def retention_details(self, victims: list[RotatedFile]) -> list[dict[str, Any]]:
        """The ``details`` of the ``journal.retention`` records naming ``victims``."""
        keep_files, keep_days = self._settings.keep_files, self._settings.keep_days
        return [
            {"deleted": [{"file": v.name, "first_id": v.first_id, "last_id": v.last_id} for v in chunk],
             "keep_files": keep_files, "keep_days": keep_days}
            for chunk in (victims[start : start + _MAX_DELETED_PER_RECORD]
                          for start in range(0, len(victims), _MAX_DELETED_PER_RECORD))
        ]  # fmt: skip
