"""What the exec service answers when a command could not run: the structured error for a
zygote's ``exec_exited`` report that carries an ``error`` (the ``stage`` that failed and its
``errno``), and for a command whose agent went away under it."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from clove.errors import (
    CloveError,
    Conflict,
    InvalidArguments,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    SandboxError,
)

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent


def launch_error(program: str, report: dict[str, Any]) -> CloveError:
    """The error for a command that could not be started, from the zygote's report."""
    stage, number, message = report.get("stage"), report.get("errno"), str(report.get("error"))
    details = {"stage": stage, "error": message, "program": program}
    if stage == "lookup":
        return Conflict("the agent is not running", details=details)
    if stage in ("exec", "cwd") and number in (errno.ENOENT, errno.ENOTDIR):
        what = f"command not found: {program}" if stage == "exec" else "the working directory is gone"
        return NotFound(what, details=details)
    if stage in ("exec", "cwd") and number in (errno.EACCES, errno.EPERM):
        what = (
            f"{program} may not be executed" if stage == "exec" else "the working directory is not accessible"
        )
        return PermissionDenied(f"{what} by the caller's user", details=details)
    if stage == "cwd" and number == errno.ESTALE:
        return Conflict("the working directory moved while the command started", details=details)
    if stage == "exec" and number == errno.ENOEXEC:
        return InvalidArguments(f"{program} is not an executable format", details=details)
    if stage == "fork" and number == errno.EAGAIN:
        return QuotaExceeded("no process left under the agent's pids limit", details=details)
    return SandboxError(f"the command could not be started ({stage}: {message})", details=details)


def agent_exited(agent: Agent) -> Conflict:
    """The error for a command whose agent exited while it ran."""
    return Conflict(f"agent {agent.name!r} exited while the command ran", details={"agent_id": agent.id})
