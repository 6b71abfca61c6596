"""The simulated venue's FIX acceptor: the listening socket, the sessions and their connections.

**Sessions.** Each counterparty SenderCompID is one FIX session (a :class:`Client`) with its own
sequence store (``<store_dir>/<VENUE>-<COMPID>.seqs``), kept for the venue's lifetime across
reconnects. Logons are checked against the venue's ``credentials`` (Username 553 -> Password
554; ``None`` admits anyone). One connection per CompID at a time: a second is closed at once.

**Threads.** One accept thread (:meth:`Acceptor.serve`), one short handshake thread per new
connection (it reads the Logon to find the CompID), and two per connection
(:class:`~clove_driver_exchange.fix.transport.FixConnection`). The venue lock guards the client
table; it is always taken before a session's lock, never after.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from clove_driver_exchange.fix import messages as m
from clove_driver_exchange.fix.messages import Framer, Message, Tag
from clove_driver_exchange.fix.session import FixSession, State
from clove_driver_exchange.fix.store import SeqStore
from clove_driver_exchange.fix.transport import FixConnection
from hil.exchange.book import Order
from hil.exchange.faults import VenueFaults

__all__ = ["COMP_ID", "HANDSHAKE_TIMEOUT", "Acceptor", "Client"]

#: A CompID the venue accepts (its own and its counterparties').
COMP_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Seconds a new connection has to send its Logon.
HANDSHAKE_TIMEOUT: Final = 5.0

_log = logging.getLogger(__name__)


class _Venue(Protocol):
    """What the acceptor reads of the venue, each time it needs it."""

    sender: str
    credentials: dict[str, str] | None
    heartbeat_s: float
    durable: bool

    @property
    def store_dir(self) -> str | None: ...


@dataclass(eq=False)
class Client:
    """The venue's state for one counterparty CompID."""

    comp_id: str
    session: FixSession
    store: SeqStore
    conn: FixConnection | None = None
    cancel_on_disconnect: bool = False
    cl_ord_ids: set[str] = field(default_factory=set)
    orders: dict[str, Order] = field(default_factory=dict)  # by ClOrdID, in arrival order
    md_subs: dict[str, tuple[str, int]] = field(default_factory=dict)  # symbol -> (MDReqID, depth)
    order_times: deque[float] = field(default_factory=deque)  # admitted orders, for the throttle


