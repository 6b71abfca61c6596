"""Agent lifecycle syscalls: spawn, kill, pause, resume, list, remove, logs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, final

from clove.config import (
    DEVICE_WAIT_POLICIES,
    RESTART_POLICIES,
    AgentConfig,
    parse_cpu,
    parse_memory,
    parse_pids,
    validate_name,
)
from clove.config.egress import parse_cidrs, parse_rules
from clove.errors import CloveError, InvalidArguments, PermissionDenied
from clove.kernel.core.agents import Agent
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.devices.settings import grants_from_wire
from clove.kernel.supervision.limits import resolve as resolve_limits
from clove.kernel.syscalls.base import NoArgs, Syscall, SyscallContext
from clove.policy import for_level

_LIMIT_KEYS = ("memory", "cpu", "cpu_quota", "cpu_percent", "pids", "max_pids")


def limits_from_wire(limits: dict[str, Any]) -> dict[str, int | None]:
    """The spawn ``limits`` map (original Clove keys and Clove's own) → bytes, µs, count.

    :raises InvalidArguments: naming the bad key.
    """
    unknown = sorted(set(limits) - set(_LIMIT_KEYS))
    if unknown:
        raise InvalidArguments(f"agent.spawn: unknown limit {unknown[0]!r}", details={"known": list(_LIMIT_KEYS)})
    out: dict[str, int | None] = {"memory_bytes": None, "cpu_quota_us": None, "pids": None}
    try:
        if limits.get("memory") is not None:
            out["memory_bytes"] = parse_memory(limits["memory"])
        cpu = [k for k in ("cpu", "cpu_quota", "cpu_percent") if limits.get(k) is not None]
        if len(cpu) > 1:
            raise ValueError(f"give one of cpu, cpu_quota, cpu_percent; got {cpu}")
        if cpu:
            value = limits[cpu[0]]
            if cpu[0] == "cpu_percent" and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = f"{value}%"
            out["cpu_quota_us"] = parse_cpu(value)
        if limits.get("pids") is not None and limits.get("max_pids") is not None:
            raise ValueError("give pids or max_pids, not both")
        pids = limits.get("pids") if limits.get("pids") is not None else limits.get("max_pids")
        if pids is not None:
            out["pids"] = parse_pids(pids)
    except ValueError as err:
        raise InvalidArguments(f"agent.spawn: limits: {err}") from None
    return out


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    name: str
    script: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    sandboxed: bool = True
    #: ``True`` (through the egress proxy, by ``egress`` rules), ``False`` or ``"full"``.
    network: bool | str = False
    egress: list[str] | None = None
    egress_private: list[str] | None = None
    limits: dict[str, Any] | None = None
    restart_policy: str = "never"
    max_restarts: int = 5
    restart_window: float = 300.0
    interpreter: str | None = None
    working_dir: str | None = None
    level: str | None = None
    permissions: dict[str, Any] | None = None
    devices: dict[str, Any] | None = None
    device_wait: str = "start"
    device_timeout: float = 30.0
    detached: bool = False


@final
class Spawn(Syscall):
    """``agent.spawn`` → ``{success, id, name, pid, status, restart_policy, isolation}``, sent
    once the agent's sandbox is up and its process runs.

    Limits the spawn does not name get the kernel's defaults for the agent (``[limits]``,
    ``[limits.agents.NAME]``); an agent's child never gets more than its parent has
    (:mod:`clove.kernel.supervision.limits`). The reply's ``isolation`` shows each value's source
    and ceiling.

    An agent with ``devices`` starts once they are ready, or after ``device_timeout`` seconds
    when ``device_wait`` (``start`` | ``fail``) says what then; the reply waits for it. An agent's
    child is stopped when its parent exits unless it is spawned ``detached``, which needs the
    ``can_detach`` grant (docs/supervision.md).

    :raises proto.invalid_args: bad name, limits or policy; a limit above its ceiling.
    :raises perm.denied: a child asking for more than its parent has; ``detached`` without
        ``can_detach``.
    :raises conflict: name in use.
    :raises spawn.failed: missing script, or the sandbox or interpreter failed to start.
    :raises sandbox.unenforceable: ``require_isolation`` and a limit cannot be enforced.
    """

    name = "agent.spawn"
    category = "AGENT_LIFECYCLE"
    right = "agents.spawn"
    Request = SpawnRequest

    def execute(self, ctx: SyscallContext, req: SpawnRequest) -> Deferred:
        try:
            validate_name(req.name)
        except ValueError as err:
            raise InvalidArguments(f"agent.spawn: {err}") from None
        if req.restart_policy not in RESTART_POLICIES:
            raise InvalidArguments(f"agent.spawn: restart_policy must be one of {', '.join(RESTART_POLICIES)}")
        if req.max_restarts < 0 or req.restart_window <= 0:
            raise InvalidArguments("agent.spawn: max_restarts must be >= 0 and restart_window > 0")
        if req.device_wait not in DEVICE_WAIT_POLICIES:
            raise InvalidArguments(f"agent.spawn: device_wait must be one of {', '.join(DEVICE_WAIT_POLICIES)}", details={"argument": "device_wait"})
        if req.device_timeout <= 0:
            raise InvalidArguments("agent.spawn: device_timeout must be positive", details={"argument": "device_timeout"})
        for label, path in (("script", req.script), ("interpreter", req.interpreter), ("working_dir", req.working_dir)):
            if path is not None and not os.path.isabs(path):
                raise InvalidArguments(f"agent.spawn: {label} must be an absolute path, got {path!r}")
        limits = limits_from_wire(req.limits or {})
        egress = egress_from_wire(req)
        parent = ctx.agent
        if parent is not None:  # an agent spawning a child: sandboxed, within its own limits and rights
            ctx.perms.check_spawn(len(ctx.kernel.supervisor.children_of(parent)))
            if not req.sandboxed or req.network and not parent.spec.network or req.interpreter or req.working_dir:
                raise PermissionDenied("an agent's children run sandboxed, with its interpreter and no more network than it has")
            check_child_egress(egress, parent.spec)
            if req.devices:
                raise PermissionDenied("an agent cannot grant devices to its children", details={"grant": "devices"})
            if req.detached:
                ctx.perms.check_detach()
        devices = grants_from_wire(req.devices, {d.name: d for d in ctx.kernel.config.devices}) if req.devices else {}
        level = req.level or (parent.permissions.level if parent is not None else "standard")
        spec = AgentConfig(
            name=req.name,
            script=os.path.normpath(req.script),
            args=tuple(req.args),
            env=dict(req.env),
            sandboxed=req.sandboxed,
            network=egress["network"],
            network_full=egress["network_full"],
            egress=egress["egress"],
            egress_private=egress["egress_private"],
            restart=req.restart_policy,
            max_restarts=req.max_restarts,
            restart_window=float(req.restart_window),
            interpreter=req.interpreter,
            working_dir=req.working_dir,
            level=level,
            permissions=dict(req.permissions or {}),
            devices=devices,
            device_wait=req.device_wait,
            device_timeout=float(req.device_timeout),
            **limits,
        )
        spec = resolve_limits(spec, ctx.kernel.config.limits, parent=parent.spec if parent is not None else None)
        deferred = Deferred()

        def started(agent: Agent, error: CloveError | None) -> None:
            if error is not None:
                deferred.reject(error)
            else:
                deferred.resolve(spawn_reply(agent))

        for_level(level).with_grants(spec.permissions)  # bad level or grants: refused before anything exists
        ctx.kernel.supervisor.spawn(spec, on_started=started, parent=parent, detached=req.detached and parent is not None)
        return deferred


def egress_from_wire(req: SpawnRequest) -> dict[str, Any]:
    """``network``, ``egress`` and ``egress_private`` of a spawn → the AgentConfig fields.

    :raises InvalidArguments: naming the bad argument.
    """
    if req.network not in (True, False, "full"):
        raise InvalidArguments(f'agent.spawn: network must be true, false or "full", got {req.network!r}', details={"argument": "network"})
    out: dict[str, Any] = {"network": req.network is not False, "network_full": req.network == "full"}
    for key, parse in (("egress", parse_rules), ("egress_private", parse_cidrs)):
        try:
            out[key] = parse(getattr(req, key) or [])
        except ValueError as err:
            raise InvalidArguments(f"agent.spawn: {key}: {err}", details={"argument": key}) from None
        if out[key] and req.network is not True:
            raise InvalidArguments(f"agent.spawn: {key} applies to network = true only (the egress proxy)", details={"argument": key})
    return out


def check_child_egress(egress: dict[str, Any], parent: AgentConfig) -> None:
    """A child reaches no more than its parent: full network only from a full parent, and only
    egress rules and private ranges its parent holds.

    :raises PermissionDenied: naming what the parent lacks.
    """
    if egress["network_full"] and not parent.network_full:
        raise PermissionDenied('a child cannot have network = "full" when its parent has not', details={"grant": "network"})
    for key in ("egress", "egress_private"):
        extra = [item for item in egress[key] if item not in getattr(parent, key)]
        if extra:
            raise PermissionDenied(f"a child's {key} must be among its parent's; not: {', '.join(extra)}", details={"grant": key, "not_held": extra})


def spawn_reply(agent: Agent) -> dict[str, Any]:
    return {
        "success": True,
        "id": agent.id,
        "name": agent.name,
        "pid": agent.pid,
        "status": agent.state.value,
        "restart_policy": agent.spec.restart,
        "isolation": agent.isolation_report(),
    }


@dataclass(frozen=True, slots=True)
class TargetRequest:
    name: str | None = None
    agent_id: int | None = None


class _Targeted(Syscall):
    category = "AGENT_LIFECYCLE"
    right = "agents.spawn"
    Request = TargetRequest

    @staticmethod
    def target(ctx: SyscallContext, req: TargetRequest) -> Agent:
        if req.name is None and req.agent_id is None:
            raise InvalidArguments("give name or agent_id")
        return own_child_or_any(ctx, ctx.kernel.supervisor.table.find(name=req.name, agent_id=req.agent_id))


def own_child_or_any(ctx: SyscallContext, agent: Agent) -> Agent:
    """Operators act on any agent; an agent only on its own children."""
    if ctx.agent is not None and agent.parent_id != ctx.agent.id:
        raise PermissionDenied(f"agent {agent.name!r} is not a child of the caller", details={"target": agent.id})
    return agent


@final
class Kill(_Targeted):
    """``agent.kill {name | agent_id}`` → ``{success, id, name}`` once the agent is gone: SIGTERM,
    SIGKILL of the whole tree after ``sandbox.kill_grace``; the record is removed.

    :raises notfound: no such agent.
    """

    name = "agent.kill"

    def execute(self, ctx: SyscallContext, req: TargetRequest) -> Deferred:
        agent = self.target(ctx, req)
        deferred = Deferred()
        ctx.kernel.supervisor.kill(
            agent, lambda a, _err: deferred.resolve({"success": True, "id": a.id, "name": a.name, "exit": a.exit.to_dict() if a.exit else None})
        )
        return deferred


@final
class Pause(_Targeted):
    """``agent.pause`` → ``{success, via}``: freeze every process of the agent.

    :raises conflict: the agent is not running.
    """

    name = "agent.pause"

    def execute(self, ctx: SyscallContext, req: TargetRequest) -> dict[str, Any]:
        return {"success": True, "via": ctx.kernel.supervisor.pause(self.target(ctx, req))}


@final
class Resume(_Targeted):
    """``agent.resume`` → ``{success}``.  :raises conflict: the agent is not paused."""

    name = "agent.resume"

    def execute(self, ctx: SyscallContext, req: TargetRequest) -> dict[str, Any]:
        ctx.kernel.supervisor.resume(self.target(ctx, req))
        return {"success": True}


@final
class Remove(_Targeted):
    """``agent.remove`` → ``{success}``: forget an exited or failed agent (``clove rm``).

    :raises conflict: the agent is still alive.
    """

    name = "agent.remove"

    def execute(self, ctx: SyscallContext, req: TargetRequest) -> dict[str, Any]:
        ctx.kernel.supervisor.remove(self.target(ctx, req))
        return {"success": True}


@final
class ListAgents(Syscall):
    """``agent.list`` → ``{success, agents: [...]}``. Operators see every detail (pid, exit
    reason, isolation report, cgroup stats); an agent sees ids, names and states only."""

    name = "agent.list"
    right = "agents.read"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        supervisor = ctx.kernel.supervisor
        rows = []
        for agent in sorted(supervisor.table, key=lambda a: a.id):
            row = agent.summary(detailed=ctx.caller.is_operator)
            if ctx.caller.is_operator:
                row["stats"] = supervisor.stats(agent)
            rows.append(row)
        return {"success": True, "agents": rows}


@dataclass(frozen=True, slots=True)
class LogsRequest:
    name: str | None = None
    agent_id: int | None = None
    offset: int = -16384
    max_bytes: int = 65536


@final
class Logs(Syscall):
    """``agent.logs {name | agent_id, offset, max_bytes}`` → ``{success, data, offset, size}``.
    A negative offset reads the last ``-offset`` bytes; pass back ``offset`` to follow."""

    name = "agent.logs"
    right = "agents.logs"
    Request = LogsRequest

    def execute(self, ctx: SyscallContext, req: LogsRequest) -> dict[str, Any]:
        supervisor = ctx.kernel.supervisor
        agent = own_child_or_any(ctx, supervisor.table.find(name=req.name, agent_id=req.agent_id))
        rt = supervisor.runtime(agent)
        if rt is None:
            raise PermissionDenied("no logs for this agent")
        rt.logs.drain()
        data, offset, size = rt.logs.read(req.offset, max(1, min(req.max_bytes, 1 << 20)))
        return {"success": True, "data": data, "offset": offset, "size": size, "state": agent.state.value}
