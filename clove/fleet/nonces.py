"""The nonces of accepted fleet commands, remembered across a restart (docs/fleet.md, "Commands").

A board refuses a signed command whose nonce it has already accepted inside the time window.
Kept only in memory, that memory would end with the kernel: a board restarted inside the window
could be handed a command captured before the restart and accept it again. So each accepted
nonce is also written to ``<state dir>/fleet/nonces.jsonl`` **before** the command runs, one
JSON object a line::

    {"boot": "<boot id>"}                  the first line: the OS boot the entries were written in
    {"n": "<nonce>", "t": <issued_at>}     a nonce accepted
    {"h": <time>}                          the horizon: a command issued at or before it is refused

**Why no fsync per command.** A ``write`` is in the OS's page cache when it returns, so it
survives the kernel process being killed, crashing or restarted (the restarts this guards
against) without waiting for the disk on the kernel's loop (an fsync here took 1 ms at the
median and 18–43 ms at p99 on a loaded machine). Only an OS crash or power cut can lose it, and
then the machine has rebooted: the file's boot id (``/proc/sys/kernel/random/boot_id``) is not
the current one, so the start is treated as refuse-safe (below). Where there is no boot id to
read, each write is fsynced instead and the file says ``"boot": "synced"``.

The horizon moves when the memory's bound (``max_nonces``) forces the oldest nonce out (a
command older than the oldest forgotten one might be a replay of it), and at a start whose file
cannot be trusted. Expired nonces (issued more than ``window`` seconds ago) are dropped, and the
file is rewritten (a temporary file renamed over it) whenever it holds more than twice the live
entries, and at every start: it stays within about ``2 * max_nonces`` lines.

**Refuse-safe start.** A start loads the file; a last line cut short by a crash during its
write is ignored (its command had not been accepted: that waits for the write). When the file
is missing (a first start, or a state dir that lost it), was written before the OS last
booted, is unreadable, larger than its bound, or holds a line that is not an entry, nothing says
which commands were accepted before, so the horizon becomes the start time: every command
issued before this start is refused (``fleet.replayed``), and commands issued from then on are
decided as usual. Only an unusable file (not a missing or an older boot's one) is reported, as
:attr:`SeenNonces.problem`, for the journal.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final, final

import orjson

__all__ = ["COMPACT_MIN_LINES", "MAX_LINE_BYTES", "SYNCED", "SeenNonces", "current_boot_id"]

#: A nonce is at most 128 characters (the policy refuses longer ones); a line is well under this.
MAX_LINE_BYTES: Final = 512
#: The file is not rewritten while it has fewer lines than this, however few are live.
COMPACT_MIN_LINES: Final = 1024
BOOT_ID_FILE: Final = "/proc/sys/kernel/random/boot_id"
#: The file's boot line where there is no boot id: every write was fsynced.
SYNCED: Final = "synced"


def current_boot_id() -> str | None:
    """This OS boot's id (Linux), or ``None`` where there is none to read."""
    try:
        with open(BOOT_ID_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


@final
class SeenNonces:
    """Accepted nonces inside the window, oldest first, at most ``max_nonces``; kept in
    ``path`` when one is given (memory only otherwise, and then a restart forgets them).

    :param clock: the board's wall clock (issued times are the operator's wall clock).
    :param boot_id: this OS boot's id (default: read from /proc); ``None``: fsync every write.
    """

    def __init__(
        self, *, window: float, max_nonces: int, path: Path | None = None, clock: Callable[[], float] = time.time,
        boot_id: str | None | Callable[[], str | None] = current_boot_id,
    ) -> None:  # fmt: skip
        self.window = window
        self.max_nonces = max_nonces
        self.path = path
        self.boot_id = boot_id() if callable(boot_id) else boot_id
        self._boot_line = SYNCED if self.boot_id is None else self.boot_id
        #: nonce → issued_at, in the order accepted. Mutated in place, never replaced.
        self.entries: OrderedDict[str, float] = OrderedDict()
        #: Commands issued at or before this are refused (possibly replays of forgotten ones).
        self.horizon = -math.inf
        #: Why the file could not be used at start (then the horizon is the start time).
        self.problem: str | None = None
        self._horizon_why = "older than the oldest command this board had to forget"
        self._lines = 0  # lines in the file
        self._rewrite = True  # the next write rewrites the whole file (a start, a failed append)
        if path is not None:
            self._load(path, clock())

    # ---- deciding ------------------------------------------------------------------------------

    def refusal(self, nonce: str, issued: float, now: float) -> str | None:
        """Why a command with ``nonce`` issued at ``issued`` must be refused as a replay, or
        ``None``. Forgets the nonces that have left the window first."""
        self._expire(now)
        if nonce in self.entries:
            return "this command was already received"
        if issued <= self.horizon:
            return f"issued before {self.horizon:.3f}, {self._horizon_why}: it may be a replay"
        return None

    def remember(self, nonce: str, issued: float) -> None:
        """Remember an accepted nonce, in the file when there is one (call before acting on it).

        :raises OSError: the file could not be written: the nonce is not remembered (its
            command must be refused, and may come again), and the next call rewrites the whole
            file (a part of this line may have landed).
        """
        self.entries[nonce] = issued
        horizon_moved = False
        if len(self.entries) > self.max_nonces:
            _, oldest = self.entries.popitem(last=False)
            if oldest > self.horizon:
                self.horizon, self._horizon_why, horizon_moved = oldest, "older than the oldest command this board had to forget", True
        if self.path is None:
            return
        try:
            if self._rewrite or self._lines + 2 > max(COMPACT_MIN_LINES, 2 * len(self.entries)):
                self._write_all(self.path)
                return
            line = orjson.dumps({"n": nonce, "t": issued}) + b"\n"
            if horizon_moved:
                line += orjson.dumps({"h": self.horizon}) + b"\n"
            self._append(self.path, line)
        except OSError:
            self.entries.pop(nonce, None)
            raise

    def _expire(self, now: float) -> None:
        """Nonces issued before the window began cannot come back as current: forget them."""
        oldest_current = now - self.window
        while self.entries:
            nonce, issued = next(iter(self.entries.items()))
            if issued >= oldest_current:
                break
            del self.entries[nonce]

    # ---- the file -------------------------------------------------------------------------------

    def _load(self, path: Path, now: float) -> None:
        bound = (2 * self.max_nonces + COMPACT_MIN_LINES + 2) * MAX_LINE_BYTES
        try:
            with open(path, "rb") as f:
                data = f.read(bound + 1)
        except FileNotFoundError:
            self._refuse_before(now, "with no record of the nonces accepted before this start")
            data = b""
        except OSError as err:
            self._unusable(now, f"cannot read {path}: {err}")
            data = b""
        if len(data) > bound:
            self._unusable(now, f"{path} is over its bound of {bound} bytes")
            data = b""
        lines = data.split(b"\n")
        boots: list[str] = []
        for number, line in enumerate(lines[:-1], 1):  # the last piece has no newline: a torn append, or b""
            if not self._take(line, boots):
                self._unusable(now, f"{path}:{number}: not a nonce entry")
                break
        if data and boots[:1] != [SYNCED] and boots[:1] != [self._boot_line]:
            # Written in another boot without fsync (or before boot lines): what the crash took is unknown.
            self._refuse_before(now, "whose nonces were written before the machine last started")
        self._expire(now)
        with contextlib.suppress(OSError):  # a start tidies up (the torn tail, the expired); retried on the next write
            self._write_all(path)

    def _take(self, line: bytes, boots: list[str]) -> bool:
        """One line into memory (a boot line onto ``boots``); whether it was an entry."""
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(entry, dict):
            return False
        if entry.keys() == {"boot"} and isinstance(entry["boot"], str) and len(entry["boot"]) <= 64:
            boots.append(entry["boot"])
            return True
        if entry.keys() == {"h"} and _is_time(entry["h"]):
            self.horizon = max(self.horizon, float(entry["h"]))
            return True
        nonce, issued = entry.get("n"), entry.get("t")
        if entry.keys() != {"n", "t"} or not isinstance(nonce, str) or not 1 <= len(nonce) <= 128 or not isinstance(issued, int | float) or not _is_time(issued):
            return False
        self.entries[nonce] = float(issued)
        self.entries.move_to_end(nonce)
        while len(self.entries) > self.max_nonces:
            _, oldest = self.entries.popitem(last=False)
            self.horizon = max(self.horizon, oldest)
        return True

    def _refuse_before(self, now: float, why: str) -> None:
        if now > self.horizon:
            self.horizon, self._horizon_why = now, f"this board's start, {why}"

    def _unusable(self, now: float, problem: str) -> None:
        self.problem = f"{problem}; commands issued before this start are refused"
        self._refuse_before(now, "whose record of accepted nonces could not be read")

    def _append(self, path: Path, data: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                _write_fully(fd, data)  # one small write: whole, or torn only by a crash
                if self.boot_id is None:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self._rewrite = True  # a part may have landed: start over with a whole file
            raise
        self._lines += data.count(b"\n")

    def _write_all(self, path: Path) -> None:
        """The live entries (and the horizon) into a new file that replaces the old one."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = [orjson.dumps({"boot": self._boot_line})]
        lines += [orjson.dumps({"h": self.horizon})] if math.isfinite(self.horizon) else []
        lines += [orjson.dumps({"n": n, "t": t}) for n, t in self.entries.items()]
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_fully(fd, b"".join(line + b"\n" for line in lines))
                if self.boot_id is None:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if self.boot_id is None:
                _fsync_dir(path.parent)
        except OSError:
            self._rewrite = True
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._lines, self._rewrite = len(lines), False


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
