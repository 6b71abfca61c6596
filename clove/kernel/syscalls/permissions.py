"""Permission syscalls: read your own, set an agent's (operators, or a parent for its child,
never above the setter's own), and lower your own (an agent, or an operator session)."""

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
    anything. Operators may set any agent's (within their own once their session lowered
    itself), and lower their own session's: without ``agent_id`` the target is the session.
    """

    name = "permissions.set"
    category = "SECURITY"
    right = "permissions.read"
    Request = SetRequest

    def execute(self, ctx: SyscallContext, req: SetRequest) -> dict[str, Any]:
        supervisor = ctx.kernel.supervisor
        target_id = req.agent_id if req.agent_id is not None else ctx.caller.agent_id
        if target_id is None:
            return _set_own_session(ctx, req)
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
        elif ctx.session is not None and ctx.session.permissions is not None and not new.within(ctx.perms):
            # A session that lowered itself is held to it, in what it grants as in what it does.
            raise PermissionDenied(
                "this operator session lowered its permissions; it cannot grant more than it has",
                details={"requested": new.to_wire(), "own": ctx.perms.to_wire()},
            )
        target.permissions = new
        supervisor.permissions_changed(target)
        return {"success": True, "agent_id": target.id, "permissions": new.to_wire(), "level": new.level}


def _set_own_session(ctx: SyscallContext, req: SetRequest) -> dict[str, Any]:
    """An operator session sets its own permissions: at most what it has now, which is at most
    ``kernel.operator_level``. Like an agent, a session that lowered itself cannot climb back
    (what it runs afterwards, a replay's recorded calls included, stays below); a new
    connection starts at the configured level again."""
    session = ctx.session
    if session is None:  # an operator without a session: nothing to hold the change
        raise PermissionDenied("operators' permissions come from the kernel config (kernel.operator_level)")
    configured = for_level(ctx.kernel.config.kernel.operator_level)
    base = for_level(req.level) if req.level is not None else ctx.perms
    new = base.with_grants(req.permissions or {})
    if not new.within(ctx.perms):
        above = f"kernel.operator_level ({configured.level})" if not new.within(configured) else f"what it has now ({ctx.perms.level})"
        raise PermissionDenied(
            f"an operator session cannot raise its permissions above {above}",
            details={"requested": new.to_wire(), "own": ctx.perms.to_wire()},
        )
    session.permissions = None if new == configured else new
    return {"success": True, "agent_id": None, "session_id": session.id, "permissions": new.to_wire(), "level": new.level}


SYSCALLS: tuple[type[Syscall], ...] = (GetPermissions, SetPermissions)
