"""The agent supervisor: spawn, stop, pause and restart agents without ever blocking the loop.

Starting is asynchronous: the kernel asks the zygote for a process tree and learns from its
``started``/``exited`` events what happened; callers that wait (a spawn reply, a kill reply) are
called back when the agent settles. Killing is SIGTERM, a timer for the grace period, then
SIGKILL of the whole tree (cgroup kill, or the pid namespace's init).

:class:`Supervisor` is the face the kernel and the services see, and the lifecycle state machine
(the states and their allowed moves are :class:`~clove.kernel.core.agents.AgentState`'s): the
zygote's events, exits and restarts with backoff, settling and forgetting. It delegates, by
composition, to one part per job, each holding the supervisor it works for:

* :mod:`.starting` — checks before forking, then each incarnation's cgroup, log pipe and spawn spec;
* :mod:`.devicewait` — each start held until the agent's devices are ready (or its timeout);
* :mod:`.stopping` — kill with a grace period, force-kill of the whole tree, pause and resume;
* :mod:`.adoption` — a dead zygote: watch the running agents through the handed-over pidfds and
  status pipes, retry interrupted starts, restart the zygote with backoff;
* :mod:`.runtime` — what it holds per agent (:class:`Runtime`, :class:`Handles`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clove.config import AgentConfig, KernelConfig
from clove.errors import Conflict, SpawnFailed
from clove.kernel.audit.journal import Category, Journal
from clove.kernel.core.agents import (
    LIVE,
    TERMINAL,
    Agent,
    AgentState,
    AgentTable,
    ExitInfo,
    ExitReason,
    StopCause,
)
from clove.kernel.core.channels import Channels
from clove.kernel.core.loop import Loop
from clove.kernel.supervision.adoption import ZYGOTE_STABLE_AFTER, Adoption
from clove.kernel.supervision.devicewait import DeviceGate, DeviceWait
from clove.kernel.supervision.exits import classify_exit, restart_delay, should_restart
from clove.kernel.supervision.launchspec import network_report
from clove.kernel.supervision.runtime import Callback, ExitHook, Handles, Runtime, WatchedFd, notify
from clove.kernel.supervision.spares import Spares
from clove.kernel.supervision.starting import Starter
from clove.kernel.supervision.starting import limits_of as _limits_of
from clove.kernel.supervision.stopping import Stopper
from clove.sandbox.cgroups import AgentCgroup, CgroupBackend
from clove.sandbox.launcher import ZygoteLauncher, close_fds
from clove.sandbox.limits import Limits

# Still importable from here: the runtime's types and the zygote's restart delay live in the parts now.
__all__ = ["ZYGOTE_STABLE_AFTER", "Callback", "ExitHook", "Handles", "Runtime", "Supervisor", "WatchedFd"]

log = logging.getLogger(__name__)

S = AgentState


class Supervisor:
    """Owns the agent table and every agent's processes, cgroups, channels and logs.

    The kernel and the services use the public operations (spawn, kill, pause, ...). The parts
    share :attr:`runtimes` and :attr:`by_key` and call back into the state machine: :meth:`event`,
    :meth:`set_state`, :meth:`on_exited`, :meth:`release_incarnation`, :meth:`settle`,
    :meth:`forget`."""

    def __init__(
        self,
        config: KernelConfig,
        *,
        loop: Loop,
        journal: Journal,
        channels: Channels,
        launcher: ZygoteLauncher,
        backend: CgroupBackend | None,
        state_dir: Path,
        on_channel: Callable[[int, bool], None],
    ) -> None:
        self.config = config
        self.loop = loop
        self.journal = journal
        self.channels = channels
        self.launcher = launcher
        self.backend = backend
        self.agents_dir = state_dir / "agents"
        self.agents_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.table = AgentTable(max_exited=config.retention.max_exited)
        self.on_channel = on_channel
        #: Every agent's runtime, by agent id (the parts share it).
        self.runtimes: dict[int, Runtime] = {}
        #: The agent of each incarnation the zygote may still report on, by spawn key.
        self.by_key: dict[str, Agent] = {}
        self._orphan_cgroups: list[AgentCgroup] = []
        self.spares = Spares.from_config(config, backend, launcher, self.discard_cgroup, state_dir / "spares")
        self.listeners: list[Callable[[str, Agent, dict[str, Any]], None]] = []
        #: Called when an incarnation has ended (or failed to start) and its exit is classified,
        #: but before its cgroup is released: the last moment its counters (memory peak, OOM
        #: kills, CPU, pids) can be read. The agent's state is still the one it died in; the
        #: lifecycle records (``agent.exited``...) follow. Hooks must be quick; one that raises
        #: is logged and skipped, never allowed to derail the supervisor.
        self.exit_hooks: list[ExitHook] = []
        #: Called when a new zygote was started after the old one died (its socket is new).
        self.zygote_started: list[Callable[[], None]] = []
        self.starter = Starter(self)
        self.stopper = Stopper(self)
        self.adoption = Adoption(self)
        self.device_wait = DeviceWait(self)

    # ---- events ------------------------------------------------------------------------------

    def event(self, event_type: str, agent: Agent, **details: Any) -> None:
        """Journal a lifecycle record and tell the listeners."""
        self.journal.append(
            Category.AGENT_LIFECYCLE,
            event_type,
            agent_id=agent.id,
            agent_name=agent.name,
            decision="n/a",
            details={"state": agent.state.value, "incarnation": agent.incarnation, **details},
        )
        for listener in self.listeners:
            listener(event_type, agent, details)

    def set_state(self, agent: Agent, new: AgentState, **details: Any) -> None:
        old = agent.change_state(new)
        self.event("agent.state", agent, previous=old.value, **details)

    # ---- spawn (see starting.py) -------------------------------------------------------------

    def limits_of(self, spec: AgentConfig) -> Limits:
        return _limits_of(spec)

    def check_spawnable(self, spec: AgentConfig) -> None:
        """See :meth:`.starting.Starter.check_spawnable`."""
        self.starter.check_spawnable(spec)

    def spawn(
        self, spec: AgentConfig, on_started: Callback | None = None, *, parent: Agent | None = None, detached: bool = False
    ) -> Agent:
        """Create and start an agent; ``on_started`` fires once it runs or fails to start. An
        agent holding device grants starts once those devices are ready (see :mod:`.devicewait`).

        :param parent: the agent that asks (agents with the spawn right); the child's
            permissions must lie within the parent's.
        :param detached: the child outlives its parent; otherwise it is stopped when the
            parent exits (the caller checked the right to ask).
        :raises PermissionDenied: the child would get more than its parent has.
        """
        return self.starter.spawn(spec, on_started, parent=parent, detached=detached)

    def set_device_gate(self, gate: DeviceGate) -> None:
        """The device broker's readiness: from now on starts wait for the agent's devices."""
        self.device_wait.gate = gate

    def discard_cgroup(self, cgroup: AgentCgroup) -> None:
        """Kill and remove a cgroup, retrying later (:meth:`housekeeping`) while it is busy."""
        cgroup.kill_all()
        if not cgroup.remove():
            self._orphan_cgroups.append(cgroup)

    # ---- zygote events -----------------------------------------------------------------------

    def handle_zygote_event(self, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        fds: list[int] = event.pop("fds", [])
        try:
            if kind == "lost":
                self.adoption.zygote_lost()
                return
            if kind == "hello":
                self.adoption.zygote_ready(event)
                return
            if kind in ("spare_ready", "spare_gone"):
                self.spares.reported(kind, str(event.get("slot")))
                return
            agent = self.by_key.get(str(event.get("key")))
            if agent is None:
                return
            if kind == "forked":
                # C's pid: the process group (and session) of the tree being set up
                self.runtimes[agent.id].pgid = int(event["pid"])
                self.spares.forked(bool(event.get("spare")))
            elif kind == "started":
                fds, handles = [], fds
                self._on_started(agent, event, handles)
            elif kind == "exited":
                self.by_key.pop(agent.key, None)
                self.on_exited(agent, event)
        finally:
            close_fds({"fds": fds})

    def _on_started(self, agent: Agent, event: dict[str, Any], handles: list[int] | None = None) -> None:
        rt = self.runtimes[agent.id]
        if handles and len(handles) == 2:
            rt.handles = Handles(pidfd=WatchedFd(handles[0]), status=WatchedFd(handles[1]))
        elif handles:
            close_fds({"fds": handles})
        if rt.start_timer is not None:
            rt.start_timer.cancel()
        agent.pid = int(event["pid"])
        agent.init_pid = int(event.get("init_pid") or agent.pid)
        try:
            rt.pgid = os.getpgid(agent.pid)  # A's group (G leaves it, so a SIGSTOP pause spares G)
        except ProcessLookupError:
            rt.pgid = None
        agent.started_mono = time.monotonic()
        confinement = event.get("confinement") or {}
        agent.isolation.update(
            namespaces=confinement.get("namespaces", []),
            uid=confinement.get("uid"),
            no_new_privs=confinement.get("no_new_privs", False),
            landlock=confinement.get("landlock", {}),
            seccomp=confinement.get("seccomp", False),
            **network_report(agent, confinement),  # network (none, proxy, full, host) and relays
        )
        if agent.state is S.STARTING:
            self.set_state(agent, S.RUNNING, pid=agent.pid)
        elif agent.state is S.STOPPING:
            self.stopper.signal(agent, signal.SIGTERM)
        notify(rt.start_waiters, agent, None)

    # ---- exits and restarts ------------------------------------------------------------------

    def on_exited(self, agent: Agent, event: dict[str, Any]) -> None:
        """An incarnation ended (as the zygote, or the watch of a lost zygote's agent, reports)."""
        rt = self.runtimes[agent.id]
        for timer in (rt.start_timer, rt.kill_timer):
            if timer is not None:
                timer.cancel()
        info = classify_exit(
            agent,
            event,
            oom_kills=rt.cgroup.oom_kills() if rt.cgroup is not None else 0,
            timed_out=rt.timed_out,
            start_timeout=self.config.sandbox.start_timeout,
        )
        self.run_exit_hooks(agent, rt, info)
        self.release_incarnation(agent, rt)
        uptime = time.monotonic() - agent.started_mono if agent.started_mono else 0.0
        agent.started_mono = None
        agent.exit = info
        self.event("agent.exited", agent, **info.to_dict(), uptime=round(uptime, 3))
        self._stop_children(agent)
        if info.reason in (ExitReason.FAILED_TO_START, ExitReason.START_TIMEOUT):
            # The spawn's caller hears why first: settle answers any waiter left with "no error".
            notify(rt.start_waiters, agent, SpawnFailed(info.message or "agent failed to start", details=info.to_dict()))
            self.settle(agent, S.FAILED)
            return
        if agent.state is S.STOPPING:
            self.settle(agent, S.EXITED)
            return
        if should_restart(agent, info):
            self._schedule_restart(agent, uptime)
        else:
            self.settle(agent, S.EXITED)

    def run_exit_hooks(self, agent: Agent, rt: Runtime, info: ExitInfo) -> None:
        for hook in self.exit_hooks:
            try:
                hook(agent, rt, info)
            except Exception:
                log.exception("exit hook %r failed for agent %s", hook, agent.name)

    def release_incarnation(self, agent: Agent, rt: Runtime) -> None:
        """Free what the ended incarnation held: handles, cgroup, leftovers of its process group."""
        self.adoption.close_handles(rt)
        if rt.cgroup is not None:
            rt.cgroup.kill_all()
            if not rt.cgroup.remove():
                self._orphan_cgroups.append(rt.cgroup)
            rt.cgroup = None
        elif rt.pgid is not None and agent.uid is None:
            try:
                os.killpg(rt.pgid, signal.SIGKILL)  # leftovers of an unconfined agent
            except (ProcessLookupError, PermissionError):
                pass
        rt.pgid = None
        agent.pid = agent.init_pid = None

    def _stop_children(self, parent: Agent) -> None:
        """Children die with their parent, at every exit of it (a restart's too), unless spawned
        detached; each child's own exit then takes its children: the whole tree goes."""
        cause = StopCause(ExitReason.PARENT_EXITED, f"parent {parent.name!r} (id {parent.id}) exited")
        for child in self.children_of(parent):
            if not child.detached:
                self.kill(child, operator=False, cause=cause)

    def _schedule_restart(self, agent: Agent, uptime: float) -> None:
        delay = restart_delay(agent, uptime=uptime, now=time.monotonic(), policy=self.config.supervisor)
        if delay is None:
            self.event("agent.escalated", agent, restarts_in_window=len(agent.restart_times), window=agent.spec.restart_window)
            self.settle(agent, S.FAILED)
            return
        self.set_state(agent, S.BACKOFF, delay=delay)
        self.runtimes[agent.id].backoff_timer = self.loop.call_later(delay, lambda: self._restart(agent))

    def _restart(self, agent: Agent) -> None:
        if agent.state is not S.BACKOFF:
            return
        agent.restarts += 1
        self.set_state(agent, S.STARTING, restarts=agent.restarts)
        self.device_wait.start(agent)  # a restart waits for the agent's devices too

    def settle(self, agent: Agent, final: AgentState) -> None:
        """Enter a terminal state: free the name, drop old records, answer waiters."""
        self.set_state(agent, final, reason=agent.exit.reason.value if agent.exit else None)
        rt = self.runtimes[agent.id]
        rt.logs.close_pipe()
        for dropped in self.table.settled(agent):
            self.forget(dropped)
        if agent.operator_kill:
            self.forget(agent)
        notify(rt.start_waiters, agent, SpawnFailed("agent stopped before it started") if final is S.EXITED else None)
        notify(rt.gone_waiters, agent, None)

    def forget(self, agent: Agent) -> None:
        """Remove an agent's record, channel and files."""
        self.table.remove(agent)
        rt = self.runtimes.pop(agent.id, None)
        self.channels.close_agent(agent.id)
        self.on_channel(agent.id, False)
        if rt is not None:
            if rt.logs.read_fd is not None:
                self.loop.remove_reader(rt.logs.read_fd)
            rt.logs.close()
            shutil.rmtree(rt.home, ignore_errors=True)
        self.event("agent.removed", agent)

    # ---- operator actions (see stopping.py) --------------------------------------------------

    def kill(self, agent: Agent, on_gone: Callback | None = None, *, operator: bool = True, cause: StopCause | None = None) -> None:
        """SIGTERM, then SIGKILL of the whole tree after the grace period. An operator's kill
        removes the agent once it is gone; ``on_gone`` fires then. ``cause``: why the kernel
        stops it (its exit reason and message)."""
        self.stopper.kill(agent, on_gone, operator=operator, cause=cause)

    def pause(self, agent: Agent) -> str:
        """Freeze the agent's whole cgroup (or SIGSTOP its process group without one)."""
        return self.stopper.pause(agent)

    def resume(self, agent: Agent) -> None:
        self.stopper.resume(agent)

    def remove(self, agent: Agent) -> None:
        if agent.state not in TERMINAL:
            raise Conflict(f"agent {agent.name!r} is {agent.state.value}; kill it first", details={"state": agent.state.value})
        self.forget(agent)

    def permissions_changed(self, agent: Agent) -> None:
        self.event("agent.permissions", agent, level=agent.permissions.level, permissions=agent.permissions.to_wire())

    def children_of(self, agent: Agent) -> list[Agent]:
        return [a for a in self.table if a.parent_id == agent.id and a.state in LIVE]

    def work_dir(self, agent: Agent) -> str:
        """The agent's writable work dir (the same path inside and outside its sandbox)."""
        return agent.permissions.work_dir

    def request_exit(self, agent: Agent) -> None:
        """The agent said it is done: its next exit is final whatever the restart policy."""
        agent.exit_requested = True

    def runtime(self, agent: Agent) -> Runtime | None:
        return self.runtimes.get(agent.id)

    def stats(self, agent: Agent) -> dict[str, int]:
        rt = self.runtimes.get(agent.id)
        return rt.cgroup.stats() if rt is not None and rt.cgroup is not None else {}

    # ---- housekeeping and shutdown -----------------------------------------------------------

    def housekeeping(self) -> None:
        self.spares.tick()
        if self._orphan_cgroups:
            still = []
            for cgroup in self._orphan_cgroups:
                cgroup.kill_all()
                if not cgroup.remove():
                    still.append(cgroup)
            self._orphan_cgroups = still

    def live_count(self) -> int:
        return sum(1 for a in self.table if a.state not in TERMINAL)

    def stop_all(self) -> None:
        self.spares.stop()
        for agent in self.table:
            if agent.state not in TERMINAL:
                self.kill(agent, operator=False)

    def finish(self) -> None:
        """Last step of shutdown: remove every cgroup and the agents' runtime files."""
        self.spares.stop()
        self.adoption.cancel()
        for agent in self.table:
            rt = self.runtimes.get(agent.id)
            if rt is not None:
                self.adoption.close_handles(rt)
                if rt.cgroup is not None:
                    rt.cgroup.kill_all()
                    if not rt.cgroup.remove():
                        self._orphan_cgroups.append(rt.cgroup)
                self.channels.close_agent(agent.id)
                rt.logs.close()
        deadline = time.monotonic() + 2.0
        while self._orphan_cgroups and time.monotonic() < deadline:
            self.housekeeping()
            if self._orphan_cgroups:
                time.sleep(0.01)
        for cgroup in self._orphan_cgroups:
            log.error("could not remove cgroup %s", cgroup.name)
