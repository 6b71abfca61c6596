"""Gathering the doctor's facts: every probe, pointed at configurable roots.

:class:`HostRoots` says where ``/proc``, ``/sys`` and ``/dev`` are (a test's fake tree, or the
real ones); :class:`Trials` holds stand-ins for the few live trials (a syscall, a forked
``unshare``, a socket), each ``None`` to run it on this host. :func:`gather` reads only: it
creates no cgroup and leaves nothing behind.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clove.config import KernelConfig
from clove.drivers.hostdevices import CanFacts, GpioChip, probe_can, probe_gpio
from clove.sandbox.dryrun import is_writable
from clove.sandbox.hostcgroups import CgroupFacts, probe_cgroups
from clove.sandbox.hostprobe import (
    LandlockFacts,
    NamespaceFacts,
    SeccompFacts,
    UsernsFacts,
    probe_landlock,
    probe_namespaces,
    probe_seccomp,
    probe_userns,
)

__all__ = ["DiskFacts", "HostFacts", "HostRoots", "Trials", "gather"]


@dataclass(frozen=True, slots=True)
class HostRoots:
    """Where the host's pseudo-filesystems are; the cgroup hierarchies are under ``sys/fs/cgroup``."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")

    @property
    def cgroup(self) -> Path:
        return self.sys / "fs" / "cgroup"


@dataclass(frozen=True, slots=True, kw_only=True)
class Trials:
    """Results standing in for live trials; ``None`` runs the trial here.

    :param landlock_abi: the Landlock ABI version.
    :param seccomp_library: ``""`` when libseccomp builds Clove's filters, else why not.
    :param namespaces: agent namespace -> errno of creating it (0: made).
    :param userns: ``(errno creating a user namespace, errno using a capability in it)`` unprivileged.
    :param can_family: errno of opening a ``CAN_RAW`` socket (0: opened).
    :param workdir: ``""`` when a size-bounded work dir can be made, else why not.
    :param euid: the effective uid the kernel would run as.
    :param writable: ``0`` or the errno for writing a path (cgroup directories, the state dir).
    """

    landlock_abi: int | None = None
    seccomp_library: str | None = None
    namespaces: dict[str, int] | None = None
    userns: tuple[int, int] | None = None
    can_family: int | None = None
    workdir: str | None = None
    euid: int | None = None
    writable: Callable[[Path], int] = is_writable


@dataclass(frozen=True, slots=True)
class DiskFacts:
    """The filesystem under the state dir.

    :param probed: the state dir, or its nearest existing ancestor (the kernel creates the rest).
    :param free: bytes an unprivileged writer may still use (``f_bavail``); ``None``: unknown.
    :param write_error: ``""`` when the kernel could write there, else why not.
    """

    state_dir: str
    probed: str
    free: int | None
    total: int | None
    write_error: str

    def to_dict(self) -> dict[str, Any]:
        return {"state_dir": self.state_dir, "probed": self.probed, "free_bytes": self.free,
                "total_bytes": self.total, "writable": not self.write_error,
                "write_error": self.write_error or None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class HostFacts:
    cgroups: CgroupFacts
    landlock: LandlockFacts
    seccomp: SeccompFacts
    namespaces: NamespaceFacts
    userns: UsernsFacts
    workdir: str
    disk: DiskFacts
    can: CanFacts
    gpio: tuple[GpioChip, ...]
    euid: int


def probe_disk(state_dir: str, writable: Callable[[Path], int] = is_writable) -> DiskFacts:
    """Free space where the state dir is (or will be)."""
    path = Path(state_dir).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    free: int | None = None
    total: int | None = None
    try:
        usage = os.statvfs(path)  # f_bavail, as the journal measures its reserve (audit/space.py)
        free, total = usage.f_bavail * usage.f_frsize, usage.f_blocks * usage.f_frsize
    except OSError:
        pass
    code = writable(path)
    return DiskFacts(state_dir, str(path), free, total, f"{path}: {os.strerror(code)}" if code else "")


def _workdir_support() -> str:
    from clove.sandbox import workdir  # the bounded work dir's own test: root, loop devices, mkfs.ext4, ext4

    return workdir.unsupported() or ""


def gather(config: KernelConfig, state_dir: str, roots: HostRoots | None = None, trials: Trials | None = None) -> HostFacts:
    """Every fact the doctor judges, for ``config`` and ``state_dir``."""
    roots = roots or HostRoots()
    trials = trials or Trials()
    return HostFacts(
        cgroups=probe_cgroups(
            proc=roots.proc, cgroup_root=roots.cgroup, preference=config.sandbox.backend, writable=trials.writable
        ),
        landlock=probe_landlock(sys=roots.sys, abi=trials.landlock_abi),
        seccomp=probe_seccomp(proc=roots.proc, library=trials.seccomp_library),
        namespaces=probe_namespaces(proc=roots.proc, created=trials.namespaces, euid=trials.euid),
        userns=probe_userns(proc=roots.proc, trial=trials.userns),
        workdir=_workdir_support() if trials.workdir is None else trials.workdir,
        disk=probe_disk(state_dir, trials.writable),
        can=probe_can(proc=roots.proc, sys=roots.sys, family=trials.can_family),
        gpio=probe_gpio(dev=roots.dev, sys=roots.sys),
        euid=os.geteuid() if trials.euid is None else trials.euid,
    )


def host_identity(euid: int) -> dict[str, Any]:
    """``{hostname, kernel, machine, euid}`` for the report's header."""
    return {"hostname": platform.node(), "kernel": platform.release(), "machine": platform.machine(), "euid": euid}
