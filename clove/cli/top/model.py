"""What ``clove top`` shows, computed from the kernel's replies: pure, no I/O.

An :class:`AgentRow` is one agent's ``metrics.agents`` row turned into the figures on screen;
syscalls/s is the change in the agent's ``kernel.calls`` between two snapshots, so the first
snapshot has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One agent as shown: usage against its limits, and what it costs the kernel."""

    id: int
    name: str
    state: str
    pid: int
    restarts: int
    cpu_percent: float
    #: The CPU quota as a percentage of one core; ``None``: no CPU limit is enforced.
    cpu_quota_percent: float | None
    memory: int
    #: ``None``: no memory limit is enforced.
    memory_limit: int | None
    #: ``None`` until there are two snapshots to compare.
    syscalls_per_s: float | None
    kernel_time_us: int
    calls: int
    denied: int
    throttled: int

    @property
    def memory_percent(self) -> float | None:
        return 100.0 * self.memory / self.memory_limit if self.memory_limit else None


def agent_row(raw: dict[str, Any], previous: dict[str, Any] | None, elapsed: float | None) -> AgentRow:
    """Build a row from a ``metrics.agents`` entry; ``previous`` is the same agent's entry in the
    snapshot ``elapsed`` seconds earlier (for syscalls/s)."""
    process = raw.get("process") or {}
    cgroup = raw.get("cgroup") or {}
    kernel = raw.get("kernel") or {}
    # The cgroup counts every process of the agent; the main process alone is the fallback.
    cpu = cgroup.get("cpu_percent", (process.get("cpu") or {}).get("percent", 0.0))
    memory = cgroup.get("memory_current", (process.get("memory") or {}).get("rss", 0))
    quota = cgroup.get("cpu_quota_us")
    calls = int(kernel.get("calls", 0))
    rate = None
    if previous is not None and elapsed and elapsed > 0:
        before = int((previous.get("kernel") or {}).get("calls", 0))
        rate = max(0, calls - before) / elapsed
    return AgentRow(
        id=int(raw["agent_id"]),
        name=str(raw["name"]),
        state=str(raw.get("status", "?")),
        pid=int(process.get("pid", 0)),
        restarts=int(raw.get("restarts", 0)),
        cpu_percent=float(cpu),
        cpu_quota_percent=quota / 1000.0 if quota else None,
        memory=int(memory),
        memory_limit=cgroup.get("memory_limit"),
        syscalls_per_s=rate,
        kernel_time_us=int(kernel.get("kernel_time_us", 0)),
        calls=calls,
        denied=int(kernel.get("denied", 0)),
        throttled=int(kernel.get("throttled", 0)),
    )


@dataclass(slots=True)
class Snapshot:
    """Everything on screen at one refresh. Sections other than agents may be older than the
    agents (they are refreshed in turn); ``None`` means not fetched yet."""

    taken_at: float
    agents: list[AgentRow]
    devices: list[dict[str, Any]] | None = None
    interlocks: list[dict[str, Any]] | None = None
    llm: dict[str, Any] | None = None
    #: Raw ``metrics.agents`` rows by agent id, kept for the next snapshot's rates.
    raw_agents: dict[int, dict[str, Any]] = field(default_factory=dict)

    def engaged(self) -> list[dict[str, Any]]:
        return [i for i in self.interlocks or [] if i.get("engaged")]

    def to_dict(self, agents: list[AgentRow] | None = None) -> dict[str, Any]:
        """The ``--json`` form: what the screen shows (``agents``: the rows shown, filtered
        and sorted; default all), as data."""
        return {
            "taken_at": self.taken_at,
            "agents": [
                {f: getattr(row, f) for f in AgentRow.__dataclass_fields__} | {"memory_percent": row.memory_percent}
                for row in (self.agents if agents is None else agents)
            ],
            "devices": self.devices,
            "interlocks": self.interlocks,
            "llm": self.llm,
        }


def build_snapshot(raw_rows: list[dict[str, Any]], taken_at: float, previous: Snapshot | None) -> Snapshot:
    """A snapshot of the agents from one ``metrics.agents`` reply; other sections carry over
    from ``previous`` until they are fetched again."""
    elapsed = taken_at - previous.taken_at if previous is not None else None
    before = previous.raw_agents if previous is not None else {}
    rows = [agent_row(raw, before.get(int(raw["agent_id"])), elapsed) for raw in raw_rows]
    snap = Snapshot(taken_at=taken_at, agents=rows, raw_agents={int(r["agent_id"]): r for r in raw_rows})
    if previous is not None:
        snap.devices, snap.interlocks, snap.llm = previous.devices, previous.interlocks, previous.llm
    return snap
