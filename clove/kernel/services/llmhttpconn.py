"""One HTTP/1.1 connection on an agent's ``llm.sock``, served on the kernel's loop without ever
blocking it: a non-blocking Unix stream socket, parsed with ``h11`` (sans-IO), read only while a
request is being received, written through :class:`Writers` when the socket's buffer is full.

What one connection can make the kernel hold is bounded: the request line and headers
(``max_header_bytes``, h11's incomplete-event limit), the body (``max_request_bytes``: a larger
``Content-Length`` is refused with 413 before a byte of it is read), one request at a time (the
socket is not read while its answer is pending, so pipelined data waits in the agent's own
socket buffer), and time: a request must arrive whole, and an answer be taken, within
``idle_timeout`` of the connection going idle. A refused connection is closed after a short
lingering read, so the client reads the error rather than a reset.
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, final

import h11

if TYPE_CHECKING:
    from clove.kernel.core.loop import Loop, Timer

log = logging.getLogger(__name__)

RECV_BYTES: Final = 65536
#: After an error that closes the connection: read and drop what the client still sends for at
#: most this long (or ``idle_timeout``, if shorter), then close.
LINGER: Final = 2.0
SERVER_HEADER: Final = (b"server", b"clove-llm")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A complete request: method and path, lower-cased headers, body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@final
class Writers:
    """Write readiness for the loop, which polls only for input: an epoll set of the sockets
    with output pending, itself registered with the loop as a reader (an epoll fd is readable
    when one of its sockets is writable)."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._waiting: dict[int, Callable[[], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._on_ready)

    def want(self, fd: int, callback: Callable[[], None]) -> None:
        if fd not in self._waiting:
            self._epoll.register(fd, select.EPOLLOUT)
        self._waiting[fd] = callback

    def drop(self, fd: int) -> None:
        if self._waiting.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def _on_ready(self) -> None:
        for fd, _ in self._epoll.poll(0):
            callback = self._waiting.get(fd)
            if callback is not None:
                callback()

    def close(self) -> None:
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        self._waiting.clear()


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_request_bytes: int
    max_header_bytes: int
    idle_timeout: float


#: ``on_request(connection, request)``: a whole request arrived; answer with :meth:`HttpConnection.respond`.
RequestHandler = Callable[["HttpConnection", HttpRequest], None]
#: ``on_error(connection, status, message)``: the request was malformed or too large; the
#: handler answers (in the API's error shape) and the connection closes after that answer.
ErrorHandler = Callable[["HttpConnection", int, str], None]


