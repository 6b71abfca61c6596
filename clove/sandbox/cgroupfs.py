"""The cgroup filesystem behind a small Protocol, plus the parsers for its file formats.

Every cgroup operation in Clove is one of six filesystem calls (:class:`CgroupFS`), so the
backends run unchanged against the real ``/sys/fs/cgroup`` (:class:`RealCgroupFS`) or the
in-memory kernel model in :mod:`clove.testing.cgroupfs`. Errors are plain :class:`OSError` with
the errno the kernel would give (``EBUSY`` from ``rmdir`` on a populated cgroup, ``EINVAL`` for a
malformed value); :func:`write_control` turns a failed write into a :class:`SandboxError` naming
the file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, final, runtime_checkable

from clove.errors import SandboxError

__all__ = [
    "CgroupFS",
    "ProcCgroupEntry",
    "RealCgroupFS",
    "check_component",
    "parse_keyed",
    "parse_proc_cgroup",
    "read_int",
    "read_keyed",
    "is_live_kernel",
    "is_pid_alive",
    "read_pids",
    "remove_stale_dirs",
    "stale_dirs",
    "resolve_own_dir",
    "rmdir_quiet",
    "write_control",
]

log = logging.getLogger(__name__)

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@runtime_checkable
class CgroupFS(Protocol):
    """The filesystem operations the cgroup backends need; all raise :class:`OSError`."""

    def mkdir(self, path: Path) -> None:
        """Create one directory (not its parents); ``FileExistsError`` if it exists."""

    def rmdir(self, path: Path) -> None:
        """Remove one empty cgroup directory; ``EBUSY`` while it has tasks or children."""

    def read_text(self, path: Path) -> str:
        """Read a whole control file."""

    def write_text(self, path: Path, text: str) -> None:
        """Write ``text`` to a control file in one ``write(2)``."""

    def exists(self, path: Path) -> bool:
        """Whether ``path`` names a file or directory."""

    def listdir(self, path: Path) -> list[str]:
        """Names of the entries (files and sub-cgroups) in a directory."""


@final
class RealCgroupFS:
    """:class:`CgroupFS` on the real filesystem."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read_text(self, path: Path) -> str:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()

    def write_text(self, path: Path, text: str) -> None:
        # One unbuffered write: cgroupfs parses each write(2) as one command.
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode("ascii"))
        finally:
            os.close(fd)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)


@dataclass(frozen=True, slots=True)
class ProcCgroupEntry:
    """One line of ``/proc/<pid>/cgroup``: ``hierarchy-id:controller-list:path``.

    :param hierarchy: the hierarchy id; ``0`` with no controllers is the cgroup2 hierarchy.
    :param controllers: the v1 controllers (and ``name=`` tags) bound to that hierarchy.
    :param path: the process's cgroup, relative to the hierarchy's root.
    """

    hierarchy: int
    controllers: tuple[str, ...]
    path: str

    @property
    def is_v2(self) -> bool:
        """True for the unified (cgroup2) hierarchy line, ``0::/path``."""
        return self.hierarchy == 0 and not self.controllers


def parse_proc_cgroup(text: str) -> list[ProcCgroupEntry]:
    """Parse ``/proc/self/cgroup``; malformed lines are skipped with a debug log."""
    entries: list[ProcCgroupEntry] = []
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            if line.strip():
                log.debug("ignoring malformed /proc/self/cgroup line %r", line)
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        entries.append(ProcCgroupEntry(int(parts[0]), controllers, parts[2] or "/"))
    return entries


