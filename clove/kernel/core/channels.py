"""The kernel's ZeroMQ endpoints and the identity each one stands for.

Identity comes from *which socket* a request arrives on, never from the message: the control
socket (mode 0660, owned by the kernel's user) speaks for operators; each agent gets its own
ROUTER bound in a directory that only that agent's uid can reach and that is bind-mounted into
that agent's sandbox alone. See docs/protocol.md, "Identity".
"""

from __future__ import annotations

import logging
import os
import socket as pysocket
from dataclasses import dataclass
from pathlib import Path

import zmq

from clove.errors import Conflict, SandboxError

log = logging.getLogger(__name__)

#: Hard cap at the ZeroMQ level: a peer sending more than this is disconnected by libzmq.
#: Requests between the protocol limit and this cap get a ``proto.too_large`` reply instead.
HARD_CAP_FACTOR = 4


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is on the other end: agent ``agent_id``, or operator session ``session_id``."""

    kind: str  # "operator" | "agent"
    agent_id: int | None = None
    session_id: int | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    @property
    def principal_id(self) -> int:
        """The caller's id for messaging, events and async results (agents and operator
        sessions share one id space)."""
        value = self.agent_id if self.agent_id is not None else self.session_id
        return -1 if value is None else value


OPERATOR = Caller("operator")


def socket_path(endpoint_or_path: str) -> str:
    return endpoint_or_path[len("ipc://") :] if endpoint_or_path.startswith("ipc://") else endpoint_or_path


def live_kernel_at(path: str) -> bool:
    """True when something accepts connections on the Unix socket ``path``."""
    probe = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class Channels:
    """Owns the ZeroMQ context and every ROUTER socket of the kernel."""

    def __init__(self, *, max_message_bytes: int) -> None:
        self.ctx = zmq.Context(io_threads=1)
        self.ctx.set(zmq.MAX_SOCKETS, 16384)  # one ROUTER per agent; libzmq's default is 1023
        self.max_message_bytes = max_message_bytes
        self.control: zmq.Socket[bytes] | None = None
        self.control_path: str | None = None
        self.by_socket: dict[zmq.Socket[bytes], Caller] = {}
        self.agent_sockets: dict[int, tuple[zmq.Socket[bytes], str]] = {}

    def _router(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes * HARD_CAP_FACTOR + 4096)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        return sock

    def bind_control(self, path: str) -> zmq.Socket[bytes]:
        """Bind the operators' socket at ``path`` with mode 0660.

        :raises Conflict: when a live kernel already owns ``path`` (it is never unlinked);
            a stale socket file left by a dead kernel is replaced.
        """
        if os.path.exists(path):
            if live_kernel_at(path):
                raise Conflict(f"another kernel is running on {path}", details={"socket": path})
            log.warning("replacing stale socket %s", path)
            os.unlink(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        sock = self._router()
        old_umask = os.umask(0o117)  # created 0660 from the start: no window at a wider mode
        try:
            sock.bind(f"ipc://{path}")
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o660)
        self.control, self.control_path = sock, path
        self.by_socket[sock] = OPERATOR
        return sock

    def bind_agent(self, agent_id: int, directory: Path, uid: int | None) -> str:
        """A ROUTER for agent ``agent_id`` in ``directory`` (root-owned, group = the agent's
        gid, mode 0750; the socket 0660): returns the endpoint the agent connects to."""
        if agent_id in self.agent_sockets:
            raise Conflict(f"agent {agent_id} already has a channel")
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        path = str(directory / "kernel.sock")
        if os.path.exists(path):
            os.unlink(path)
        sock = self._router()
        old_umask = os.umask(0o117)
        try:
            sock.bind(f"ipc://{path}")
        except zmq.ZMQError as err:
            sock.close()
            raise SandboxError(f"cannot bind agent channel {path}: {err}") from None
        finally:
            os.umask(old_umask)
        if uid is not None:
            os.chown(directory, 0, uid)
            os.chown(path, 0, uid)
        os.chmod(directory, 0o750)
        os.chmod(path, 0o660)
        self.agent_sockets[agent_id] = (sock, path)
        self.by_socket[sock] = Caller("agent", agent_id)
        return f"ipc://{path}"

    def close_agent(self, agent_id: int) -> zmq.Socket[bytes] | None:
        entry = self.agent_sockets.pop(agent_id, None)
        if entry is None:
            return None
        sock, path = entry
        self.by_socket.pop(sock, None)
        sock.close(linger=0)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return sock

    def close(self) -> None:
        for agent_id in list(self.agent_sockets):
            self.close_agent(agent_id)
        if self.control is not None:
            self.control.close(linger=0)
            self.control = None
            if self.control_path and os.path.exists(self.control_path):
                os.unlink(self.control_path)
        self.ctx.term()
