"""Landlock (Linux 5.13+) through raw syscalls: an unprivileged, stackable allowlist of what the
agent may touch. Clove uses it as a second wall behind the mount namespace and the agent's uid:
read and execute everywhere, write only under the agent's writable paths, no TCP unless the
agent has network (or, in a network namespace of its own, a connect to its relays' ports and
nothing else: no bind), no abstract Unix sockets and no signals to processes outside the sandbox.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable
from typing import Final

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_SYS_CREATE_RULESET: Final = 444
_SYS_ADD_RULE: Final = 445
_SYS_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1
_RULE_PATH_BENEATH: Final = 1
_RULE_NET_PORT: Final = 2  # ABI 4

FS_EXECUTE: Final = 1 << 0
FS_WRITE_FILE: Final = 1 << 1
FS_READ_FILE: Final = 1 << 2
FS_READ_DIR: Final = 1 << 3
FS_REMOVE_DIR: Final = 1 << 4
FS_REMOVE_FILE: Final = 1 << 5
FS_MAKE_CHAR: Final = 1 << 6
FS_MAKE_DIR: Final = 1 << 7
FS_MAKE_REG: Final = 1 << 8
FS_MAKE_SOCK: Final = 1 << 9
FS_MAKE_FIFO: Final = 1 << 10
FS_MAKE_BLOCK: Final = 1 << 11
FS_MAKE_SYM: Final = 1 << 12
FS_REFER: Final = 1 << 13  # ABI 2
FS_TRUNCATE: Final = 1 << 14  # ABI 3
FS_IOCTL_DEV: Final = 1 << 15  # ABI 5
NET_BIND_TCP: Final = 1 << 0  # ABI 4
NET_CONNECT_TCP: Final = 1 << 1
SCOPE_ABSTRACT_UNIX: Final = 1 << 0  # ABI 6
SCOPE_SIGNAL: Final = 1 << 1

_READ: Final = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    result = _libc.syscall(
        ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(0, int(result))


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def restrict(
    *,
    writable: Iterable[str],
    readable: Iterable[str] = ("/",),
    deny_tcp: bool = True,
    connect_ports: Iterable[int] = (),
    scope_signals: bool = True,
) -> dict[str, bool]:
    """Confine the calling process (and its future children) for good.

    :param writable: paths under which every file operation is allowed.
    :param readable: paths under which reading and executing are allowed.
    :param connect_ports: with ``deny_tcp``, the TCP ports a connect may still reach (any
        address: the caller's network namespace decides which addresses exist).
    :returns: what was enforced: ``{"fs", "tcp", "abstract_unix", "signals"}``.
    :raises OSError: when Landlock exists but a call fails (the caller decides to abort).
    """
    abi = abi_version()
    if abi < 1:
        return {"fs": False, "tcp": False, "abstract_unix": False, "signals": False}
    fs = _fs_rights(abi)
    net = (NET_BIND_TCP | NET_CONNECT_TCP) if (deny_tcp and abi >= 4) else 0
    scoped = 0
    if abi >= 6:
        scoped = SCOPE_ABSTRACT_UNIX | (SCOPE_SIGNAL if scope_signals else 0)
    attr = _RulesetAttr(fs=fs, net=net, scoped=scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        for path, allowed in [*((p, _READ) for p in readable), *((p, fs) for p in writable)]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                rule = _PathBeneath(allowed=allowed & fs if os.path.isdir(path) else allowed & _file_rights(fs), parent_fd=fd)
                if _libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
        if net:
            for port in sorted(set(connect_ports)):
                net_rule = _NetPort(allowed=NET_CONNECT_TCP, port=port)
                if _libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ruleset, _RULE_NET_PORT, ctypes.byref(net_rule), 0) < 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule tcp port {port}: {os.strerror(err)}")
        if _libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ruleset, 0) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return {"fs": True, "tcp": bool(net), "abstract_unix": bool(scoped & SCOPE_ABSTRACT_UNIX), "signals": bool(scoped & SCOPE_SIGNAL)}


def _file_rights(fs: int) -> int:
    # Rules on a regular file may only carry file rights (EINVAL otherwise).
    return fs & (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV)