def parse_keyed(text: str) -> dict[str, int]:
    """Parse a flat-keyed file (``key value`` per line, as ``cpu.stat`` and ``memory.events``).

    Lines whose value is not an integer are skipped.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_keyed(fs: CgroupFS, path: Path) -> dict[str, int]:
    """:func:`parse_keyed` of a file, or an empty map if it cannot be read."""
    try:
        return parse_keyed(fs.read_text(path))
    except OSError:
        return {}


def read_int(fs: CgroupFS, path: Path) -> int | None:
    """The integer in a single-value file, or ``None`` if unreadable or not an integer (``max``)."""
    try:
        return int(fs.read_text(path).strip())
    except (OSError, ValueError):
        return None


def read_pids(fs: CgroupFS, path: Path) -> list[int]:
    """The pids in a ``cgroup.procs`` file; an empty list if the cgroup is gone.

    :raises SandboxError: the file exists but cannot be read (for example ``EACCES``).
    """
    try:
        text = fs.read_text(path)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise SandboxError(
            f"cannot read {path}: {err.strerror or err}", details={"path": str(path), "errno": err.errno}
        ) from err
    return [int(tok) for tok in text.split() if tok.isdigit()]


def write_control(fs: CgroupFS, path: Path, value: str) -> None:
    """Write ``value`` to a control file.

    :raises SandboxError: the write failed; the message names the file, the value and the errno.
    """
    try:
        fs.write_text(path, value)
    except OSError as err:
        reason = err.strerror or os.strerror(err.errno or errno.EIO)
        raise SandboxError(
            f"cannot write {value!r} to {path}: {reason}",
            details={"path": str(path), "value": value, "errno": err.errno},
        ) from err


def check_component(kind: str, name: str) -> None:
    """Refuse a name that is not one safe path component (no ``/``, no ``..``, no leading dot).

    :raises SandboxError: ``name`` is unsafe.
    """
    if not isinstance(name, str) or not _COMPONENT.match(name):
        raise SandboxError(
            f"invalid cgroup {kind} {name!r}: use letters, digits, '_', '.', '-' (max 128)",
            details={kind: str(name)},
        )


def resolve_own_dir(fs: CgroupFS, mount: Path, own_path: str, *, pid: int) -> Path | None:
    """The directory of this process's cgroup in the hierarchy mounted at ``mount``.

    Normally that is ``mount / own_path``. A container without a cgroup namespace may mount a
    sub-cgroup as the hierarchy's root; then ``own_path`` is longer than what is visible, and
    the longest visible suffix whose ``cgroup.procs`` lists ``pid`` is taken.

    :returns: the directory, or ``None`` if it cannot be found (or ``own_path`` contains ``..``,
        which happens when the process is outside its cgroup namespace's root).
    """
    parts = [p for p in own_path.split("/") if p]
    if ".." in parts:
        return None
    direct = mount.joinpath(*parts)
    if fs.exists(direct / "cgroup.procs"):
        return direct
    for start in range(1, len(parts) + 1):
        candidate = mount.joinpath(*parts[start:])
        try:
            if fs.exists(candidate / "cgroup.procs") and pid in read_pids(fs, candidate / "cgroup.procs"):
                return candidate
        except SandboxError:
            continue
    return None


def rmdir_quiet(fs: CgroupFS, path: Path) -> bool:
    """``rmdir`` that logs a warning instead of raising; True when ``path`` is gone."""
    try:
        fs.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as err:
        log.warning("cannot remove cgroup %s: %s", path, err.strerror or err)
        return False
    return True


def is_pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (``os.kill(pid, 0)``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live_kernel(pid: int) -> bool:
    """Whether ``pid`` is a running Clove kernel, the only owner a ``clove-<pid>`` cgroup can have.

    Not just "the pid exists": pids are reused (``pid_max`` is often 32768), and a dead kernel's
    pid held by some other process (or its unreaped zombie) must not keep its cgroups alive. A
    kernel names its main thread ``clove-kernel``; kernels started before that are recognised by
    their command line (``clove kernel``, ``python -m clove kernel``). When ``/proc`` cannot be
    read for another reason the answer is True: never touch what might be live.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    head, _, tail = stat.rpartition(b")")
    fields = tail.split()
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    if head.partition(b"(")[2] == b"clove-kernel":
        return True
    args = cmdline.split(b"\0")
    return b"kernel" in args and any(a == b"clove" or a.endswith(b"/clove") for a in args)


def stale_dirs(
    fs: CgroupFS,
    base_dirs: Iterable[Path],
    kernel_tag: str,
    *,
    pid_alive: Callable[[int], bool] | None = None,
) -> list[Path]:
    """The parent cgroups of dead kernels in ``base_dirs``: named ``kernel_tag`` without its
    trailing pid, then another pid and optionally ``-kernel`` (``clove-999``,
    ``clove-999-kernel`` for the tag ``clove-12345``), whose pid is not alive."""
    alive = pid_alive if pid_alive is not None else is_pid_alive
    prefix = kernel_tag.rstrip("0123456789")
    if prefix == kernel_tag:
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d+)(?:-kernel)?")
    found: list[Path] = []
    for base in base_dirs:
        try:
            names = sorted(fs.listdir(base))
        except OSError:
            continue
        for entry in names:
            m = pattern.fullmatch(entry)
            if m is None or entry in (kernel_tag, f"{kernel_tag}-kernel") or alive(int(m.group(1))):
                continue
            if fs.exists(base / entry / "cgroup.procs"):
                found.append(base / entry)
    return found


def remove_stale_dirs(
    fs: CgroupFS,
    base_dirs: Iterable[Path],
    kernel_tag: str,
    *,
    pid_alive: Callable[[int], bool] | None = None,
) -> list[Path]:
    """``rmdir`` the cgroups of dead kernels (see :func:`stale_dirs`) and their empty children.
    Busy cgroups stay.

    :returns: the directories removed, children before their parent.
    """
    removed: list[Path] = []
    for stale in stale_dirs(fs, base_dirs, kernel_tag, pid_alive=pid_alive):
        try:
            children = sorted(fs.listdir(stale))
        except OSError:
            continue
        for child in children:
            if fs.exists(stale / child / "cgroup.procs") and rmdir_quiet(fs, stale / child):
                removed.append(stale / child)
        if rmdir_quiet(fs, stale):
            removed.append(stale)
    return removed
