"""Taking agents down, and pausing them.

Killing is SIGTERM, a timer for the grace period (``sandbox.kill_grace``), then SIGKILL of the
whole tree: the cgroup's kill, G (through its pidfd once the kernel holds one, so a reused pid is
never hit; the pid namespace's init takes the rest with it), the agent, and its process group.
Pausing freezes the agent's cgroup, or SIGSTOPs its process group without a freezer (G left that
group, so its watch of the life line goes on).
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import TYPE_CHECKING

from clove.errors import Conflict, SandboxError
from clove.kernel.core.agents import TERMINAL, Agent, AgentState, ExitInfo, ExitReason, StopCause
from clove.kernel.supervision.runtime import Callback, Runtime, notify

if TYPE_CHECKING:
    from clove.kernel.supervision.supervisor import Supervisor

S = AgentState


class Stopper:
    """Kill (with grace), force-kill, pause and resume, for the :class:`~.supervisor.Supervisor`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    def kill(self, agent: Agent, on_gone: Callback | None = None, *, operator: bool = True, cause: StopCause | None = None) -> None:
        """SIGTERM, then SIGKILL of the whole tree after the grace period. An operator's kill
        removes the agent once it is gone; ``on_gone`` fires then. ``cause``: why the kernel
        stops it, which its exit reports (an operator's kill reports the operator)."""
        sup = self.sup
        rt = sup.runtimes.get(agent.id)
        agent.operator_kill = agent.operator_kill or operator
        if rt is None:
            if on_gone:
                on_gone(agent, None)
            return
        if on_gone is not None:
            rt.gone_waiters.append(on_gone)
        if agent.state in TERMINAL:
            if operator:
                sup.forget(agent)
            notify(rt.gone_waiters, agent, None)
            return
        if agent.state is S.STOPPING:
            return
        if not operator and cause is not None:
            agent.stop_cause = cause
        by = {"by": "operator" if operator else "kernel", **({"cause": agent.stop_cause.message} if agent.stop_cause else {})}
        # No process to stop while it waits to restart, or for its devices: it ends here.
        if agent.state is S.BACKOFF or sup.device_wait.waiting(agent):
            if rt.backoff_timer is not None:
                rt.backoff_timer.cancel()
            sup.device_wait.cancel(agent)
            waiting = "waiting to restart" if agent.state is S.BACKOFF else "waiting for its devices"
            sup.set_state(agent, S.STOPPING, **by)
            stop = agent.stop_cause or StopCause(ExitReason.KILLED, f"stopped by {'operator' if operator else 'the kernel'}")
            agent.exit = ExitInfo(stop.reason, message=f"{stop.message} while it was {waiting}")
            sup.settle(agent, S.EXITED)
            return
        was_paused = agent.state is S.PAUSED
        sup.set_state(agent, S.STOPPING, **by)
        if was_paused:
            self._thaw(agent, rt)
        self.signal(agent, signal.SIGTERM)
        rt.kill_timer = sup.loop.call_later(sup.config.sandbox.kill_grace, lambda: self.force_kill(agent))

    def signal(self, agent: Agent, sig: int) -> None:
        """Signal the agent's own process (A), if it has one."""
        if agent.pid is None:
            return
        try:
            os.kill(agent.pid, sig)
        except ProcessLookupError:
            pass

    def force_kill(self, agent: Agent) -> None:
        """SIGKILL the whole tree: cgroup, G, A, process group."""
        rt = self.sup.runtimes.get(agent.id)
        if rt is None or agent.state in TERMINAL:
            return
        self.sup.event("agent.force_kill", agent)
        if rt.cgroup is not None:
            rt.cgroup.kill_all()
        init_pid = agent.init_pid
        if rt.handles is not None:
            # G through its pidfd: no chance of hitting a reused pid once init has reaped G
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(rt.handles.pidfd.fd, signal.SIGKILL)
            init_pid = None
        for pid in (init_pid, agent.pid):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if rt.pgid is not None:
            try:
                os.killpg(rt.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def pause(self, agent: Agent) -> str:
        """Freeze the agent's whole cgroup (or SIGSTOP its process group without one)."""
        rt = self.sup.runtimes[agent.id]
        if agent.state is not S.RUNNING:
            raise Conflict(f"agent {agent.name!r} is {agent.state.value}, not running")
        if rt.cgroup is not None and rt.cgroup.can_freeze:
            rt.cgroup.freeze()
            how = "cgroup freezer"
        elif rt.pgid is not None:
            os.killpg(rt.pgid, signal.SIGSTOP)
            how = "SIGSTOP"
        else:
            raise SandboxError("nothing to pause with")
        self.sup.set_state(agent, S.PAUSED, via=how)
        return how

    def resume(self, agent: Agent) -> None:
        rt = self.sup.runtimes[agent.id]
        if agent.state is not S.PAUSED:
            raise Conflict(f"agent {agent.name!r} is {agent.state.value}, not paused")
        self._thaw(agent, rt)
        self.sup.set_state(agent, S.RUNNING)

    @staticmethod
    def _thaw(agent: Agent, rt: Runtime) -> None:
        if rt.cgroup is not None and rt.cgroup.can_freeze:
            rt.cgroup.thaw()
        elif rt.pgid is not None:
            try:
                os.killpg(rt.pgid, signal.SIGCONT)
            except ProcessLookupError:
                pass
