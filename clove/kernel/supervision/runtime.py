"""What the supervisor holds for each agent while it exists: its :class:`Runtime` (directories,
channel, log, cgroup, timers, waiters) and, once started, its :class:`Handles` (G's pidfd and
status pipe, handed over by the zygote; see :mod:`.adoption`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clove.errors import CloveError
from clove.kernel.core.agents import Agent, ExitInfo
from clove.kernel.core.loop import Timer
from clove.kernel.supervision.logs import LogCapture
from clove.sandbox.cgroups import AgentCgroup
from clove.sandbox.spec import SpawnSpec

Callback = Callable[[Agent, "CloveError | None"], None]
#: Called with ``(agent, runtime, exit info)`` when an incarnation has ended, before its cgroup
#: is released (see :attr:`.supervisor.Supervisor.exit_hooks`).
ExitHook = Callable[[Agent, "Runtime", ExitInfo], None]


class WatchedFd:
    """An fd for the loop (which keys readers by object): one of an agent's handles."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


@dataclass(eq=False)
class Handles:
    """The kernel's own handles on a started incarnation, from the zygote's ``started``: G's
    pidfd and the read end of G's status pipe. Watched only once the zygote is gone."""

    pidfd: WatchedFd
    status: WatchedFd
    watched: bool = False
    status_eof: bool = False
    buffer: bytes = b""
    final: int | None = None  # A's wait status, as G wrote it

    def close(self) -> None:
        for handle in (self.pidfd, self.status):
            if handle.fd >= 0:
                os.close(handle.fd)
                handle.fd = -1


@dataclass(eq=False)
class Runtime:
    """What one agent holds while it exists: directories, channel, log, current cgroup."""

    home: Path
    endpoint: str
    logs: LogCapture
    cgroup: AgentCgroup | None = None
    pgid: int | None = None
    spawn_spec: SpawnSpec | None = None  # this incarnation's, for a new zygote's exec
    handles: Handles | None = None
    start_timer: Timer | None = None
    kill_timer: Timer | None = None
    backoff_timer: Timer | None = None
    #: Cancels the wait for its devices while a start waits on them (see :mod:`.devicewait`).
    device_wait: Callable[[], None] | None = None
    timed_out: bool = False
    start_waiters: list[Callback] = field(default_factory=list)
    gone_waiters: list[Callback] = field(default_factory=list)


def notify(waiters: list[Callback], agent: Agent, error: CloveError | None) -> None:
    """Call and clear ``waiters`` (a waiter added meanwhile waits for the next time)."""
    pending, waiters[:] = list(waiters), []
    for waiter in pending:
        waiter(agent, error)