@final
class HttpConnection:
    """One accepted connection (see the module's docstring)."""

    def __init__(self, sock: socket.socket, *, loop: Loop, writers: Writers, limits: ConnectionLimits,
                 on_request: RequestHandler, on_error: ErrorHandler, on_closed: Callable[[HttpConnection], None]) -> None:  # fmt: skip
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self._loop = loop
        self._writers = writers
        self.limits = limits
        self._on_request = on_request
        self._on_error = on_error
        self._on_closed = on_closed
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._out = bytearray()
        self._reading = False
        self.waiting = False  # a request was handed on; its answer is pending
        self.closed = False
        self._lingering = False
        self._must_close = False
        self.deadline = loop.clock() + limits.idle_timeout
        self._timer: Timer | None = loop.call_later(limits.idle_timeout, self._on_timer)
        self._read(True)

    # ---- reading -------------------------------------------------------------------------------

    def _read(self, on: bool) -> None:
        if on and not self._reading and not self.closed:
            self._loop.add_reader(self.sock, self._on_readable)
        elif not on and self._reading:
            self._loop.remove_reader(self.sock)
        self._reading = on and not self.closed

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if self._lingering:
            if not data:
                self.close()
            return
        self._h11.receive_data(data)
        self._process()

    def _process(self) -> None:
        """Run h11's events until it needs data, or a request is whole."""
        while not self.closed and not self.waiting and not self._lingering:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as err:
                status = err.error_status_hint
                message = "the request line and headers are too large" if status == 431 else f"malformed HTTP request: {err}"
                self._fail(status, message)
                return
            if event is h11.NEED_DATA:
                if self._h11.their_state is h11.DONE or self._h11.their_state is h11.CLOSED:
                    self.close()
                else:
                    self._read(True)
                return
            if event is h11.PAUSED:  # a pipelined request waits for the current answer
                return
            if isinstance(event, h11.ConnectionClosed):
                self.close()
                return
            if isinstance(event, h11.Request):
                # h11 bounds only a head still incomplete; one that arrived whole in a read is measured here.
                head = len(event.method) + len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers) + 16
                if head > self.limits.max_header_bytes:
                    self._fail(431, f"the request line and headers ({head} bytes) are larger than the {self.limits.max_header_bytes} bytes allowed")
                    return
                self._request, self._body = event, bytearray()
                length = _header(event.headers, b"content-length")
                if length is not None and length.isdigit() and int(length) > self.limits.max_request_bytes:
                    self._fail(413, f"the request body ({int(length)} bytes) is larger than the {self.limits.max_request_bytes} bytes allowed")
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.limits.max_request_bytes:
                    self._fail(413, f"the request body is larger than the {self.limits.max_request_bytes} bytes allowed")
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
                return

    def _dispatch(self) -> None:
        request = self._request
        assert request is not None  # noqa: S101 - EndOfMessage follows a Request
        self.waiting = True
        self._read(False)  # nothing more from this client until it has its answer
        self._arm(None)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
        body, self._body = bytes(self._body), bytearray()
        self._on_request(self, HttpRequest(request.method.decode("ascii", "replace"), request.target.decode("latin-1"), headers, body))

    def _fail(self, status: int, message: str) -> None:
        """A malformed, oversized or late request: the handler answers, then the connection
        closes (h11 may answer from IDLE once the client's side is in ERROR)."""
        self.waiting = True
        self._must_close = True
        self._read(False)
        self._on_error(self, status, message)

    # ---- writing -------------------------------------------------------------------------------

    def respond(self, status: int, headers: list[tuple[str, str]], chunks: list[bytes], *, close: bool = False) -> None:
        """Answer the pending request: ``chunks`` as the body (with a ``Content-Length`` if the
        headers name one, else chunked). ``close``: the connection ends after this answer."""
        if self.closed:
            return
        wire_headers = [SERVER_HEADER, *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)]
        if close or self._must_close:
            wire_headers.append((b"connection", b"close"))
        try:
            reason = HTTPStatus(status).phrase.encode("ascii") if status in HTTPStatus._value2member_map_ else b""
            self._out += self._h11.send(h11.Response(status_code=status, headers=wire_headers, reason=reason))
            for chunk in chunks:
                if chunk:
                    self._out += self._h11.send(h11.Data(data=chunk))
            self._out += self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as err:
            log.debug("llm endpoint: cannot answer: %s", err)
            self.close()
            return
        self.waiting = False
        self._arm(self._loop.clock() + self.limits.idle_timeout)
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                sent = self.sock.send(self._out)
            except BlockingIOError:
                self._writers.want(self.fd, self._on_writable)
                return
            except OSError:
                self.close()
                return
            del self._out[:sent]
            self.deadline = self._loop.clock() + self.limits.idle_timeout  # a slow reader that reads is not idle
        self._writers.drop(self.fd)
        self._sent()

    def _on_writable(self) -> None:
        if not self.closed:
            self._flush()

    def _sent(self) -> None:
        """The whole answer is out: next request, or close (lingering if the client may still write)."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            if self._h11.trailing_data[0]:
                # A pipelined request is buffered already: serve it on the next turn, not from
                # here (a long pipeline would recurse), and read no more until h11 needs data
                # (else a pipeline would grow its buffer by a read per request).
                self._loop.call_later(0.0, self._process)
            else:
                self._read(True)
            return
        self._linger()

    def _linger(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self._lingering = True
        self._arm(self._loop.clock() + min(LINGER, self.limits.idle_timeout))
        self._read(True)

    # ---- time ----------------------------------------------------------------------------------

    def _arm(self, deadline: float | None) -> None:
        """Set the idle deadline (``None``: none while the gateway has the request)."""
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        self.deadline = deadline
        if self._timer is None:
            self._timer = self._loop.call_later(max(0.0, deadline - self._loop.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed or self.waiting:
            return
        now = self._loop.clock()
        if now < self.deadline:
            self._timer = self._loop.call_later(self.deadline - now, self._on_timer)
            return
        if not self._lingering and not self._out and self._h11.their_state is h11.SEND_BODY:
            self._fail(408, f"the request did not arrive whole within {self.limits.idle_timeout:g} s")
            return
        self.close()  # idle, a request line that never ended, or an answer nobody reads

    # ---- end -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close at once (safe twice); the owner hears of it through ``on_closed``."""
        if self.closed:
            return
        self._read(False)
        self.closed = True
        self._writers.drop(self.fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.sock.close()
        except OSError:
            pass
        self._out.clear()
        self._on_closed(self)

    def describe(self) -> dict[str, Any]:
        return {"waiting": self.waiting, "out_bytes": len(self._out), "lingering": self._lingering, "buffered": len(self._h11.trailing_data[0])}


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return bytes(value).decode("latin-1").strip()
    return None
