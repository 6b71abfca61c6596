"""The processes the zygote forks: an agent's tree (C, G, A) and a command's (X, Y); see
:mod:`clove.sandbox.zygote` for the picture. Every function here runs in a forked child
and never returns: it ends with an exec or ``os._exit``."""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import pkgutil  # noqa: F401 - runpy.run_path imports it: imported here, every agent inherits it
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any, NoReturn

from clove.sandbox import confine, lifeline, linux, loopback, mountview, seccomp
from clove.sandbox.proctree import tree_of
from clove.sandbox.relayloop import RelayLoop, dispatch
from clove.sandbox.spec import ExecSpec, SpawnSpec

#: Compiled by the zygote at warm-up (``{IP sockets allowed: filter}``, see
#: :func:`.confine.inet_allowed`); None when seccomp is unavailable.
SECCOMP: dict[bool, Any] | None = None
#: The read end of the kernel's life line (set by the zygote at start; -1: none). Every G watches
#: it and takes its tree down on EOF (see :mod:`clove.sandbox.lifeline`).
LIFELINE = -1
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def write_status(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def fail(status_w: int, stage: str, err: BaseException) -> NoReturn:
    try:
        message: dict[str, Any] = {"error": f"{type(err).__name__}: {err}", "stage": stage}
        if isinstance(err, OSError) and err.errno is not None:
            message["errno"] = err.errno
        write_status(status_w, message)
    finally:
        os._exit(127)


# ---- per-agent processes (never return) ----------------------------------------------------


def run_c(spec: SpawnSpec, log_fd: int, status_w: int) -> NoReturn:
    """C, forked for this spawn (:mod:`clove.sandbox.sparechild` is C made ahead of time)."""
    stage = "setsid"
    try:
        os.setsid()
        stage = "cgroup"
        confine.join_cgroups(spec.cgroup_attach)
        stage = "workdir"
        confine.make_work_image(spec)
        stage = "namespaces"
        entered = confine.unshare_namespaces(network=spec.network) if spec.namespaces else []
        stage = "fork"
        pid = os.fork()
        if pid == 0:
            if not spec.namespaces:
                _run_keeper(spec, log_fd, status_w, entered)
            run_g(spec, log_fd, status_w, entered, confine.work_mount_of(spec))
        write_status(status_w, {"g": pid})
        os._exit(0)
    except BaseException as err:
        fail(status_w, stage, err)


def run_g(spec: SpawnSpec, log_fd: int, status_w: int, entered: list[str], work_mount: tuple[int, str, str, int] | None) -> NoReturn:
    """G, pid 1 of the agent's namespaces: the agent's view (``work_mount``: the loop device to
    mount over the work dir first, see :func:`.confine.work_mount_of`), then A, then pid 1's
    duties. A spare's G comes here once a spawn has claimed it.

    An agent with relays in its own network namespace gets ``lo`` up and the relays' listeners
    here, before A exists (its first connection waits in the backlog, never refused); G's loop
    relays them (:mod:`clove.sandbox.relayloop`). G stays what it was: A closes the listeners
    with every other fd it inherits, and nothing of A's confinement changes for G's sake."""
    stage = "mounts"
    listeners: list[socket.socket] = []
    try:
        mountview.build(spec.exposures, hidden=spec.hidden, tmp_bytes=spec.tmp_bytes, tmp_inodes=spec.tmp_inodes, work_mount=work_mount)
        stage = "proc"
        confine.mount_proc()
        stage = "hostname"
        socket.sethostname(spec.hostname)
        if spec.relayed and "net" in entered:
            stage = "relays"
            loopback.bring_up_loopback()
            listeners = loopback.listen(spec.relays)
        stage = "fork"
        agent = os.fork()
        if agent == 0:
            _run_agent(spec, log_fd, status_w, entered, relays=[r.port for r in spec.relays] if listeners else [])
    except BaseException as err:
        fail(status_w, stage, err)
    os.close(log_fd)
    _init_loop(agent, status_w, spec, listeners)


def _run_keeper(spec: SpawnSpec, log_fd: int, status_w: int, entered: list[str]) -> NoReturn:
    """G without namespaces: the agent's parent, so that it can report the agent's exact end and
    take the agent's tree down when the kernel dies (a child subreaper: orphans come to it)."""
    try:
        linux.set_child_subreaper()
        keeper = os.getpid()
        agent = os.fork()
        if agent == 0:
            linux.set_parent_death_signal(signal.SIGKILL)  # G gone (killed): the agent goes too
            if os.getppid() != keeper:
                os._exit(127)
            _run_agent(spec, log_fd, status_w, entered)
        write_status(status_w, {"a": agent})  # the host pid (no pid namespace here)
    except BaseException as err:
        fail(status_w, "fork", err)
    os.close(log_fd)
    _init_loop(agent, status_w, spec, [])


def _init_loop(agent: int, status_w: int, spec: SpawnSpec, listeners: list[socket.socket]) -> NoReturn:
    """pid 1 duties (or the keeper's): pass signals on to the agent, reap every orphan, report
    the agent's end; when the kernel's life line breaks, take the whole tree down; relay the
    agent's connections on ``listeners`` (one per relay of ``spec``)."""

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(agent, signum)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    # Out of the agent's process group: a pause by SIGSTOP to that group must not stop the watch.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()

    def drain_wakeups(_mask: int) -> None:
        with contextlib.suppress(OSError):
            os.read(wake_r, 4096)

    selector.register(wake_r, selectors.EVENT_READ, drain_wakeups)
    if LIFELINE >= 0:
        selector.register(LIFELINE, selectors.EVENT_READ, lambda _mask: lifeline.cut(spec))  # the kernel is gone
    if listeners:
        RelayLoop(selector, spec.relays, listeners)
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(0)
            if pid == 0:
                break
            if pid == agent:
                write_status(status_w, {"status": status})
                os._exit(0)
        dispatch(selector)


def _run_agent(spec: SpawnSpec, log_fd: int, status_w: int, entered: list[str], *, relays: list[int] | None = None) -> NoReturn:
    """A: the agent. ``relays``: the ports G listens on for it (its isolation report's)."""
    stage = "fds"
    try:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, status_w)
        os.closerange(status_w + 1, 65536)
        stage = "cwd"
        os.chdir(spec.cwd)
        stage = "rlimits"
        confine.apply_rlimits(spec.rlimits)
        report: dict[str, Any] = {"namespaces": entered, "uid": os.getuid(), "relays": relays or []}
        if spec.uid is not None:
            stage = "uid"
            confine.drop_privileges(spec.uid)
            report["uid"] = spec.uid
        report["no_new_privs"] = False
        if spec.no_new_privs:
            stage = "no_new_privs"
            linux.set_no_new_privs()
            report["no_new_privs"] = True
        report["landlock"] = {}
        if spec.landlock:
            stage = "landlock"
            writable = confine.landlock_writable(spec)
            report["landlock"] = confine.restrict_filesystem(writable, network=spec.network, connect_ports=spec.relay_ports)
        report["seccomp"] = False
        if spec.seccomp and SECCOMP is not None:
            stage = "seccomp"
            seccomp.load(SECCOMP, network=confine.inet_allowed(spec))
            report["seccomp"] = True
        stage = "start"
        write_status(status_w, {"ready": report})
    except BaseException as err:
        fail(status_w, stage, err)
    if spec.interpreter:
        try:
            os.set_inheritable(status_w, False)
            os.set_blocking(status_w, True)
            os.execve(spec.interpreter, [spec.interpreter, spec.script, *spec.args], spec.env)
        except BaseException as err:
            fail(status_w, "exec", err)
    os.close(status_w)
    _run_script_here(spec)


