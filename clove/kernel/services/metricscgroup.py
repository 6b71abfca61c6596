"""Any cgroup's figures, for ``metrics.cgroup``: which cgroup directories a path names
(:func:`resolve_cgroup_path`, never outside :data:`CGROUP_ROOT`) and every counter and limit
their files hold (:func:`read_cgroup`), v1 and v2 alike. Figures that cannot be known (no such
controller, no limit set) are left out rather than given as ``None``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Final

from clove.errors import InvalidArguments, NotFound, PermissionDenied
from clove.sandbox.cgroupfs import CgroupFS, read_int, read_keyed

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
_UNLIMITED: Final = 1 << 62  # v1 writes "no limit" as 9223372036854771712

# (file, key in the reply, divisor) for single-value files, v1 and v2 alike.
_SINGLE: Final = (
    ("memory.usage_in_bytes", "memory_current", 1), ("memory.current", "memory_current", 1),
    ("memory.max_usage_in_bytes", "memory_peak", 1), ("memory.peak", "memory_peak", 1),
    ("memory.limit_in_bytes", "memory_limit", 1), ("memory.max", "memory_limit", 1),
    ("cpuacct.usage", "cpu_usage_us", 1000), ("cpu.cfs_quota_us", "cpu_quota_us", 1),
    ("cpu.cfs_period_us", "cpu_period_us", 1),
    ("pids.current", "pids_current", 1), ("pids.max", "pids_limit", 1),
)  # fmt: skip
# (file, {its key: (our key, divisor)}) for keyed files.
_KEYED: Final = (
    ("cpu.stat", {"usage_usec": ("cpu_usage_us", 1), "nr_periods": ("nr_periods", 1),
                  "nr_throttled": ("nr_throttled", 1), "throttled_time": ("throttled_us", 1000),
                  "throttled_usec": ("throttled_us", 1)}),
    ("memory.oom_control", {"oom_kill": ("oom_kills", 1)}),
    ("memory.events", {"oom_kill": ("oom_kills", 1)}),
)  # fmt: skip


def read_cgroup(fs: CgroupFS, dirs: Iterable[Path]) -> dict[str, int]:
    """Every known counter and limit of a cgroup (one directory per v1 hierarchy, or one v2
    directory); the first directory that has a figure wins. Unlimited limits are left out."""
    out: dict[str, int] = {}
    procs: set[int] = set()
    for d in dirs:
        for filename, key, div in _SINGLE:
            if key not in out:
                value = read_int(fs, d / filename)
                if value is not None and value >= 0 and not (key.endswith("_limit") and value >= _UNLIMITED):
                    out[key] = value // div
        for filename, keys in _KEYED:
            for name, value in read_keyed(fs, d / filename).items():
                if name in keys and keys[name][0] not in out:
                    out[keys[name][0]] = value // keys[name][1]
        with contextlib.suppress(OSError, ValueError):  # v2's "quota period" (quota may be "max")
            quota, period = fs.read_text(d / "cpu.max").split()
            out.setdefault("cpu_period_us", int(period))
            if quota != "max":
                out.setdefault("cpu_quota_us", int(quota))
        with contextlib.suppress(OSError):
            procs.update(int(p) for p in fs.read_text(d / "cgroup.procs").split() if p.isdigit())
    out["procs"] = len(procs)
    return out


def resolve_cgroup_path(
    path: str, *, fs: CgroupFS, root: Path = CGROUP_ROOT, realpath: Callable[[str], str] = os.path.realpath
) -> list[Path]:
    """The cgroup directories ``path`` names: a directory under ``root`` (``/sys/fs/cgroup/
    memory/x``), or a cgroup path as in ``/proc/PID/cgroup`` (``/x``), looked up in every
    hierarchy.

    :raises PermissionDenied: ``..`` in the path, or it resolves outside ``root``.
    :raises InvalidArguments: empty, too long or containing NUL.
    :raises NotFound: no cgroup directory by that path.
    """
    if not path or len(path) > 4096 or "\0" in path:
        raise InvalidArguments("cgroup_path must be a non-empty path", details={"argument": "cgroup_path"})
    if ".." in PurePosixPath(path).parts:
        raise PermissionDenied("cgroup paths may not contain '..'", details={"cgroup_path": path})
    norm = Path(os.path.normpath("/" + path.lstrip("/")))
    if norm == root or root in norm.parents:
        candidates = [norm]
    else:
        rel = str(norm).lstrip("/")
        if fs.exists(root / "cgroup.controllers"):  # a pure cgroup2 host: one hierarchy at the root
            candidates = [root / rel]
        else:
            try:
                mounts = sorted(fs.listdir(root))
            except OSError:
                mounts = []
            candidates = [root / m / rel for m in mounts if fs.exists(root / m / "cgroup.procs")]
    found: dict[str, Path] = {}
    for candidate in candidates:
        if not fs.exists(candidate / "cgroup.procs"):
            continue
        real = Path(realpath(str(candidate)))
        if real != root and root not in real.parents:
            raise PermissionDenied(f"{path} is outside {root}", details={"cgroup_path": path})
        found.setdefault(str(real), candidate)
    if not found:
        raise NotFound(f"no cgroup {path}", details={"cgroup_path": path})
    return list(found.values())
