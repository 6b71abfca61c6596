"""The kernel's ZeroMQ endpoints and the identity each one stands for.

Identity comes from *which socket* a request arrives on, never from the message: the control
socket (mode 0660, owned by the kernel's user) speaks for operators; each agent gets its own
ROUTER bound in a directory that only that agent's uid can reach and that is bind-mounted into
that agent's sandbox alone. See docs/protocol.md, "Identity".

Every request is read and every reply sent through :func:`read_message` and :func:`send_message`,
and :func:`keep_large_buffers` (called once, by :class:`Channels`) sets the heap up for large
messages (docs/containment.md, "What one request costs the kernel").
"""

from __future__ import annotations

import ctypes
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

# Every request and reply goes through these: pyzmq's base-class methods on plain int flags.
# The sugar's send_multipart and recv_multipart add several µs of checks and flag objects per
# message, on the loop.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


# glibc's malloc (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD): buffers up to this size come from the heap,
# and this much freed heap is kept rather than given back at once.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_MMAP_BYTES = 4 << 20
MALLOC_TRIM_BYTES = 8 << 20


def keep_large_buffers() -> bool:
    """Let the kernel reuse the memory of large messages instead of faulting it in again.

    A large request is copied a few times (out of libzmq, decoded, a reply joined, into libzmq).
    By default glibc serves each of those buffers with fresh pages (``mmap``, or a heap it has
    just trimmed), and zero-filling them costs far more than the copy: about 200 µs for a 256 KiB
    message instead of 15. Heap buffers up to :data:`MALLOC_MMAP_BYTES` (a request at the hard
    cap with its copies), with up to :data:`MALLOC_TRIM_BYTES` of freed heap kept, avoid that.
    Returns False where the C library has no ``mallopt`` (not glibc): nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_BYTES))


#: A frame this large is read as a view of libzmq's buffer rather than copied out of it.
VIEW_MIN_BYTES = 64 * 1024


def read_message(sock: zmq.Socket[bytes]) -> tuple[zmq.Frame, bytes, list[bytes | memoryview]] | None:
    """One message from a ROUTER without waiting: the routing id as a frame (it carries the
    peer's credentials) and as bytes, then the message's frames (bytes; a large one as a
    read-only view, no copy); ``None`` when none is queued.

    :raises zmq.ZMQError: the socket is closed.
    """
    try:
        first: zmq.Frame = _recv(sock, _NOBLOCK, False)
    except zmq.Again:
        return None
    frames: list[bytes | memoryview] = []
    frame = first
    while frame.more:  # the rest of a multipart message is there at once
        frame = _recv(sock, _NOBLOCK, False)
        frames.append(frame.bytes if len(frame) < VIEW_MIN_BYTES else frame.buffer)
    return first, first.bytes, frames


def send_message(sock: zmq.Socket[bytes], routing: bytes, frames: list[bytes]) -> None:
    """Send ``frames`` to the peer ``routing`` without waiting.

    :raises zmq.ZMQError: the peer's queue is full, or the socket is closed.
    """
    _send(sock, routing, _MORE)
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        _send(sock, frame, _MORE if index < last else _NOBLOCK)


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
        keep_large_buffers()
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
