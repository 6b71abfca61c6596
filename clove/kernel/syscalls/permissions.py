"""Permission syscalls: read your own, and set an agent's (operators, or a parent for its child,
never above the setter's own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from clove.errors import PermissionDenied
from clove.kernel.syscalls.base import Syscall, SyscallContext
from clove.policy import Permissions, for_level


@dataclass(frozen=True, slots=True)
class GetRequest:
    agent_id: int | None = None


@final
class GetPermissions(Syscall):
    """``permissions.get {agent_id?}`` → ``{success, permissions, level}``: the caller's own, or
    (operators, parents) another agent's."""

    name = "permissions.get"
    right = "permissions.read"
    Request = GetRequest

    def execute(self, ctx: SyscallContext, req: GetRequest) -> dict[str, Any]:
        perms = ctx.perms
        if req.agent_id is not None and req.agent_id != ctx.principal_id:
            target = ctx.kernel.supervisor.table.find(agent_id=req.agent_id)
            if not ctx.is_operator and target.parent_id != ctx.principal_id:
                raise PermissionDenied("only operators and an agent's parent may read its permissions")
            perms = target.permissions
        return {"success": True, "permissions": perms.to_wire(), "level": perms.level}


@dataclass(frozen=True, slots=True)
class SetRequest:
    permissions: dict[str, Any] | None = None
    level: str | None = None
    agent_id: int | None = None


@final
class SetPermissions(Syscall):
    """``permissions.set {permissions?, level?, agent_id?}`` → ``{success, agent_id, permissions}``.

    ``level`` resets to that level's defaults, then ``permissions`` overrides single grants. An
    agent may lower its own permissions, or set its child's within its own; it can never raise
    anything. Operators may set any agent's.
    """

    name = "permissions.set"
    category = "SECURITY"
    right = "permissions.read"
    Request = SetRequest

    def execute(self, ctx: SyscallContext, req: SetRequest) -> dict[str, Any]:
        supervisor = ctx.kernel.supervisor
        target_id = req.agent_id if req.agent_id is not None else ctx.caller.agent_id
        if target_id is None:
            raise PermissionDenied("operators' permissions come from the kernel config (kernel.operator_level)")
        target = supervisor.table.find(agent_id=target_id)
        current = target.permissions
        base = for_level(req.level, work_dir=current.work_dir) if req.level is not None else current
        new: Permissions = base.with_grants(req.permissions or {})
        if not ctx.is_operator:
            if target.id != ctx.principal_id and target.parent_id != ctx.principal_id:
                raise PermissionDenied("an agent may only set its own or its children's permissions")
            if not new.within(ctx.perms):
                raise PermissionDenied(
                    "permissions cannot exceed the setter's own", details={"requested": new.to_wire(), "own": ctx.perms.to_wire()}
                )
        target.permissions = new
        supervisor.permissions_changed(target)
        return {"success": True, "agent_id": target.id, "permissions": new.to_wire(), "level": new.level}


SYSCALLS: tuple[type[Syscall], ...] = (GetPermissions, SetPermissions)
