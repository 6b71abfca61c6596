"""The relay loop: the sandbox's init (G) accepts the agent's TCP connections on its relays'
listeners (:mod:`clove.sandbox.loopback`) and pumps bytes between each one and a fresh
connection to the relay's Unix socket, both ways, inside its pid-1 duties loop.

Everything is non-blocking and driven by one ``selectors`` selector that G shares with its other
duties (reaping, signals, the kernel's life line); each registered object's ``data`` is a
handler called with the ready event mask. What an agent can make G hold is bounded: at most
``max_connections`` connections per relay (the next one is reset as soon as it is accepted) and
``buffer_bytes`` per direction of each (a full buffer stops reading from its source until the
other end has taken some: backpressure, not growth).

Half-close is respected: EOF from one side is passed on as ``shutdown(SHUT_WR)`` to the other
once everything read before it has been written, and the connection stays open for the other
direction until it ends too (an HTTP client that half-closes after its request still gets the
answer). A reset or a failed write on either side resets both. When the Unix side cannot be
reached (nothing listens there yet, or its backlog is full) the agent's connection is reset at
once: a clean ``ConnectionResetError`` in the agent, never a hang.
"""

from __future__ import annotations

import contextlib
import functools
import selectors
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Final, final

from clove.sandbox.relays import BACKLOG, BUFFER_BYTES, MAX_CONNECTIONS, Relay

_READ: Final = selectors.EVENT_READ
_WRITE: Final = selectors.EVENT_WRITE
#: ``SO_LINGER`` on, zero seconds: ``close`` sends a reset instead of a FIN.
_RESET_LINGER: Final = struct.pack("ii", 1, 0)
_CHUNK: Final = 64 << 10
_ROUNDS: Final = 4

#: What a selector's ``data`` holds for everything the relay loop registers.
Handler = Callable[[int], None]


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset: its peer sees ``ECONNRESET``, not an ordinary end of data."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
    sock.close()


@final
class _Direction:
    """Bytes read from ``src``, not yet written to ``dst``."""

    __slots__ = ("buf", "dst", "eof", "shut", "src")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.buf = bytearray()
        self.eof = False  # src has ended
        self.shut = False  # ... and dst has been told (everything before the EOF written)


@final
class Connection:
    """One relayed connection: the agent's TCP socket and the service's Unix socket, both
    non-blocking, registered with ``selector`` while they have something to do."""

    def __init__(
        self,
        tcp: socket.socket,
        unix: socket.socket,
        selector: selectors.BaseSelector,
        *,
        buffer_bytes: int = BUFFER_BYTES,
        on_closed: Callable[[Connection], None] | None = None,
    ) -> None:
        self.tcp, self.unix = tcp, unix
        self.selector = selector
        self.buffer_bytes = buffer_bytes
        self.on_closed = on_closed
        self.up = _Direction(tcp, unix)
        self.down = _Direction(unix, tcp)
        self.closed = False
        self._interest = {tcp: 0, unix: 0}
        self._handlers: dict[socket.socket, Handler] = {
            tcp: functools.partial(self._on_ready, tcp),
            unix: functools.partial(self._on_ready, unix),
        }
        try:
            self._update()
        except BaseException:
            self.abort()  # nothing of it left registered
            raise

    @property
    def buffered(self) -> int:
        """Bytes held right now, both directions."""
        return len(self.up.buf) + len(self.down.buf)

    def _on_ready(self, sock: socket.socket, mask: int) -> None:
        source = self.up if sock is self.tcp else self.down
        sink = self.down if sock is self.tcp else self.up
        try:
            if mask & _READ and self._room(source):
                self._read(source)
            if mask & _WRITE and sink.buf:
                self._flush(sink)
            if self.up.shut and self.down.shut:
                self.close()
            else:
                self._update()
        except (OSError, ValueError, KeyError):  # a socket error; or a selector refusing a dead fd
            self.abort()  # this connection only: G's loop (and the agent) carry on

    def _room(self, d: _Direction) -> int:
        return 0 if d.eof else self.buffer_bytes - len(d.buf)

    def _read(self, d: _Direction) -> None:
        """Read and pass on while ``src`` has data and ``dst`` takes it, a few rounds at most
        (fewer trips through the selector on a busy connection, and no starving the others)."""
        for _ in range(_ROUNDS):
            room = self._room(d)
            if not room:
                return
            try:
                data = d.src.recv(min(room, _CHUNK))
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                d.eof = True
                self._flush(d)
                return
            d.buf += data
            self._flush(d)
            if d.buf:
                return  # dst takes no more for now: wait until it is writable

    def _flush(self, d: _Direction) -> None:
        """Write what ``d`` holds (as much as ``dst`` takes now); pass its EOF on once empty."""
        if d.buf:
            try:
                sent = d.dst.send(d.buf, socket.MSG_NOSIGNAL)  # EPIPE as an error, whatever SIGPIPE's disposition
            except (BlockingIOError, InterruptedError):
                sent = 0
            del d.buf[:sent]
        if d.eof and not d.buf and not d.shut:
            d.shut = True
            d.dst.shutdown(socket.SHUT_WR)

    def _update(self) -> None:
        for sock, source, sink in ((self.tcp, self.up, self.down), (self.unix, self.down, self.up)):
            wanted = (_READ if self._room(source) else 0) | (_WRITE if sink.buf else 0)
            current = self._interest[sock]
            if wanted == current:
                continue
            if current == 0:
                self.selector.register(sock, wanted, self._handlers[sock])
            elif wanted == 0:
                self.selector.unregister(sock)
            else:
                self.selector.modify(sock, wanted, self._handlers[sock])
            self._interest[sock] = wanted

    def _release(self) -> None:
        for sock, current in self._interest.items():
            if current:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(sock)
        self._interest = {self.tcp: 0, self.unix: 0}
        self.closed = True
        if self.on_closed is not None:
            self.on_closed(self)

    def close(self) -> None:
        """Both directions ended: close both sockets."""
        if self.closed:
            return
        self.tcp.close()
        self.unix.close()
        self._release()

    def abort(self) -> None:
        """A reset or a failed write on either side: reset both."""
        if self.closed:
            return
        reset(self.tcp)
        reset(self.unix)
        self._release()


