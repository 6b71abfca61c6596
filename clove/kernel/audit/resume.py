"""What the journal finds on disk when it opens: the chain head, the recent records, the files.

:func:`resume` creates the active file or continues an existing one: it takes the file's lock,
cuts a trailing partial line (a crash in the middle of a write), and reads backwards only as
much as it needs: the last record (the chain goes on from it), the recent records for the ring,
and the rotated files beside it by name. An empty active file continues the chain of the newest
rotated file (a crash between a rename and the next record). Runs on the opening thread, before
the writer thread starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from clove.errors import InternalError
from clove.kernel.audit.files import read_tail, rotated_files
from clove.kernel.audit.format import GENESIS_HASH, parse_record, record_hash
from clove.kernel.audit.retention import RotatedFile
from clove.kernel.audit.writer import OPEN_FLAGS, fsync_dir

__all__ = ["Resumed", "resume"]


@final
@dataclass(slots=True, kw_only=True)
class Resumed:
    """An opened, locked journal: ``fd`` the active file, ``size`` its bytes of complete records
    (``dropped`` bytes of a partial last line were cut off there), ``first_id`` its first record's
    id, ``last_id``/``last_hash`` the chain head (0 and the genesis hash: no records), ``records``
    the recent records, oldest first, and ``rotated`` the rotated files beside it, oldest first."""

    fd: int
    size: int
    dropped: int
    first_id: int | None
    last_id: int
    last_hash: str
    records: list[dict[str, Any]]
    rotated: list[RotatedFile]


def resume(path: Path, want: int, log: logging.Logger) -> Resumed:
    """Open the journal ``path`` (created with mode 0600, its directory with 0700) and read what
    it holds, up to ``want`` recent records.

    :raises InternalError: another process holds the journal, or its last complete line is
        not a journal record.
    :raises OSError: the directory or file cannot be created or read.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, OPEN_FLAGS, 0o600)
    try:
        found = _Loader(path, want, log).load(fd)
        if created:
            fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return found


class _Loader:
    def __init__(self, path: Path, want: int, log: logging.Logger) -> None:
        self._path = path
        self._want = want
        self._log = log
        self._last_id = 0
        self._last_hash = GENESIS_HASH

    def load(self, fd: int) -> Resumed:
        """Lock the file, cut a partial last line, load the recent records and the chain head."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InternalError(
                f"journal {self._path} is in use by another process", details={"path": str(self._path)}
            ) from None
        os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        want = self._want
        end, lines = read_tail(fd, size, want)
        records = self._tail_records(self._path, end, lines)
        file_first_id = None
        if records:
            file_first_id = _first_id(fd) or records[0]["id"]
        dropped = size - end
        if dropped:
            self._log.warning("journal %s: cut %d bytes of a partial last line at offset %d",
                              self._path, dropped, end)  # fmt: skip
            os.ftruncate(fd, end)
            os.fsync(fd)
        rotated_list: list[RotatedFile] = []
        for found, first, last in rotated_files(self._path):
            try:
                closed_at = found.stat().st_mtime
            except OSError:
                continue
            rotated_list.append(RotatedFile(found.name, first, last, closed_at))
        # Fill the ring (and, for an empty active file, find the chain head) from the newest
        # rotated files: query() sees across a rotation just as before it.
        for rotated in reversed(rotated_list):
            if len(records) >= want and records:
                break
            older = self._rotated_tail(rotated, want - len(records))
            records = older + records
        return Resumed(fd=fd, size=end, dropped=dropped, first_id=file_first_id, last_id=self._last_id,
                       last_hash=self._last_hash, records=records[-want:], rotated=rotated_list)  # fmt: skip

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

    def _rotated_tail(self, rotated: RotatedFile, want: int) -> list[dict[str, Any]]:
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
