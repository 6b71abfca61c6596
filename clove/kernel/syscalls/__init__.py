"""The syscall registry: an explicit, ordered map from wire name to handler."""

from __future__ import annotations

from clove.kernel.syscalls.agents import Kill, ListAgents, Logs, Pause, Remove, Resume, Spawn
from clove.kernel.syscalls.audit import GetAuditLog
from clove.kernel.syscalls.base import Deferred, Syscall, SyscallContext
from clove.kernel.syscalls.system import Echo, Exit, Hello, KernelInfo, Noop

SYSCALLS: dict[str, Syscall] = {
    cls.name: cls()
    for cls in (Hello, Noop, Echo, Exit, KernelInfo, Spawn, Kill, Pause, Resume, Remove, ListAgents, Logs, GetAuditLog)
}

__all__ = ["SYSCALLS", "Deferred", "Syscall", "SyscallContext"]
