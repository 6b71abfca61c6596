"""The zygote: a warm, single-threaded process that forks one confined process tree per agent.

Exec'ing a fresh Python and importing ZeroMQ costs ~45 ms; forking this process, which has
already imported the SDK, costs ~1-2 ms. The kernel cannot fork itself (libzmq threads), so it
starts a zygote at boot, naming the modules to import before the first fork (``--preload
zmq,clove_sdk``: the zygote itself knows nothing of the SDK), and talks to it over a
SOCK_SEQPACKET socketpair: the kernel sends
``{"op": "spawn", "spec": ...}`` with the agent's log pipe as an SCM_RIGHTS fd; the zygote
answers with ``started`` and ``exited`` events.

Process tree of one sandboxed agent::

    zygote (child subreaper)
     └─ C   host pid ns: setsid, join cgroups, unshare namespaces, fork G, report G, exit
         └─ G   pid 1 of the new pid ns: mounts, hostname; forks A; forwards signals, reaps
             └─ A   the agent: fds, cwd, rlimits, uid, no_new_privs, Landlock, then the script

When A ends, G writes A's exact wait status to the status pipe and exits; as the namespace's
init its exit kills everything A left behind. C's exit re-parents G to the zygote, which reaps
it and reports. Without namespaces G is still A's parent (a child subreaper, not an init): it
reports A's status the same way, and A has a parent-death signal on it.

**Agents die with their kernel.** G also watches the kernel's life line (the read end of a pipe
whose write end only the kernel holds; :mod:`clove.sandbox.lifeline`) and, on EOF, takes
its tree down. The zygote holds only a read end, so its own death cuts nothing. When the kernel
goes (EOF on the socket, or the parent-death signal, SIGTERM) the zygote kills its commands and
*reaps* them before it exits: a command inside an agent's pid namespace is the namespace's only
process with a parent outside it, and the namespace's init (G) cannot finish dying until that
parent has reaped it (left to init, that can take seconds).

**Agents outlive the zygote.** Agents are not the zygote's to lose: if it dies, the kernel starts
a new one and keeps supervising the running agents itself. For that, ``started`` carries two
SCM_RIGHTS fds: a pidfd of G (opened while G was still an unreaped child of ours, so it names G
and nothing else) and the status pipe's read end (the same pipe the zygote reads). The kernel
leaves both alone while the zygote lives. Once it is gone, G (orphaned to init or an outer
subreaper, never to the kernel) is watched through its pidfd, and A's exact wait status is read
from the pipe, where G writes it before exiting. Why not make the kernel a subreaper and wait for
G: the kernel also starts driver hosts with ``subprocess``, and every other orphan of the zygote
(spares, commands) would become its zombie to reap without stealing ``Popen``'s statuses; and for
a namespaced agent G's own status says nothing about A's. The new zygote gets each such agent's
spawn spec, G's pid and G's pidfd (``{"op": "adopt"}``), so ``exec`` still runs inside it; X
checks the pidfd after joining G's namespaces, which proves the pid was still G's. ``forked``
(C's pid, the agent's process group) lets the kernel kill a tree that was still starting.

The kernel's ``exec`` syscall runs commands here too (``{"op": "exec", "spec": ...}`` with the
command's stdout and stderr pipes as two SCM_RIGHTS fds), because joining another process's
namespaces needs a single-threaded caller and the kernel has libzmq's threads::

    zygote
     └─ X   host pid ns: join the agent's cgroups, setns into G's namespaces, fork Y, report Y, exit
         └─ Y   in the agent's pid ns: setsid, fds, rlimits, uid, cwd, no_new_privs, Landlock,
                seccomp (all from the agent's own spawn spec), then execve the command

A command for an operator (no agent) skips the cgroups and namespaces and takes the operator's
uid, gid and groups instead. Y is its own session and process group. When Y ends, the zygote
kills what is left of its process group before reaping it (the zombie still holds the group's
id, so the id cannot have been reused), then sends ``exec_exited``; ``{"op": "exec_kill"}``
kills the group, the session and every descendant of Y. A process that left both the group
and the session *and* lost its parent escapes these kills; inside an agent it still dies with
the agent's pid namespace and cgroup.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from clove.sandbox import children, linux, seccomp
from clove.sandbox.children import kill_group, kill_tree, run_c, run_exec, run_spare
from clove.sandbox.spec import ExecSpec, SpawnSpec

MAX_DATAGRAM = 1 << 20
#: How long a zygote whose kernel is gone keeps reaping the commands it killed.
REAP_ON_EXIT_S = 1.0


# ---- the zygote itself --------------------------------------------------------------------


@dataclass
class _Tracked:
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


class Zygote:
    """The zygote's loop: spawn requests in, lifecycle events out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.selector = selectors.DefaultSelector()
        self.by_pipe: dict[int, _Tracked] = {}
        self.by_pid: dict[int, _Tracked] = {}
        self.agents: dict[str, _Tracked] = {}
        self.jobs: dict[str, _Tracked] = {}
        self.spares: dict[str, tuple[int, socket.socket, int]] = {}  # slot -> (pid, control, status_r)
        self.spare_pids: dict[int, str] = {}
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.wake_r = wake_r
        self.kernel_gone = False
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "kernel_gone", True))  # parent-death signal
        self.selector.register(sock, selectors.EVENT_READ, "kernel")
        self.selector.register(wake_r, selectors.EVENT_READ, "sigchld")

    def send(self, event: dict[str, Any], fds: list[int] | None = None) -> None:
        payload = msgpack.packb(event, use_bin_type=True)
        try:
            if fds:
                self.sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                self.sock.send(payload)
        except (BrokenPipeError, ConnectionError):
            self.kernel_gone = True  # the read side sees EOF too; clean up there, not mid-request

    def run(self) -> None:
        self.send({"ev": "hello", "pid": os.getpid()})
        while True:
            for key, _ in self.selector.select():
                if self.kernel_gone:
                    break
                if key.data == "kernel":
                    if not self._handle_kernel():
                        self.kernel_gone = True
                        break
                elif key.data == "sigchld":
                    while True:
                        try:
                            if not os.read(self.wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
                    self._reap()
                elif key.data.status_r >= 0:
                    # The SIGCHLD branch earlier in this same batch may have finished this tree
                    # and closed its pipe (its fd may even be reused by now): skip it then.
                    self._read_status(key.data)
            if self.kernel_gone:
                self._kill_commands_and_reap()
                return

    def _kill_commands_and_reap(self) -> None:
        """The kernel is gone (its agents go by their G, see the module docstring): kill every
        command and reap them, and whatever else ends meanwhile, for at most a second."""
        for tracked in self.jobs.values():
            if tracked.g_pid is not None:
                kill_tree(tracked.g_pid)
        waiting = {pid for pid, tracked in self.by_pid.items() if tracked.kind == "exec"}  # not reaped yet
        deadline = time.monotonic() + REAP_ON_EXIT_S
        while waiting and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.002)
            waiting.discard(pid)

    def _handle_kernel(self) -> bool:
        fds = array.array("i")
        try:
            data, ancdata, _, _ = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(4 * fds.itemsize))
        except InterruptedError:
            return True
        if not data:
            return False  # the kernel is gone
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        request = msgpack.unpackb(data, raw=False)
        op = request.get("op")
        if op == "spawn" and len(fds) == 1:
            spec = SpawnSpec.from_wire(request["spec"])
            if not self._spawn_from_spare(request.get("slot"), request["spec"], spec, fds[0]):
                self._spawn(spec, fds[0])
        elif op == "prepare" and not fds:
            self._prepare(str(request.get("slot")), tuple(request.get("attach", ())))
        elif op == "drop_spare" and not fds:
            self._drop_spare(str(request.get("slot")))
        elif op == "exec" and len(fds) == 2:
            self._exec(request["spec"], fds[0], fds[1])
        elif op == "adopt" and len(fds) == 1:
            self._adopt(request, fds[0])
        else:
            for fd in fds:
                os.close(fd)
            if op == "exec_kill":
                self._exec_kill(str(request.get("job")))
            elif op == "disown":
                self._disown(str(request.get("key")))
        return True

    def _fork(self, run: Callable[[int], object], *, child_closes: tuple[socket.socket, ...] = ()) -> tuple[int, int]:
        """Fork a child that runs ``run(status_w)`` and never returns; returns ``(pid,
        status_r)``. The child drops the zygote's socket and signal wiring first."""
        status_r, status_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(status_r)
                self.sock.close()
                for sock in child_closes:
                    sock.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                run(status_w)
            finally:
                os._exit(127)
        os.close(status_w)
        return pid, status_r

    def _spawn(self, spec: SpawnSpec, log_fd: int) -> None:
        pid, status_r = self._fork(lambda status_w: run_c(spec, log_fd, status_w))
        os.close(log_fd)
        os.set_blocking(status_r, False)
        tracked = _Tracked(key=spec.key, status_r=status_r, c_pid=pid, spec=spec)
        self.agents[spec.key] = tracked
        self._track(tracked)
        self.send({"ev": "forked", "key": spec.key, "pid": pid})

    def _prepare(self, slot: str, attach: tuple[str, ...]) -> None:
        """Fork a spare C that joins ``attach`` now and becomes an agent on a later spawn."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid, status_r = self._fork(lambda status_w: run_spare(theirs, attach, status_w), child_closes=(ours,))
        theirs.close()
        self.spares[slot] = (pid, ours, status_r)
        self.spare_pids[pid] = slot

    def _spawn_from_spare(self, slot: object, wire_spec: dict[str, Any], spec: SpawnSpec, log_fd: int) -> bool:
        entry = self.spares.pop(str(slot), None) if slot is not None else None
        if entry is None:
            return False
        pid, ctl, status_r = entry
        self.spare_pids.pop(pid, None)
        try:
            ctl.sendmsg([msgpack.packb(wire_spec, use_bin_type=True)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd]))])
        except OSError:  # the spare died (its cgroup was refused?): start the agent the usual way
            ctl.close()
            os.close(status_r)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return False
        ctl.close()
        os.close(log_fd)
        os.set_blocking(status_r, False)
        tracked = _Tracked(key=spec.key, status_r=status_r, c_pid=pid, spec=spec)
        self.agents[spec.key] = tracked
        self._track(tracked)
        self.send({"ev": "forked", "key": spec.key, "pid": pid})
        return True

    def _drop_spare(self, slot: str) -> None:
        entry = self.spares.pop(slot, None)
        if entry is not None:
            pid, ctl, status_r = entry
            ctl.close()  # the spare reads EOF and exits
            os.close(status_r)

    def _adopt(self, request: dict[str, Any], pidfd: int) -> None:
        """Remember a running agent an earlier zygote started, so commands can run inside it."""
        try:
            spec = SpawnSpec.from_wire(request["spec"])
            init_pid = int(request["init_pid"])
        except (KeyError, TypeError, ValueError):
            os.close(pidfd)
            return
        self._disown(spec.key)
        self.agents[spec.key] = _Tracked(
            key=spec.key, status_r=-1, c_pid=-1, spec=spec, g_pid=init_pid, pidfd=pidfd, adopted=True,
            started_sent=True,
        )

    def _disown(self, key: str) -> None:
        """The kernel saw an adopted agent end."""
        tracked = self.agents.get(key)
        if tracked is not None and tracked.adopted:
            del self.agents[key]
            os.close(tracked.pidfd)

    def _track(self, tracked: _Tracked) -> None:
        self.by_pipe[tracked.status_r] = tracked
        self.by_pid[tracked.c_pid] = tracked
        self.selector.register(tracked.status_r, selectors.EVENT_READ, tracked)

    def _exec(self, wire_spec: dict[str, Any], out_fd: int, err_fd: int) -> None:
        try:
            job = ExecSpec.from_wire(wire_spec)
        except (TypeError, ValueError) as err:
            os.close(out_fd)
            os.close(err_fd)
            job_id = str(wire_spec.get("job"))
            self.send({"ev": "exec_exited", "job": job_id, "error": f"bad exec spec: {err}", "stage": "spec"})
            return
        agent: SpawnSpec | None = None
        init_pid: int | None = None
        if job.agent_key is not None:
            owner = self.agents.get(job.agent_key)
            if owner is not None and owner.adopted and linux.pidfd_exited(owner.pidfd):
                self._disown(owner.key)  # ended; the kernel's disown is on its way
                owner = None
            if owner is None or owner.g_pid is None or not owner.started_sent or owner.final is not None:
                os.close(out_fd)
                os.close(err_fd)
                error = "the agent is not running"
                self.send({"ev": "exec_exited", "job": job.job, "error": error, "stage": "lookup"})
                return
            agent, init_pid, init_pidfd = owner.spec, owner.g_pid, owner.pidfd
        else:
            init_pidfd = -1
        pid, status_r = self._fork(
            lambda status_w: run_exec(job, agent, init_pid, out_fd, err_fd, status_w, init_pidfd)
        )
        os.close(out_fd)
        os.close(err_fd)
        os.set_blocking(status_r, False)
        tracked = _Tracked(key=job.job, status_r=status_r, c_pid=pid, kind="exec")
        self.jobs[job.job] = tracked
        self._track(tracked)

    def _exec_kill(self, job: str) -> None:
        tracked = self.jobs.get(job)
        if tracked is None:
            return
        self._drain(tracked)
        tracked.kill_requested = True
        if tracked.g_pid is not None:
            kill_tree(tracked.g_pid)  # not reaped yet (it would have left self.jobs): the pid is still Y's
        # else: X is still setting up; the tree is killed as soon as X reports Y

    def _read_status(self, tracked: _Tracked) -> bool:
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

    def _maybe_started(self, tracked: _Tracked) -> None:
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

    def _reap(self) -> None:
        # A G's pid reaches us only after its C exited, and C wrote that pid to the status pipe
        # first: read the pipes before matching pids.
        for pending in list(self.by_pipe.values()):
            self._drain(pending)
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            tracked = self.by_pid.get(pid)
            if tracked is None and pid not in self.spare_pids:
                # Its C wrote this pid and exited after the drain above: read the pipes again,
                # or the tree's end would be reaped unrecognised and never reported.
                for pending in list(self.by_pipe.values()):
                    self._drain(pending)
                tracked = self.by_pid.get(pid)
            if tracked is not None and tracked.kind == "exec" and pid == tracked.g_pid:
                kill_group(pid)  # what the command left in its group dies with it; the zombie pins the id
            try:
                pid, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            tracked = self.by_pid.pop(pid, None)
            if tracked is None:
                slot = self.spare_pids.pop(pid, None)
                if slot is not None:  # a spare that died unused: forget it (the next spawn forks anew)
                    self._drop_spare(slot)
                continue
            if pid == tracked.c_pid and (tracked.g_pid is not None or status == 0):
                continue  # C did its job; G carries on (or its pid message is still in the pipe)
            self._finish(tracked, status)

    def _drain(self, tracked: _Tracked) -> None:
        while tracked.status_r >= 0 and self._read_status(tracked):
            pass

    def _finish(self, tracked: _Tracked, status: int) -> None:
        # Everything the tree wrote is in the pipe by now (written before the writers exited).
        self._drain(tracked)
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


def preload(modules: Iterable[str]) -> list[str]:
    """Import each module so that every forked agent inherits it already imported.

    A module that fails to import is reported on stderr and skipped: the zygote still serves
    (agents then import it themselves, or fail on it, as they would without a zygote).

    :returns: the modules that failed.
    """
    failed: list[str] = []
    for name in modules:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as err:  # whatever the module's import raises
            print(
                f"clove zygote: cannot preload module {name!r}: {type(err).__name__}: {err}",
                file=sys.stderr,
                flush=True,
            )
            failed.append(name)
    return failed


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``<socket fd> [<lifeline fd>] [--preload a,b,...]`` (see :meth:`.launcher.ZygoteLauncher._launch`)."""
    parser = argparse.ArgumentParser(prog="python -m clove.sandbox.zygote")
    parser.add_argument("fd", type=int, help="the zygote's end of the kernel's socketpair")
    parser.add_argument("lifeline", type=int, nargs="?", default=-1, help="the life line's read end")
    parser.add_argument(
        "--preload",
        type=lambda text: tuple(name for name in text.split(",") if name),
        default=(),
        help="comma-separated modules to import before the first fork",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    children.LIFELINE = args.lifeline
    # SIGTERM, not SIGKILL: a zygote whose kernel died still kills and reaps its commands.
    linux.set_parent_death_signal(signal.SIGTERM)
    linux.set_child_subreaper()
    sock = socket.socket(fileno=args.fd)
    # Warm the imports every agent needs (the kernel names them), then keep their objects out of
    # the GC's way so forked children share the pages instead of copying them on the first
    # collection.
    preload(args.preload)
    children.SECCOMP = seccomp.build_filters()
    gc.collect()
    gc.freeze()
    Zygote(sock).run()


if __name__ == "__main__":
    main()
