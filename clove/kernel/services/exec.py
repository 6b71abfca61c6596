"""The exec service: run a command for a caller, collect its output, enforce its timeout.

**Where it runs.** An agent's command runs *inside that agent's sandbox*: the zygote forks it
into the agent's current cgroups, joins the agent's namespaces and applies the agent's own
spawn-time confinement (uid, rlimits, no_new_privs, Landlock, seccomp; see
:mod:`clove.sandbox.zygote`), so a command can do exactly what the agent could do itself
and counts against the agent's limits. An operator's command runs on the host as the operator
(the control socket's peer uid and gid, with that process's groups; the kernel's user when they
are unknown). Both go through the zygote: the kernel has libzmq threads and must not
``setns``, and the zygote, a child subreaper, reaps whatever a command leaves behind.

**Policy.** The ``exec`` right, then :meth:`Permissions.check_exec` on the program. A command
given as a list runs as that argv. A string without shell syntax is split like a shell would
(``shlex``) and runs without one; a string with shell syntax (``| & ; < > ( ) $ ` * ? [ ~ #``,
newlines, or a leading ``NAME=value``) runs as ``/bin/sh -c`` and needs both ``sh`` and its first
word granted: with a shell the first word is not the only program it may run, so an allowlist
that must hold should not grant ``sh``. The working directory (default: the agent's work dir,
an operator's own) is resolved in the caller's view and checked like a read path.

**Output and time.** stdout and stderr arrive on two non-blocking pipes read by the loop, kept
apart, each capped at :data:`.execjobs.MAX_OUTPUT` bytes (``truncated``; the rest is drained and dropped so
the command never blocks). At the timeout the zygote SIGKILLs the command's process group, its
session and its descendants, and the reply says ``timed_out``. When the command's main process
exits, what is left of its process group is killed too; a process that left both its group and
its session and lost its parent escapes those kills (inside an agent it still dies with the
agent). When an agent exits, its running commands are killed and answered with ``conflict``.

The records of running commands and their output capture are in :mod:`.execjobs`; the error
for a command that could not start, from the zygote's report, in :mod:`.execerrors`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pwd
import re
import shlex
import signal
import time
from typing import TYPE_CHECKING, Any, Final

from clove.errors import CloveError, Conflict, InvalidArguments, QuotaExceeded, SandboxError
from clove.kernel.core.agents import AgentState
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.execerrors import agent_exited, launch_error
from clove.kernel.services.execjobs import MAX_OUTPUT, READ_CHUNK, Job, Output, oom_kills
from clove.kernel.services.files import FileService
from clove.kernel.services.fileviews import operator_identity
from clove.kernel.services.started import when_started
from clove.sandbox.spec import ExecSpec

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.principal import Principal
    from clove.kernel.services.host import ServiceHost, ServiceRegistry
    from clove.sandbox.cgroups import AgentCgroup
    from clove.sandbox.rootfs import Credentials

log = logging.getLogger(__name__)

MAX_TIMEOUT: Final = 3600.0
MAX_JOBS_PER_CALLER: Final = 16
MAX_JOBS: Final = 256
#: After a kill, how long to wait for the zygote's exit report before answering anyway (a frozen
#: agent's processes die only once thawed).
KILL_GRACE: Final = 2.0
#: After the exit, how long pipes still held by an escaped process may delay the reply.
EOF_GRACE: Final = 0.5
SHELL: Final = "/bin/sh"
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOUSEKEEPING_EVERY: Final = 0.5

_SHELL_SYNTAX: Final = re.compile(r"[|&;<>()$`*?\[~#\n]")
_FIRST_WORD: Final = re.compile(r"\s*([^\s|&;<>()]+)")


def plan_command(command: str | list[str]) -> tuple[list[str], list[str]]:
    """The argv to run, and the programs the policy must allow for it.

    :raises InvalidArguments: empty, or a NUL byte.
    """
    if isinstance(command, list):
        if not command or not command[0] or any("\x00" in arg for arg in command):
            raise InvalidArguments(
                "command must be a non-empty list of strings without NUL", details={"argument": "command"}
            )
        return list(command), [command[0]]
    if not command.strip() or "\x00" in command:
        raise InvalidArguments(
            "command must be a non-empty string without NUL", details={"argument": "command"}
        )
    if not _SHELL_SYNTAX.search(command):
        try:
            argv = shlex.split(command)
        except ValueError:  # unbalanced quotes: let the shell report it
            argv = []
        if argv and "=" not in argv[0]:
            return argv, [argv[0]]
    match = _FIRST_WORD.match(command)
    programs = [SHELL]
    if match is not None and "=" not in match.group(1):
        programs.append(match.group(1).strip("'\""))
    return [SHELL, "-c", command], programs


def host_env(creds: Credentials | None) -> dict[str, str]:
    """The environment of an operator's command: a login-like minimum, not the kernel's own."""
    uid = creds.uid if creds is not None else os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        home, user = entry.pw_dir, entry.pw_name
    except KeyError:
        home, user = "/", str(uid)
    return {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
    }


class ExecService:
    """``kernel.execs``: starts commands through the zygote and answers when they end."""

    def __init__(self, kernel: ServiceHost, *, files: FileService) -> None:
        self.kernel = kernel
        self.files = files  # the views a command's working directory is resolved in
        self.loop = kernel.loop
        self.launcher = kernel.launcher
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._checked_at = 0.0

    def held(self) -> dict[str, int]:
        return {"exec_jobs": len(self.jobs)}

    # ---- starting ----------------------------------------------------------------------------

    def run(self, ctx: Principal, command: str | list[str], cwd: str | None, timeout: float) -> Deferred:
        """Start ``command`` for the caller; the Deferred resolves with the reply.

        :raises PermissionDenied: the program (or the working directory) is not granted.
        :raises Conflict: the calling agent is not running (or is paused).
        :raises QuotaExceeded: too many commands running.
        :raises InvalidArguments: bad command, timeout or working directory.
        """
        if not 0 < timeout <= MAX_TIMEOUT:
            raise InvalidArguments(
                f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds", details={"argument": "timeout"}
            )
        argv, programs = plan_command(command)
        for program in programs:
            ctx.perms.check_exec(program)
        running = sum(1 for job in self.jobs.values() if job.principal_id == ctx.principal_id)
        if running >= MAX_JOBS_PER_CALLER or len(self.jobs) >= MAX_JOBS:
            raise QuotaExceeded(
                f"at most {MAX_JOBS_PER_CALLER} commands per caller may run at once",
                details={"running": running, "max_running": MAX_JOBS_PER_CALLER},
            )
        return when_started(self.kernel.supervisor, ctx, lambda: self._launch(ctx, argv, cwd, timeout))

    def _launch(self, ctx: Principal, argv: list[str], cwd: str | None, timeout: float) -> Deferred:
        job_id = f"x{next(self._ids)}"
        agent = ctx.agent
        cgroup: AgentCgroup | None = None
        if agent is not None:
            if agent.state is not AgentState.RUNNING or agent.pid is None:
                raise Conflict(
                    f"agent {agent.name!r} is {agent.state.value}; commands run only inside a running agent",
                    details={"agent_id": agent.id, "state": agent.state.value},
                )
            workdir = self.files.directory(ctx, cwd)
            spec = ExecSpec(job=job_id, argv=tuple(argv), cwd=workdir, agent_key=agent.key)
            runtime = self.kernel.supervisor.runtime(agent)
            cgroup = runtime.cgroup if runtime is not None else None
        else:
            creds, _ = operator_identity(ctx.session)
            workdir = self.files.directory(ctx, cwd)
            spec = ExecSpec(
                job=job_id,
                argv=tuple(argv),
                cwd=workdir,
                env=host_env(creds),
                uid=creds.uid if creds is not None else None,
                gid=creds.gid if creds is not None else None,
                groups=creds.groups if creds is not None else (),
            )
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.launcher.exec(spec, out_w, err_w)
        except SandboxError:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        job = Job(
            id=job_id,
            argv=argv,
            deferred=Deferred(),
            out=Output(out_r),
            err=Output(err_r),
            agent=agent,
            cgroup=cgroup,
            oom_before=oom_kills(cgroup),
            zygote_pid=self.launcher.pid,
            principal_id=ctx.principal_id,
        )
        self.jobs[job_id] = job
        self.loop.add_reader(job.out.fd, lambda: self._on_output(job, job.out))
        self.loop.add_reader(job.err.fd, lambda: self._on_output(job, job.err))
        job.timeout_timer = self.loop.call_later(timeout, lambda: self._on_timeout(job))
        return job.deferred

    # ---- progress ----------------------------------------------------------------------------

    def _on_output(self, job: Job, stream: Output) -> None:
        if not stream.drain():
            self.loop.remove_reader(stream.fd)
            stream.close()
            self._maybe_finish(job)

    def on_zygote_event(self, event: dict[str, Any]) -> None:
        job = self.jobs.get(str(event.get("job")))
        if job is None:
            return
        kind = event.get("ev")
        if kind == "exec_started":
            job.pid = event.get("pid")
        elif kind == "exec_exited":
            job.exit = event
            self._maybe_finish(job)

    def _maybe_finish(self, job: Job) -> None:
        if job.exit is None:
            return
        if not job.out.open and not job.err.open:
            self._finish(job)
        elif job.grace_timer is None:
            job.grace_timer = self.loop.call_later(EOF_GRACE, lambda: self._finish(job))

    def _on_timeout(self, job: Job) -> None:
        if job.done:
            return
        job.timed_out = True
        self._kill(job)
        if job.exit is not None:
            self._maybe_finish(job)
        elif job.grace_timer is None:
            job.grace_timer = self.loop.call_later(KILL_GRACE, lambda: self._finish(job))

    def _kill(self, job: Job) -> None:
        with contextlib.suppress(SandboxError):  # the zygote is gone; housekeeping fails the job
            self.launcher.exec_kill(job.id)

    def on_lifecycle(self, event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        """An agent's exit ends its commands (its pid namespace and cgroup are going away)."""
        if event_type not in ("agent.exited", "agent.removed"):
            return
        for job in [j for j in self.jobs.values() if j.agent is agent]:
            self._kill(job)
            self._finish(job, None if job.exit is not None else agent_exited(agent))

    # ---- answering ---------------------------------------------------------------------------

    def _finish(self, job: Job, error: CloveError | None = None) -> None:
        if job.done:
            return
        job.done = True
        for timer in (job.timeout_timer, job.grace_timer):
            if timer is not None:
                timer.cancel()
        for stream in (job.out, job.err):
            if stream.open:
                stream.drain(max_reads=MAX_OUTPUT // READ_CHUNK + 1)
                self.loop.remove_reader(stream.fd)
                stream.close()
        self.jobs.pop(job.id, None)
        report = job.exit or {}
        failed = report.get("error") or report.get("signal") is not None
        if error is None and failed and job.agent is not None and not _alive(job.agent.pid):
            # Its agent is dying (the end of the agent's pid namespace kills the command first, and
            # joining a dying sandbox fails): the kernel may not have heard of the exit yet, but
            # the agent's process is gone.
            error = agent_exited(job.agent)
        if error is None and report.get("error") and not job.timed_out:
            error = launch_error(job.argv[0], report)
        if error is not None:
            job.deferred.reject(error)
            return
        job.deferred.resolve(self._reply(job, report))

    def _reply(self, job: Job, report: dict[str, Any]) -> dict[str, Any]:
        sig = report.get("signal")
        code = report.get("exit_code")
        exit_code = -int(sig) if sig is not None else code
        reply: dict[str, Any] = {
            "success": exit_code == 0 and not job.timed_out,
            "stdout": job.out.text(),
            "stderr": job.err.text(),
            "exit_code": exit_code,
            "timed_out": job.timed_out,
            "truncated": job.out.truncated or job.err.truncated,
            "duration": round(time.monotonic() - job.started, 3),
        }
        if sig is not None:
            reply["signal"] = int(sig)
            if sig == signal.SIGKILL and job.cgroup is not None and oom_kills(job.cgroup) > job.oom_before:
                reply["oom_killed"] = True
        return reply

    # ---- hooks -------------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Fail the commands of a zygote that died (checked at most twice a second)."""
        if not self.jobs:
            return
        now = time.monotonic()
        if now - self._checked_at < HOUSEKEEPING_EVERY:
            return
        self._checked_at = now
        for job in list(self.jobs.values()):
            if self.launcher.sock is None or self.launcher.pid != job.zygote_pid:
                if job.pid is not None:
                    # Orphaned by the zygote, the command's leader went to init; its group
                    # (killed whole) outlives it while any member does.
                    with contextlib.suppress(OSError):
                        os.killpg(job.pid, signal.SIGKILL)
                self._finish(job, SandboxError("the zygote died while the command ran"))

    def shutdown(self) -> None:
        for job in list(self.jobs.values()):
            self._kill(job)
            self._finish(job, Conflict("the kernel is stopping"))


def _alive(pid: int | None) -> bool:
    """``pid`` exists and is not a zombie."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def attach(kernel: ServiceRegistry) -> None:
    """Build the exec service as ``kernel.execs`` and hook it into the kernel: zygote events,
    agent lifecycle, housekeeping and shutdown."""
    service = ExecService(kernel, files=kernel.files)
    kernel.execs = service
    kernel.zygote_listeners.append(service.on_zygote_event)
    kernel.supervisor.listeners.append(service.on_lifecycle)
    kernel.loop.housekeeping.append(service.housekeeping)
    kernel.on_shutdown.append(service.shutdown)
