"""What this host's cgroups offer the kernel, found without changing anything (``clove doctor``).

The facts come from the same code the kernel uses: ``/proc/self/cgroup`` through
:func:`~.cgroupfs.parse_proc_cgroup`, the hierarchies through :func:`~.cgroup_v2.discover_v2`
and :func:`~.cgroup_v1.discover_v1`, and the backend the kernel would pick through
:func:`~.backends.detect_backend` itself, run over a :class:`~.dryrun.DryRunCgroupFS` (so each
backend's ``prepare`` runs, and its refusals and planned changes are the kernel's own, but
nothing is created, written or moved).

"This process's cgroup" is the prober's: run the probe the way the kernel runs (as root, in the
kernel's unit) for the answer to be the kernel's. Every path is taken relative to the roots
given, so a test builds a fake ``/proc`` and ``/sys/fs/cgroup`` under a temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from clove.errors import SandboxError
from clove.sandbox.backends import detect_backend
from clove.sandbox.cgroup_v1 import V1_CONTROLLERS, discover_v1
from clove.sandbox.cgroup_v2 import V2_CONTROLLERS, discover_v2
from clove.sandbox.cgroupfs import ProcCgroupEntry, parse_proc_cgroup, resolve_own_dir
from clove.sandbox.cgroups import CgroupBackend
from clove.sandbox.dryrun import DryRunCgroupFS, is_writable

__all__ = ["BackendChoice", "CgroupFacts", "V1Controller", "V2Facts", "cgroup_mode", "probe_cgroups"]


#: Controllers a v1 ``cgroup`` mount's options may name (the rest are mount flags).
_V1_KNOWN: Final = frozenset(
    {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio", "perf_event",
     "hugetlb", "pids", "rdma", "misc"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class V2Facts:
    """This process's place in the unified hierarchy.

    :param mount: where cgroup2 is mounted (``None``: not found under the cgroup root).
    :param own: this process's cgroup directory (``None``: not found).
    :param controllers: available in ``own`` (its ``cgroup.controllers``).
    :param enabled: enabled for ``own``'s children (its ``cgroup.subtree_control``).
    :param writable: ``""`` when ``own`` and its control files may be written, else why not.
    :param processes: the pids in ``own``; ``others``: those that are not this process.
    :param is_root: ``own`` is the hierarchy's root (exempt from the no-internal-processes rule).
    :param reason: why the kernel's ``auto`` would not take cgroup2 (``""``: it would).
    """

    mount: str | None
    own: str | None
    controllers: tuple[str, ...] = ()
    enabled: tuple[str, ...] = ()
    writable: str = ""
    processes: tuple[int, ...] = ()
    others: tuple[int, ...] = ()
    is_root: bool = False
    reason: str = ""

    @property
    def delegated(self) -> tuple[str, ...]:
        """The limit controllers (:data:`~.cgroup_v2.V2_CONTROLLERS`) available in ``own``."""
        return tuple(c for c in V2_CONTROLLERS if c in self.controllers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mount": self.mount, "own": self.own, "controllers": list(self.controllers), "enabled": list(self.enabled),
            "delegated": list(self.delegated), "writable": not self.writable, "write_error": self.writable or None,
            "processes": len(self.processes), "other_pids": list(self.others[:16]), "is_root": self.is_root,
            "usable": not self.reason, "reason": self.reason or None,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class V1Controller:
    """One v1 controller: its own cgroup directory (``None``: unavailable, ``reason`` says why)."""

    name: str
    own: str | None
    writable: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"own": self.own, "writable": self.own is not None and not self.writable,
                "write_error": self.writable or None, "reason": self.reason or None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """What :func:`~.backends.detect_backend` would return for the config's ``backend``.

    :param name: ``cgroup2``, ``cgroup1``, ``rlimit`` (the fallback), or ``none`` with ``error``.
    :param error: the kernel would not boot: an explicit backend is unavailable (the message).
    :param reasons: why each cgroup version the preference allows was passed over.
    :param changes: what ``prepare`` would do (``mkdir``, ``write``), never done here.
    :param backend: the prepared-on-paper backend, for ``planned_report`` (not serialized).
    """

    preference: str
    name: str
    error: str = ""
    reasons: dict[str, str] = field(default_factory=dict)
    changes: tuple[tuple[str, ...], ...] = ()
    describe: dict[str, object] = field(default_factory=dict)
    backend: CgroupBackend | None = field(default=None, compare=False, repr=False)

    def controllers(self) -> frozenset[str]:
        return self.backend.controllers() if self.backend is not None else frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {
            "preference": self.preference, "name": self.name, "error": self.error or None,
            "controllers": sorted(self.controllers()), "reasons": dict(self.reasons),
            "changes": [list(c) for c in self.changes], "describe": self.describe,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class CgroupFacts:
    """:param mode: ``v2``, ``v1``, ``hybrid`` (v1 controllers beside a cgroup2 mount) or ``none``.
    :param v1_mounted: the controllers mounted as v1 hierarchies.
    :param v1_reason: why ``auto`` would pass over cgroup v1 (``""``: it would not)."""

    mode: str
    v1_mounted: tuple[str, ...]
    v2: V2Facts | None
    v1: tuple[V1Controller, ...]
    v1_reason: str
    backend: BackendChoice

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "v1_mounted": list(self.v1_mounted),
            "v2": None if self.v2 is None else self.v2.to_dict(),
            "v1": {c.name: c.to_dict() for c in self.v1}, "v1_usable": not self.v1_reason,
            "v1_reason": self.v1_reason or None, "backend": self.backend.to_dict(),
        }  # fmt: skip


def cgroup_mode(mounts_text: str) -> tuple[str, tuple[str, ...]]:
    """The cgroup mode from ``/proc/self/mounts``, and the controllers mounted as v1."""
    v2 = False
    v1: set[str] = set()
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            v2 = True
        elif fields[2] == "cgroup":
            v1 |= _V1_KNOWN & set(fields[3].split(","))
    mode = ("hybrid" if v2 else "v1") if v1 else ("v2" if v2 else "none")
    return mode, tuple(sorted(v1))


def probe_cgroups(
    *,
    proc: Path = Path("/proc"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    preference: str = "auto",
    kernel_tag: str | None = None,
    writable: Callable[[Path], int] = is_writable,
) -> CgroupFacts:
    """Every cgroup fact ``clove doctor`` reports; reads only.

    :param proc: the procfs root (``self/cgroup`` and ``self/mounts`` are read under it).
    :param cgroup_root: where the hierarchies are mounted.
    :param preference: the config's ``[sandbox].backend``.
    :param kernel_tag: the parent cgroup's name the kernel would use (``clove-<pid>``).
    :param writable: ``0`` or the errno for writing a path (see :func:`.dryrun.is_writable`).
    """
    fs = DryRunCgroupFS(writable)
    try:
        mode, v1_mounted = cgroup_mode(fs.read_text(proc / "self" / "mounts"))
    except OSError:
        mode, v1_mounted = "none", ()
    try:
        entries = parse_proc_cgroup(fs.read_text(proc / "self" / "cgroup"))
    except OSError:
        entries = []
    pid = os.getpid()
    detect: dict[str, Any] = {
        "kernel_tag": kernel_tag or f"clove-{pid}", "cgroup_root": cgroup_root,
        "proc_self_cgroup": proc / "self" / "cgroup", "kill": _no_kill,
    }  # fmt: skip
    why = {version: _why_not(version, entries, DryRunCgroupFS(writable), detect) for version in ("cgroup2", "cgroup1")}
    return CgroupFacts(
        mode=mode,
        v1_mounted=v1_mounted,
        v2=_v2_facts(entries, cgroup_root, fs, pid, writable, why["cgroup2"]),
        v1=_v1_facts(entries, cgroup_root, fs, pid, writable),
        v1_reason=why["cgroup1"],
        backend=_choose(preference, why, DryRunCgroupFS(writable), detect),
    )


def _v2_facts(
    entries: list[ProcCgroupEntry], root: Path, fs: DryRunCgroupFS, pid: int, writable: Callable[[Path], int], reason: str
) -> V2Facts | None:
    entry = next((e for e in entries if e.is_v2), None)
    mount = next((m for m in (root, root / "unified") if fs.exists(m / "cgroup.controllers")), None)
    if entry is None and mount is None:
        return None
    own = None if (entry is None or mount is None) else resolve_own_dir(fs, mount, entry.path, pid=pid)
    if own is None:
        return V2Facts(mount=None if mount is None else str(mount), own=None, reason=reason)

    def words(name: str) -> tuple[str, ...]:
        try:
            return tuple(fs.read_text(own / name).split())
        except OSError:
            return ()

    processes = tuple(int(p) for p in words("cgroup.procs") if p.isdigit())
    errors = [f"{p}: {os.strerror(code)}" for p in (own, own / "cgroup.subtree_control", own / "cgroup.procs")
              if (code := writable(p))]  # fmt: skip
    return V2Facts(
        mount=str(mount),
        own=str(own),
        controllers=words("cgroup.controllers"),
        enabled=words("cgroup.subtree_control"),
        writable="; ".join(errors),
        processes=processes,
        others=tuple(p for p in processes if p != pid),
        is_root=own == mount,
        reason=reason,
    )


def _v1_facts(
    entries: list[ProcCgroupEntry], root: Path, fs: DryRunCgroupFS, pid: int, writable: Callable[[Path], int]
) -> tuple[V1Controller, ...]:
    layout, why = discover_v1(entries, root, fs, pid=pid, complete=False)
    facts = []
    for name in V1_CONTROLLERS:
        own = None if layout is None else layout.own.get(name)
        if own is None:
            reason = why if layout is None else layout.missing.get(name, "unavailable")
            facts.append(V1Controller(name, None, reason=reason))
            continue
        code = writable(own)
        facts.append(V1Controller(name, str(own), writable=f"{own}: {os.strerror(code)}" if code else ""))
    return tuple(facts)


def _no_kill(pid: int, sig: int) -> None:
    """The probe's backends never signal anything (``prepare`` does not kill; this is a guard)."""


