"""Session syscalls: hello, noop/echo, exit, kernel.info."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, final

from clove import __version__
from clove.kernel.syscalls.base import NoArgs, Syscall, SyscallContext
from clove.wire import PROTOCOL
from clove_sdk.version import SDK_REQUIREMENT


@final
class Hello(Syscall):
    """``hello`` → ``{version, protocol, sdk, agent_id, name, role}``: who the kernel thinks you
    are, and the ``clove-sdk`` releases that speak its protocol (``sdk``)."""

    name = "hello"
    right = "session"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        agent = ctx.agent
        return {
            "success": True,
            "version": __version__,
            "protocol": PROTOCOL.decode(),
            "sdk": SDK_REQUIREMENT,
            "role": ctx.caller.kind,
            "agent_id": agent.id if agent else None,
            "name": agent.name if agent else None,
            "session_id": ctx.session.id if ctx.session else None,
            "kernel_pid": os.getpid(),
        }


@dataclass(frozen=True, slots=True)
class NoopRequest:
    msg: str = ""


@final
class Noop(Syscall):
    """``noop {msg}`` → ``msg``: the cheapest round trip through the whole kernel path."""

    name = "noop"
    right = "session"
    Request = NoopRequest

    def execute(self, ctx: SyscallContext, req: NoopRequest) -> str:
        return req.msg


@final
class Echo(Syscall):
    """``echo {msg}`` → ``msg`` (an alias of noop kept from the original Clove SDK)."""

    name = "echo"
    right = "session"
    Request = NoopRequest

    def execute(self, ctx: SyscallContext, req: NoopRequest) -> str:
        return req.msg


@final
class Exit(Syscall):
    """``exit`` → ``{success}``. From an agent: its next exit is final, whatever its restart
    policy. From an operator: nothing to do (the session simply ends)."""

    name = "exit"
    right = "session"
    category = "AGENT_LIFECYCLE"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        if ctx.agent is not None:
            ctx.kernel.supervisor.request_exit(ctx.agent)
        return {"success": True}


@final
class KernelInfo(Syscall):
    """``kernel.info`` → pid, version, socket, state dir, journal path, sandbox backend."""

    name = "kernel.info"
    right = "admin"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        return ctx.kernel.info()


@final
class SessionClose(Syscall):
    """``session.close`` → ``{success}``: an operator session ends now (names, mailbox and
    subscriptions released). The SDK sends it from ``close()``. For an agent: no effect."""

    name = "session.close"
    right = "session"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        if ctx.session is not None:
            ctx.kernel.sessions.close(ctx.session)
        return {"success": True}


@dataclass(frozen=True, slots=True)
class PollAsyncRequest:
    max_results: int = 10


@final
class PollAsync(Syscall):
    """``async.poll {max_results}`` → ``{success, results, count}``; each result is
    ``{request_id, opcode_name, payload}`` with ``payload`` the JSON of the synchronous reply
    (bounded per caller: see :mod:`clove.kernel.core.asyncjobs`)."""

    name = "async.poll"
    right = "session"
    Request = PollAsyncRequest

    def execute(self, ctx: SyscallContext, req: PollAsyncRequest) -> dict[str, Any]:
        results = ctx.kernel.async_results.poll(ctx.principal_id, max(1, min(req.max_results, 1000)))
        return {"success": True, "results": results, "count": len(results)}


@dataclass(frozen=True, slots=True)
class AuditConfigRequest:
    changes: dict[str, Any]


@final
class SetAuditConfig(Syscall):
    """``audit.config {changes}`` → ``{success, config}``: ``log_syscalls``, ``log_security``,
    ``log_lifecycle``, ``log_ipc``, ``log_state`` (bools), ``max_entries`` (records kept for
    queries). Denials are journaled whatever the switches say."""

    name = "audit.config"
    category = "SECURITY"
    right = "audit"
    Request = AuditConfigRequest

    def execute(self, ctx: SyscallContext, req: AuditConfigRequest) -> dict[str, Any]:
        config = ctx.kernel.audit_config
        config.update(req.changes)
        if "max_entries" in req.changes:
            ctx.kernel.journal.set_ring_size(config.max_entries)
        return {"success": True, "config": config.to_dict()}
