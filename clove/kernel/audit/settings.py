"""What the journal records (``set_audit_config``). Security records (denials, malformed
requests) are always kept; syscall and lifecycle records can be switched off by an operator for a
noisy deployment, and the switch itself is journaled."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from clove.errors import InvalidArguments

_BOOL_KEYS = ("log_syscalls", "log_security", "log_lifecycle", "log_ipc", "log_state")


@dataclass(slots=True)
class AuditConfig:
    log_syscalls: bool = True
    log_security: bool = True
    log_lifecycle: bool = True
    log_ipc: bool = True
    log_state: bool = True
    max_entries: int = 10_000

    def wants(self, category: str, denied: bool) -> bool:
        if denied or category == "SECURITY":
            return True  # denials are never dropped, whatever log_security says
        if category == "AGENT_LIFECYCLE":
            return self.log_lifecycle
        if category == "IPC":
            return self.log_ipc
        if category == "STATE_STORE":
            return self.log_state
        return self.log_syscalls

    def update(self, changes: dict[str, Any]) -> None:
        """:raises InvalidArguments: unknown key or wrong type; nothing is changed then."""
        for key, value in changes.items():
            if key in _BOOL_KEYS:
                if not isinstance(value, bool):
                    raise InvalidArguments(f"audit config {key!r} must be a bool")
            elif key == "max_entries":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise InvalidArguments("audit config 'max_entries' must be a positive int")
            else:
                raise InvalidArguments(f"unknown audit config {key!r}; known: {', '.join((*_BOOL_KEYS, 'max_entries'))}")
        for key, value in changes.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
