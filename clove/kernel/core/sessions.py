"""Operator sessions: every connection on the control socket gets an id for its life, so agents
can message it, and its names, mailbox and subscriptions go away when it does.

ZeroMQ does not report disconnects in its stable API, so a session ends when its client says
``session.close`` (the SDK does on ``close()``), or when the peer process is gone: libzmq
reports the peer's credentials on ``ipc://`` (``Peer-Address`` ends in ``:uid:gid:pid``), and
housekeeping checks that pid every second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from clove.kernel.core.channels import Caller
from clove.policy import Permissions


@dataclass(slots=True)
class OperatorSession:
    id: int
    routing_id: bytes
    uid: int | None
    gid: int | None
    pid: int | None
    opened_at: float = field(default_factory=time.time)
    #: What the session lowered itself to (``permissions.set``); ``None``: the configured
    #: ``kernel.operator_level``.
    permissions: Permissions | None = None
    #: Who its requests come from, built once rather than on every request.
    caller: Caller = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.caller = Caller("operator", session_id=self.id)


def parse_peer_address(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``"localhost:0:0:4242"`` → ``(0, 0, 4242)``; unknown parts are None. A pid of 0 is
    unknown too: the peer lives in a pid namespace this kernel cannot see into (a kernel in a
    container, its operator on the host), so its liveness cannot be checked by pid."""
    if not value:
        return None, None, None
    parts = value.rsplit(":", 3)
    if len(parts) != 4:
        return None, None, None
    try:
        uid, gid, pid = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return None, None, None
    return uid, gid, pid or None


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


class OperatorSessions:
    """Sessions by routing id; ``on_close`` hooks release what a session held."""

    def __init__(self, new_id: Callable[[], int], *, pid_alive: Callable[[int], bool] = _pid_alive) -> None:
        self._new_id = new_id
        self._pid_alive = pid_alive
        self._by_routing: dict[bytes, OperatorSession] = {}
        self._by_id: dict[int, OperatorSession] = {}
        self.on_close: list[Callable[[OperatorSession], None]] = []
        self._checked_at = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

    def lookup(self, routing_id: bytes) -> OperatorSession | None:
        return self._by_routing.get(routing_id)

    def of_peer(self, routing_id: bytes, frame: zmq.Frame) -> OperatorSession:
        """The session of a control-socket peer; a new one from the peer's credentials, which
        libzmq attaches to every frame of its messages (``Peer-Address``)."""
        session = self._by_routing.get(routing_id)
        if session is None:
            try:
                peer = frame.get("Peer-Address")
            except zmq.ZMQError:
                peer = None
            session = self.open(routing_id, peer if isinstance(peer, str) else None)
        return session

    def open(self, routing_id: bytes, peer_address: str | None) -> OperatorSession:
        uid, gid, pid = parse_peer_address(peer_address)
        session = OperatorSession(self._new_id(), routing_id, uid, gid, pid)
        self._by_routing[routing_id] = session
        self._by_id[session.id] = session
        return session

    def ids(self) -> list[int]:
        """The ids of the open sessions."""
        return list(self._by_id)

    def get(self, session_id: int) -> OperatorSession | None:
        return self._by_id.get(session_id)

    def close(self, session: OperatorSession) -> None:
        if self._by_id.pop(session.id, None) is None:
            return
        self._by_routing.pop(session.routing_id, None)
        for hook in self.on_close:
            hook(session)

    def reap(self, now: float | None = None) -> int:
        """Close sessions whose client process is gone (at most once a second); returns how many."""
        now = time.monotonic() if now is None else now
        if now - self._checked_at < 1.0:
            return 0
        self._checked_at = now
        gone = [s for s in self._by_id.values() if s.pid is not None and s.pid != os.getpid() and not self._pid_alive(s.pid)]
        for session in gone:
            self.close(session)
        return len(gone)

    def close_all(self) -> None:
        for session in list(self._by_id.values()):
            self.close(session)
