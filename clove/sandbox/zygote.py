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

How the zygote follows each tree through its status pipe to its end, and reports it:
:mod:`clove.sandbox.trees`.

**Agents die with their kernel.** G also watches the kernel's life line (the read end of a pipe
whose write end only the kernel holds; :mod:`clove.sandbox.lifeline`) and, on EOF, takes
its tree down. The zygote holds only a read end, so its own death cuts nothing. When the kernel
goes (EOF on the socket, or the parent-death signal, SIGTERM) the zygote kills its commands and
*reaps* them before it exits: a command inside an agent's pid namespace is the namespace's only
process with a parent outside it, and the namespace's init (G) cannot finish dying until that
parent has reaped it (left to init, that can take seconds).

The zygote's other jobs, each in its own module: :mod:`clove.sandbox.handover` (agents outlive
the zygote: G's pidfd and status pipe go to the kernel, a new zygote adopts running agents),
:mod:`clove.sandbox.commands` (the kernel's ``exec``: trees X and Y), :mod:`clove.sandbox.spares`
(trees made ahead of time, as far as they can go without knowing the agent). This module is the
loop and its requests, and :func:`main`, which the kernel runs as ``python -m clove.sandbox.zygote``.
"""

from __future__ import annotations

import argparse
import array
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgpack

from clove.sandbox import children, handover, linux, seccomp
from clove.sandbox.children import run_c
from clove.sandbox.commands import Commands
from clove.sandbox.spares import Prepared, Spares
from clove.sandbox.spec import SpawnSpec, StagedImage
from clove.sandbox.trees import Trees

MAX_DATAGRAM = 1 << 20


class Zygote:
    """The zygote's loop: spawn requests in, lifecycle events out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.selector = selectors.DefaultSelector()
        self.spares = Spares(self.fork, self.selector, self.send)
        self.trees = Trees(self.selector, self.send, self.spares)
        self.commands = Commands(self.trees, self.fork, self.send)
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
                    self.trees.reap()
                elif isinstance(key.data, Prepared):
                    self.spares.readable(key.data)
                elif key.data.status_r >= 0:
                    # The SIGCHLD branch earlier in this same batch may have finished this tree
                    # and closed its pipe (its fd may even be reused by now): skip it then.
                    self.trees.read_status(key.data)
            if self.kernel_gone:
                self.commands.kill_all_and_reap()  # see the module docstring
                return

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
            self.spares.prepare(str(request.get("slot")), tuple(request.get("attach", ())), StagedImage.from_wire(request.get("stage")))
        elif op == "drop_spare" and not fds:
            self.spares.drop(str(request.get("slot")))
        elif op == "exec" and len(fds) == 2:
            self.commands.start(request["spec"], fds[0], fds[1])
        elif op == "adopt" and len(fds) == 1:
            handover.adopt(self.trees, request, fds[0])
        else:
            for fd in fds:
                os.close(fd)
            if op == "exec_kill":
                self.commands.kill(str(request.get("job")))
            elif op == "disown":
                handover.disown(self.trees, str(request.get("key")))
        return True

    def fork(self, run: Callable[[int], object], *, child_closes: tuple[socket.socket, ...] = ()) -> tuple[int, int]:
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
                self.spares.close_in_child()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                run(status_w)
            finally:
                os._exit(127)
        os.close(status_w)
        return pid, status_r

    def _spawn(self, spec: SpawnSpec, log_fd: int) -> None:
        pid, status_r = self.fork(lambda status_w: run_c(spec, log_fd, status_w))
        os.close(log_fd)
        self.trees.add_agent(spec, pid, status_r)

    def _spawn_from_spare(self, slot: object, wire_spec: dict[str, Any], spec: SpawnSpec, log_fd: int) -> bool:
        taken = self.spares.take(slot, wire_spec, spec, log_fd)
        if taken is None:
            return False
        pid, status_r = taken
        os.close(log_fd)
        self.trees.add_agent(spec, pid, status_r, spare=True)
        return True


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
