"""Thin ctypes wrappers over the Linux calls Python 3.11 lacks: unshare, setns, mount, umount2,
mount_setattr, prctl. Each raises :class:`OSError` with errno on failure, like the ``os`` module does.

Mostly the zygote's per-agent children call these, after fork and before the agent runs (the
kernel names itself with one; the zygote polls pidfds with another).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import select
from typing import Final

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000

MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_NOEXEC: Final = 0x8
MS_REMOUNT: Final = 0x20
MS_BIND: Final = 0x1000
MS_MOVE: Final = 0x2000
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 0x40000

MNT_DETACH: Final = 0x2

PR_SET_PDEATHSIG: Final = 1
PR_SET_NAME: Final = 15
PR_SET_NO_NEW_PRIVS: Final = 38
PR_SET_CHILD_SUBREAPER: Final = 36

_AT_FDCWD: Final = -100
_AT_RECURSIVE: Final = 0x8000
_MOUNT_ATTR_RDONLY: Final = 0x1
_MOUNT_ATTR_NOSUID: Final = 0x2
_MOUNT_ATTR_NODEV: Final = 0x4

# Syscall numbers are shared by x86_64 and aarch64 for these (the "generic" table).
_SYS_MOUNT_SETATTR: Final = 442
_SYSCALLS_KNOWN = platform.machine() in ("x86_64", "aarch64")


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    """Move the caller into new namespaces (``CLONE_NEWPID`` applies to its next child)."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2)."""
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def setns(fd: int, nstype: int) -> None:
    """setns(2): join the namespace ``fd`` names (the caller must be single-threaded)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def make_tree_readonly(path: str) -> None:
    """Make every mount at and below ``path`` read-only, nosuid and nodev-free in this mount
    namespace (mount_setattr with AT_RECURSIVE, Linux 5.12+)."""
    if not _SYSCALLS_KNOWN:
        raise OSError(38, "mount_setattr: unknown syscall number on this architecture")
    attr = _MountAttr(attr_set=_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID)
    _check(
        _libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(_AT_FDCWD),
            path.encode(),
            ctypes.c_uint(_AT_RECURSIVE),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        f"mount_setattr {path}",
    )


def prctl(option: int, arg2: int = 0) -> None:
    """prctl(2) with one argument."""
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), 0, 0, 0), f"prctl {option}")


def set_no_new_privs() -> None:
    """No exec can ever grant privileges again (setuid binaries, file caps)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper() -> None:
    """Orphaned descendants are re-parented to the caller, so it can reap them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: int) -> None:
    """Deliver ``sig`` to the caller when its parent thread dies."""
    prctl(PR_SET_PDEATHSIG, sig)


def set_process_name(name: str) -> None:
    """Name the calling thread (``/proc/<pid>/comm`` for the main thread; at most 15 bytes)."""
    raw = name.encode()[:15]
    _check(_libc.prctl(ctypes.c_int(PR_SET_NAME), ctypes.c_char_p(raw), 0, 0, 0), "prctl PR_SET_NAME")


def pidfd_exited(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` has exited (its pidfd polls readable), without waiting."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
