"""A seccomp filter for agents: allow by default, refuse what an agent never needs and an
attacker loves. This docstring and the constants below are the one list of what is refused:

* **Syscalls** (:data:`DENIED_SYSCALLS`, ``EPERM``): tracing other processes, loading kernel
  code, mounting, entering or creating namespaces (``unshare``, ``setns``), keyrings, clocks,
  swap, reboot, raw I/O ports, file handles.
* **Namespaces through clone** (:data:`NAMESPACE_FLAGS`, ``EPERM``): ``clone`` with any of
  ``CLONE_NEWNS``, ``CLONE_NEWCGROUP``, ``CLONE_NEWUTS``, ``CLONE_NEWIPC``, ``CLONE_NEWUSER``,
  ``CLONE_NEWPID``, ``CLONE_NEWNET`` or ``CLONE_NEWTIME`` set in its flags (its first argument
  on x86_64 and aarch64). A new user namespace would otherwise hand the agent every capability
  inside it, and with them the kernel's namespace-only attack surface (mounts, netfilter, ...).
  Plain ``fork`` and thread creation (``CLONE_VM | CLONE_THREAD | ...``) are untouched.
* **clone3** fails with ``ENOSYS``: its flags live in a struct in memory, which seccomp cannot
  read, so it cannot be filtered by flag. ``ENOSYS`` reads as "this kernel has no clone3", and
  glibc (``pthread_create``, ``posix_spawn``, ``fork``) then falls back to ``clone``, which is
  filtered.
* **Socket families** (:data:`SOCKET_FAMILIES`, an allowlist, ``EPERM`` for every other family,
  for ``socket`` and ``socketpair``): ``AF_UNIX`` always (the agent's channel to the kernel);
  with network also ``AF_INET``, ``AF_INET6`` and ``AF_NETLINK`` limited to ``NETLINK_ROUTE``
  (glibc's ``getaddrinfo`` reads the interface addresses through it, ``if_nameindex`` needs it;
  the agent already shares the host's network namespace, so it learns nothing /proc/net would
  not tell it). Everything else is refused, ``AF_VSOCK`` (a way out of the network namespace to
  the hypervisor on a virtual machine), ``AF_PACKET``, ``AF_BLUETOOTH``, ``AF_CAN`` (devices go
  through the kernel's drivers) and other netlink protocols included. Without network the agent
  sits in an empty network namespace and gets ``AF_UNIX`` only, unless it has relays there
  (:mod:`clove.sandbox.relays`: the kernel's egress proxy, its LLM gateway on ``127.0.0.1``):
  then it gets the networked filter, since its namespace holds nothing but ``lo`` and the relays'
  listeners, and Landlock (ABI 4+) narrows TCP to a connect to those ports
  (:func:`clove.sandbox.confine.inet_allowed`).

The filters are compiled once in the zygote (libseccomp through pyseccomp) and loaded per
agent, which costs about 0.7 ms. Only the native architecture's syscalls are allowed at all:
libseccomp kills a process that uses another ABI (i386 ``int 0x80``, x32). Without libseccomp
the isolation report says ``seccomp: false``.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any, Final

log = logging.getLogger(__name__)

DENIED_SYSCALLS: Final = (
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
#: ``clone`` flags that create a namespace (linux/sched.h). ``CLONE_NEWTIME`` (0x80) is only
#: meaningful to clone3 and unshare; in clone's flags it would fall in the exit-signal byte,
#: where no signal number has that bit, so refusing it costs nothing.
NAMESPACE_FLAGS: Final = {
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

#: The socket families an agent may create, by its network grant; every other one is refused.
SOCKET_FAMILIES: Final = {
    False: (socket.AF_UNIX,),
    True: (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK),
}
#: The only netlink protocol a networked agent may open (``NETLINK_ROUTE``).
NETLINK_ROUTE: Final = 0

#: Address families are small numbers (AF_MAX is 46 in Linux 6.x): each one below this bound
#: that is not allowed gets its own rule, and anything at or above it (a family the kernel may
#: add later, or a value with high bits set, which the kernel would truncate to an int) is
#: refused by one more.
_FAMILY_BOUND: Final = 64
#: clone3's number, the same on every architecture (the unified syscall table, Linux 5.3).
_CLONE3_NR: Final = 435


def build_filters() -> dict[bool, Any] | None:
    """``{network: filter}`` for both network settings, or ``None`` when seccomp is unusable."""
    try:
        import pyseccomp
    except (ImportError, OSError, RuntimeError) as err:  # the package, or libseccomp.so itself, is missing
        log.warning("seccomp unavailable: %s", err)
        return None
    filters: dict[bool, Any] = {}
    for network in (True, False):
        f = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
        refuse = pyseccomp.ERRNO(errno.EPERM)
        for name in DENIED_SYSCALLS:
            try:
                f.add_rule(refuse, name)
            except (ValueError, RuntimeError, OSError):
                continue  # not a syscall on this architecture
        for flag in NAMESPACE_FLAGS.values():  # rules for one syscall are OR'ed: any flag refuses
            f.add_rule(refuse, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
        try:
            f.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
        except (ValueError, RuntimeError, OSError):  # a libseccomp older than clone3: by number
            f.add_rule(pyseccomp.ERRNO(errno.ENOSYS), _CLONE3_NR)
        allowed = SOCKET_FAMILIES[network]
        for call in ("socket", "socketpair"):
            for family in range(_FAMILY_BOUND):
                if family not in allowed:
                    f.add_rule(refuse, call, pyseccomp.Arg(0, pyseccomp.EQ, family))
            f.add_rule(refuse, call, pyseccomp.Arg(0, pyseccomp.GE, _FAMILY_BOUND))
        if socket.AF_NETLINK in allowed:  # and only NETLINK_ROUTE: (family, protocol) in one rule is an AND
            f.add_rule(refuse, "socket", pyseccomp.Arg(0, pyseccomp.EQ, socket.AF_NETLINK), pyseccomp.Arg(2, pyseccomp.NE, NETLINK_ROUTE))
        filters[network] = f
    return filters


def load(filters: dict[bool, Any], *, network: bool) -> None:
    """Confine the caller (no_new_privs must be set already). Raises ``OSError`` on failure."""
    try:
        filters[network].load()
    except (RuntimeError, ValueError) as err:
        raise OSError(errno.EINVAL, f"seccomp load failed: {err}") from None
