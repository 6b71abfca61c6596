"""The metrics service's samples: the host's CPU percentage, and each agent's process and cgroup
figures, remembered between samples in one :class:`Watch` per agent.

CPU percentages are deltas against the newest sample at least a quarter of a second old, so a
reading reflects roughly the last second; before any earlier sample exists, a process's
percentage is its average since it started and the host's since boot.

Numbers are always numbers: a process that is not running reads as zeros, and cgroup figures
that cannot be known (no cgroup on the rlimit fallback, no such controller, no limit set) are
left out rather than given as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clove.kernel.core.procfs import ProcFS, Rate

if TYPE_CHECKING:
    from collections.abc import Iterable

    from clove.kernel.core.agents import Agent
    from clove.sandbox.cgroups import AgentCgroup


@dataclass(eq=False)
class Watch:
    """What the service remembers about one agent between samples."""

    pid: int | None = None
    process_rate: Rate = field(default_factory=Rate)
    cgroup_key: tuple[int, str] | None = None
    cgroup_rate: Rate = field(default_factory=Rate)
    memory_high: bool = False
    throttled: int | None = None
    throttling: bool = False


def limits_of(cgroup: AgentCgroup) -> dict[str, int]:
    """The limits the cgroup enforces, as the agent requested them."""
    report = cgroup.report()
    out = {}
    for resource, key in (("memory", "memory_limit"), ("cpu", "cpu_quota_us"), ("pids", "pids_limit")):
        entry = report.get(resource)
        if entry is not None and entry.enforced and entry.requested is not None:
            out[key] = int(entry.requested)
    return out


class Sampler:
    """Reads the host's and the agents' figures from ``procfs`` and their cgroups, with CPU
    percentages against the previous samples."""

    def __init__(self, procfs: ProcFS) -> None:
        self.procfs = procfs
        self.watches: dict[int, Watch] = {}
        self._cpu_rate = Rate()

    def host_cpu_percent(self, now: float) -> tuple[float, int]:
        """The host's CPU percentage and its CPU count."""
        cpu = self.procfs.cpu_times()
        percent = self._cpu_rate.update(now, cpu.busy, cpu.total)
        if percent is None:
            percent = 100.0 * cpu.busy / cpu.total if cpu.total else 0.0
        return round(min(percent, 100.0), 1), cpu.count

    def watch(self, agent: Agent) -> Watch:
        return self.watches.setdefault(agent.id, Watch())

    def forget(self, agent_id: int) -> None:
        self.watches.pop(agent_id, None)

    def keep_only(self, agent_ids: Iterable[int]) -> None:
        """Drop the watches of every agent not in ``agent_ids``."""
        for gone in set(self.watches) - set(agent_ids):
            del self.watches[gone]

    def process(self, agent: Agent, now: float, *, fds: bool = True) -> dict[str, Any]:
        """``{pid, cpu: {percent, seconds}, memory: {rss, vms}, threads, fds}`` of the agent's
        process (``fds`` False: not counted, 0)."""
        watch = self.watch(agent)
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

    def cgroup(self, agent: Agent, cgroup: AgentCgroup | None, now: float) -> dict[str, Any]:
        """The agent's cgroup counters and enforced limits, with ``cpu_percent`` and
        ``memory_percent`` where they can be known; ``{}`` without a cgroup. A new cgroup (a new
        incarnation) starts its watch afresh, warnings included."""
        if cgroup is None:
            return {}
        watch = self.watch(agent)
        key = (agent.incarnation, cgroup.name)
        if watch.cgroup_key != key:  # a new incarnation, a new cgroup: counters start at zero
            watch.cgroup_key, watch.cgroup_rate = key, Rate()
            watch.memory_high, watch.throttled, watch.throttling = False, None, False
        out: dict[str, Any] = {**cgroup.stats(), **limits_of(cgroup)}
        if "cpu_usage_us" in out:
            percent = watch.cgroup_rate.update(now, out["cpu_usage_us"] / 1e6, now)
            out["cpu_percent"] = round(percent, 1) if percent is not None else 0.0
        if out.get("memory_limit") and "memory_current" in out:
            out["memory_percent"] = round(100.0 * out["memory_current"] / out["memory_limit"], 1)
        return out
