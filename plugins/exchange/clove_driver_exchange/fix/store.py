"""What a FIX session must remember across reconnects and restarts: the next sequence number
each way, and every application message it sent (a counterparty may ask for any of them again).

The file is an append-only journal of JSON lines, one per change, so a send costs one small
append rather than a rewrite:

* ``{"s": N}`` — the next sender sequence number is N;
* ``{"t": N}`` — the next target (expected inbound) sequence number is N;
* ``{"m": SEQ, "raw": TEXT}`` — application message SEQ as sent (latin-1 text of its bytes);
  it also means the next sender sequence number is SEQ + 1.

Every append is flushed to the kernel before the call returns, so a killed process loses
nothing; with ``fsync=True`` (the default) it is also on the disk, so a power cut loses
nothing either. :meth:`SeqStore.defer_sync` hands the fsync to a group commit instead: each
append then only says it wrote, and the committer syncs many appends at once (whoever sends a
message waits for that). A torn last line (the machine died mid-write) is ignored on load. On open, on
:meth:`SeqStore.reset`, and when the journal has grown :data:`COMPACT_AFTER` lines past its
content, the file is rewritten compactly through a temporary file and an atomic rename, so a
crash leaves either the old journal or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Final

__all__ = ["COMPACT_AFTER", "SeqStore"]

#: Sequence-number lines appended before the journal is rewritten compactly.
COMPACT_AFTER: Final = 100_000


class SeqStore:
    """The persistent state of one FIX session, in the file at ``path`` (created if missing).

    Thread-safe. The session calls it under its own lock; tests and tools may read it freely.

    :param fsync: make every change durable on disk, not only in the kernel (slower: ~0.2 ms).
    :raises OSError: the file cannot be created or read.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._next_sender = 1
        self._next_target = 1
        self._messages: dict[int, bytes] = {}
        self._appended = 0
        self._file: IO[str] | None = None
        self._wrote: Callable[[bool], None] | None = None
        with self._lock:
            self._load()
            self._rewrite()

    # ---- reading ------------------------------------------------------------------------------

    @property
    def next_sender_seq(self) -> int:
        """The MsgSeqNum the next outbound message gets."""
        return self._next_sender

    @property
    def next_target_seq(self) -> int:
        """The MsgSeqNum expected on the next inbound message."""
        return self._next_target

    def get_messages(self, begin: int, end: int = 0) -> list[tuple[int, bytes]]:
        """Stored application messages with ``begin <= seq <= end`` (``end`` 0: no upper bound),
        in sequence order."""
        with self._lock:
            top = self._next_sender - 1 if end <= 0 else end
            return [(seq, self._messages[seq]) for seq in sorted(self._messages) if begin <= seq <= top]

    def __len__(self) -> int:
        return len(self._messages)

    # ---- changing -----------------------------------------------------------------------------

    def set_next_sender_seq(self, seq: int) -> None:
        with self._lock:
            self._next_sender = seq
            self._append({"s": seq})

    def set_next_target_seq(self, seq: int) -> None:
        with self._lock:
            self._next_target = seq
            # Nothing waits for it: a number lost in a crash makes the counterparty resend.
            self._append({"t": seq}, urgent=False)

    def store_message(self, seq: int, raw: bytes) -> None:
        """Keep application message ``seq`` for resends; the next sender number becomes ``seq + 1``."""
        with self._lock:
            self._messages[seq] = raw
            self._next_sender = seq + 1
            self._append({"m": seq, "raw": raw.decode("latin-1")})

    def reset(self) -> None:
        """Both sequence numbers back to 1 and no stored messages (a ResetSeqNumFlag logon)."""
        with self._lock:
            self._next_sender = self._next_target = 1
            self._messages.clear()
            self._rewrite()

    def defer_sync(self, wrote: Callable[[bool], None]) -> None:
        """Leave the fsync to a group commit: after each append call ``wrote(urgent)`` (urgent:
        a message may not leave before it is durable), and let the committer call
        :meth:`sync_with`. Without it (and with ``fsync``) every append is synced at once."""
        with self._lock:
            self._wrote = wrote

    def sync_with(self, sync: Callable[[int], None]) -> None:
        """The committer's: ``sync`` the file holding the journal now, outside the lock, so
        appends go on meanwhile (a duplicate descriptor: a compaction may replace the file)."""
        with self._lock:
            if self._file is None:
                return
            fd = os.dup(self._file.fileno())
        try:
            sync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> SeqStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the file -----------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8", newline="\n") as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return
        for line in lines:
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn write: the rest of the journal is still good
            if not isinstance(record, dict):
                continue
            if "m" in record and isinstance(record.get("raw"), str):
                seq = int(record["m"])
                self._messages[seq] = record["raw"].encode("latin-1")
                self._next_sender = seq + 1
            elif "s" in record:
                self._next_sender = int(record["s"])
            elif "t" in record:
                self._next_target = int(record["t"])

    def _rewrite(self) -> None:
        """Replace the journal by its compact form (temp file, fsync, rename, fsync the directory)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".seqstore-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                for seq in sorted(self._messages):
                    f.write(json.dumps({"m": seq, "raw": self._messages[seq].decode("latin-1")}) + "\n")
                f.write(json.dumps({"s": self._next_sender}) + "\n")
                f.write(json.dumps({"t": self._next_target}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._appended = 0

    def _append(self, record: dict[str, object], *, urgent: bool = True) -> None:
        if self._file is None:
            raise ValueError(f"SeqStore {self.path} is closed")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        if self._wrote is not None:
            self._wrote(urgent)
        elif self.fsync:
            os.fsync(self._file.fileno())
        self._appended += 1
        if self._appended >= COMPACT_AFTER + len(self._messages):
            self._rewrite()