def _run_script_here(spec: SpawnSpec) -> NoReturn:
    """Run the agent's script in this (forked, warm) interpreter as ``__main__``, then end the
    process the way the interpreter would: join threads, run atexit, flush, exit."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    os.environ.clear()
    os.environ.update(spec.env)
    sys.argv = [spec.script, *spec.args]
    sys.path[0] = os.path.dirname(spec.script)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    code = 0
    try:
        runpy.run_path(spec.script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize does first
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc()
    os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


# ---- commands run for exec (never return) --------------------------------------------------


def run_exec(
    job: ExecSpec,
    agent: SpawnSpec | None,
    init_pid: int | None,
    out_fd: int,
    err_fd: int,
    status_w: int,
    init_pidfd: int = -1,
) -> NoReturn:
    """X: still in the host pid namespace. Joins the agent's cgroups and namespaces, forks Y.
    ``init_pidfd`` (G's pidfd) proves afterwards that ``init_pid`` was still G's when joined."""
    stage = "cgroup"
    try:
        if agent is not None:
            confine.join_cgroups(agent.cgroup_attach)
            if agent.namespaces and init_pid is not None:
                stage = "namespaces"
                confine.enter_namespaces(init_pid)
                # G alive now was alive when its namespace files were opened: the pid was its own.
                if init_pidfd >= 0 and linux.pidfd_exited(init_pidfd):
                    stage = "lookup"
                    raise ProcessLookupError(errno.ESRCH, "the agent is not running")
        stage = "fork"
        pid = os.fork()
        if pid == 0:
            _run_command(job, agent, out_fd, err_fd, status_w)
        write_status(status_w, {"g": pid})
        os._exit(0)
    except BaseException as err:
        fail(status_w, stage, err)


def _run_command(job: ExecSpec, agent: SpawnSpec | None, out_fd: int, err_fd: int, status_w: int) -> NoReturn:
    """Y: the command itself, confined exactly like the agent it runs for (or as the operator)."""
    stage = "setsid"
    try:
        os.setsid()
        stage = "fds"
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, status_w)
        os.closerange(status_w + 1, 65536)
        env = dict(job.env)
        if agent is not None:
            env = dict(agent.env)
            stage = "rlimits"
            confine.apply_rlimits(agent.rlimits)
            if agent.uid is not None:
                stage = "uid"
                confine.drop_privileges(agent.uid)
        elif job.uid is not None:
            stage = "uid"
            confine.become(job.uid, job.gid if job.gid is not None else job.uid, job.groups)
        stage = "cwd"  # as the command's user: its own search permissions apply
        os.chdir(job.cwd)
        if os.getcwd() != job.cwd:  # a directory on the way became a symlink since the kernel checked
            raise OSError(errno.ESTALE, f"the working directory moved: {job.cwd}")
        if agent is not None:
            if agent.no_new_privs:
                stage = "no_new_privs"
                linux.set_no_new_privs()
            if agent.landlock:
                stage = "landlock"
                confine.restrict_filesystem(confine.landlock_writable(agent), network=agent.network, connect_ports=agent.relay_ports)
            if agent.seccomp and SECCOMP is not None:
                stage = "seccomp"
                seccomp.load(SECCOMP, network=confine.inet_allowed(agent))
        stage = "exec"
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *_FORWARDED, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE; a command must not inherit that
        os.execvpe(job.argv[0], list(job.argv), env)
    except BaseException as err:
        fail(status_w, stage, err)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


def kill_tree(root: int) -> None:
    """SIGKILL a command's whole tree; a second round catches processes forked meanwhile."""
    for _ in range(2):
        kill_group(root)
        for pid in tree_of(root, group=root, session=root):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
