"""One agent's recording file: JSONL, capped at ``max_bytes`` and rotated to ``NAME.jsonl.1`` ...
``NAME.jsonl.N`` (the oldest dropped), so a chatty agent cannot fill the disk.

Every segment starts with the same preamble (the recording's header and the agent's spawn
entries), so each file can be read, and replayed from, on its own. Writes are buffered and
flushed from the kernel's housekeeping tick and at stop, not per line: a syscall's cost stays a
few microseconds, and a kernel crash loses at most one tick of recording.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, final

log = logging.getLogger(__name__)

BUFFER_BYTES = 64 << 10


@final
class RotatingJsonl:
    """Append-only lines with a size cap. Lines are ASCII (``len`` is their size in bytes).

    :param max_bytes: a segment's size before the next line rotates it (a single longer line
        still gets a segment of its own).
    :param rotate: rotated segments kept; 0 keeps only the current one.
    :param preamble: the lines each new segment starts with.
    """

    def __init__(self, path: Path, *, max_bytes: int, rotate: int, preamble: Callable[[], list[str]]) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.rotate = rotate
        self.preamble = preamble
        self.size = 0
        self.rotations = 0
        self.written = 0
        self.failed = False
        self._file: IO[str] | None = None
        self._dirty = False

    def open(self) -> None:
        """Create the file with its preamble now (it is otherwise made by the first write)."""
        if self._file is None and not self.failed:
            try:
                self._open()
            except OSError as err:
                self._fail(err)

    def write(self, line: str) -> None:
        if self.failed:
            return
        try:
            if self._file is None:
                self._open()
            elif self.size + len(line) + 1 > self.max_bytes:
                self._rotate()
            assert self._file is not None  # noqa: S101 - _open set it
            self._file.write(line)
            self._file.write("\n")
        except OSError as err:
            self._fail(err)
            return
        self.size += len(line) + 1
        self.written += len(line) + 1
        self._dirty = True

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "w", encoding="ascii", buffering=BUFFER_BYTES)
        self.size = 0
        for line in self.preamble():
            self._file.write(line + "\n")
            self.size += len(line) + 1

    def _rotate(self) -> None:
        assert self._file is not None  # noqa: S101
        self._file.close()
        self._file = None
        if self.rotate == 0:
            self.path.unlink(missing_ok=True)
        else:
            oldest = self._segment(self.rotate)
            oldest.unlink(missing_ok=True)
            for n in range(self.rotate - 1, 0, -1):
                if self._segment(n).exists():
                    os.replace(self._segment(n), self._segment(n + 1))
            os.replace(self.path, self._segment(1))
        self.rotations += 1
        self._open()

    def _segment(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _fail(self, err: OSError) -> None:
        log.error("recording: cannot write %s: %s; this file stops here", self.path, err)
        self.failed = True
        if self._file is not None:
            with contextlib.suppress(OSError):  # already failing: the error was logged
                self._file.close()
            self._file = None

    def flush(self) -> None:
        if self._dirty and self._file is not None:
            self._dirty = False
            try:
                self._file.flush()
            except OSError as err:
                self._fail(err)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            try:
                self._file.close()
            except OSError as err:
                log.error("recording: closing %s: %s", self.path, err)
            self._file = None
