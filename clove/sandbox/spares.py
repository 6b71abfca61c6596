"""The zygote's spares: agent trees made ahead of time (:mod:`clove.sandbox.sparechild` says
what a spare has done before its claim, and why). The kernel decides how many and names each
one's slot and cgroup (:mod:`clove.kernel.supervision.spares`); the zygote forks them, hands a
spawn's spec to the one its slot names, and forgets the ones that died.

A spare copies the host's mount table when its G enters its own mount namespace. A mount made on
the host afterwards would be missing from its view, so a spare is only used while the host's
``/proc/self/mountinfo`` is what it was when the spare was forked; otherwise the spawn forks anew.
"""

from __future__ import annotations

import array
import contextlib
import os
import selectors
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from clove.sandbox.sparechild import READY, run_spare
from clove.sandbox.spec import SpawnSpec, StagedImage


class Fork(Protocol):
    """The zygote's fork: the child runs ``run(status_w)``; returns ``(pid, status_r)``."""

    def __call__(self, run: Callable[[int], object], *, child_closes: tuple[socket.socket, ...] = ()) -> tuple[int, int]: ...


class Send(Protocol):
    """Sends an event to the kernel."""

    def __call__(self, event: dict[str, Any], fds: list[int] | None = None) -> None: ...


@dataclass
class Prepared:
    """One spare's C: its slot, pid, the zygote's end of its control socket (watched until the
    claim: C says when the spare is made), its status pipe, and the host's mount table when it
    was forked."""

    slot: str
    pid: int
    ctl: socket.socket
    status_r: int
    mounts: bytes


def host_mounts() -> bytes:
    """The zygote's (the host's) mount table, to compare."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return f.read()
    except OSError:
        return b""


class Spares:
    """Spare Cs by slot. Tells the kernel ``spare_ready`` once a spare is made and
    ``spare_gone`` when one died unused."""

    def __init__(self, fork: Fork, selector: selectors.BaseSelector, send: Send, mounts: Callable[[], bytes] = host_mounts) -> None:
        self.fork = fork
        self.selector = selector
        self.send = send
        self.mounts = mounts
        self.slots: dict[str, Prepared] = {}
        self.pids: dict[int, str] = {}

    def prepare(self, slot: str, attach: tuple[str, ...], stage: StagedImage) -> None:
        """Fork a spare C that joins ``attach`` and stages ``stage`` now, and becomes an agent
        on a later spawn naming ``slot``."""
        if slot in self.slots:
            self.drop(slot)
        mounts = self.mounts()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid, status_r = self.fork(lambda status_w: run_spare(theirs, attach, stage, status_w), child_closes=(ours,))
        except OSError:  # no spare (out of processes?): the spawn naming it forks anew
            ours.close()
            return
        finally:
            theirs.close()
        entry = Prepared(slot, pid, ours, status_r, mounts)
        self.slots[slot] = entry
        self.pids[pid] = slot
        self.selector.register(ours, selectors.EVENT_READ, entry)

    def readable(self, entry: Prepared) -> None:
        """C said the spare is made, or its socket closed (it died)."""
        try:
            said = entry.ctl.recv(64)
        except BlockingIOError:
            return
        except OSError:
            said = b""
        if said == READY:
            self.send({"ev": "spare_ready", "slot": entry.slot})
        elif not said and self.slots.get(entry.slot) is entry:
            self.drop(entry.slot)
            self.send({"ev": "spare_gone", "slot": entry.slot})

    def take(self, slot: object, wire_spec: dict[str, Any], spec: SpawnSpec, log_fd: int) -> tuple[int, int] | None:
        """Hand the spare in ``slot`` an agent's spec and log pipe; returns its ``(pid,
        status_r)``, or None without a usable spare there (then the agent is forked anew)."""
        entry = self.slots.pop(str(slot), None) if slot is not None else None
        if entry is None:
            return None
        self.pids.pop(entry.pid, None)
        self.selector.unregister(entry.ctl)
        if not spec.namespaces or self.mounts() != entry.mounts:
            self._kill(entry)  # an unsandboxed agent, or the host's mounts changed since
            return None
        with contextlib.suppress(OSError):  # its whole group (C, G, a running mkfs): a spawn waits now
            os.setpriority(os.PRIO_PGRP, entry.pid, 0)
        try:
            entry.ctl.sendmsg([msgpack.packb(wire_spec, use_bin_type=True)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd]))])
        except OSError:  # the spare died (its cgroup was refused?): start the agent the usual way
            self._kill(entry)
            return None
        entry.ctl.close()
        return entry.pid, entry.status_r

    def drop(self, slot: str) -> None:
        entry = self.slots.pop(slot, None)
        if entry is not None:
            self.pids.pop(entry.pid, None)
            self.selector.unregister(entry.ctl)
            entry.ctl.close()  # the spare reads EOF, removes its image and exits
            os.close(entry.status_r)

    def close_in_child(self) -> None:
        """In a freshly forked child: close the zygote's ends of the spares' control sockets,
        so that a spare sees EOF when the zygote drops it, whoever else was forked since."""
        for entry in self.slots.values():
            entry.ctl.close()

    def owns(self, pid: int) -> bool:
        return pid in self.pids

    def reaped(self, pid: int) -> None:
        """A child that was no tree's has been reaped: if it was a spare that died unused, forget
        it (the next spawn naming its slot forks anew)."""
        slot = self.pids.pop(pid, None)
        if slot is not None:
            self.drop(slot)
            self.send({"ev": "spare_gone", "slot": slot})

    def _kill(self, entry: Prepared) -> None:
        entry.ctl.close()
        os.close(entry.status_r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry.pid, signal.SIGKILL)  # its G reads EOF and exits
