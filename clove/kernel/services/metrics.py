"""The metrics service: host figures from /proc, per-agent process and cgroup figures, any
cgroup's counters for operators, and RESOURCE_WARNING events.

Housekeeping samples at most once a second (:data:`SAMPLE_INTERVAL`): the host's CPU counters
and, spread over loop turns (:data:`SWEEP_SLICE` agents a turn), each live agent's process CPU
time and, for agents with a memory or CPU limit, its cgroup counters. CPU percentages are deltas
against the newest sample at least a quarter of a second old, so a reading reflects roughly the
last second; before any earlier sample exists, a process's percentage is its average since it
started and the host's since boot.

RESOURCE_WARNING (data ``{agent_id, name, kind, ...figures}``), each once per crossing:

* ``kind: "memory"`` when usage reaches 80 % of the agent's memory limit; re-armed once usage
  falls below 75 %. Usage is the cgroup's ``memory_current`` (the process RSS on the rlimit
  fallback).
* ``kind: "cpu_throttled"`` when the cgroup's ``nr_throttled`` starts rising; re-armed after a
  check in which it did not rise. A new incarnation (a restart) starts afresh.

Numbers are always numbers: a process that is not running reads as zeros, and cgroup figures
that cannot be known (no cgroup on the rlimit fallback, no such controller, no limit set) are
left out rather than given as ``None``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from clove.errors import InvalidArguments, NotFound, PermissionDenied
from clove.kernel.audit.journal import Category
from clove.kernel.core.agents import TERMINAL, Agent
from clove.kernel.core.procfs import ProcFS, Rate
from clove.sandbox.cgroupfs import CgroupFS, RealCgroupFS, read_int, read_keyed

if TYPE_CHECKING:
    from clove.kernel.services.host import ServiceRegistry
    from clove.sandbox.cgroups import AgentCgroup

log = logging.getLogger(__name__)

SAMPLE_INTERVAL: Final = 1.0
SWEEP_SLICE: Final = 64
MEMORY_WARN: Final = 0.80
MEMORY_REARM: Final = 0.75
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


@dataclass(eq=False)
class _Watch:
    """What the service remembers about one agent between samples."""

    pid: int | None = None
    process_rate: Rate = field(default_factory=Rate)
    cgroup_key: tuple[int, str] | None = None
    cgroup_rate: Rate = field(default_factory=Rate)
    memory_high: bool = False
    throttled: int | None = None
    throttling: bool = False


def _limits(cgroup: AgentCgroup) -> dict[str, int]:
    report = cgroup.report()
    out = {}
    for resource, key in (("memory", "memory_limit"), ("cpu", "cpu_quota_us"), ("pids", "pids_limit")):
        entry = report.get(resource)
        if entry is not None and entry.enforced and entry.requested is not None:
            out[key] = int(entry.requested)
    return out


class MetricsService:
    """
    :param supervisor: has ``table`` (the agents) and ``runtime(agent)`` (``.cgroup``).
    :param emit: ``EventBus.emit``-shaped; receives RESOURCE_WARNING.
    :param journal_warning: records a warning (the kernel journals it under RESOURCE).
    :param default_cgroups: the directories an operator's ``metrics.cgroup`` reads without a path.
    :param held_by: what the kernel holds on an agent's behalf (queued results, events,
        messages and their bytes), reported under ``held``.
    """

    def __init__(
        self,
        supervisor: Any,
        *,
        emit: Callable[..., Any] | None = None,
        journal_warning: Callable[[Agent, dict[str, Any]], None] | None = None,
        procfs: ProcFS | None = None,
        cgroupfs: CgroupFS | None = None,
        cgroup_root: Path = CGROUP_ROOT,
        realpath: Callable[[str], str] = os.path.realpath,
        default_cgroups: Callable[[], list[Path]] = list,
        clock: Callable[[], float] = time.monotonic,
        held_by: Callable[[int], dict[str, int]] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.held_by = held_by
        self.emit = emit
        self.journal_warning = journal_warning
        self.procfs = procfs or ProcFS()
        self.cgroupfs = cgroupfs or RealCgroupFS()
        self.cgroup_root = cgroup_root
        self.realpath = realpath
        self.default_cgroups = default_cgroups
        self.clock = clock
        self._cpu_rate = Rate()
        self._watches: dict[int, _Watch] = {}
        self._queue: deque[int] = deque()
        self._next_sweep = 0.0
        self.warnings = 0

    # ---- the host ----------------------------------------------------------------------------


    def held(self) -> dict[str, int]:
        return {"metric_watches": len(self._watches)}
    def _host_cpu_percent(self, now: float) -> tuple[float, int]:
        cpu = self.procfs.cpu_times()
        percent = self._cpu_rate.update(now, cpu.busy, cpu.total)
        if percent is None:
            percent = 100.0 * cpu.busy / cpu.total if cpu.total else 0.0
        return round(min(percent, 100.0), 1), cpu.count

    def system(self) -> dict[str, Any]:
        percent, count = self._host_cpu_percent(self.clock())
        return {
            "success": True,
            "cpu": {"percent": percent, "count": count, "load_avg": self.procfs.loadavg()},
            "memory": self.procfs.memory(),
            "disk": self.procfs.disk(),
            "network": self.procfs.network(),
        }

    # ---- agents ------------------------------------------------------------------------------

    def _watch(self, agent: Agent) -> _Watch:
        return self._watches.setdefault(agent.id, _Watch())

    def forget(self, agent_id: int) -> None:
        """Drop an agent's samples as soon as it settles (not at the next sweep)."""
        self._watches.pop(agent_id, None)

    def cgroup_of(self, agent: Agent) -> AgentCgroup | None:
        runtime = self.supervisor.runtime(agent)
        return getattr(runtime, "cgroup", None) if runtime is not None else None

    def _process(self, agent: Agent, now: float, *, fds: bool = True) -> dict[str, Any]:
        watch = self._watch(agent)
        sample = self.procfs.process(agent.pid) if agent.pid else None
        if sample is None or agent.pid is None:
            return {"pid": 0, "cpu": {"percent": 0.0, "seconds": 0.0}, "memory": {"rss": 0, "vms": 0},
                    "threads": 0, "fds": 0}  # fmt: skip
        if watch.pid != agent.pid:
            watch.pid, watch.process_rate = agent.pid, Rate()
        percent = watch.process_rate.update(now, sample.cpu_seconds, now)
        if percent is None:
            uptime = agent.uptime()
            percent = 100.0 * sample.cpu_seconds / uptime if uptime > 0 else 0.0
        return {
            "pid": agent.pid,
            "cpu": {"percent": round(percent, 1), "seconds": round(sample.cpu_seconds, 2)},
            "memory": {"rss": sample.rss, "vms": sample.vms},
            "threads": sample.threads,
            "fds": sample.fds if fds else 0,
        }

    def _cgroup(self, agent: Agent, cgroup: AgentCgroup | None, now: float) -> dict[str, Any]:
        if cgroup is None:
            return {}
        watch = self._watch(agent)
        key = (agent.incarnation, cgroup.name)
        if watch.cgroup_key != key:  # a new incarnation, a new cgroup: counters start at zero
            watch.cgroup_key, watch.cgroup_rate = key, Rate()
            watch.memory_high, watch.throttled, watch.throttling = False, None, False
        out: dict[str, Any] = {**cgroup.stats(), **_limits(cgroup)}
        if "cpu_usage_us" in out:
            percent = watch.cgroup_rate.update(now, out["cpu_usage_us"] / 1e6, now)
            out["cpu_percent"] = round(percent, 1) if percent is not None else 0.0
        if out.get("memory_limit") and "memory_current" in out:
            out["memory_percent"] = round(100.0 * out["memory_current"] / out["memory_limit"], 1)
        return out

    def agent(self, agent: Agent) -> dict[str, Any]:
        """``{success, agent_id, name, status, uptime_ms, restarts, parent_id, process, cgroup,
        held}``."""
        now = self.clock()
        return {
            "success": True,
            "agent_id": agent.id,
            "name": agent.name,
            "status": agent.state.value,
            "uptime_ms": int(agent.uptime() * 1000),
            "restarts": agent.restarts,
            "parent_id": agent.parent_id if agent.parent_id is not None else 0,
            "process": self._process(agent, now),
            "cgroup": self._cgroup(agent, self.cgroup_of(agent), now),
            "held": self.held_by(agent.id) if self.held_by is not None else {},
        }

    def visible_agents(self, caller_id: int | None) -> list[Agent]:
        """Every agent for an operator (``None``); an agent's self and its children."""
        agents = sorted(self.supervisor.table, key=lambda a: a.id)
        if caller_id is None:
            return agents
        return [a for a in agents if a.id == caller_id or a.parent_id == caller_id]

    # ---- cgroups -----------------------------------------------------------------------------

    def cgroup_dirs(self, path: str) -> list[Path]:
        return resolve_cgroup_path(path, fs=self.cgroupfs, root=self.cgroup_root, realpath=self.realpath)

    def cgroup(self, dirs: list[Path], label: str) -> dict[str, Any]:
        figures = read_cgroup(self.cgroupfs, dirs)
        return {"success": True, "cgroup_path": label, "paths": [str(d) for d in dirs], "cgroup": figures}

    # ---- housekeeping: sampling and warnings -------------------------------------------------

    def housekeeping(self) -> None:
        """Runs after every loop turn; does real work at most once a second, in slices."""
        if not self._queue:
            now = self.clock()
            if now < self._next_sweep:
                return
            self._next_sweep = now + SAMPLE_INTERVAL
            self._host_cpu_percent(now)
            live = [a.id for a in self.supervisor.table if a.state not in TERMINAL]
            for gone in set(self._watches) - set(live):
                del self._watches[gone]
            self._queue.extend(live)
        now = self.clock()
        for _ in range(min(SWEEP_SLICE, len(self._queue))):
            agent = self.supervisor.table.get(self._queue.popleft())
            if agent is not None and agent.state not in TERMINAL:
                self._check(agent, now)

    def _check(self, agent: Agent, now: float) -> None:
        process = self._process(agent, now, fds=False)
        cgroup = self.cgroup_of(agent)
        if cgroup is None:  # the rlimit fallback: the process's RSS against the requested limit
            if agent.spec.memory_bytes:
                self._memory(agent, process["memory"]["rss"], agent.spec.memory_bytes)
            return
        report = cgroup.report()
        if not any(r.enforced for k, r in report.items() if k in ("memory", "cpu")):
            return  # nothing to warn about; skip the cgroup reads
        figures = self._cgroup(agent, cgroup, now)
        if "memory_limit" in figures and "memory_current" in figures:
            self._memory(agent, figures["memory_current"], figures["memory_limit"])
        if "cpu_quota_us" in figures and "nr_throttled" in figures:
            self._throttle(agent, figures)

    def _memory(self, agent: Agent, usage: int, limit: int) -> None:
        watch = self._watch(agent)
        ratio = usage / limit
        if ratio >= MEMORY_WARN and not watch.memory_high:
            watch.memory_high = True
            percent = round(100 * ratio, 1)
            self._warn(agent, "memory", memory_current=usage, memory_limit=limit, percent=percent)
        elif ratio < MEMORY_REARM:
            watch.memory_high = False

    def _throttle(self, agent: Agent, figures: dict[str, Any]) -> None:
        watch = self._watch(agent)
        count = figures["nr_throttled"]
        rising = watch.throttled is not None and count > watch.throttled
        if rising and not watch.throttling:
            self._warn(
                agent,
                "cpu_throttled",
                nr_throttled=count,
                new_throttled=count - (watch.throttled or 0),
                throttled_us=figures.get("throttled_us", 0),
                cpu_quota_us=figures["cpu_quota_us"],
                cpu_percent=figures.get("cpu_percent", 0.0),
            )
        watch.throttling = rising
        watch.throttled = count

    def _warn(self, agent: Agent, kind: str, **figures: Any) -> None:
        data = {"agent_id": agent.id, "name": agent.name, "kind": kind, **figures}
        self.warnings += 1
        if self.emit is not None:
            self.emit("RESOURCE_WARNING", data, source_agent_id=agent.id)
        if self.journal_warning is not None:
            self.journal_warning(agent, data)

    def close(self) -> None:
        self._queue.clear()
        self._watches.clear()


