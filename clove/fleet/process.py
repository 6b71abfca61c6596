"""The fleet link in a helper process: the kernel's end (:class:`LinkProcess`) and the child's
relay (:func:`serve`).

Why a process and not a thread in the kernel: the link spends about 60 µs of Python per
shipped record (nats-py), and in the kernel's process every one of those is GIL time the
kernel's loop waits for; ``bench/fleet_ship.py`` measured a journal-heavy agent running about
half as fast with the link as a thread. In its own process the link costs the loop nothing
but a pipe read per event.

The channel is the child's stdin and stdout, one JSON object a line:

* kernel → child: ``{"inventory": {...}}`` snapshots (a non-blocking write; a snapshot that
  does not fit in the pipe waits, and a newer one replaces it unless it is half written: at
  most one is held) and ``{"reply": subject, "data": {...}}`` answers to commands, which are
  never replaced: they wait in a queue of at most :data:`MAX_PENDING_REPLIES`, go before any
  inventory, and one offered past the bound is refused (:meth:`LinkProcess.offer_reply` returns
  ``False`` and the fleet service journals it), never dropped silently;
* child → kernel: :class:`~clove.fleet.link.LinkEvent` s ``{"kind", "details"}``.

The child exits when its stdin closes (the kernel closed it, or died), so it never outlives
the kernel.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import subprocess
from collections import deque
from typing import Any, Final, final

import orjson

from clove.fleet.link import MAX_REPLIES, FleetLink, LinkEvent

__all__ = ["MAX_PENDING_REPLIES", "LinkProcess", "serve"]

log = logging.getLogger(__name__)

#: A line longer than this from either side is dropped (nothing legitimate comes close).
MAX_LINE: Final = 4 << 20
_PIPE_SIZE: Final = 1 << 20
#: Answers to commands waiting for room in the pipe; more are refused.
MAX_PENDING_REPLIES: Final = 256


def _nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


@final
class LinkProcess:
    """The kernel's end of a link process. Loop thread only; nothing here blocks.

    :param command: the child's command line (it runs :func:`serve`).
    """

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self._proc: subprocess.Popen[bytes] | None = None
        self._inbuf = b""
        self._pending = b""  # the line being written (a reply or an inventory)
        self._pending_is_inventory = False
        self._written = 0
        self._inventory = b""  # the newest inventory line not yet begun
        self._replies: deque[bytes] = deque()
        self.exited: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None  # noqa: S101 - PIPE given
        _nonblocking(self._proc.stdin.fileno())
        _nonblocking(self._proc.stdout.fileno())
        with contextlib.suppress(OSError):  # room for a whole inventory in one write, where allowed
            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._inbuf, self._pending, self._written, self.exited = b"", b"", 0, None
        self._inventory = b""
        self._replies.clear()  # answers for the dead child's connection cannot be sent on it

    def fileno(self) -> int:
        assert self._proc is not None and self._proc.stdout is not None  # noqa: S101 - started
        return self._proc.stdout.fileno()

    def events(self) -> list[LinkEvent]:
        """Every event the child sent since the last call; an ``exited`` event (``{status}``)
        when its stdout closed (the child is then reaped)."""
        if self._proc is None or self._proc.stdout is None or self.exited is not None:
            return []
        out: list[LinkEvent] = []
        eof = False
        while True:
            try:
                data = os.read(self._proc.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                eof = True
                break
            self._inbuf += data
            if len(self._inbuf) > MAX_LINE and b"\n" not in self._inbuf:
                log.warning("the fleet link process sent a line longer than %d bytes; dropped", MAX_LINE)
                self._inbuf = b""
        *lines, self._inbuf = self._inbuf.split(b"\n")
        for line in lines:
            try:
                message = orjson.loads(line)
                out.append(LinkEvent(str(message["kind"]), dict(message.get("details") or {})))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("the fleet link process sent a line that is not an event; dropped")
        if eof:
            self.exited = self._reap()
            out.append(LinkEvent("exited", {"status": self.exited}))
        return out

    def _reap(self) -> int:
        assert self._proc is not None  # noqa: S101
        try:
            return self._proc.wait(1.0)
        except subprocess.TimeoutExpired:  # stdout closed but still running: end it
            self._proc.kill()
            return self._proc.wait()

    def offer_inventory(self, inventory: dict[str, Any]) -> None:
        """Queue the newest inventory (replacing one not yet begun) and write what fits."""
        self._inventory = orjson.dumps({"inventory": inventory}, default=str) + b"\n"
        self.flush()

    def offer_reply(self, subject: str, data: dict[str, Any]) -> bool:
        """Queue an answer for the link to publish on ``subject``; ``False`` when
        :data:`MAX_PENDING_REPLIES` are already waiting or there is no child to take it."""
        if self._proc is None or self.exited is not None or len(self._replies) >= MAX_PENDING_REPLIES:
            return False
        self._replies.append(orjson.dumps({"reply": subject, "data": data}, default=str) + b"\n")
        self.flush()
        return True

    @property
    def pending_replies(self) -> int:
        return len(self._replies)

    def flush(self) -> None:
        """Write what fits: the line begun, then replies in order, then the newest inventory."""
        if self._proc is None or self._proc.stdin is None or self.exited is not None:
            return
        while True:
            if not self._pending:
                if self._replies:
                    self._pending, self._pending_is_inventory = self._replies.popleft(), False
                elif self._inventory:
                    self._pending, self._inventory, self._pending_is_inventory = self._inventory, b"", True
                else:
                    return
            try:
                self._written += os.write(self._proc.stdin.fileno(), self._pending[self._written :])
            except BlockingIOError:
                return
            except OSError:  # the child is gone; its exit arrives as an event
                self._pending, self._written = b"", 0
                return
            if self._written < len(self._pending):
                return
            self._pending, self._written = b"", 0

    def close(self, wait: float = 2.0) -> bool:
        """Close the child's stdin (it then closes its connection and exits); wait at most
        ``wait`` seconds, then kill it. Returns whether it ended on its own."""
        proc = self._proc
        if proc is None:
            return True
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(wait)
            return True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False


def serve(link: FleetLink, *, stdin: int = 0, stdout: int = 1) -> int:
    """The child: relay inventories and replies from ``stdin`` to ``link`` and its events to
    ``stdout``, until ``stdin`` closes. Returns the exit status."""
    parent = os.getppid()
    link.start()
    _nonblocking(stdin)
    poller = select.poll()
    poller.register(stdin, select.POLLIN)
    poller.register(link.fileno(), select.POLLIN)
    buf = b""
    try:
        while os.getppid() == parent:
            ready = {fd for fd, _ in poller.poll(1000)}
            if link.fileno() in ready:
                lines = b"".join(orjson.dumps({"kind": e.kind, "details": e.details}, default=str) + b"\n" for e in link.events())
                _write_all(stdout, lines)
            if stdin in ready:
                try:
                    data = os.read(stdin, 1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    return 0  # the kernel closed the channel (or died)
                buf += data
                *lines_in, buf = buf.split(b"\n")
                if len(buf) > MAX_LINE:
                    buf = b""
                _take(link, lines_in)
        return 0
    except BrokenPipeError:
        return 0
    finally:
        link.close()


def _take(link: FleetLink, lines: list[bytes]) -> None:
    """Every reply goes to the link; of the inventories only the newest."""
    inventory = None
    for line in lines:
        try:
            message = orjson.loads(line) if line else None
        except orjson.JSONDecodeError:
            continue
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("inventory"), dict):
            inventory = message["inventory"]
        elif isinstance(message.get("reply"), str) and not link.send_reply(message["reply"], orjson.dumps(message.get("data"), default=str)):
            link.report(f"an answer on {message['reply']} was not sent: the link is not connected or has {MAX_REPLIES} in flight")
    if inventory is not None:
        link.offer_inventory(inventory)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
