"""Per-agent log capture: the agent's stdout and stderr are a pipe the kernel drains into a
size-capped file (``agent.log``, rotated once to ``agent.log.1``), so a chatty agent cannot fill
the disk and a silent one costs nothing. Reads never block: the pipe is non-blocking."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_READ_CHUNK = 65536


class LogCapture:
    """One agent's log file and the read end of its output pipe (shared by incarnations)."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.read_fd: int | None = None
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the agent
        os.chmod(path, 0o600)
        self._size = self._file.tell()

    def new_pipe(self) -> int:
        """A fresh pipe for the next incarnation; returns the write end to hand to the child.
        The previous read end (if any) keeps draining until the old writers are gone."""
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self.close_pipe()
        self.read_fd = r
        return w

    def drain(self) -> bool:
        """Copy what is in the pipe to the file; False once the writers have all gone (EOF)."""
        if self.read_fd is None:
            return False
        for _ in range(16):  # bounded, so one agent cannot monopolise the loop
            try:
                data = os.read(self.read_fd, _READ_CHUNK)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.write(data)
        return True

    def write(self, data: bytes) -> None:
        """Append ``data`` (also used for the kernel's own notes about the agent)."""
        if len(data) > self.max_bytes:
            data = data[-self.max_bytes :]  # only the newest fits under the cap
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        try:
            self._file.write(data)
            self._size += len(data)
        except OSError as err:
            log.error("cannot write %s: %s", self.path, err)

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        os.chmod(self.path, 0o600)
        self._size = 0

    def read(self, offset: int, max_bytes: int) -> tuple[bytes, int, int]:
        """Read from the current file: ``(data, next_offset, size)``. An offset past the end
        (the file rotated) restarts at 0; a negative offset means the last ``-offset`` bytes."""
        size = self._size
        if offset < 0:
            offset = max(0, size + offset)
        if offset > size:
            offset = 0
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(min(max_bytes, size - offset))
        return data, offset + len(data), size

    def close_pipe(self) -> None:
        if self.read_fd is not None:
            self.drain()
            os.close(self.read_fd)
            self.read_fd = None

    def close(self) -> None:
        self.close_pipe()
        self._file.close()
