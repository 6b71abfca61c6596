"""The metrics service: host figures from /proc, per-agent process and cgroup figures, any
cgroup's counters for operators, and RESOURCE_WARNING events.

Housekeeping samples at most once a second (:data:`SAMPLE_INTERVAL`): the host's CPU counters
and, spread over loop turns (:data:`SWEEP_SLICE` agents a turn), each live agent's process CPU
time and, for agents with a memory or CPU limit, its cgroup counters. The samples and their CPU
percentages are :mod:`.metricsampler`'s; any cgroup's figures (``metrics.cgroup``) are read by
:mod:`.metricscgroup`.

RESOURCE_WARNING (data ``{agent_id, name, kind, ...figures}``), each once per crossing:

* ``kind: "memory"`` when usage reaches 80 % of the agent's memory limit; re-armed once usage
  falls below 75 %. Usage is the cgroup's ``memory_current`` (the process RSS on the rlimit
  fallback).
* ``kind: "cpu_throttled"`` when the cgroup's ``nr_throttled`` starts rising; re-armed after a
  check in which it did not rise. A new incarnation (a restart) starts afresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from clove.kernel.audit.journal import Category
from clove.kernel.core.agents import TERMINAL, Agent
from clove.kernel.core.procfs import ProcFS
from clove.kernel.services.metricsampler import Sampler
from clove.kernel.services.metricscgroup import CGROUP_ROOT, read_cgroup, resolve_cgroup_path
from clove.sandbox.cgroupfs import CgroupFS, RealCgroupFS

if TYPE_CHECKING:
    from clove.kernel.services.host import ServiceRegistry
    from clove.kernel.supervision.supervisor import Supervisor
    from clove.sandbox.cgroups import AgentCgroup

log = logging.getLogger(__name__)

SAMPLE_INTERVAL: Final = 1.0
SWEEP_SLICE: Final = 64
MEMORY_WARN: Final = 0.80
MEMORY_REARM: Final = 0.75


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
        supervisor: Supervisor,
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
        #: An agent's kernel time, calls, denials and throttling (the dispatcher's, set at boot).
        self.kernel_time_by: Callable[[int], dict[str, int]] | None = None
        self.emit = emit
        self.journal_warning = journal_warning
        self.procfs = procfs or ProcFS()
        self.cgroupfs = cgroupfs or RealCgroupFS()
        self.cgroup_root = cgroup_root
        self.realpath = realpath
        self.default_cgroups = default_cgroups
        self.clock = clock
        self.sampler = Sampler(self.procfs)
        self._queue: deque[int] = deque()
        self._next_sweep = 0.0
        self.warnings = 0

    def held(self) -> dict[str, int]:
        return {"metric_watches": len(self.sampler.watches)}

    # ---- the host ----------------------------------------------------------------------------

    def system(self) -> dict[str, Any]:
        percent, count = self.sampler.host_cpu_percent(self.clock())
        return {
            "success": True,
            "cpu": {"percent": percent, "count": count, "load_avg": self.procfs.loadavg()},
            "memory": self.procfs.memory(),
            "disk": self.procfs.disk(),
            "network": self.procfs.network(),
        }

    # ---- agents ------------------------------------------------------------------------------

    def forget(self, agent_id: int) -> None:
        """Drop an agent's samples as soon as it settles (not at the next sweep)."""
        self.sampler.forget(agent_id)

    def cgroup_of(self, agent: Agent) -> AgentCgroup | None:
        runtime = self.supervisor.runtime(agent)
        return getattr(runtime, "cgroup", None) if runtime is not None else None

    def agent(self, agent: Agent) -> dict[str, Any]:
        """``{success, agent_id, name, status, uptime_ms, restarts, parent_id, process, cgroup,
        held, kernel}``."""
        now = self.clock()
        return {
            "success": True,
            "agent_id": agent.id,
            "name": agent.name,
            "status": agent.state.value,
            "uptime_ms": int(agent.uptime() * 1000),
            "restarts": agent.restarts,
            "parent_id": agent.parent_id if agent.parent_id is not None else 0,
            "process": self.sampler.process(agent, now),
            "cgroup": self.sampler.cgroup(agent, self.cgroup_of(agent), now),
            "held": self.held_by(agent.id) if self.held_by is not None else {},
            "kernel": self.kernel_time_by(agent.id) if self.kernel_time_by is not None else {},
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
            self.sampler.host_cpu_percent(now)
            live = [a.id for a in self.supervisor.table if a.state not in TERMINAL]
            self.sampler.keep_only(live)
            self._queue.extend(live)
        now = self.clock()
        for _ in range(min(SWEEP_SLICE, len(self._queue))):
            agent = self.supervisor.table.get(self._queue.popleft())
            if agent is not None and agent.state not in TERMINAL:
                self._check(agent, now)

    def _check(self, agent: Agent, now: float) -> None:
        process = self.sampler.process(agent, now, fds=False)
        cgroup = self.cgroup_of(agent)
        if cgroup is None:  # the rlimit fallback: the process's RSS against the requested limit
            if agent.spec.memory_bytes:
                self._memory(agent, process["memory"]["rss"], agent.spec.memory_bytes)
            return
        report = cgroup.report()
        if not any(r.enforced for k, r in report.items() if k in ("memory", "cpu")):
            return  # nothing to warn about; skip the cgroup reads
        figures = self.sampler.cgroup(agent, cgroup, now)
        if "memory_limit" in figures and "memory_current" in figures:
            self._memory(agent, figures["memory_current"], figures["memory_limit"])
        if "cpu_quota_us" in figures and "nr_throttled" in figures:
            self._throttle(agent, figures)

    def _memory(self, agent: Agent, usage: int, limit: int) -> None:
        watch = self.sampler.watch(agent)
        ratio = usage / limit
        if ratio >= MEMORY_WARN and not watch.memory_high:
            watch.memory_high = True
            percent = round(100 * ratio, 1)
            self._warn(agent, "memory", memory_current=usage, memory_limit=limit, percent=percent)
        elif ratio < MEMORY_REARM:
            watch.memory_high = False

    def _throttle(self, agent: Agent, figures: dict[str, Any]) -> None:
        watch = self.sampler.watch(agent)
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
        self.sampler.watches.clear()


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