@final
class RelayLoop:
    """Accepts on each relay's listener and starts a :class:`Connection` per accepted socket.

    :param listeners: one listening, non-blocking socket per relay, in the same order.
    :raises ValueError: not one listener per relay.
    """

    def __init__(
        self,
        selector: selectors.BaseSelector,
        relays: Sequence[Relay],
        listeners: Sequence[socket.socket],
        *,
        max_connections: int = MAX_CONNECTIONS,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self.selector = selector
        self.max_connections = max_connections
        self.buffer_bytes = buffer_bytes
        self.listeners = list(listeners)
        self.active: dict[int, set[Connection]] = {r.port: set() for r in relays}
        #: Connections relayed, reset at the bound, and reset because the Unix side was absent.
        self.counts = {"relayed": 0, "over_bound": 0, "unreachable": 0}
        for relay, listener in zip(relays, listeners, strict=True):
            selector.register(listener, _READ, functools.partial(self._accept, relay, listener))

    def _accept(self, relay: Relay, listener: socket.socket, _mask: int) -> None:
        for _ in range(BACKLOG):  # a burst on one relay cannot starve the loop's other duties
            try:
                tcp, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ECONNABORTED and the like: that connection is gone already
            active = self.active[relay.port]
            if len(active) >= self.max_connections:
                self.counts["over_bound"] += 1
                reset(tcp)
                continue
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.setblocking(False)
            try:
                unix.connect(relay.path)  # a Unix connect completes at once, or fails (EAGAIN: backlog full)
            except OSError:
                self.counts["unreachable"] += 1
                unix.close()
                reset(tcp)
                continue
            tcp.setblocking(False)
            with contextlib.suppress(OSError):
                tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                conn = Connection(tcp, unix, self.selector, buffer_bytes=self.buffer_bytes, on_closed=active.discard)
            except (OSError, ValueError, KeyError):
                unix.close()
                reset(tcp)
                continue
            self.counts["relayed"] += 1
            active.add(conn)

    @property
    def connections(self) -> int:
        return sum(len(a) for a in self.active.values())

    def close(self) -> None:
        """Reset every connection and close the listeners."""
        for active in self.active.values():
            for conn in list(active):
                conn.abort()
        for listener in self.listeners:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(listener)
            listener.close()


def dispatch(selector: selectors.BaseSelector, timeout: float | None = None) -> None:
    """Wait for one round of events and call each ready object's handler."""
    for key, mask in selector.select(timeout):
        handler: Handler = key.data
        handler(mask)
