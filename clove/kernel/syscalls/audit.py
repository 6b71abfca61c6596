"""Audit syscalls: query the journal (``get_audit_log``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from clove.kernel.syscalls.base import Syscall, SyscallContext


@dataclass(frozen=True, slots=True)
class AuditQuery:
    category: str | None = None
    agent_id: int | None = None
    agent_name: str | None = None
    since_id: int = 0
    limit: int = 100


@final
class GetAuditLog(Syscall):
    """``audit.query {category, agent_id, agent_name, since_id, limit}`` →
    ``{success, count, entries}``, oldest first, from the kernel's in-memory ring of recent
    records (``kernel.audit_ring``); ``clove audit --file`` reads the whole journal."""

    name = "audit.query"
    category = "SECURITY"
    right = "audit"
    Request = AuditQuery

    def execute(self, ctx: SyscallContext, req: AuditQuery) -> dict[str, Any]:
        agent_id = req.agent_id
        if req.agent_name is not None and agent_id is None:
            agent_id = ctx.kernel.supervisor.table.find(name=req.agent_name).id
        entries = ctx.kernel.journal.query(
            category=req.category, agent_id=agent_id, since_id=max(0, req.since_id), limit=max(1, min(req.limit, 10_000))
        )
        return {"success": True, "count": len(entries), "entries": entries}
