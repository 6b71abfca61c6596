"""The agent supervisor: spawn, stop, pause and restart agents without ever blocking the loop.

Starting is asynchronous: the kernel asks the zygote for a process tree and learns from its
``started``/``exited`` events what happened; callers that wait (a spawn reply, a kill reply) are
called back when the agent settles. Killing is SIGTERM, a timer for the grace period, then
SIGKILL of the whole tree (cgroup kill, or the pid namespace's init).

**A zygote that dies takes no agent with it.** Agents are not the zygote's children to lose (G,
their root, is its child only until it dies). With ``started`` the zygote hands the kernel two
fds per agent: a pidfd of G and the read end of G's status pipe. While the zygote lives the
kernel never touches them. When it dies (``lost``) the supervisor, without blocking the loop:

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
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clove.config import AgentConfig, KernelConfig
from clove.errors import (
    CloveError,
    Conflict,
    IsolationUnavailable,
    PermissionDenied,
    SandboxError,
    SpawnFailed,
)
from clove.kernel.audit.journal import Category, Journal
from clove.kernel.core.agents import LIVE, TERMINAL, Agent, AgentState, AgentTable, ExitInfo, ExitReason
from clove.kernel.core.channels import Channels
from clove.kernel.core.loop import Loop, Timer
from clove.kernel.supervision.exits import classify_exit, restart_delay, should_restart
from clove.kernel.supervision.launchspec import build_spawn_spec, interpreter_paths
from clove.kernel.supervision.limits import isolation_report
from clove.kernel.supervision.logs import LogCapture
from clove.kernel.supervision.spares import Spares
from clove.policy import for_level
from clove.sandbox.cgroups import AgentCgroup, CgroupBackend
from clove.sandbox.launcher import ZygoteLauncher, close_fds
from clove.sandbox.limits import LimitReport, Limits
from clove.sandbox.rlimits import rlimits_for
from clove.sandbox.spec import SpawnSpec

log = logging.getLogger(__name__)

#: A zygote that dies younger than this is restarted after a delay that doubles each time.
ZYGOTE_STABLE_AFTER = 5.0

S = AgentState
Callback = Callable[[Agent, "CloveError | None"], None]
#: Called with ``(agent, runtime, exit info)`` when an incarnation has ended, before its cgroup
#: is released (see :attr:`Supervisor.exit_hooks`).
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
    timed_out: bool = False
    start_waiters: list[Callback] = field(default_factory=list)
    gone_waiters: list[Callback] = field(default_factory=list)


class Supervisor:
    """Owns the agent table and every agent's processes, cgroups, channels and logs."""

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
        self._rt: dict[int, Runtime] = {}
        self._by_key: dict[str, Agent] = {}
        self._orphan_cgroups: list[AgentCgroup] = []
        self.spares = Spares(backend, launcher, self._discard_cgroup)
        self._interpreter_paths = interpreter_paths()
        self.listeners: list[Callable[[str, Agent, dict[str, Any]], None]] = []
        #: Called when an incarnation has ended (or failed to start) and its exit is classified,
        #: but before its cgroup is released: the last moment its counters (memory peak, OOM
        #: kills, CPU, pids) can be read. The agent's state is still the one it died in; the
        #: lifecycle records (``agent.exited``...) follow. Hooks must be quick; one that raises
        #: is logged and skipped, never allowed to derail the supervisor.
        self.exit_hooks: list[ExitHook] = []
        #: Called when a new zygote was started after the old one died (its socket is new).
        self.zygote_started: list[Callable[[], None]] = []
        self._zygote_timer: Timer | None = None
        self._zygote_losses: list[float] = []
        self._interrupted: list[Agent] = []

    # ---- events ------------------------------------------------------------------------------

    def _event(self, event_type: str, agent: Agent, **details: Any) -> None:
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

    def _set_state(self, agent: Agent, new: AgentState, **details: Any) -> None:
        old = agent.change_state(new)
        self._event("agent.state", agent, previous=old.value, **details)

    # ---- spawn -------------------------------------------------------------------------------

    def limits_of(self, spec: AgentConfig) -> Limits:
        return Limits(memory_bytes=spec.memory_bytes, cpu_quota_us=spec.cpu_quota_us, pids=spec.pids)

    def check_spawnable(self, spec: AgentConfig) -> None:
        """Everything that can be known before forking: a clear error instead of a ghost.

        :raises SpawnFailed: missing script, interpreter or working dir.
        :raises Conflict: the name belongs to a live agent.
        :raises IsolationUnavailable: ``require_isolation`` and a limit cannot be enforced.
        """
        if self.table.name_in_use(spec.name):
            raise Conflict(f"an agent named {spec.name!r} is already running", details={"name": spec.name})
        if not os.path.isfile(spec.script):
            raise SpawnFailed(f"script not found: {spec.script}", details={"script": spec.script})
        if spec.interpreter is not None and not os.access(spec.interpreter, os.X_OK):
            raise SpawnFailed(f"interpreter not executable: {spec.interpreter}", details={"interpreter": spec.interpreter})
        if spec.working_dir is not None and not os.path.isdir(spec.working_dir):
            raise SpawnFailed(f"working dir not found: {spec.working_dir}", details={"working_dir": spec.working_dir})
        if self.config.sandbox.require_isolation:
            report = self._limit_report(self.limits_of(spec), runs_as_root=not spec.sandboxed)
            missing = [k for k, r in report.items() if r.requested is not None and not r.enforced]
            if missing:
                raise IsolationUnavailable(
                    f"require_isolation is on and these limits cannot be enforced here: {', '.join(missing)}",
                    details={k: report[k].to_dict() for k in missing},
                )
            if not spec.sandboxed:
                raise IsolationUnavailable("require_isolation is on: unsandboxed agents are refused")

    def _limit_report(self, limits: Limits, *, runs_as_root: bool) -> dict[str, LimitReport]:
        if self.backend is not None:
            return self.backend.planned_report(limits)
        return rlimits_for(limits, runs_as_root=runs_as_root)[1]

    def spawn(self, spec: AgentConfig, on_started: Callback | None = None, *, parent: Agent | None = None) -> Agent:
        """Create and start an agent; ``on_started`` fires once it runs or fails to start.

        :param parent: the agent that asks (agents with the spawn right); the child's
            permissions must lie within the parent's.
        :raises PermissionDenied: the child would get more than its parent has.
        """
        self.check_spawnable(spec)
        agent_id = self.table.new_id()
        uid = self.config.sandbox.uid_base + agent_id if spec.sandboxed else None
        home = self.agents_dir / str(agent_id)
        work = Path(spec.working_dir) if spec.working_dir else home / "work"
        permissions = for_level(spec.level, work_dir=str(work)).with_grants(spec.permissions)
        if parent is not None and not permissions.within(parent.permissions):
            raise PermissionDenied(
                "a child's permissions cannot exceed its parent's",
                details={"requested": permissions.to_wire(), "parent": parent.permissions.to_wire()},
            )
        agent = Agent(id=agent_id, spec=spec, uid=uid, permissions=permissions, parent_id=parent.id if parent else None)
        if home.exists():
            shutil.rmtree(home)  # left by an earlier kernel run that reused this id
        home.mkdir(mode=0o700)
        if not spec.working_dir:
            work.mkdir(mode=0o700)
            if uid is not None:
                os.chown(work, uid, uid)
        try:
            endpoint = self.channels.bind_agent(agent_id, home / "ipc", uid)
        except CloveError:
            shutil.rmtree(home, ignore_errors=True)
            raise
        runtime = Runtime(home=home, endpoint=endpoint, logs=LogCapture(home / "agent.log", max_bytes=self.config.logs.max_bytes))
        self._rt[agent_id] = runtime
        self.table.add(agent)
        self.on_channel(agent_id, True)
        if on_started is not None:
            runtime.start_waiters.append(on_started)
        self._event("agent.created", agent, script=spec.script, restart_policy=spec.restart)
        self._start(agent)
        return agent

    def _start(self, agent: Agent) -> None:
        rt = self._rt[agent.id]
        rt.timed_out = False
        agent.incarnation += 1
        agent.pid = agent.init_pid = None
        self._by_key[agent.key] = agent
        spec = agent.spec
        limits = self.limits_of(spec)
        runs_as_root = agent.uid is None
        rlimits: list[tuple[int, int, int]] = []
        slot: str | None = None
        try:
            if self.backend is not None:
                taken = self.spares.take(limits)
                if taken is not None:
                    rt.cgroup, slot = taken
                else:
                    rt.cgroup = self.backend.create(f"agent-{agent.id}.{agent.incarnation}", limits)
                limit_report = rt.cgroup.report()
            else:
                rlimits, limit_report = rlimits_for(limits, runs_as_root=runs_as_root)
        except SandboxError as err:
            self._start_failed(agent, f"sandbox setup failed: {err.message}")
            return
        agent.isolation = {
            "backend": self.backend.name if self.backend is not None else "rlimit",
            "cgroup": rt.cgroup.name if rt.cgroup is not None else None,
            "limits": {k: v.to_dict() for k, v in limit_report.items()},
        }
        agent.isolation = isolation_report(agent)  # with each limit's source and ceiling, and storage
        write_fd = rt.logs.new_pipe()
        self.loop.add_reader(rt.logs.read_fd, functools.partial(self._drain_log, rt.logs))
        launch = build_spawn_spec(
            agent,
            endpoint=rt.endpoint,
            work=spec.working_dir or str(rt.home / "work"),
            sandbox=self.config.sandbox,
            cgroup_attach=rt.cgroup.attach_paths if rt.cgroup is not None else (),
            rlimits=rlimits,
            interpreter=self._interpreter_paths,
        )
        rt.spawn_spec = launch
        try:
            self.launcher.spawn(launch, write_fd, slot=slot)
        except SandboxError as err:
            os.close(write_fd)
            self._start_failed(agent, err.message)
            return
        os.close(write_fd)
        self.spares.prepare()
        rt.start_timer = self.loop.call_later(self.config.sandbox.start_timeout, lambda: self._start_timeout(agent))

    def _discard_cgroup(self, cgroup: AgentCgroup) -> None:
        cgroup.kill_all()
        if not cgroup.remove():
            self._orphan_cgroups.append(cgroup)

    def _drain_log(self, capture: LogCapture) -> None:
        if not capture.drain() and capture.read_fd is not None:
            self.loop.remove_reader(capture.read_fd)
            capture.close_pipe()

    # ---- zygote events -----------------------------------------------------------------------

    def handle_zygote_event(self, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        fds: list[int] = event.pop("fds", [])
        try:
            if kind == "lost":
                self._zygote_lost()
                return
            if kind == "hello":
                self._zygote_ready(event)
                return
            agent = self._by_key.get(str(event.get("key")))
            if agent is None:
                return
            if kind == "forked":
                # C's pid: the process group (and session) of the tree being set up
                self._rt[agent.id].pgid = int(event["pid"])
            elif kind == "started":
                fds, handles = [], fds
                self._on_started(agent, event, handles)
            elif kind == "exited":
                self._by_key.pop(agent.key, None)
                self._on_exited(agent, event)
        finally:
            close_fds({"fds": fds})

    def _on_started(self, agent: Agent, event: dict[str, Any], handles: list[int] | None = None) -> None:
        rt = self._rt[agent.id]
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
            network="host" if agent.spec.network or not agent.spec.sandboxed else "none",
            seccomp=confinement.get("seccomp", False),
        )
        if agent.state is S.STARTING:
            self._set_state(agent, S.RUNNING, pid=agent.pid)
        elif agent.state is S.STOPPING:
            self._signal(agent, signal.SIGTERM)
        self._notify(rt.start_waiters, agent, None)

    def _on_exited(self, agent: Agent, event: dict[str, Any]) -> None:
        rt = self._rt[agent.id]
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
        self._run_exit_hooks(agent, rt, info)
        self._release_incarnation(agent, rt)
        uptime = time.monotonic() - agent.started_mono if agent.started_mono else 0.0
        agent.started_mono = None
        agent.exit = info
        self._event("agent.exited", agent, **info.to_dict(), uptime=round(uptime, 3))
        if info.reason in (ExitReason.FAILED_TO_START, ExitReason.START_TIMEOUT):
            # The spawn's caller hears why first: _settle answers any waiter left with "no error".
            self._notify(rt.start_waiters, agent, SpawnFailed(info.message or "agent failed to start", details=info.to_dict()))
            self._settle(agent, S.FAILED)
            return
        if agent.state is S.STOPPING:
            self._settle(agent, S.EXITED)
            return
        if should_restart(agent, info):
            self._schedule_restart(agent, uptime)
        else:
            self._settle(agent, S.EXITED)

    def _run_exit_hooks(self, agent: Agent, rt: Runtime, info: ExitInfo) -> None:
        for hook in self.exit_hooks:
            try:
                hook(agent, rt, info)
            except Exception:
                log.exception("exit hook %r failed for agent %s", hook, agent.name)

    def _release_incarnation(self, agent: Agent, rt: Runtime) -> None:
        self._close_handles(rt)
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

    def _schedule_restart(self, agent: Agent, uptime: float) -> None:
        delay = restart_delay(agent, uptime=uptime, now=time.monotonic(), policy=self.config.supervisor)
        if delay is None:
            self._event("agent.escalated", agent, restarts_in_window=len(agent.restart_times), window=agent.spec.restart_window)
            self._settle(agent, S.FAILED)
            return
        self._set_state(agent, S.BACKOFF, delay=delay)
        self._rt[agent.id].backoff_timer = self.loop.call_later(delay, lambda: self._restart(agent))

    def _restart(self, agent: Agent) -> None:
        if agent.state is not S.BACKOFF:
            return
        agent.restarts += 1
        self._set_state(agent, S.STARTING, restarts=agent.restarts)
        self._start(agent)

    def _start_failed(self, agent: Agent, message: str) -> None:
        rt = self._rt[agent.id]
        agent.exit = ExitInfo(ExitReason.FAILED_TO_START, message=message)
        self._by_key.pop(agent.key, None)
        self._run_exit_hooks(agent, rt, agent.exit)
        self._release_incarnation(agent, rt)
        self._event("agent.exited", agent, **agent.exit.to_dict())
        self._settle(agent, S.FAILED)
        self._notify(rt.start_waiters, agent, SpawnFailed(message, details=agent.exit.to_dict()))

    def _start_timeout(self, agent: Agent) -> None:
        if agent.state is not S.STARTING:
            return
        self._rt[agent.id].timed_out = True
        self._force_kill(agent)

    def _settle(self, agent: Agent, final: AgentState) -> None:
        """Enter a terminal state: free the name, drop old records, answer waiters."""
        self._set_state(agent, final, reason=agent.exit.reason.value if agent.exit else None)
        rt = self._rt[agent.id]
        rt.logs.close_pipe()
        for dropped in self.table.settled(agent):
            self._forget(dropped)
        if agent.operator_kill:
            self._forget(agent)
        self._notify(rt.start_waiters, agent, SpawnFailed("agent stopped before it started") if final is S.EXITED else None)
        self._notify(rt.gone_waiters, agent, None)

    def _forget(self, agent: Agent) -> None:
        """Remove an agent's record, channel and files."""
        self.table.remove(agent)
        rt = self._rt.pop(agent.id, None)
        self.channels.close_agent(agent.id)
        self.on_channel(agent.id, False)
        if rt is not None:
            if rt.logs.read_fd is not None:
                self.loop.remove_reader(rt.logs.read_fd)
            rt.logs.close()
            shutil.rmtree(rt.home, ignore_errors=True)
        self._event("agent.removed", agent)

    @staticmethod
    def _notify(waiters: list[Callback], agent: Agent, error: CloveError | None) -> None:
        pending, waiters[:] = list(waiters), []
        for waiter in pending:
            waiter(agent, error)

    # ---- operator actions --------------------------------------------------------------------

    def kill(self, agent: Agent, on_gone: Callback | None = None, *, operator: bool = True) -> None:
        """SIGTERM, then SIGKILL of the whole tree after the grace period. An operator's kill
        removes the agent once it is gone; ``on_gone`` fires then."""
        rt = self._rt.get(agent.id)
        agent.operator_kill = agent.operator_kill or operator
        if rt is None:
            if on_gone:
                on_gone(agent, None)
            return
        if on_gone is not None:
            rt.gone_waiters.append(on_gone)
        if agent.state in TERMINAL:
            if operator:
                self._forget(agent)
            self._notify(rt.gone_waiters, agent, None)
            return
        if agent.state is S.STOPPING:
            return
        if agent.state is S.BACKOFF:
            if rt.backoff_timer is not None:
                rt.backoff_timer.cancel()
            self._set_state(agent, S.STOPPING)
            agent.exit = ExitInfo(ExitReason.KILLED, message="stopped by operator while waiting to restart")
            self._settle(agent, S.EXITED)
            return
        was_paused = agent.state is S.PAUSED
        self._set_state(agent, S.STOPPING, by="operator" if operator else "kernel")
        if was_paused:
            self._thaw(agent, rt)
        self._signal(agent, signal.SIGTERM)
        rt.kill_timer = self.loop.call_later(self.config.sandbox.kill_grace, lambda: self._force_kill(agent))

    def _signal(self, agent: Agent, sig: int) -> None:
        if agent.pid is None:
            return
        try:
            os.kill(agent.pid, sig)
        except ProcessLookupError:
            pass

    def _force_kill(self, agent: Agent) -> None:
        rt = self._rt.get(agent.id)
        if rt is None or agent.state in TERMINAL:
            return
        self._event("agent.force_kill", agent)
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
        rt = self._rt[agent.id]
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
        self._set_state(agent, S.PAUSED, via=how)
        return how

    def resume(self, agent: Agent) -> None:
        rt = self._rt[agent.id]
        if agent.state is not S.PAUSED:
            raise Conflict(f"agent {agent.name!r} is {agent.state.value}, not paused")
        self._thaw(agent, rt)
        self._set_state(agent, S.RUNNING)

    @staticmethod
    def _thaw(agent: Agent, rt: Runtime) -> None:
        if rt.cgroup is not None and rt.cgroup.can_freeze:
            rt.cgroup.thaw()
        elif rt.pgid is not None:
            try:
                os.killpg(rt.pgid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def remove(self, agent: Agent) -> None:
        if agent.state not in TERMINAL:
            raise Conflict(f"agent {agent.name!r} is {agent.state.value}; kill it first", details={"state": agent.state.value})
        self._forget(agent)

    def permissions_changed(self, agent: Agent) -> None:
        self._event("agent.permissions", agent, level=agent.permissions.level, permissions=agent.permissions.to_wire())

    def children_of(self, agent: Agent) -> list[Agent]:
        return [a for a in self.table if a.parent_id == agent.id and a.state in LIVE]

    def work_dir(self, agent: Agent) -> str:
        """The agent's writable work dir (the same path inside and outside its sandbox)."""
        return agent.permissions.work_dir

    def request_exit(self, agent: Agent) -> None:
        """The agent said it is done: its next exit is final whatever the restart policy."""
        agent.exit_requested = True

    def runtime(self, agent: Agent) -> Runtime | None:
        return self._rt.get(agent.id)

    def stats(self, agent: Agent) -> dict[str, int]:
        rt = self._rt.get(agent.id)
        return rt.cgroup.stats() if rt is not None and rt.cgroup is not None else {}

    # ---- housekeeping and shutdown -----------------------------------------------------------

    def housekeeping(self) -> None:
        if self._orphan_cgroups:
            still = []
            for cgroup in self._orphan_cgroups:
                cgroup.kill_all()
                if not cgroup.remove():
                    still.append(cgroup)
            self._orphan_cgroups = still

    # ---- the zygote's death (see the module docstring) ---------------------------------------

    def _zygote_lost(self) -> None:
        now = time.monotonic()
        lived = now - self.launcher.started_at
        old_pid = self.launcher.pid
        self.spares.lost()
        self.launcher.stop(timeout=0.0)  # reap it: it is gone, or is killed now
        kept = restarted = 0
        for agent in list(self.table):
            rt = self._rt.get(agent.id)
            if rt is None or agent.state in TERMINAL or agent.state is S.BACKOFF:
                continue
            if rt.handles is not None:
                self._watch(agent, rt)
                kept += 1
            elif agent.state is S.STARTING:
                self._interrupt_start(agent, rt)
                restarted += 1
            else:  # started, but we hold no handle on it (cannot happen with this zygote): end it
                self._by_key.pop(agent.key, None)
                self._force_kill(agent)
                self._on_exited(agent, {"signal": signal.SIGKILL})
        log.error(
            "the zygote %s died after %.1f s; %d running agents carry on, %d starts are retried",
            old_pid, lived, kept, restarted,
        )
        self.journal.append(
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
            self._zygote_timer = self.loop.call_later(delay, self._restart_zygote)
        else:
            self._restart_zygote()

    def _restart_zygote(self) -> None:
        self._zygote_timer = None
        if self.spares.stopped:
            return  # shutting down
        try:
            self.launcher.restart()
        except SandboxError as err:
            log.error("%s; retrying in 1 s", err.message)
            self._zygote_timer = self.loop.call_later(1.0, self._restart_zygote)
            return
        for hook in self.zygote_started:
            hook()
        for agent in self.table:
            rt = self._rt.get(agent.id)
            if rt is None or rt.handles is None or rt.spawn_spec is None or agent.init_pid is None:
                continue
            try:
                self.launcher.adopt(rt.spawn_spec, agent.init_pid, rt.handles.pidfd.fd)
            except SandboxError as err:
                log.warning("agent %s: the new zygote cannot run commands in it: %s", agent.name, err.message)
        pending, self._interrupted = self._interrupted, []
        for agent in pending:
            if agent.state is S.STARTING and agent.id in self._rt:
                self._start(agent)
        self.spares.prepare()

    def _zygote_ready(self, event: dict[str, Any]) -> None:
        took = time.monotonic() - self.launcher.started_at
        log.info("zygote %s ready %.0f ms after it was started", event.get("pid"), took * 1000)

    def _interrupt_start(self, agent: Agent, rt: Runtime) -> None:
        """The zygote died while this incarnation was starting: kill what it made, start again."""
        if rt.start_timer is not None:
            rt.start_timer.cancel()
        self._by_key.pop(agent.key, None)
        self._force_kill(agent)  # its cgroup, and the process group ``forked`` named
        self._release_incarnation(agent, rt)
        if rt.logs.read_fd is not None:
            self.loop.remove_reader(rt.logs.read_fd)  # the next incarnation gets a fresh pipe
        self._event("agent.start_interrupted", agent, reason="the zygote died")
        self._interrupted.append(agent)

    def _watch(self, agent: Agent, rt: Runtime) -> None:
        """Supervise a started agent without the zygote: its end through G's pidfd, its exit
        status through G's status pipe."""
        handles = rt.handles
        if handles is None or handles.watched:
            return
        handles.watched = True
        self.loop.add_reader(handles.status, functools.partial(self._read_status, handles))
        self.loop.add_reader(handles.pidfd, functools.partial(self._watched_exit, agent))

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
                self.loop.remove_reader(handles.status)  # EOF stays readable: stop polling it
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
        rt = self._rt.get(agent.id)
        handles = rt.handles if rt is not None else None
        if rt is None or handles is None:
            return
        self.loop.remove_reader(handles.pidfd)
        self._read_status(handles)  # G wrote A's status before it exited: it is in the pipe
        status = handles.final
        self._by_key.pop(agent.key, None)
        with contextlib.suppress(SandboxError):  # no zygote right now: a new one never heard of it
            self.launcher.disown(agent.key)
        event: dict[str, Any]
        if status is None:
            log.warning("agent %s: its exit status was lost with the zygote; reporting SIGKILL", agent.name)
            event = {"signal": signal.SIGKILL}
        elif os.WIFSIGNALED(status):
            event = {"signal": os.WTERMSIG(status), "core": os.WCOREDUMP(status)}
        else:
            event = {"exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
        self._on_exited(agent, event)

    def _close_handles(self, rt: Runtime) -> None:
        handles, rt.handles = rt.handles, None
        if handles is None:
            return
        if handles.watched:
            self.loop.remove_reader(handles.status)
            self.loop.remove_reader(handles.pidfd)
        handles.close()

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
        if self._zygote_timer is not None:
            self._zygote_timer.cancel()
        for agent in self.table:
            rt = self._rt.get(agent.id)
            if rt is not None:
                self._close_handles(rt)
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
