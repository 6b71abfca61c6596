"""The journal's disk reserve (loop thread): is there room left for the records of running work?

Space is low while the filesystem holding the journal has less than ``disk_reserve_bytes`` free
(``os.statvfs``, ``f_bavail``), or while the writer's last write, sync or rotation failed (a full
disk, EIO). ``statvfs`` runs at most every :data:`_SPACE_INTERVAL` seconds, and at once when the
writer starts or stops failing; the journal records each change and tells the kernel
(:attr:`Journal.space_low <clove.kernel.audit.journal.Journal.space_low>`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, final

from clove.config import JournalSection

__all__ = ["SpaceReserve"]

_SPACE_INTERVAL = 0.5  # seconds between statvfs checks: space_low is read on every agent request


@final
class SpaceReserve:
    """The reserve check of one journal. Loop thread only.

    :param path: the active file (its directory's filesystem is checked).
    :param settings: ``disk_reserve_bytes``.
    :param failing: whether the writer's last write, sync or rotation failed.
    :param log: where to log the changes (the journal's logger).
    """

    def __init__(self, path: Path, settings: JournalSection, failing: Callable[[], bool], log: logging.Logger) -> None:
        self._path = path
        self._settings = settings
        self._failing = failing
        self._log = log
        self._space_low = False
        self._space_free: int | None = None
        self._space_checked_at = -math.inf
        self._space_saw_failing = False

    @property
    def low(self) -> bool:
        """Space was low at the last check."""
        return self._space_low

    @property
    def free_bytes(self) -> int | None:
        """Free bytes at the last check (``None``: not checked, or ``statvfs`` failed)."""
        return self._space_free

    def due(self, now: float) -> bool:
        """A check is due at ``now`` (monotonic): the interval has passed, or the writer started
        or stopped failing since the last check."""
        return now >= self._space_checked_at + _SPACE_INTERVAL or self._failing() != self._space_saw_failing

    def check(self, now: float) -> dict[str, Any] | None:
        """Check now; if :attr:`low` changed, log it and return the details of the record to
        write (``low``, ``free_bytes``, ``reserve_bytes``, ``writer_failing``, ``path``)."""
        self._space_checked_at = now
        failing = self._space_saw_failing = self._failing()
        try:
            stats = os.statvfs(self._path.parent)
            self._space_free = stats.f_bavail * stats.f_frsize
        except OSError as err:
            self._log.warning("journal %s: statvfs failed: %s", self._path, err)
            self._space_free = None
        reserve = self._settings.disk_reserve_bytes
        low = failing or (self._space_free is not None and self._space_free < reserve)
        if low == self._space_low:
            return None
        self._space_low = low
        details = {"low": low, "free_bytes": self._space_free, "reserve_bytes": reserve,
                   "writer_failing": failing, "path": str(self._path.parent)}  # fmt: skip
        (self._log.error if low else self._log.warning)(
            "journal %s: %s (%s bytes free, reserve %d, writer %s)", self._path,
            "space low: agents' new work is refused" if low else "space ok again",
            self._space_free, reserve, "failing" if failing else "ok")  # fmt: skip
        return details
