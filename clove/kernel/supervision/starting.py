"""The start path: from an agent's config to a spawn request the zygote acts on.

Everything that can be known before forking is checked first (:meth:`Starter.check_spawnable`),
so a bad spec is a clear error instead of a ghost. Each incarnation then gets its cgroup (a
prepared spare's, see :mod:`.spares`) or rlimits without one, a fresh log pipe,
and its spawn spec; the zygote is asked for the process tree and a timer bounds the start.
Starting never blocks the loop: the zygote's ``started`` (or ``exited``) event says how it went
(see :meth:`.supervisor.Supervisor.handle_zygote_event`).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from clove.config import AgentConfig
from clove.errors import (
    CloveError,
    Conflict,
    IsolationUnavailable,
    PermissionDenied,
    SandboxError,
    SpawnFailed,
)
from clove.kernel.core.agents import Agent, AgentState, ExitInfo, ExitReason
from clove.kernel.supervision.launchspec import build_spawn_spec, interpreter_paths
from clove.kernel.supervision.limits import isolation_report
from clove.kernel.supervision.logs import LogCapture
from clove.kernel.supervision.runtime import Callback, Runtime, notify
from clove.policy import for_level
from clove.sandbox.limits import LimitReport, Limits
from clove.sandbox.rlimits import rlimits_for

if TYPE_CHECKING:
    from clove.kernel.supervision.supervisor import Supervisor

S = AgentState


def limits_of(spec: AgentConfig) -> Limits:
    return Limits(memory_bytes=spec.memory_bytes, cpu_quota_us=spec.cpu_quota_us, pids=spec.pids)


class Starter:
    """Creates agents and starts each incarnation, for the :class:`~.supervisor.Supervisor`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._interpreter_paths = interpreter_paths()

    def _hidden_paths(self) -> tuple[str, ...]:
        """What no sandbox may see: the state dir (every agent's dir, the journal, the state
        store) and the control socket, wherever the agent's script lives."""
        paths = [str(self.sup.agents_dir.parent)]
        if self.sup.channels.control_path:
            paths.append(os.path.realpath(self.sup.channels.control_path))
        return tuple(paths)

    def check_spawnable(self, spec: AgentConfig) -> None:
        """Everything that can be known before forking: a clear error instead of a ghost.

        :raises SpawnFailed: missing script, interpreter or working dir.
        :raises Conflict: the name belongs to a live agent.
        :raises IsolationUnavailable: ``require_isolation`` and a limit cannot be enforced.
        """
        if self.sup.table.name_in_use(spec.name):
            raise Conflict(f"an agent named {spec.name!r} is already running", details={"name": spec.name})
        if not os.path.isfile(spec.script):
            raise SpawnFailed(f"script not found: {spec.script}", details={"script": spec.script})
        if spec.interpreter is not None and not os.access(spec.interpreter, os.X_OK):
            raise SpawnFailed(f"interpreter not executable: {spec.interpreter}", details={"interpreter": spec.interpreter})
        if spec.working_dir is not None and not os.path.isdir(spec.working_dir):
            raise SpawnFailed(f"working dir not found: {spec.working_dir}", details={"working_dir": spec.working_dir})
        if self.sup.config.sandbox.require_isolation:
            report = self._limit_report(limits_of(spec), runs_as_root=not spec.sandboxed)
            missing = [k for k, r in report.items() if r.requested is not None and not r.enforced]
            if missing:
                raise IsolationUnavailable(
                    f"require_isolation is on and these limits cannot be enforced here: {', '.join(missing)}",
                    details={k: report[k].to_dict() for k in missing},
                )
            if not spec.sandboxed:
                raise IsolationUnavailable("require_isolation is on: unsandboxed agents are refused")

    def _limit_report(self, limits: Limits, *, runs_as_root: bool) -> dict[str, LimitReport]:
        if self.sup.backend is not None:
            return self.sup.backend.planned_report(limits)
        return rlimits_for(limits, runs_as_root=runs_as_root)[1]

    def spawn(
        self, spec: AgentConfig, on_started: Callback | None = None, *, parent: Agent | None = None, detached: bool = False
    ) -> Agent:
        """Create and start an agent; ``on_started`` fires once it runs or fails to start.

        :param parent: the agent that asks (agents with the spawn right); the child's
            permissions must lie within the parent's.
        :param detached: the child outlives its parent (the caller checked the right to ask).
        :raises PermissionDenied: the child would get more than its parent has.
        """
        sup = self.sup
        self.check_spawnable(spec)
        agent_id = sup.table.new_id()
        uid = sup.config.sandbox.uid_base + agent_id if spec.sandboxed else None
        home = sup.agents_dir / str(agent_id)
        work = Path(spec.working_dir) if spec.working_dir else home / "work"
        permissions = for_level(spec.level, work_dir=str(work)).with_grants(spec.permissions)
        if parent is not None and not permissions.within(parent.permissions):
            raise PermissionDenied(
                "a child's permissions cannot exceed its parent's",
                details={"requested": permissions.to_wire(), "parent": parent.permissions.to_wire()},
            )
        agent = Agent(id=agent_id, spec=spec, uid=uid, permissions=permissions, parent_id=parent.id if parent else None, detached=detached)
        if home.exists():
            shutil.rmtree(home)  # left by an earlier kernel run that reused this id
        home.mkdir(mode=0o700)
        if not spec.working_dir:
            work.mkdir(mode=0o700)
            if uid is not None:
                os.chown(work, uid, uid)
        try:
            endpoint = sup.channels.bind_agent(agent_id, home / "ipc", uid)
        except CloveError:
            shutil.rmtree(home, ignore_errors=True)
            raise
        runtime = Runtime(home=home, endpoint=endpoint, logs=LogCapture(home / "agent.log", max_bytes=sup.config.logs.max_bytes))
        sup.runtimes[agent_id] = runtime
        sup.table.add(agent)
        sup.on_channel(agent_id, True)
        if on_started is not None:
            runtime.start_waiters.append(on_started)
        sup.event("agent.created", agent, script=spec.script, restart_policy=spec.restart, detached=detached)
        sup.spares.demanded(parent.id if parent is not None else None)  # what the pool follows
        sup.device_wait.start(agent)  # after its devices, if it holds grants on any
        return agent

    def start(self, agent: Agent) -> None:
        """Start the agent's next incarnation: cgroup or rlimits, log pipe, spawn spec, zygote."""
        sup = self.sup
        rt = sup.runtimes[agent.id]
        rt.timed_out = False
        agent.incarnation += 1
        agent.pid = agent.init_pid = None
        sup.by_key[agent.key] = agent
        spec = agent.spec
        limits = limits_of(spec)
        runs_as_root = agent.uid is None
        rlimits: list[tuple[int, int, int]] = []
        slot: str | None = None
        try:
            if sup.backend is not None:
                taken = sup.spares.take(limits) if spec.sandboxed else None  # a spare has its namespaces
                if taken is not None:
                    rt.cgroup, slot = taken
                else:
                    rt.cgroup = sup.backend.create(f"agent-{agent.id}.{agent.incarnation}", limits)
                limit_report = rt.cgroup.report()
            else:
                rlimits, limit_report = rlimits_for(limits, runs_as_root=runs_as_root)
        except SandboxError as err:
            self.fail(agent, f"sandbox setup failed: {err.message}")
            return
        agent.isolation = {
            "backend": sup.backend.name if sup.backend is not None else "rlimit",
            "cgroup": rt.cgroup.name if rt.cgroup is not None else None,
            "limits": {k: v.to_dict() for k, v in limit_report.items()},
        }
        agent.isolation = isolation_report(agent)  # with each limit's source and ceiling, and storage
        write_fd = rt.logs.new_pipe()
        sup.loop.add_reader(rt.logs.read_fd, functools.partial(self._drain_log, rt.logs))
        launch = build_spawn_spec(
            agent,
            endpoint=rt.endpoint,
            work=spec.working_dir or str(rt.home / "work"),
            sandbox=sup.config.sandbox,
            cgroup_attach=rt.cgroup.attach_paths if rt.cgroup is not None else (),
            rlimits=rlimits,
            interpreter=self._interpreter_paths,
            hidden=self._hidden_paths(),
            llm_gateway=sup.config.llm is not None and sup.config.llm.endpoint.enabled,
        )
        rt.spawn_spec = launch
        try:
            sup.launcher.spawn(launch, write_fd, slot=slot)
        except SandboxError as err:
            os.close(write_fd)
            self.fail(agent, err.message)
            return
        os.close(write_fd)
        sup.spares.prepare()
        rt.start_timer = sup.loop.call_later(sup.config.sandbox.start_timeout, lambda: self._timeout(agent))

    def _drain_log(self, capture: LogCapture) -> None:
        if not capture.drain() and capture.read_fd is not None:
            self.sup.loop.remove_reader(capture.read_fd)
            capture.close_pipe()

    def fail(self, agent: Agent, message: str) -> None:
        """The incarnation never reached the zygote: it failed to start."""
        sup = self.sup
        rt = sup.runtimes[agent.id]
        agent.exit = ExitInfo(ExitReason.FAILED_TO_START, message=message)
        sup.by_key.pop(agent.key, None)
        sup.run_exit_hooks(agent, rt, agent.exit)
        sup.release_incarnation(agent, rt)
        sup.event("agent.exited", agent, **agent.exit.to_dict())
        # The spawn's caller hears why first: settle answers any waiter left with "no error".
        notify(rt.start_waiters, agent, SpawnFailed(message, details=agent.exit.to_dict()))
        sup.settle(agent, S.FAILED)

    def _timeout(self, agent: Agent) -> None:
        if agent.state is not S.STARTING:
            return
        self.sup.runtimes[agent.id].timed_out = True
        self.sup.stopper.force_kill(agent)
