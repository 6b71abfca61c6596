"""The kernel's side of the zygote: start it, send spawn and exec requests, read its events.

All calls are non-blocking once the zygote is up, so the kernel loop can poll :meth:`fileno`.
"""

from __future__ import annotations

import array
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import msgpack

from clove.errors import SandboxError
from clove.kernel.sandbox.spec import ExecSpec, SpawnSpec

log = logging.getLogger(__name__)


class ZygoteLauncher:
    """Owns the zygote process and the SOCK_SEQPACKET pair that talks to it."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start the zygote and wait for its hello (blocking: called at boot and after a crash).

        :raises SandboxError: when it does not come up.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            [self.python, "-m", "clove.kernel.sandbox.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        theirs.close()
        ours.settimeout(timeout)
        try:
            hello = msgpack.unpackb(ours.recv(65536), raw=False)
        except (OSError, ValueError) as err:
            self._proc.kill()
            self._proc.wait()
            raise SandboxError(f"the zygote did not start: {err}") from None
        if not isinstance(hello, dict) or hello.get("ev") != "hello":
            self._proc.kill()
            self._proc.wait()
            raise SandboxError("the zygote did not start: no hello")
        ours.setblocking(False)
        self.sock = ours
        self.pid = self._proc.pid
        log.debug("zygote %d up", self.pid)

    def fileno(self) -> int:
        if self.sock is None:
            raise SandboxError("zygote not started")
        return self.sock.fileno()

    def spawn(self, spec: SpawnSpec, log_fd: int, *, slot: str | None = None) -> None:
        """Ask for one agent incarnation; ``log_fd`` becomes its stdout and stderr. With
        ``slot``, the spare prepared under that name becomes the agent (it already sits in the
        cgroup named by ``spec.cgroup_attach``); the zygote forks anew if the spare is gone."""
        message: dict[str, Any] = {"op": "spawn", "spec": spec.to_wire()}
        if slot is not None:
            message["slot"] = slot
        self._send(message, [log_fd])

    def prepare(self, slot: str, attach: tuple[str, ...]) -> None:
        """Have a spare process join these cgroups now, ready for the next spawn."""
        self._send({"op": "prepare", "slot": slot, "attach": list(attach)}, [])

    def drop_spare(self, slot: str) -> None:
        self._send({"op": "drop_spare", "slot": slot}, [])

    def exec(self, spec: ExecSpec, stdout_fd: int, stderr_fd: int) -> None:
        """Run one command (see the zygote's docstring); the two fds become its stdout and stderr.
        The zygote answers with ``exec_started`` and ``exec_exited`` events carrying ``spec.job``.

        :raises SandboxError: the zygote is not reachable.
        """
        self._send({"op": "exec", "spec": spec.to_wire()}, [stdout_fd, stderr_fd])

    def exec_kill(self, job: str) -> None:
        """SIGKILL a command's process group, session and descendants (no-op once it ended)."""
        self._send({"op": "exec_kill", "job": job}, [])

    def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        if self.sock is None:
            raise SandboxError("zygote not started")
        payload = msgpack.packb(message, use_bin_type=True)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self.sock.sendmsg([payload], ancillary)
        except OSError as err:
            raise SandboxError(f"cannot reach the zygote: {err.strerror}") from None

    def events(self) -> list[dict[str, Any]]:
        """Every event the zygote has sent so far; ``[{"ev": "lost"}]`` when it died."""
        if self.sock is None:
            return []
        out: list[dict[str, Any]] = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError:
                data = b""
            if not data:
                out.append({"ev": "lost"})
                self._close_sock()
                return out
            try:
                event = msgpack.unpackb(data, raw=False)
            except ValueError:
                log.error("zygote sent an undecodable event")
                continue
            if isinstance(event, dict):
                out.append(event)

    def reap(self) -> int | None:
        """Reap the zygote if it has exited; returns its wait status."""
        if self._proc is None:
            return None
        code = self._proc.poll()
        return code

    def _close_sock(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def stop(self, timeout: float = 2.0) -> None:
        """Close the channel (the zygote exits on EOF), kill it if it lingers."""
        self._close_sock()
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None
