"""Metrics syscalls: the host, one agent, all visible agents, one cgroup (docs/metrics.md).

All need the ``metrics`` right. Operators see every agent and any cgroup under
``/sys/fs/cgroup``; an agent sees itself and its children, and only its own cgroup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

from clove.errors import NotFound, PermissionDenied
from clove.kernel.syscalls.base import NoArgs, Syscall, SyscallContext

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.services.metrics import MetricsService


def _service(ctx: SyscallContext) -> MetricsService:
    return ctx.kernel.metrics


def _viewer(ctx: SyscallContext) -> int | None:
    """``None`` for operators (they see everything), else the calling agent's id."""
    return None if ctx.is_operator else ctx.principal_id


@final
class SystemMetrics(Syscall):
    """``metrics.system`` → ``{success, cpu: {percent, count, load_avg}, memory: {total,
    available, used, percent}, disk: {read_bytes, write_bytes}, network: {bytes_sent, bytes_recv}}``."""

    name = "metrics.system"
    right = "metrics"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        return _service(ctx).system()


@dataclass(frozen=True, slots=True)
class AgentRequest:
    agent_id: int | None = None


@final
class AgentMetrics(Syscall):
    """``metrics.agent {agent_id?}`` → ``{success, agent_id, name, status, uptime_ms, restarts,
    parent_id, process: {pid, cpu: {percent, seconds}, memory: {rss, vms}, threads, fds},
    cgroup: {...}, held: {...}}``; without ``agent_id``, the calling agent. ``held`` is what the
    kernel holds on the agent's behalf (``async_result_bytes``, ``event_queue_bytes``,
    ``mailbox_bytes``, ``device_queue_bytes``, ``subscriptions``, and counts).

    :raises NotFound: no such agent (or an operator gave no ``agent_id``).
    :raises PermissionDenied: an agent asked about one that is neither itself nor its child.
    """

    name = "metrics.agent"
    right = "metrics"
    Request = AgentRequest

    def execute(self, ctx: SyscallContext, req: AgentRequest) -> dict[str, Any]:
        target_id = req.agent_id if req.agent_id is not None else ctx.caller.agent_id
        if target_id is None:
            raise NotFound(
                "operators have no metrics of their own; give an agent_id", details={"argument": "agent_id"}
            )
        agent: Agent = ctx.kernel.supervisor.table.find(agent_id=target_id)
        viewer = _viewer(ctx)
        if viewer is not None and agent.id != viewer and agent.parent_id != viewer:
            raise PermissionDenied(
                "an agent may read its own and its children's metrics only", details={"agent_id": target_id}
            )
        return _service(ctx).agent(agent)


@final
class AllAgentMetrics(Syscall):
    """``metrics.agents`` → ``{success, agents: [...]}``, each as ``metrics.agent`` returns it
    (without ``success``): every agent for operators, self and children for an agent."""

    name = "metrics.agents"
    right = "metrics"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        service = _service(ctx)
        rows = []
        for agent in service.visible_agents(_viewer(ctx)):
            row = service.agent(agent)
            del row["success"]
            rows.append(row)
        return {"success": True, "agents": rows, "count": len(rows)}


@dataclass(frozen=True, slots=True)
class CgroupRequest:
    cgroup_path: str | None = None


@final
class CgroupMetrics(Syscall):
    """``metrics.cgroup {cgroup_path?}`` → ``{success, cgroup_path, paths, cgroup: {...}}``.

    Operators: a directory under ``/sys/fs/cgroup`` or a cgroup path as in ``/proc/PID/cgroup``
    (looked up in every hierarchy); without one, the parent of this kernel's agent cgroups.
    Agents: their own cgroup only (no path, its name, or a path naming it).

    :raises PermissionDenied: ``..``, a path outside ``/sys/fs/cgroup``, or an agent's path
        naming another cgroup.
    :raises NotFound: no such cgroup, or the caller has none (rlimit fallback).
    """

    name = "metrics.cgroup"
    right = "metrics"
    Request = CgroupRequest

    def execute(self, ctx: SyscallContext, req: CgroupRequest) -> dict[str, Any]:
        service = _service(ctx)
        path = req.cgroup_path
        if ctx.is_operator:
            if path is None:
                dirs = service.default_cgroups()
                if not dirs:
                    raise NotFound("this kernel has no cgroups (rlimit fallback)")
                return service.cgroup(dirs, dirs[0].name)
            return service.cgroup(service.cgroup_dirs(path), path)
        assert ctx.agent is not None  # noqa: S101 - callers are operators or agents
        own = service.cgroup_of(ctx.agent)
        if own is None:
            raise NotFound("this agent has no cgroup (rlimit fallback, or it is not running)")
        if path is not None and path != own.name:
            mine = {str(d) for d in own.dirs}
            try:
                named = service.cgroup_dirs(path)
            except NotFound:
                named = []  # an agent learns nothing about other cgroups, not even whether they exist
            if not named or not all(str(d) in mine for d in named):
                raise PermissionDenied("an agent may read its own cgroup only", details={"cgroup_path": path})
        return service.cgroup([Path(d) for d in own.dirs], own.name)


SYSCALLS: tuple[type[Syscall], ...] = (SystemMetrics, AgentMetrics, AllAgentMetrics, CgroupMetrics)
