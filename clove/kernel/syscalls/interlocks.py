"""Interlock syscalls, for operators: list, engage (``clove estop``) and release.

Agents cannot call them (they need the ``admin`` right); an agent that should be able to stop
the machine emits the event an interlock's trigger names instead. See clove.kernel.services.interlocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from clove.kernel.syscalls.base import Syscall, SyscallContext


@final
class ListInterlocks(Syscall):
    """``interlock.list`` → ``{success, interlocks}``: each with its trigger, actions and, when
    engaged, the engagement record (cause, per-action status and latency)."""

    name = "interlock.list"
    category = "SECURITY"
    right = "admin"

    def execute(self, ctx: SyscallContext, req: Any) -> dict[str, Any]:
        return {"success": True, "interlocks": ctx.kernel.interlocks.views()}


@dataclass(frozen=True, slots=True)
class EngageRequest:
    name: str | None = None
    reason: str = "operator"


@final
class Engage(Syscall):
    """``interlock.engage {name?, reason?}`` → ``{success, engaged}``: engage one interlock, or
    every one when no name is given (an emergency stop).

    :raises NotFound: no such interlock.
    """

    name = "interlock.engage"
    category = "SECURITY"
    right = "admin"
    Request = EngageRequest

    def execute(self, ctx: SyscallContext, req: EngageRequest) -> dict[str, Any]:
        interlocks = ctx.kernel.interlocks
        names = [req.name] if req.name else list(interlocks.specs)
        cause = f"operator (session {ctx.principal_id}): {req.reason}"
        return {"success": True, "engaged": [interlocks.engage(n, cause=cause, operator=True) for n in names]}


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    name: str


@final
class Release(Syscall):
    """``interlock.release {name}`` → ``{success, released}``.

    :raises NotFound: no such interlock. :raises Conflict: it is not engaged.
    """

    name = "interlock.release"
    category = "SECURITY"
    right = "admin"
    Request = ReleaseRequest

    def execute(self, ctx: SyscallContext, req: ReleaseRequest) -> dict[str, Any]:
        return {"success": True, "released": ctx.kernel.interlocks.release(req.name)}


SYSCALLS: tuple[type[Syscall], ...] = (ListInterlocks, Engage, Release)
