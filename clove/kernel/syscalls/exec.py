"""The exec syscall: run a command inside the calling agent's sandbox (an operator's: on the host,
as the operator). See :mod:`clove.kernel.services.exec`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from clove.errors import InvalidArguments
from clove.kernel.syscalls.asynccalls import accept_or_wait
from clove.kernel.syscalls.base import Syscall, SyscallContext

OPCODE = "SYS_EXEC"


@dataclass(frozen=True, slots=True)
class ExecRequest:
    command: str | list[str]
    cwd: str | None = None
    timeout: float = 30.0
    async_: bool = False
    request_id: str | int | None = None


@final
class Exec(Syscall):
    """``exec {command, cwd?, timeout?, async_?, request_id?}`` →
    ``{success, stdout, stderr, exit_code, timed_out, truncated, duration}`` (+ ``signal`` and
    ``exit_code = -signal`` when a signal ended it, ``oom_killed`` at the agent's memory limit).

    ``command`` is an argv list, or a string (run by ``/bin/sh -c`` when it has shell syntax).
    ``success`` is true when the command exited 0 within ``timeout`` seconds (default 30, at
    most 3600). Output is text (undecodable bytes replaced), at most 1 MiB per stream. With
    ``async_`` the reply is ``{success, async, request_id, status: "accepted"}`` and the result
    comes through ``async.poll`` under ``SYS_EXEC``.

    :raises PermissionDenied: the program or working directory is not granted.
    :raises NotFound: no such program or working directory (also reported asynchronously).
    :raises Conflict: the calling agent is not running, or exited while the command ran.
    :raises QuotaExceeded: too many commands running for this caller; with ``async_``, the
        caller's unpolled async results are at its ``async_result_bytes`` bound.
    """

    name = "exec"
    right = "exec"
    Request = ExecRequest

    def execute(self, ctx: SyscallContext, req: ExecRequest) -> Any:
        if isinstance(req.request_id, str) and not 0 < len(req.request_id) <= 128:
            raise InvalidArguments("request_id must be 1-128 characters", details={"argument": "request_id"})
        return accept_or_wait(
            ctx, async_=req.async_, request_id=req.request_id, opcode_name=OPCODE,
            start=lambda: ctx.kernel.execs.run(ctx, req.command, req.cwd, float(req.timeout)),
        )


SYSCALLS: tuple[type[Syscall], ...] = (Exec,)
