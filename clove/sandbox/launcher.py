"""The kernel's side of the zygote: start it, send spawn and exec requests, read its events.

All calls are non-blocking once the zygote is up, so the kernel loop can poll :meth:`fileno`;
:meth:`ZygoteLauncher.restart` (after a crash) does not wait for the new zygote either: requests
queue in the socket until it reads them. Events may carry fds (``event["fds"]``, received
close-on-exec); whoever handles an event owns them and must close them (:func:`close_fds`).
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from clove.errors import SandboxError
from clove.sandbox.spec import ExecSpec, SpawnSpec, StagedImage

log = logging.getLogger(__name__)

#: The most fds one zygote event carries (``started``: G's pidfd and the status pipe).
MAX_EVENT_FDS = 2
#: The kernel's send buffer to the zygote: after a restart, one ``adopt`` per running agent (and
#: any spawns) waits there while the new zygote imports; the default (~200 KiB) holds ~100.
SEND_BUFFER = 8 << 20
_SO_SNDBUFFORCE = 32  # Linux; root may exceed net.core.wmem_max


def close_fds(event: dict[str, Any]) -> None:
    """Close the fds an event carried and nobody took."""
    for fd in event.pop("fds", ()):
        with contextlib.suppress(OSError):
            os.close(fd)


class ZygoteLauncher:
    """Owns the zygote process and the SOCK_SEQPACKET pair that talks to it.

    :param lifeline: the read end of the kernel's life line, passed on to every agent's G
        (see :mod:`clove.sandbox.lifeline`); ``None`` runs agents without one.
    :param preload: modules the zygote imports before its first fork, so that every agent
        starts with them already imported (the kernel passes ZeroMQ and the SDK). One that fails
        to import is reported on the zygote's stderr and skipped.
    :raises ValueError: a module name is empty or contains a comma.
    """

    def __init__(
        self, python: str = sys.executable, *, lifeline: int | None = None, preload: Sequence[str] = ()
    ) -> None:
        for name in preload:
            if not name or "," in name:
                raise ValueError(f"not a module name to preload: {name!r}")
        self.python = python
        self.lifeline = lifeline
        self.preload = tuple(preload)
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    def _launch(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for option in (_SO_SNDBUFFORCE, socket.SO_SNDBUF):
            try:
                ours.setsockopt(socket.SOL_SOCKET, option, SEND_BUFFER)
                break
            except OSError:
                continue
        argv = [self.python, "-m", "clove.sandbox.zygote", str(theirs.fileno())]
        keep = [theirs.fileno()]
        if self.lifeline is not None:
            argv.append(str(self.lifeline))
            keep.append(self.lifeline)
        if self.preload:
            argv += ["--preload", ",".join(self.preload)]
        try:
            self._proc = subprocess.Popen(argv, pass_fds=keep, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as err:
            ours.close()
            raise SandboxError(f"the zygote did not start: {err.strerror or err}") from None
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self.started_at = time.monotonic()
        return ours

    def start(self, timeout: float = 15.0) -> None:
        """Start the zygote and wait for its hello (blocking: called at boot).

        :raises SandboxError: when it does not come up.
        """
        ours = self._launch()
        assert self._proc is not None  # noqa: S101 - _launch set it
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
        log.debug("zygote %d up", self.pid)

    def restart(self) -> None:
        """Start a new zygote without waiting for it (the kernel loop must not block): requests
        sent from now on queue in the socket until it reads them; its hello arrives as an event
        (``{"ev": "hello"}``), or ``lost`` if it dies first.

        :raises SandboxError: the process could not be started at all.
        """
        self.stop(timeout=0.0)  # reap the old one first (it is gone, or is killed now)
        ours = self._launch()
        ours.setblocking(False)
        self.sock = ours
        log.info("zygote %d starting", self.pid)

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

    def prepare(self, slot: str, attach: tuple[str, ...], stage: StagedImage | None = None) -> None:
        """Have a spare tree made now in these cgroups (with ``stage``'s empty work dir image),
        ready for a later spawn naming ``slot`` (:mod:`clove.sandbox.sparechild`)."""
        wire = (stage or StagedImage()).to_wire()
        self._send({"op": "prepare", "slot": slot, "attach": list(attach), "stage": wire}, [])

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

    def adopt(self, spec: SpawnSpec, init_pid: int, pidfd: int) -> None:
        """Tell a new zygote about a running agent an earlier one started (its spawn spec, G's
        pid and a pidfd of G), so that ``exec`` can run commands inside it."""
        self._send({"op": "adopt", "spec": spec.to_wire(), "init_pid": init_pid}, [pidfd])

    def disown(self, key: str) -> None:
        """An adopted agent ended: the zygote forgets it."""
        self._send({"op": "disown", "key": key}, [])

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
        space = socket.CMSG_SPACE(MAX_EVENT_FDS * array.array("i").itemsize)
        while True:
            fds = array.array("i")
            try:
                data, ancdata, _, _ = self.sock.recvmsg(1 << 20, space, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return out
            except OSError:
                data, ancdata = b"", []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            event: Any = None
            if data:
                try:
                    event = msgpack.unpackb(data, raw=False)
                except ValueError:
                    log.error("zygote sent an undecodable event")
            if isinstance(event, dict):
                if fds:
                    event["fds"] = list(fds)
                out.append(event)
            else:
                close_fds({"fds": list(fds)})
            if not data:
                out.append({"ev": "lost"})
                self._close_sock()
                return out

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
        """Close the channel (the zygote exits on EOF), kill it if it lingers. With ``timeout=0``
        (a zygote that is gone already) this only reaps it."""
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
