"""The syscall registry: an explicit, ordered map from wire name to handler. Each area module
lists its syscall classes in ``SYSCALLS``."""

from __future__ import annotations

from clove.kernel.syscalls import (
    devices,
    events,
    exec,
    files,
    http,
    interlocks,
    llm,
    messaging,
    metrics,
    permissions,
    postmortem,
    recording,
    state,
)
from clove.kernel.syscalls.agents import Kill, ListAgents, Logs, Pause, Remove, Resume, Spawn
from clove.kernel.syscalls.audit import GetAuditLog
from clove.kernel.syscalls.base import Syscall
from clove.kernel.syscalls.system import (
    Echo,
    Exit,
    Hello,
    KernelInfo,
    Noop,
    PollAsync,
    SessionClose,
    SetAuditConfig,
)

_CORE: tuple[type[Syscall], ...] = (
    Hello, Noop, Echo, Exit, SessionClose, KernelInfo, PollAsync, SetAuditConfig,
    Spawn, Kill, Pause, Resume, Remove, ListAgents, Logs, GetAuditLog,
)  # fmt: skip
SYSCALLS: dict[str, Syscall] = {
    cls.name: cls()
    for cls in (
        *_CORE,
        *messaging.SYSCALLS,
        *events.SYSCALLS,
        *state.SYSCALLS,
        *files.SYSCALLS,
        *exec.SYSCALLS,
        *http.SYSCALLS,
        *metrics.SYSCALLS,
        *llm.SYSCALLS,
        *permissions.SYSCALLS,
        *devices.SYSCALLS,
        *interlocks.SYSCALLS,
        *recording.SYSCALLS,
        *postmortem.SYSCALLS,
    )
}

__all__ = ["SYSCALLS"]