#: For ``auto``: the versions passed over before the one taken.
_PASSED_OVER: Final = {"cgroup2": (), "cgroup1": ("cgroup2",), "rlimit": ("cgroup2", "cgroup1")}


def _choose(preference: str, why: dict[str, str], fs: DryRunCgroupFS, detect: dict[str, Any]) -> BackendChoice:
    """Run the kernel's own detection on paper for the config's preference."""
    try:
        backend = detect_backend(preference, fs=fs, **detect)
    except SandboxError as err:
        return BackendChoice(preference, "none", error=err.message)
    name = backend.name if backend is not None else "rlimit"
    reasons = {v: why[v] for v in _PASSED_OVER[name]} if preference == "auto" else {}
    if backend is None:
        return BackendChoice(preference, name, reasons=reasons)
    return BackendChoice(preference, name, reasons=reasons, changes=tuple(fs.changes), describe=backend.describe(), backend=backend)


def _why_not(version: str, entries: list[ProcCgroupEntry], fs: DryRunCgroupFS, detect: dict[str, Any]) -> str:
    """Why ``auto`` would pass over ``version`` (``""``: it would not): discovery needs every
    limit controller, then the backend's ``prepare`` must succeed."""
    discover = discover_v2 if version == "cgroup2" else discover_v1
    layout, why = discover(entries, detect["cgroup_root"], fs, pid=os.getpid(), complete=True)
    if layout is None:
        return why
    try:
        detect_backend(version, fs=fs, **detect)  # the layout is complete: only prepare can fail now
    except SandboxError as err:
        return err.message
    return ""
