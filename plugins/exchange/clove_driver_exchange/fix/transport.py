"""A threaded TCP transport for a :class:`~clove_driver_exchange.fix.session.FixSession`, the one
both sides use today: :class:`FixConnection` (a reader thread, which also ticks the session, and a
writer thread per TCP connection) and :func:`connect` (the initiator's way in).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from clove_driver_exchange.fix.session import FixSession

__all__ = ["FixConnection", "connect"]

_log = logging.getLogger(__name__)


class FixConnection:
    """Carry one :class:`FixSession` over a connected TCP socket, with two threads.

    The reader thread feeds received bytes to the session and calls :meth:`FixSession.tick`
    every ``tick_interval`` seconds; the writer thread sends what the session queues, so a slow
    counterparty never blocks a caller of :meth:`FixSession.send_app` (the queue is unbounded).
    ``send_delay`` holds every outbound message that many seconds (order is kept): a venue's
    latency fault.

    When the connection ends, for whatever reason, the session is detached first
    (``connection_lost``), then ``on_disconnect(connection, reason)`` runs on the reader thread.

    :param initial: bytes already read from the socket (a venue peeks at the Logon).
    :param gate: holds each outbound message, and a graceful close, until it calls what it was
        given, in the order given (a group commit: nothing leaves before the sequence store
        and the order journal say it was sent). ``None``: at once.
    """

    def __init__(
        self,
        session: FixSession,
        sock: socket.socket,
        *,
        on_disconnect: Callable[[FixConnection, str], None] | None = None,
        tick_interval: float = 0.05,
        initial: bytes = b"",
        send_delay: float = 0.0,
        name: str | None = None,
        gate: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.session = session
        self.sock = sock
        self.on_disconnect = on_disconnect
        self.tick_interval = tick_interval
        self.send_delay = send_delay
        self.gate = gate
        self.name = name or f"fix-{session.sender}-{session.target}"
        #: Why the connection ended (``None`` while it is up).
        self.reason: str | None = None
        self._initial = initial
        self._out: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()
        self._abort = threading.Event()
        self._closed = threading.Event()
        self._close_reason: str | None = None
        self._reader: threading.Thread | None = None
        self._writer: threading.Thread | None = None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def start(self) -> FixConnection:
        """Attach the session and start the threads (a second call does nothing).

        :raises RuntimeError: the session already has a transport.
        """
        if self._reader is not None:
            return self
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # FIX is latency-bound
        self.sock.setblocking(True)
        send: Callable[[bytes], None] = self._enqueue
        close: Callable[[], None] = self._graceful_close
        gate = self.gate
        if gate is not None:  # in order: a Logout and the close after it stay in that order
            send = lambda raw: gate(lambda: self._enqueue(raw))  # noqa: E731
            close = lambda: gate(self._graceful_close)  # noqa: E731
        self.session.connection_made(send, close, owner=self)
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.name}-w", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name=f"{self.name}-r", daemon=True)
        self._writer.start()
        self._reader.start()
        return self

    def close(self, reason: str = "closed locally") -> None:
        """Drop the connection now: queued outbound messages are discarded."""
        if self._close_reason is None:
            self._close_reason = reason
        self._abort.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._out.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the connection has ended and ``on_disconnect`` ran; returns whether it has."""
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
        return self._closed.is_set()

    # ---- internals --------------------------------------------------------------------------------

    def _enqueue(self, raw: bytes) -> None:
        self._out.put((time.monotonic() + self.send_delay, raw))

    def _graceful_close(self) -> None:
        """The session's close: send what is queued, then end the connection."""
        if self._close_reason is None:
            self._close_reason = self.session.last_logout_text or "closed by the session"
        self._out.put(None)

    def _write_loop(self) -> None:
        try:
            while True:
                item = self._out.get()
                if item is None or self._abort.is_set():
                    break
                due, raw = item
                wait = due - time.monotonic()
                if wait > 0 and self._abort.wait(wait):
                    break
                self.sock.sendall(raw)
        except OSError as exc:
            if self._close_reason is None:
                self._close_reason = f"send failed: {exc}"
        finally:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end and tears down

    def _read_loop(self) -> None:
        reason = "the counterparty closed the connection"
        session, sock = self.session, self.sock
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_READ)
                if self._initial:
                    session.feed(self._initial)
                    self._initial = b""
                next_tick = time.monotonic() + self.tick_interval
                while True:
                    if selector.select(max(0.0, next_tick - time.monotonic())):
                        try:
                            data = sock.recv(65536)
                        except OSError as exc:
                            reason = f"receive failed: {exc}"
                            break
                        if not data:
                            break
                        session.feed(data)
                    if time.monotonic() >= next_tick:
                        session.tick()
                        next_tick = time.monotonic() + self.tick_interval
        except Exception:
            _log.exception("FIX connection %s failed", self.name)
            reason = "internal error (see the log)"
        finally:
            self._teardown(self._close_reason or reason)

    def _teardown(self, reason: str) -> None:
        self.reason = reason
        self._abort.set()
        self._out.put(None)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        writer = self._writer
        if writer is not None:
            writer.join(5.0)
        self.session.connection_lost(owner=self)
        with contextlib.suppress(OSError):
            self.sock.close()
        self._closed.set()
        if self.on_disconnect is not None:
            try:
                self.on_disconnect(self, reason)
            except Exception:
                _log.exception("on_disconnect of %s failed", self.name)


def connect(
    session: FixSession,
    host: str,
    port: int,
    *,
    timeout: float = 5.0,
    on_disconnect: Callable[[FixConnection, str], None] | None = None,
    **options: Any,
) -> FixConnection:
    """(Initiator) open a TCP connection, start a :class:`FixConnection` and send the Logon.

    Returns at once; wait for ``session.state == "active"`` (or a disconnect) yourself.

    :raises OSError: the connection could not be made within ``timeout``.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        conn = FixConnection(session, sock, on_disconnect=on_disconnect, **options).start()
    except BaseException:
        sock.close()
        raise
    session.logon()
    return conn
