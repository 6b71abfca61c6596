"""Paths inside another process's root, opened with another user's permissions: the OS
mechanics under :mod:`clove.kernel.services.files` (``fs.read``, ``fs.write``, ``exec``'s working dir).

* :func:`openat2` with the ``RESOLVE_*`` flags (Linux 5.6+), through ctypes.
* :func:`resolve`: the canonical path of a path below a root directory fd, as a process
  chrooted there would see it. One ``fstatat``/``openat2`` per name, ``..`` never above the
  root, symlinks (magic ``/proc`` links too) read as text and resolved again inside the root.
* :func:`acting_as`: file-system credentials (fsuid, fsgid, groups) of another user for the
  calling thread only.

Syscall numbers are those of x86_64 and aarch64; elsewhere these raise ``ENOSYS``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import platform
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from clove.errors import SandboxError

MAX_SYMLINKS: Final = 40

RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08
RESOLVE_IN_ROOT: Final = 0x10
#: How the final open resolves the canonical path: inside the root, through no link at all.
FINAL: Final = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_STEP: Final = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

_SYSCALL_NUMBERS: Final = {
    "x86_64": {"openat2": 437, "setfsuid": 122, "setfsgid": 123, "setgroups": 116},
    "aarch64": {"openat2": 437, "setfsuid": 151, "setfsgid": 152, "setgroups": 159},
}
_NR = _SYSCALL_NUMBERS.get(platform.machine(), {})
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _syscall(name: str, *args: Any) -> int:
    number = _NR.get(name)
    if number is None:
        raise OSError(errno.ENOSYS, f"{name}: unknown syscall number on {platform.machine()}")
    return int(_libc.syscall(ctypes.c_long(number), *args))


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2) (Linux 5.6+); always ``O_CLOEXEC``. Raises :class:`OSError` like ``os.open``."""
    how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=mode if flags & os.O_CREAT else 0, resolve=resolve)
    fd = _syscall(
        "openat2",
        ctypes.c_int(dir_fd),
        os.fsencode(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


# ---- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """Whose Unix permissions file access uses."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _set_groups(groups: tuple[int, ...] | list[int]) -> None:
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    if _syscall("setgroups", ctypes.c_size_t(len(groups)), array) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")


def _set_fs_ids(uid: int, gid: int) -> None:
    # setfsgid first: once fsuid is not 0 the thread's file capabilities are gone. Both calls
    # return the previous value whatever happens; asking with -1 tells whether they took.
    _syscall("setfsgid", ctypes.c_uint(gid))
    _syscall("setfsuid", ctypes.c_uint(uid))
    if (
        _syscall("setfsuid", ctypes.c_uint(0xFFFFFFFF)) != uid
        or _syscall("setfsgid", ctypes.c_uint(0xFFFFFFFF)) != gid
    ):
        raise OSError(errno.EPERM, f"setfsuid/setfsgid to {uid}/{gid} refused")


@contextlib.contextmanager
def acting_as(creds: Credentials | None) -> Iterator[None]:
    """Run the block with ``creds``' file-system permissions (``None``: the kernel's own).

    Linux keeps credentials per thread and the raw syscalls change only the calling one, so
    libzmq's and the journal's threads are untouched; the loop runs handlers on one thread and
    the previous credentials are back before the block's caller sees anything.

    :raises SandboxError: the switch was refused (the kernel is not root).
    """
    if creds is None:
        yield
        return
    old_uid = _syscall("setfsuid", ctypes.c_uint(0xFFFFFFFF))
    old_gid = _syscall("setfsgid", ctypes.c_uint(0xFFFFFFFF))
    old_groups = os.getgroups()
    try:
        _set_groups(creds.groups)
        _set_fs_ids(creds.uid, creds.gid)
    except OSError as err:
        _restore(old_uid, old_gid, old_groups)
        raise SandboxError(f"cannot act as uid {creds.uid}: {err.strerror}") from None
    try:
        yield
    finally:
        _restore(old_uid, old_gid, old_groups)


def _restore(uid: int, gid: int, groups: list[int]) -> None:
    _syscall("setfsuid", ctypes.c_uint(uid))
    _syscall("setfsgid", ctypes.c_uint(gid))
    _set_groups(groups)


# ---- resolution inside a root ------------------------------------------------------------------


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def resolve(root_fd: int, path: str, *, follow_last: bool = True) -> tuple[str, os.stat_result | None]:
    """The canonical path of ``path`` below ``root_fd``, as a process chrooted there would see
    it: symlinks and ``..`` resolved inside the root, never above it.

    :param follow_last: resolve a symlink in the last component too.
    :returns: the path and the ``lstat`` of what it names, ``None`` when only the last
        component is missing (a file about to be created).
    :raises OSError: ``ENOENT`` (a missing directory on the way), ``ENOTDIR``, ``ELOOP`` (more
        than :data:`MAX_SYMLINKS` links), ``EACCES`` (no search permission).
    """
    parts = deque(_components(path))
    stack: list[tuple[str, int]] = []  # the directories below the root, with an O_PATH fd each
    links = 0

    def here() -> list[str]:
        return [name for name, _ in stack]

    try:
        while parts:
            name = parts.popleft()
            if name == "..":
                if stack:
                    os.close(stack.pop()[1])
                continue
            dir_fd = stack[-1][1] if stack else root_fd
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                if parts:
                    raise
                return "/" + "/".join([*here(), name]), None
            if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=dir_fd)
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop()[1])
                parts.extendleft(reversed(_components(target)))
                continue
            if not parts:
                return "/" + "/".join([*here(), name]), st
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/" + "/".join([*here(), name]))
            stack.append(
                (name, openat2(dir_fd, name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, resolve=_STEP))
            )
        return "/" + "/".join(here()), os.fstat(stack[-1][1] if stack else root_fd)
    finally:
        for _, fd in stack:
            os.close(fd)
