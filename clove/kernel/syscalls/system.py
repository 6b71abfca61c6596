"""Session syscalls: hello, noop/echo, exit, kernel.info."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, final

from clove import __version__
from clove.wire import PROTOCOL
from clove.kernel.syscalls.base import NoArgs, Syscall, SyscallContext


@final
class Hello(Syscall):
    """``hello`` → ``{version, protocol, agent_id, name, role}``: who the kernel thinks you are."""

    name = "hello"
    agent_allowed = True

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        agent = ctx.agent
        return {
            "success": True,
            "version": __version__,
            "protocol": PROTOCOL.decode(),
            "role": ctx.caller.kind,
            "agent_id": agent.id if agent else None,
            "name": agent.name if agent else None,
            "kernel_pid": os.getpid(),
        }


@dataclass(frozen=True, slots=True)
class NoopRequest:
    msg: str = ""


@final
class Noop(Syscall):
    """``noop {msg}`` → ``msg``: the cheapest round trip through the whole kernel path."""

    name = "noop"
    agent_allowed = True
    Request = NoopRequest

    def execute(self, ctx: SyscallContext, req: NoopRequest) -> str:
        return req.msg


@final
class Echo(Syscall):
    """``echo {msg}`` → ``msg`` (an alias of noop kept from the original Clove SDK)."""

    name = "echo"
    agent_allowed = True
    Request = NoopRequest

    def execute(self, ctx: SyscallContext, req: NoopRequest) -> str:
        return req.msg


@final
class Exit(Syscall):
    """``exit`` → ``{success}``. From an agent: its next exit is final, whatever its restart
    policy. From an operator: nothing to do (the session simply ends)."""

    name = "exit"
    agent_allowed = True
    category = "AGENT_LIFECYCLE"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        if ctx.agent is not None:
            ctx.kernel.supervisor.request_exit(ctx.agent)
        return {"success": True}


@final
class KernelInfo(Syscall):
    """``kernel.info`` → pid, version, socket, state dir, journal path, sandbox backend."""

    name = "kernel.info"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        return ctx.kernel.info()
