"""A simulated chip served on a UNIX socket, so the process that presses buttons (a test, the HIL
harness) need not be the process that owns the driver (a driver host).

The server is one ``select`` loop (in its own thread after :meth:`SimChipServer.start`, or in the
caller's with :meth:`SimChipServer.serve_forever`). It plays the kernel's part: each driver
connection holds one :class:`~clove_driver_gpio.simchip.SimRequest`, and the request's edges
are forwarded to the connection that watches it. Sockets are non-blocking; a watcher that does
not read keeps one message in flight and its edges wait (bounded) in the request's queue, so a
slow client never stalls the others.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import select
import socket
import stat
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, final

from clove_driver_gpio.lines import LineSpec
from clove_driver_gpio.sim.protocol import CONTROLLER_OPS, MAX_MESSAGE, decode, encode
from clove_driver_gpio.simchip import SimChip, SimChipError, SimRequest

__all__ = ["SimChipServer"]

#: Edges forwarded per message.
EDGE_BATCH: Final = 256


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    out: deque[bytes] = field(default_factory=deque)
    request: SimRequest | None = None
    watching: SimRequest | None = None


def _spec(data: Any) -> LineSpec:
    if not isinstance(data, dict):
        raise SimChipError(f"a line spec is an object, got {data!r}")
    spec = LineSpec(**data)
    if (
        not isinstance(spec.offset, int)
        or spec.direction not in ("input", "output")
        or spec.edge not in ("rising", "falling", "both")
    ):
        raise SimChipError(f"bad line spec {data!r}")
    if not isinstance(spec.debounce_ms, (int, float)) or spec.initial not in (0, 1):
        raise SimChipError(f"bad line spec {data!r}")
    return spec


@final
class SimChipServer:
    """Serve a new :class:`SimChip` at ``socket_path``.

    :param lines: line name → offset.
    :param outputs: lines wired as outputs.
    :param initial: power-up wire levels (default: each line's inactive level).
    :param active_low: lines whose active level is 0 (what ``press`` drives).
    :raises SimChipError: a bad line table.

    ``server.chip`` is the chip itself, for callers in the same process.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        lines: Mapping[str, int],
        outputs: Iterable[str] = (),
        initial: Mapping[str, int] | None = None,
        active_low: Iterable[str] = (),
        *,
        label: str | None = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.chip = SimChip(
            lines, outputs, initial, active_low, label=label or os.path.basename(self.socket_path)
        )
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._stop: tuple[socket.socket, socket.socket] | None = None  # made by bind()
        self._conns: dict[socket.socket, _Conn] = {}
        self._requests: dict[int, SimRequest] = {}
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._serving = False
        self._done = threading.Event()

    # ---- lifecycle ------------------------------------------------------------------------------

    def bind(self) -> None:
        """Listen at ``socket_path``; a stale socket there (no server) is replaced.

        :raises OSError: ``EADDRINUSE`` if a server already answers there, ``EEXIST`` if the
            path is not a socket.
        """
        if self._listener is not None:
            return
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            listener.bind(self.socket_path)
            listener.listen(16)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._inode = os.stat(self.socket_path).st_ino
        self._stop = socket.socketpair()

    def start(self) -> SimChipServer:
        """Bind here (so errors surface in the caller and the socket exists on return), then
        serve in a daemon thread. Starting a started server does nothing (``with
        server.start():`` must not run two loops over one chip)."""
        if self._thread is not None:
            return self
        self.bind()
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"gpio-sim:{self.socket_path}", daemon=True
        )
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to stop; safe from a signal handler and after the loop ended."""
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(OSError):
                stop[1].send(b"x")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: every client sees the connection close; the socket file is removed."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._listener is not None and not self._serving and not self._done.is_set():
            self._cleanup()  # bound but never served

    def __enter__(self) -> SimChipServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve until :meth:`request_stop` (or :meth:`stop`)."""
        self.bind()
        self._serving = True
        try:
            self._loop()
        finally:
            self._cleanup()

    # ---- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._listener is not None
        assert self._stop is not None
        stop = self._stop[0]
        while True:
            for conn in [
                c for c in self._conns.values() if c.watching is not None and c.watching.fileno() < 0
            ]:
                self._drop(conn)  # its request was released under it (SimChip.close())
            watchers = {c.watching: c for c in self._conns.values() if c.watching is not None and not c.out}
            rlist: list[Any] = [self._listener, stop, *self._conns, *watchers]
            wlist = [c.sock for c in self._conns.values() if c.out]
            readable, writable, _ = select.select(rlist, wlist, [])
            if stop in readable:
                return
            for sock in writable:
                if sock in self._conns:
                    self._flush(self._conns[sock])
            for obj in readable:
                if obj is self._listener:
                    self._accept()
                elif isinstance(obj, SimRequest):
                    conn = watchers[obj]
                    if conn.sock in self._conns and conn.watching is obj:
                        self._forward(conn, obj)
                elif obj in self._conns:
                    self._receive(self._conns[obj])

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self._conns[sock] = _Conn(sock)

    def _receive(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        try:
            reply: dict[str, Any] = {"result": self._handle(conn, decode(data))}
            message = encode(reply)
        except SimChipError as err:
            message = encode({"error": {"kind": err.kind, "message": err.message}})
        except (TypeError, ValueError, KeyError) as err:
            message = encode(
                {"error": {"kind": "invalid", "message": f"bad message: {type(err).__name__}: {err}"}}
            )
        conn.out.append(message)
        self._flush(conn)

    def _handle(self, conn: _Conn, message: dict[str, Any]) -> Any:
        op = message.pop("op", None)
        if op in CONTROLLER_OPS:
            return getattr(self.chip, op)(**message)
        if op == "request":
            if conn.request is not None or conn.watching is not None:
                raise SimChipError("this connection already holds a request")
            request = self.chip.request_lines(
                [_spec(d) for d in message["lines"]], consumer=str(message.get("consumer", "?"))
            )
            ident = next(self._ids)
            self._requests[ident] = conn.request = request
            return {"request": ident, "label": self.chip.label}
        if op == "watch":
            watched = self._requests.get(message["request"])
            if watched is None or conn.request is not None or conn.watching is not None:
                raise SimChipError(
                    f"no request {message['request']!r} to watch from this connection", "released"
                )
            conn.watching = watched
            return None
        if op in ("get", "set"):
            if conn.request is None:
                raise SimChipError(f"{op}: this connection holds no request")
            if op == "get":
                return conn.request.get([int(off) for off in message["offsets"]])
            conn.request.set({int(off): int(value) for off, value in message["values"]})
            return None
        raise SimChipError(f"unknown operation {op!r}")

    def _forward(self, conn: _Conn, request: SimRequest) -> None:
        edges = request.read_edges(EDGE_BATCH)
        if edges:
            conn.out.append(encode({"edges": [[e.offset, e.rising, e.ts] for e in edges]}))
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        while conn.out:
            try:
                conn.sock.send(conn.out[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(conn)
                return
            conn.out.popleft()

    def _drop(self, conn: _Conn) -> None:
        """Close a connection; a driver's request goes with it, and so do its watchers."""
        if self._conns.pop(conn.sock, None) is None:
            return
        conn.sock.close()
        held = conn.request
        if held is not None:
            for ident in [i for i, r in self._requests.items() if r is held]:
                del self._requests[ident]
            held.close()
            for other in [c for c in self._conns.values() if c.watching is held]:
                self._drop(other)

    def _cleanup(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        if self._listener is not None:
            self._listener.close()
        try:
            if self._inode is not None and os.stat(self.socket_path).st_ino == self._inode:
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        if self._stop is not None:
            self._stop[0].close()
            self._stop[1].close()
        self._done.set()

    def _remove_stale(self) -> None:
        try:
            mode = os.stat(self.socket_path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise FileExistsError(f"{self.socket_path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(self.socket_path)
        except ConnectionRefusedError:
            os.unlink(self.socket_path)  # left by a server that died
            return
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, f"a simulated chip server already answers at {self.socket_path}")
