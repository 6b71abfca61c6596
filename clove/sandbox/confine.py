"""The confinement steps a zygote child applies to itself before the agent's code runs.

Order matters (each step needs the powers the next one removes): join cgroups, unshare
namespaces, fork into the new pid namespace, build the mount view (:mod:`.mountview`), then in
the agent process apply rlimits, drop to the agent's uid, set no_new_privs and Landlock. Every function raises
``OSError`` on failure; the caller reports it to the kernel and exits.

A command an agent runs through ``exec`` gets the same steps, except that it joins the agent's
existing namespaces (:func:`enter_namespaces`) instead of creating new ones.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from collections.abc import Iterable, Sequence

from clove.sandbox import landlock, linux, workdir
from clove.sandbox.mountview import PRIVATE_TMPFS
from clove.sandbox.spec import SpawnSpec

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

#: Joined in this order (as nsenter does): the mount namespace last, since entering it changes
#: what paths mean. The pid namespace applies to the caller's next child only.
_NAMESPACES = (
    ("ipc", linux.CLONE_NEWIPC),
    ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET),
    ("pid", linux.CLONE_NEWPID),
    ("mnt", linux.CLONE_NEWNS),
)


def join_cgroups(attach_files: Iterable[str]) -> None:
    """Move the calling process into the agent's cgroups (children inherit them)."""
    pid = str(os.getpid())
    for path in attach_files:
        with open(path, "w") as f:
            f.write(pid)


def unshare_namespaces(*, network: bool) -> list[str]:
    """Enter new mount, uts, ipc, pid (for the next child) and, without network, net namespaces.

    :returns: the names of the namespaces entered.
    """
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID
    names = ["mount", "uts", "ipc", "pid"]
    if not network:
        flags |= linux.CLONE_NEWNET
        names.append("net")
    linux.unshare(flags)
    return names


def enter_namespaces(pid: int) -> list[str]:
    """Join the namespaces of process ``pid`` that differ from the caller's (the caller must be
    single-threaded; its next child is then in ``pid``'s pid namespace).

    All namespace files are opened before the first ``setns``, so ``pid`` dying half-way cannot
    leave the caller in a mix of namespaces from different owners.

    :returns: the names of the namespaces entered.
    """
    fds: list[tuple[str, int, int]] = []
    try:
        for name, flag in _NAMESPACES:
            fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            fds.append((name, flag, fd))
        entered = []
        for name, flag, fd in fds:
            theirs, ours = os.fstat(fd), os.stat(f"/proc/self/ns/{name}")
            if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
                continue
            if _libc.setns(ctypes.c_int(fd), ctypes.c_int(flag)) < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {name}: {os.strerror(err)}")
            entered.append(name)
        return entered
    finally:
        for _, _, fd in fds:
            os.close(fd)


def landlock_writable(spec: SpawnSpec) -> list[str]:
    """Where an agent (and every command it runs) may write under Landlock."""
    return [e.path for e in spec.exposures if e.writable] + list(PRIVATE_TMPFS) + ["/dev/null"]


#: The loop device C attached for the agent's work dir (``(fd, path)``), which G, C's child,
#: mounts (:func:`work_mount_of`). Set in C only; a zygote never sets it.
_work_device: tuple[int, str] | None = None


def make_work_image(spec: SpawnSpec) -> None:
    """C's part of a bounded work dir (:mod:`clove.sandbox.workdir`), in the host's
    namespaces and under the agent's cgroup: make the image once per agent, attach it to a loop
    device for G to mount."""
    global _work_device
    if spec.workdir_image is None or not spec.workdir_bytes or spec.uid is None or not spec.namespaces:
        return
    made = workdir.create(spec.workdir_image, spec.workdir_bytes, spec.uid)
    _work_device = workdir.attach(spec.workdir_image, fresh=made)


def work_mount_of(spec: SpawnSpec) -> tuple[int, str, str, int] | None:
    """G's part: ``(loop fd, device, work dir, uid)`` to mount, when C attached one."""
    if _work_device is None or spec.uid is None:
        return None
    return (*_work_device, spec.cwd, spec.uid)


def mount_proc() -> None:
    """A /proc that shows only the agent's own pid namespace (called as its pid 1)."""
    linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | 0x8)  # 0x8 = MS_NOEXEC


def apply_rlimits(rlimits: Iterable[Sequence[int]]) -> None:
    for res, soft, hard in rlimits:
        resource.setrlimit(res, (soft, hard))


def drop_privileges(uid: int) -> None:
    """Become ``uid``/``uid`` with no supplementary groups: no root powers left to use."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise OSError(1, "still root after setresuid")


def become(uid: int, gid: int, groups: Sequence[int]) -> None:
    """Become a host user (a command an operator runs): its uid, gid and supplementary groups."""
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def restrict_filesystem(writable: Sequence[str], *, network: bool, connect_ports: Sequence[int] = ()) -> dict[str, bool]:
    """Landlock: read everywhere, write only under ``writable``; no TCP without network, except
    a connect to one of ``connect_ports`` (the agent's relays; no bind at all)."""
    return landlock.restrict(writable=writable, deny_tcp=not network, connect_ports=() if network else connect_ports)


def inet_allowed(spec: SpawnSpec) -> bool:
    """Whether the agent's seccomp filter lets it make IP sockets: with the host's network, or
    with relays to reach in a network namespace of its own (which holds nothing else)."""
    return spec.network or spec.relayed
