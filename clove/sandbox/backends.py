"""Which per-agent limit backend this host gets: cgroup v2, cgroup v1, or none (rlimits).

The factory beside the contract (:mod:`.cgroups`) and the two backends that implement it
(:mod:`.cgroup_v2`, :mod:`.cgroup_v1`): :func:`detect_backend` discovers what the host offers,
prepares the first backend that works and returns it; ``None`` tells the caller to fall back to
:mod:`.rlimits`. This is the only module of the sandbox that imports both concrete backends.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clove.errors import SandboxError
from clove.sandbox.cgroup_v1 import CgroupV1Backend, discover_v1
from clove.sandbox.cgroup_v2 import CgroupV2Backend, discover_v2
from clove.sandbox.cgroupfs import CgroupFS, RealCgroupFS, check_component, parse_proc_cgroup
from clove.sandbox.cgroups import CgroupBackend, KillFn

__all__ = ["PREFERENCES", "detect_backend"]

log = logging.getLogger(__name__)

#: Values accepted by :func:`detect_backend`'s ``preference``.
PREFERENCES = ("auto", "cgroup2", "cgroup1", "rlimit", "none")


def detect_backend(
    preference: str = "auto",
    *,
    kernel_tag: str,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
    fs: CgroupFS | None = None,
    kill: KillFn | None = None,
) -> CgroupBackend | None:
    """Pick, prepare and return the cgroup backend, or ``None`` for the rlimit fallback.

    ``"auto"`` takes cgroup2 when the unified hierarchy offers memory, cpu and pids to this
    process, else cgroup1 when v1 memory, cpu and pids hierarchies are mounted, else ``None``
    (logged). A backend whose :meth:`~CgroupBackend.prepare` fails (no permission) is skipped.
    An explicit ``"cgroup2"``/``"cgroup1"`` needs at least one of those controllers; the others
    are then reported as not enforced.

    :param preference: ``"auto"``, ``"cgroup2"``, ``"cgroup1"``, ``"rlimit"`` or ``"none"``.
    :param kernel_tag: the parent cgroup's name, e.g. ``f"clove-{os.getpid()}"``.
    :param cgroup_root: where the hierarchies are mounted.
    :param proc_self_cgroup: this process's cgroup membership file.
    :param fs: the cgroup filesystem (default: the real one).
    :param kill: signal sender for kill-all fallbacks (default :func:`os.kill`).
    :raises SandboxError: unknown preference or invalid ``kernel_tag``, or the explicitly
        requested backend is unavailable (the message says why) or cannot be prepared.
    """
    if preference not in PREFERENCES:
        raise SandboxError(
            f"unknown sandbox backend {preference!r}; expected one of {', '.join(PREFERENCES)}",
            details={"preference": preference},
        )
    check_component("kernel_tag", kernel_tag)
    if preference in ("rlimit", "none"):
        return None
    fs = fs if fs is not None else RealCgroupFS()
    kill = kill if kill is not None else os.kill
    try:
        entries = parse_proc_cgroup(fs.read_text(proc_self_cgroup))
    except OSError as err:
        log.debug("cannot read %s: %s", proc_self_cgroup, err)
        entries = []
    pid = os.getpid()
    explicit = preference != "auto"
    reasons: dict[str, str] = {}

    if preference in ("auto", "cgroup2"):
        v2, why = discover_v2(entries, cgroup_root, fs, pid=pid, complete=not explicit)
        if v2 is not None:
            backend2 = CgroupV2Backend(v2, kernel_tag=kernel_tag, fs=fs, kill=kill)
            why = _prepare(backend2, explicit)
            if not why:
                return backend2
        elif explicit:
            raise SandboxError(f"cgroup2 backend unavailable: {why}", details={"backend": "cgroup2"})
        reasons["cgroup2"] = why

    if preference in ("auto", "cgroup1"):
        v1, why = discover_v1(entries, cgroup_root, fs, pid=pid, complete=not explicit)
        if v1 is not None:
            backend1 = CgroupV1Backend(v1, kernel_tag=kernel_tag, fs=fs, kill=kill)
            why = _prepare(backend1, explicit)
            if not why:
                return backend1
        elif explicit:
            raise SandboxError(f"cgroup1 backend unavailable: {why}", details={"backend": "cgroup1"})
        reasons["cgroup1"] = why

    log.warning(
        "no usable cgroup backend (%s); limits fall back to rlimits",
        "; ".join(f"{k}: {v}" for k, v in reasons.items()),
    )
    return None


def _prepare(backend: CgroupBackend, explicit: bool) -> str:
    """Prepare ``backend``; returns ``""`` on success, else why not (re-raised if ``explicit``)."""
    try:
        backend.prepare()
    except SandboxError as err:
        if explicit:
            raise
        log.warning("%s backend unusable: %s", backend.name, err)
        return f"prepare failed: {err.message}"
    log.info("sandbox backend %s: %s", backend.name, backend.describe())
    return ""
