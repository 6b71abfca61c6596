"""When the zygote dies: the kernel adopts the running agents and starts a new zygote.

**A zygote that dies takes no agent with it.** Agents are not the zygote's children to lose (G,
their root, is its child only until it dies). With ``started`` the zygote hands the kernel two
fds per agent: a pidfd of G and the read end of G's status pipe (kept in the agent's
:class:`~.runtime.Handles`). While the zygote lives the kernel never touches them. When it dies
(``lost``) the supervisor, without blocking the loop:

* keeps every started agent running and *watches it itself*: the pidfd turns readable when G has
  exited, and the status pipe holds A's exact wait status, written by G before it exits, so the
  exit reason is classified as before (exit code, signal, OOM kill from the cgroup's counter).
  Kills go through the cgroup, the agent's pid and G's pidfd (no pid-reuse race);
* kills a tree the zygote left half-started (its cgroup, and its process group, from ``forked``)
  and starts that incarnation again, so the spawn's caller still gets its answer;
* starts a new zygote without waiting for it (:meth:`ZygoteLauncher.restart`) and tells it about
  each running agent (``adopt``: spawn spec, G's pid and pidfd), so ``exec`` still works inside
  them; a zygote that keeps dying young is restarted with a growing delay.

The kernel is deliberately *not* a child subreaper: orphans of a dead zygote (G, spares, commands)
go to init, which reaps them, instead of becoming zombies the kernel would have to reap without
stealing the statuses of its own ``subprocess`` children (driver hosts). Agents die with the
kernel itself through the life line (:mod:`clove.sandbox.lifeline`), not through the zygote.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from clove.errors import SandboxError
from clove.kernel.audit.journal import Category
from clove.kernel.core.agents import TERMINAL, Agent, AgentState
from clove.kernel.core.loop import Timer
from clove.kernel.supervision.runtime import Handles, Runtime

if TYPE_CHECKING:
    from clove.kernel.supervision.supervisor import Supervisor

log = logging.getLogger(__name__)

#: A zygote that dies younger than this is restarted after a delay that doubles each time.
ZYGOTE_STABLE_AFTER = 5.0

S = AgentState


class Adoption:
    """The supervisor's answer to a lost zygote (see the module docstring)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._zygote_timer: Timer | None = None
        self._zygote_losses: list[float] = []
        self._interrupted: list[Agent] = []

    def zygote_lost(self) -> None:
        sup = self.sup
        now = time.monotonic()
        lived = now - sup.launcher.started_at
        old_pid = sup.launcher.pid
        sup.spares.lost()
        sup.launcher.stop(timeout=0.0)  # reap it: it is gone, or is killed now
        kept = restarted = 0
        for agent in list(sup.table):
            rt = sup.runtimes.get(agent.id)
            if rt is None or agent.state in TERMINAL or agent.state is S.BACKOFF or rt.device_wait is not None:
                continue  # no process, or (waiting for its devices) none asked of the zygote yet
            if rt.handles is not None:
                self._watch(agent, rt)
                kept += 1
            elif agent.state is S.STARTING:
                self._interrupt_start(agent, rt)
                restarted += 1
            else:  # started, but we hold no handle on it (cannot happen with this zygote): end it
                sup.by_key.pop(agent.key, None)
                sup.stopper.force_kill(agent)
                sup.on_exited(agent, {"signal": signal.SIGKILL})
        log.error(
            "the zygote %s died after %.1f s; %d running agents carry on, %d starts are retried",
            old_pid, lived, kept, restarted,
        )
        sup.journal.append(
            Category.SYSCALL,
            "zygote.lost",
            decision="n/a",
            details={"pid": old_pid, "lived_s": round(lived, 3), "kept": kept, "starts_retried": restarted},
        )
        self._zygote_losses = [t for t in self._zygote_losses if now - t < 60.0] + [now]
        delay = 0.0
        if lived < ZYGOTE_STABLE_AFTER and len(self._zygote_losses) > 1:
            delay = min(0.25 * 2 ** (len(self._zygote_losses) - 2), 10.0)  # it keeps dying young
        if self._zygote_timer is not None:
            self._zygote_timer.cancel()
        if delay > 0:
            log.error("restarting the zygote in %.2f s", delay)
            self._zygote_timer = sup.loop.call_later(delay, self._restart_zygote)
        else:
            self._restart_zygote()

    def _restart_zygote(self) -> None:
        sup = self.sup
        self._zygote_timer = None
        if sup.spares.stopped:
            return  # shutting down
        try:
            sup.launcher.restart()
        except SandboxError as err:
            log.error("%s; retrying in 1 s", err.message)
            self._zygote_timer = sup.loop.call_later(1.0, self._restart_zygote)
            return
        for hook in sup.zygote_started:
            hook()
        for agent in sup.table:
            rt = sup.runtimes.get(agent.id)
            if rt is None or rt.handles is None or rt.spawn_spec is None or agent.init_pid is None:
                continue
            try:
                sup.launcher.adopt(rt.spawn_spec, agent.init_pid, rt.handles.pidfd.fd)
            except SandboxError as err:
                log.warning("agent %s: the new zygote cannot run commands in it: %s", agent.name, err.message)
        pending, self._interrupted = self._interrupted, []
        for agent in pending:
            if agent.state is S.STARTING and agent.id in sup.runtimes:
                sup.starter.start(agent)
        sup.spares.prepare()

    def zygote_ready(self, event: dict[str, Any]) -> None:
        took = time.monotonic() - self.sup.launcher.started_at
        log.info("zygote %s ready %.0f ms after it was started", event.get("pid"), took * 1000)

    def cancel(self) -> None:
        """Shutdown: no zygote restart is pending any more."""
        if self._zygote_timer is not None:
            self._zygote_timer.cancel()

    def _interrupt_start(self, agent: Agent, rt: Runtime) -> None:
        """The zygote died while this incarnation was starting: kill what it made, start again."""
        sup = self.sup
        if rt.start_timer is not None:
            rt.start_timer.cancel()
        sup.by_key.pop(agent.key, None)
        sup.stopper.force_kill(agent)  # its cgroup, and the process group ``forked`` named
        sup.release_incarnation(agent, rt)
        if rt.logs.read_fd is not None:
            sup.loop.remove_reader(rt.logs.read_fd)  # the next incarnation gets a fresh pipe
        sup.event("agent.start_interrupted", agent, reason="the zygote died")
        self._interrupted.append(agent)

    def _watch(self, agent: Agent, rt: Runtime) -> None:
        """Supervise a started agent without the zygote: its end through G's pidfd, its exit
        status through G's status pipe."""
        handles = rt.handles
        if handles is None or handles.watched:
            return
        handles.watched = True
        self.sup.loop.add_reader(handles.status, functools.partial(self._read_status, handles))
        self.sup.loop.add_reader(handles.pidfd, functools.partial(self._watched_exit, agent))

    def _read_status(self, handles: Handles) -> None:
        """Read what G wrote; ``{"status": N}`` is A's exact wait status."""
        while not handles.status_eof:
            try:
                chunk = os.read(handles.status.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                handles.status_eof = True
                self.sup.loop.remove_reader(handles.status)  # EOF stays readable: stop polling it
                return
            handles.buffer += chunk
            while b"\n" in handles.buffer:
                line, handles.buffer = handles.buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict) and "status" in message:
                    handles.final = int(message["status"])

    def _watched_exit(self, agent: Agent) -> None:
        """G of a watched agent has exited (the whole tree with it): report it as the zygote would."""
        sup = self.sup
        rt = sup.runtimes.get(agent.id)
        handles = rt.handles if rt is not None else None
        if rt is None or handles is None:
            return
        sup.loop.remove_reader(handles.pidfd)
        self._read_status(handles)  # G wrote A's status before it exited: it is in the pipe
        status = handles.final
        sup.by_key.pop(agent.key, None)
        with contextlib.suppress(SandboxError):  # no zygote right now: a new one never heard of it
            sup.launcher.disown(agent.key)
        event: dict[str, Any]
        if status is None:
            log.warning("agent %s: its exit status was lost with the zygote; reporting SIGKILL", agent.name)
            event = {"signal": signal.SIGKILL}
        elif os.WIFSIGNALED(status):
            event = {"signal": os.WTERMSIG(status), "core": os.WCOREDUMP(status)}
        else:
            event = {"exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
        sup.on_exited(agent, event)

    def close_handles(self, rt: Runtime) -> None:
        """Close an incarnation's handles (and stop watching them)."""
        handles, rt.handles = rt.handles, None
        if handles is None:
            return
        if handles.watched:
            self.sup.loop.remove_reader(handles.status)
            self.sup.loop.remove_reader(handles.pidfd)
        handles.close()
