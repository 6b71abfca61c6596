"""The zygote's spare processes: a C forked ahead of time that has already joined a fresh cgroup
(:func:`~clove.sandbox.children.run_spare`), so a spawn does not wait for the cgroup attach. The
kernel's side, which makes the cgroups and names the slots, is
:mod:`clove.kernel.supervision.spares`.
"""

from __future__ import annotations

import array
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from clove.sandbox.children import run_spare


class Fork(Protocol):
    """The zygote's fork: the child runs ``run(status_w)``; returns ``(pid, status_r)``."""

    def __call__(self, run: Callable[[int], object], *, child_closes: tuple[socket.socket, ...] = ()) -> tuple[int, int]: ...


class Spares:
    """Spare Cs by slot, each with its control socket and status pipe."""

    def __init__(self, fork: Fork) -> None:
        self.fork = fork
        self.slots: dict[str, tuple[int, socket.socket, int]] = {}  # slot -> (pid, control, status_r)
        self.pids: dict[int, str] = {}

    def prepare(self, slot: str, attach: tuple[str, ...]) -> None:
        """Fork a spare C that joins ``attach`` now and becomes an agent on a later spawn."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid, status_r = self.fork(lambda status_w: run_spare(theirs, attach, status_w), child_closes=(ours,))
        theirs.close()
        self.slots[slot] = (pid, ours, status_r)
        self.pids[pid] = slot

    def take(self, slot: object, wire_spec: dict[str, Any], log_fd: int) -> tuple[int, int] | None:
        """Hand the spare in ``slot`` an agent's spec and log pipe; returns its ``(pid,
        status_r)``, or None without a live spare there (then the agent is forked anew)."""
        entry = self.slots.pop(str(slot), None) if slot is not None else None
        if entry is None:
            return None
        pid, ctl, status_r = entry
        self.pids.pop(pid, None)
        try:
            ctl.sendmsg([msgpack.packb(wire_spec, use_bin_type=True)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd]))])
        except OSError:  # the spare died (its cgroup was refused?): start the agent the usual way
            ctl.close()
            os.close(status_r)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return None
        ctl.close()
        return pid, status_r

    def drop(self, slot: str) -> None:
        entry = self.slots.pop(slot, None)
        if entry is not None:
            pid, ctl, status_r = entry
            ctl.close()  # the spare reads EOF and exits
            os.close(status_r)

    def owns(self, pid: int) -> bool:
        return pid in self.pids

    def reaped(self, pid: int) -> None:
        """A child that was no tree's has been reaped: if it was a spare that died unused, forget
        it (the next spawn forks anew)."""
        slot = self.pids.pop(pid, None)
        if slot is not None:
            self.drop(slot)
