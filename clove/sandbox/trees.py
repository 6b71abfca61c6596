"""The zygote's record of the process trees it forked: their status pipes, their reaping, and the
events that report them (see :mod:`clove.sandbox.zygote` for the trees themselves).

Every tree writes JSON lines to its status pipe: ``{"g": pid}`` (C reports G, X reports Y),
``{"a": pid}`` (a keeper G reports A), ``{"ready": ...}`` (A's confinement), ``{"error": ...}``
(a setup stage failed) and ``{"status": N}`` (A's exact wait status). When A ends, G writes A's
exact wait status to the status pipe and exits; as the namespace's init its exit kills
everything A left behind. C's exit re-parents G to the zygote, which reaps it and reports.
Without namespaces G is still A's parent (a child subreaper, not an init): it reports A's status
the same way, and A has a parent-death signal on it.

Out go ``forked`` (C's pid: the tree's process group; ``spare``: whether a prepared spare became
the tree), ``started`` (with G's pidfd and the status pipe, the handover of
:mod:`clove.sandbox.handover`) and ``exited`` for an agent; ``exec_started`` and ``exec_exited``
for a command.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
from dataclasses import dataclass, field
from typing import Any, Protocol

from clove.sandbox.children import kill_group, kill_tree
from clove.sandbox.spares import Spares
from clove.sandbox.spec import SpawnSpec


class Send(Protocol):
    """Sends an event to the kernel, with fds (SCM_RIGHTS) or none."""

    def __call__(self, event: dict[str, Any], fds: list[int] | None = None) -> None: ...


@dataclass
class Tracked:
    """One process tree: an agent incarnation (``key``: its spawn key; X is C, Y is G) or a
    command (``kind == "exec"``; ``key``: the job id; C is X and G is Y)."""

    key: str
    status_r: int
    c_pid: int
    kind: str = "agent"
    spec: SpawnSpec | None = None
    kill_requested: bool = False
    g_pid: int | None = None
    a_pid: int | None = None  # the agent's host pid, reported by a keeper G (no namespaces)
    pidfd: int = -1  # G's, for an agent: handed to the kernel at started
    adopted: bool = False  # a running agent of an earlier zygote (no pipe, not our child)
    ready: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    final: int | None = None
    started_sent: bool = False
    buffer: bytes = field(default=b"")
    c_done: bool = False  # C exited cleanly (its report of G should be in the pipe)
    finished: bool = False


class Trees:
    """Every tree the zygote follows: agents by spawn key, commands by job id, both by status
    pipe and by the pids of C and G."""

    def __init__(self, selector: selectors.BaseSelector, send: Send, spares: Spares) -> None:
        self.selector = selector
        self.send = send
        self.spares = spares
        self.by_pipe: dict[int, Tracked] = {}
        self.by_pid: dict[int, Tracked] = {}
        self.agents: dict[str, Tracked] = {}
        self.jobs: dict[str, Tracked] = {}

    def add_agent(self, spec: SpawnSpec, c_pid: int, status_r: int, *, spare: bool = False) -> None:
        """Follow an agent's tree from its C on (forked now, or a ``spare`` that took the spec)."""
        os.set_blocking(status_r, False)
        tracked = Tracked(key=spec.key, status_r=status_r, c_pid=c_pid, spec=spec)
        self.agents[spec.key] = tracked
        self._track(tracked)
        self.send({"ev": "forked", "key": spec.key, "pid": c_pid, "spare": spare})

    def add_command(self, job: str, x_pid: int, status_r: int) -> None:
        """Follow a command's tree from its X on."""
        os.set_blocking(status_r, False)
        tracked = Tracked(key=job, status_r=status_r, c_pid=x_pid, kind="exec")
        self.jobs[job] = tracked
        self._track(tracked)

    def _track(self, tracked: Tracked) -> None:
        self.by_pipe[tracked.status_r] = tracked
        self.by_pid[tracked.c_pid] = tracked
        self.selector.register(tracked.status_r, selectors.EVENT_READ, tracked)

    def read_status(self, tracked: Tracked) -> bool:
        """Read what the tree wrote; False when nothing more is there now (or ever)."""
        if tracked.status_r < 0:
            return False
        try:
            chunk = os.read(tracked.status_r, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            self.selector.unregister(tracked.status_r)
            os.close(tracked.status_r)
            self.by_pipe.pop(tracked.status_r, None)
            tracked.status_r = -1
            if tracked.c_done and tracked.g_pid is None:
                self._orphaned(tracked)
            return False
        tracked.buffer += chunk
        while b"\n" in tracked.buffer:
            line, tracked.buffer = tracked.buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "g" in message:
                tracked.g_pid = int(message["g"])
                self.by_pid[tracked.g_pid] = tracked
                if tracked.kind == "agent" and tracked.pidfd < 0:
                    # G is unreaped (C's child, or ours once C exits): this pid is still G's.
                    with contextlib.suppress(OSError):
                        tracked.pidfd = os.pidfd_open(tracked.g_pid)
            elif "a" in message:
                tracked.a_pid = int(message["a"])
            elif "ready" in message:
                tracked.ready = message["ready"]
            elif "error" in message:
                tracked.error = message
            elif "status" in message:
                tracked.final = int(message["status"])
        self._maybe_started(tracked)
        return True

    def drain(self, tracked: Tracked) -> None:
        while tracked.status_r >= 0 and self.read_status(tracked):
            pass

    def _maybe_started(self, tracked: Tracked) -> None:
        if tracked.kind == "exec":
            if not tracked.started_sent and tracked.g_pid is not None:
                tracked.started_sent = True
                self.send({"ev": "exec_started", "job": tracked.key, "pid": tracked.g_pid})
                if tracked.kill_requested:
                    kill_tree(tracked.g_pid)
            return
        if tracked.started_sent or tracked.ready is None or tracked.g_pid is None:
            return
        keeper = tracked.spec is not None and not tracked.spec.namespaces
        if keeper and tracked.a_pid is None:
            return  # G's report of A's pid is still in the pipe
        agent_pid = tracked.a_pid or tracked.g_pid
        if tracked.ready.get("namespaces"):
            agent_pid = _only_child(tracked.g_pid) or tracked.g_pid
        tracked.started_sent = True
        # G's pidfd and the status pipe: the kernel's handles on this agent should we die.
        handles = [tracked.pidfd, tracked.status_r] if tracked.pidfd >= 0 and tracked.status_r >= 0 else []
        self.send(
            {
                "ev": "started",
                "key": tracked.key,
                "pid": agent_pid,
                "init_pid": tracked.g_pid,
                "confinement": tracked.ready,
            },
            handles,
        )

    def reap(self) -> None:
        # A G's pid reaches us only after its C exited, and C wrote that pid to the status pipe
        # first: read the pipes before matching pids.
        for pending in list(self.by_pipe.values()):
            self.drain(pending)
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            tracked = self.by_pid.get(pid)
            if tracked is None and not self.spares.owns(pid):
                # Its C wrote this pid and exited after the drain above: read the pipes again,
                # or the tree's end would be reaped unrecognised and never reported.
                for pending in list(self.by_pipe.values()):
                    self.drain(pending)
                tracked = self.by_pid.get(pid)
            if tracked is not None and tracked.kind == "exec" and pid == tracked.g_pid:
                kill_group(pid)  # what the command left in its group dies with it; the zombie pins the id
            try:
                pid, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            tracked = self.by_pid.pop(pid, None)
            if tracked is None:
                self.spares.reaped(pid)
                continue
            if pid == tracked.c_pid and (tracked.g_pid is not None or status == 0):
                tracked.c_done = True  # C did its job; G carries on (or its pid message is still in the pipe)
                if tracked.g_pid is None and tracked.status_r < 0:
                    self._orphaned(tracked)
                continue
            self._finish(tracked, status)

    def _orphaned(self, tracked: Tracked) -> None:
        """C ended cleanly and the status pipe closed, and no G was ever named: nothing is left
        to follow, so the tree's end is reported now rather than never (its start would wait
        forever otherwise)."""
        if tracked.kind == "agent" and not tracked.finished:
            tracked.error = tracked.error or {"error": "the sandbox ended before its init was reported", "stage": "fork"}
            self._finish(tracked, 0)

    def _finish(self, tracked: Tracked, status: int) -> None:
        tracked.finished = True
        # Everything the tree wrote is in the pipe by now (written before the writers exited).
        self.drain(tracked)
        if tracked.status_r >= 0:
            self.selector.unregister(tracked.status_r)
            os.close(tracked.status_r)
            self.by_pipe.pop(tracked.status_r, None)
            tracked.status_r = -1
        self.by_pid.pop(tracked.c_pid, None)
        if tracked.g_pid is not None:
            self.by_pid.pop(tracked.g_pid, None)
        if tracked.pidfd >= 0:
            os.close(tracked.pidfd)
            tracked.pidfd = -1
        final = tracked.final if tracked.final is not None else status
        if tracked.kind == "exec":
            self.jobs.pop(tracked.key, None)
            event: dict[str, Any] = {"ev": "exec_exited", "job": tracked.key}
            if tracked.error is not None:
                error = tracked.error
                event.update(error=error["error"], stage=error.get("stage"), errno=error.get("errno"))
            elif os.WIFSIGNALED(final):
                event["signal"] = os.WTERMSIG(final)
            else:
                event["exit_code"] = os.WEXITSTATUS(final) if os.WIFEXITED(final) else None
            if not tracked.started_sent:
                self._maybe_started(tracked)
            self.send(event)
            return
        self.agents.pop(tracked.key, None)
        event = {"ev": "exited", "key": tracked.key}
        if os.WIFSIGNALED(final):
            event["signal"] = os.WTERMSIG(final)
            event["core"] = os.WCOREDUMP(final)
        else:
            event["exit_code"] = os.WEXITSTATUS(final) if os.WIFEXITED(final) else None
        if tracked.error is not None:
            event["error"] = tracked.error["error"]
            event["stage"] = tracked.error.get("stage")
        if not tracked.started_sent and tracked.ready is not None:
            self._maybe_started(tracked)
        self.send(event)


def _only_child(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None