class Acceptor:
    """Accepts the venue's connections and keeps one :class:`Client` per counterparty in
    :attr:`clients`.

    :param venue: read for its CompID, credentials, HeartBtInt, store directory and durability.
    :param clients: the venue's client table (CompID -> :class:`Client`), filled here.
    :param lock: the venue lock (it guards ``clients``).
    :param stopping: set when the venue stops: no more connections are taken.
    :param faults: the venue's switches (``latency`` is given to each new connection).
    :param on_app: called with ``(comp_id, message)`` for each application message, in order.
    :param on_lost: called with a client whose connection ended, under the venue lock.
    :param on_inbound: called with every sound inbound message (a session's ``on_inbound``).
    """

    def __init__(
        self,
        venue: _Venue,
        clients: dict[str, Client],
        lock: threading.RLock,
        stopping: threading.Event,
        faults: VenueFaults,
        *,
        on_app: Callable[[str, Message], None],
        on_lost: Callable[[Client], None],
        on_inbound: Callable[[Message], None],
    ) -> None:
        self._venue = venue
        self._lock = lock
        self._stopping = stopping
        self._faults = faults
        self._on_app = on_app
        self._on_lost = on_lost
        self._on_inbound = on_inbound
        self.clients = clients
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def listen(self, host: str, port: int) -> int:
        """Bind the listening socket; returns the bound port.

        :raises OSError: the address cannot be bound.
        """
        listener = socket.create_server((host, port), backlog=64)
        listener.setblocking(False)
        self._listener = listener
        bound: int = listener.getsockname()[1]
        self._wake = socket.socketpair()
        return bound

    def wake(self) -> None:
        """End :meth:`serve` (once the venue's ``stopping`` is set)."""
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")

    def shutdown(self, timeout: float) -> None:
        """Log every session out, close every connection and store, free the port."""
        with self._lock:
            clients = list(self.clients.values())
        for client in clients:
            conn = client.conn
            if conn is None:
                continue
            client.session.logout("the venue is shutting down")
            if not conn.join(1.0):
                conn.close("the venue is shutting down")
                conn.join(timeout)
        for client in clients:
            client.store.close()
        if self._listener is not None:
            self._listener.close()
        if self._wake is not None:
            for sock in self._wake:
                sock.close()

    # ---- faults ---------------------------------------------------------------------------------

    def disconnect(self, session: str | None = None) -> None:
        """Drop the connection of ``session`` (default: all) now, without a Logout."""
        with self._lock:
            conns = [c.conn for c in self.clients.values()
                     if c.conn is not None and session in (None, c.comp_id)]
        for conn in conns:
            conn.close("disconnected by the venue (fault injection)")

    def set_send_delay(self, seconds: float) -> None:
        """Hold every outbound message of the current connections ``seconds`` before it is sent."""
        with self._lock:
            for client in self.clients.values():
                if client.conn is not None:
                    client.conn.send_delay = seconds

    def skip_seqnum(self, session: str | None = None) -> None:
        """Skip one outbound sequence number of ``session`` (default: all)."""
        with self._lock:
            for client in self.clients.values():
                if session in (None, client.comp_id):
                    client.session.skip_seqnum()

    # ---- connections --------------------------------------------------------------------------

    def serve(self) -> None:
        """Accept connections until the venue stops (the accept thread)."""
        listener, wake = self._listener, self._wake
        assert listener is not None
        assert wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is wake[0]:
                        return
                    try:
                        sock, _addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if self._stopping.is_set():
                            return
                        raise
                    threading.Thread(target=self._handshake, args=(sock,), name="venue-handshake",
                                     daemon=True).start()

    def _handshake(self, sock: socket.socket) -> None:
        """Read up to the first message (the Logon) to learn the CompID, then hand the socket
        and what was read to that session's :class:`FixConnection`."""
        sock.settimeout(HANDSHAKE_TIMEOUT)
        framer, received = Framer(), bytearray()
        first: Message | None = None
        try:
            while first is None:
                data = sock.recv(65536)
                if not data or len(received) > 65536:
                    sock.close()
                    return
                received += data
                for frame in framer.feed(data):
                    if frame.error is None:
                        first = m.parse(frame.raw, verify=False)
                        break
        except (OSError, m.FixError) as exc:
            _log.info("venue: connection dropped before a Logon: %s", exc)
            sock.close()
            return
        comp_id = first.get(Tag.SENDER_COMP_ID) or ""
        if not COMP_ID.fullmatch(comp_id) or first.get(Tag.TARGET_COMP_ID) != self._venue.sender:
            _log.info("venue: refused a connection from CompID %r to %r", comp_id,
                      first.get(Tag.TARGET_COMP_ID))
            sock.close()
            return
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            client = self._client(comp_id)
            if client.conn is not None or client.session.connected:
                _log.info("venue: %s is already connected; second connection closed", comp_id)
                sock.close()
                return
            conn = FixConnection(client.session, sock, on_disconnect=self._on_disconnect,
                                 initial=bytes(received), send_delay=self._faults.latency,
                                 name=f"venue-{comp_id}")
            client.conn = conn
            conn.start()

    def _client(self, comp_id: str) -> Client:
        client = self.clients.get(comp_id)
        if client is None:
            venue = self._venue
            assert venue.store_dir is not None
            path = os.path.join(venue.store_dir, f"{venue.sender}-{comp_id}.seqs")
            store = SeqStore(path, fsync=venue.durable)
            session = FixSession(
                "acceptor", venue.sender, comp_id, store, venue.heartbeat_s,
                on_app_message=functools.partial(self._on_app, comp_id),
                authenticate=self._authenticate,
                on_state_change=functools.partial(self._on_state, comp_id),
                on_inbound=self._on_inbound,
            )
            client = self.clients[comp_id] = Client(comp_id, session, store)
        return client

    def _authenticate(self, username: str | None, password: str | None) -> bool:
        credentials = self._venue.credentials
        if credentials is None:
            return True
        return username is not None and credentials.get(username) == password

    def _on_state(self, comp_id: str, old: State, new: State) -> None:
        if new != "active":
            return
        with self._lock:
            client = self.clients[comp_id]
            logon = client.session.peer_logon
            client.cancel_on_disconnect = logon is not None and logon.get(Tag.CANCEL_ON_DISCONNECT) == "Y"

    def _on_disconnect(self, conn: FixConnection, reason: str) -> None:
        with self._lock:
            client = self.clients.get(conn.session.target)
            if client is None or client.conn is not conn:
                return
            client.conn = None
            _log.info("venue: %s disconnected: %s", client.comp_id, reason)
            self._on_lost(client)
