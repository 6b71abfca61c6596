"""The exec service's records of running commands: a captured output stream and a job.

stdout and stderr arrive on two non-blocking pipes read by the loop, kept apart, each capped at
:data:`MAX_OUTPUT` bytes (``truncated``; the rest is drained and dropped so the command never
blocks). :mod:`clove.kernel.services.exec` starts the commands and answers when they end.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from clove.errors import CloveError

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.core.loop import Timer
    from clove.sandbox.cgroups import AgentCgroup

MAX_OUTPUT: Final = 1 << 20
READ_CHUNK: Final = 65536
READS_PER_TURN: Final = 16


class Output:
    """One captured stream: the read end of a non-blocking pipe, kept up to ``limit`` bytes."""

    __slots__ = ("fd", "data", "truncated", "limit")

    def __init__(self, fd: int, limit: int = MAX_OUTPUT) -> None:
        self.fd = fd
        self.data = bytearray()
        self.truncated = False
        self.limit = limit

    def drain(self, max_reads: int = READS_PER_TURN) -> bool:
        """Read what the pipe holds now (at most ``max_reads`` chunks, so one chatty command
        cannot hold the loop); False once the pipe is at EOF."""
        for _ in range(max_reads):
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.truncated = True
        return True

    @property
    def open(self) -> bool:
        return self.fd >= 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


@dataclass(eq=False)
class Job:
    """One running command."""

    id: str
    principal_id: int
    argv: list[str]
    deferred: Deferred
    out: Output
    err: Output
    agent: Agent | None = None
    cgroup: AgentCgroup | None = None
    oom_before: int = 0
    zygote_pid: int | None = None
    started: float = field(default_factory=time.monotonic)
    pid: int | None = None
    exit: dict[str, Any] | None = None
    timed_out: bool = False
    done: bool = False
    timeout_timer: Timer | None = None
    grace_timer: Timer | None = None


def oom_kills(cgroup: AgentCgroup | None) -> int:
    """The OOM kills ``cgroup`` has counted so far (0 without a cgroup, or when unreadable)."""
    if cgroup is None:
        return 0
    try:
        return cgroup.oom_kills()
    except (OSError, CloveError):
        return 0
