"""The syscall registry: an explicit, ordered map from wire name to handler. Each area module
lists its syscall classes in ``SYSCALLS``."""

from __future__ import annotations

from clove.kernel.syscalls import devices, events, exec, files as fs, http, interlocks, messaging as ipc, llm, metrics, permissions, recording as record, state
from clove.kernel.syscalls import postmortem
from clove.kernel.syscalls.agents import Kill, ListAgents, Logs, Pause, Remove, Resume, Spawn
from clove.kernel.syscalls.audit import GetAuditLog
from clove.kernel.syscalls.base import Deferred, Syscall, SyscallContext
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
        *ipc.SYSCALLS,
        *events.SYSCALLS,
        *state.SYSCALLS,
        *fs.SYSCALLS,
        *exec.SYSCALLS,
        *http.SYSCALLS,
        *metrics.SYSCALLS,
        *llm.SYSCALLS,
        *permissions.SYSCALLS,
        *devices.SYSCALLS,
        *interlocks.SYSCALLS,
        *record.SYSCALLS,
        *postmortem.SYSCALLS,
    )
}

__all__ = ["SYSCALLS", "Deferred", "Syscall", "SyscallContext"]