def attach(kernel: ServiceRegistry) -> None:
    """Build the metrics service as ``kernel.metrics`` and sample from housekeeping."""

    def journal_warning(agent: Agent, data: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the journal is closed (shutdown)
            kernel.journal.append(
                Category.RESOURCE,
                "resource.warning",
                agent_id=agent.id,
                agent_name=agent.name,
                decision="n/a",
                details=data,
            )

    def default_cgroups() -> list[Path]:
        if kernel.backend is None:
            return []
        parents = kernel.backend.describe().get("parents")
        return [Path(str(p)) for p in dict.fromkeys(parents.values())] if isinstance(parents, dict) else []

    def held_by(agent_id: int) -> dict[str, int]:
        """The kernel's per-agent holdings, each in count and bytes."""
        held = {**kernel.async_results.held_by(agent_id), **kernel.events.held_by(agent_id)}
        messaging = getattr(kernel, "messaging", None)  # attached before metrics, but be safe
        if messaging is not None:
            held.update(messaging.held_by(agent_id))
        for later in ("devices", "recorder"):  # attached after metrics
            service = getattr(kernel, later, None)
            if service is not None:
                held.update(service.held_by(agent_id))
        return held

    service = MetricsService(
        kernel.supervisor,
        emit=kernel.events.emit,
        journal_warning=journal_warning,
        default_cgroups=default_cgroups,
        held_by=held_by,
    )
    kernel.metrics = service
    kernel.loop.housekeeping.append(service.housekeeping)
    kernel.supervisor.listeners.append(
        lambda event_type, agent, _details: service.forget(agent.id)
        if event_type == "agent.removed" or agent.state in TERMINAL
        else None
    )
    kernel.on_shutdown.append(service.close)
