"""A seccomp filter for agents: allow by default, refuse (EPERM) the syscalls an agent never
needs and an attacker loves: tracing other processes, loading kernel code, mounting, entering
namespaces, keyrings, and (without network) creating IP sockets.

The filters are compiled once in the zygote (libseccomp through pyseccomp) and loaded per
agent, which costs about 0.7 ms. Without libseccomp the isolation report says ``seccomp: false``.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

log = logging.getLogger(__name__)

DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "mount_setattr", "unshare", "setns",
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "vhangup", "lookup_dcookie",
)  # fmt: skip
_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_PACKET)


def build_filters() -> dict[bool, Any] | None:
    """``{network: filter}`` for both network settings, or ``None`` when seccomp is unusable."""
    try:
        import pyseccomp
    except (ImportError, OSError) as err:  # the package, or libseccomp.so itself, is missing
        log.warning("seccomp unavailable: %s", err)
        return None
    filters: dict[bool, Any] = {}
    for network in (True, False):
        f = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
        for name in DENIED_SYSCALLS:
            try:
                f.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
            except (ValueError, RuntimeError, OSError):
                continue  # not a syscall on this architecture
        families = _IP_FAMILIES if not network else (socket.AF_PACKET,)
        for family in families:
            f.add_rule(pyseccomp.ERRNO(errno.EPERM), "socket", pyseccomp.Arg(0, pyseccomp.EQ, family))
        filters[network] = f
    return filters


def load(filters: dict[bool, Any], *, network: bool) -> None:
    """Confine the caller (no_new_privs must be set already). Raises ``OSError`` on failure."""
    try:
        filters[network].load()
    except (RuntimeError, ValueError) as err:
        raise OSError(errno.EINVAL, f"seccomp load failed: {err}") from None
