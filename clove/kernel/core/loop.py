"""The kernel's single event loop: one epoll set over ZeroMQ sockets and raw fds, plus timers.

Modelled on the Majordomo broker's ``mediate()``: poll with a timeout no longer than the next
timer (or the housekeeping tick), run ready handlers, run due timers, run housekeeping. Nothing
here blocks; handlers must not either.

Why epoll rather than ``zmq.Poller``: the kernel holds one socket and one log pipe per agent, and
``zmq.Poller.poll`` rebuilds its whole item array on every call (about 0.3 µs per item, 70 µs a
turn with 100 agents). epoll costs what is ready, not what is registered. ZeroMQ sockets join
through their ``ZMQ_FD``, which only says "look at ``ZMQ_EVENTS``"; :class:`EpollPoller` checks
it once before the next wait for every socket used since (a handler ran on it, a reply was
sent: :meth:`Loop.recheck`) unless its handler checked it last (:meth:`Loop.settled`); a
socket whose fd woke goes to its handler, whose non-blocking read finds out.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import select
import time
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger(__name__)


class Timer:
    """A scheduled callback; :meth:`cancel` makes it a no-op."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


# The base class's getsockopt (the sugar's adds a Python layer), given the option as its enum
# member (pyzmq looks an int up in the enum first) and masked with a plain int (an enum ``&``
# builds a flag object): this runs after every request.
_getsockopt = zmq.backend.Socket.get
_EVENTS, _POLLIN = zmq.EVENTS, int(zmq.POLLIN)


def zmq_readable(sock: zmq.Socket[bytes]) -> bool:
    """``ZMQ_EVENTS`` says a message is queued (False for a closed socket)."""
    try:
        return bool(int(_getsockopt(sock, _EVENTS)) & _POLLIN)
    except zmq.ZMQError:
        return False


class EpollPoller:
    """``zmq.Poller``'s interface (register, unregister, poll) over one epoll set.

    A ZeroMQ socket's ``ZMQ_FD`` only says "look at ``ZMQ_EVENTS``", and any use of the socket
    (a send, a read) may swallow that signal with messages still queued. So a socket that was
    used (:meth:`recheck`) is checked once before the next wait, and a handler that has checked
    it itself after its last use says so (:meth:`settled`): one ``ZMQ_EVENTS`` read per socket
    and turn, not one per use.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._by_fd: dict[int, Any] = {}
        self._fd_of: dict[int, int] = {}  # id(source) -> fd, still known after a socket closed
        self._touched: dict[int, Any] = {}  # ZeroMQ sockets used since their last check
        self._zmq: set[int] = set()  # id() of the registered ZeroMQ sockets

    @staticmethod
    def _fd(source: Any) -> int:
        if isinstance(source, zmq.Socket):
            return int(source.getsockopt(zmq.FD))
        return source if isinstance(source, int) else int(source.fileno())

    def register(self, source: Any, flags: int = zmq.POLLIN) -> None:
        fd = self._fd(source)
        self._epoll.register(fd, select.EPOLLIN)
        self._by_fd[fd] = source
        self._fd_of[id(source)] = fd
        if isinstance(source, zmq.Socket):
            self._zmq.add(id(source))
            self._touched[id(source)] = source  # messages may be queued already

    def unregister(self, source: Any) -> None:
        fd = self._fd_of.pop(id(source), None)
        self._touched.pop(id(source), None)
        self._zmq.discard(id(source))
        if fd is None:
            return
        self._by_fd.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass  # closing the fd already took it out of the set

    def recheck(self, source: Any) -> None:
        """A registered ZeroMQ socket was used: check it before the loop next waits."""
        if id(source) in self._zmq:
            self._touched[id(source)] = source

    def settled(self, source: Any) -> None:
        """The socket's handler read ``ZMQ_EVENTS`` after its last use: no check is owed."""
        self._touched.pop(id(source), None)

    def poll(self, timeout_ms: int) -> list[tuple[Any, int]]:
        """The ready sources. A ZeroMQ socket handed out is owed a check before the next wait
        (its handler reads a bounded batch; more may be waiting) unless its handler settles it."""
        ready: dict[int, Any] = {}
        touched = self._touched
        if touched:
            for key, source in touched.items():
                if zmq_readable(source):
                    ready[key] = source
            touched.clear()
        by_fd = self._by_fd
        for fd, _ in self._epoll.poll(0 if ready else timeout_ms / 1000):
            # Not checked here: the handler's non-blocking read finds out (a ZeroMQ socket's fd
            # may have woken for commands alone), and that read handles the commands itself.
            source = by_fd.get(fd)
            if source is not None:
                ready[id(source)] = source
        if not ready:
            return []
        for key, source in ready.items():
            if key in self._zmq:
                touched[key] = source
        return [(source, _POLLIN) for source in ready.values()]

    def close(self) -> None:
        self._epoll.close()


#: While requests keep the loop busy, housekeeping runs at most this often (seconds); after a
#: turn that found nothing to do it always runs.
HOUSEKEEPING_INTERVAL_S = 0.001


class Loop:
    """Readers, timers and two hooks on one poller: ``each_turn`` after every turn, and
    ``housekeeping`` after a quiet turn or at most every :data:`HOUSEKEEPING_INTERVAL_S` of
    busy ones (every job there reads a clock and returns unless its own work is due: under a
    flood of requests that is thousands of calls a second saved, not work delayed)."""

    def __init__(self, *, tick: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.poller: Any = EpollPoller()
        self.clock = clock
        self.tick = tick
        self._readers: dict[Any, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self.each_turn: list[Callable[[], None]] = []
        self.housekeeping: list[Callable[[], None]] = []
        self._housekeeping_due = -math.inf

    def add_reader(self, source: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``source`` (a zmq socket or an fd) is readable. A zmq
        socket's callback reads without waiting (``NOBLOCK``) and copes with nothing queued:
        its fd also wakes for libzmq's internal commands."""
        if source not in self._readers:
            self.poller.register(source, zmq.POLLIN)
        self._readers[source] = callback

    def readers(self) -> list[Any]:
        return list(self._readers)

    def remove_reader(self, source: Any) -> None:
        if self._readers.pop(source, None) is not None:
            self.poller.unregister(source)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock() + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def _timeout_ms(self) -> int:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        wait = self.tick
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0][0] - self.clock()))
        return math.ceil(wait * 1000)  # int() woke up to 1 ms early, then spun with 0 ms polls

    def recheck(self, source: Any) -> None:
        """Tell the poller a socket was used (a reply was sent): checked before the next wait."""
        try:
            self.poller.recheck(source)
        except AttributeError:  # a poller without the notion (tests' fakes)
            pass

    def settled(self, source: Any) -> None:
        """A handler read the socket's ``ZMQ_EVENTS`` after its last use (nothing queued)."""
        try:
            self.poller.settled(source)
        except AttributeError:
            pass

    def run_once(self) -> None:
        readers = self._readers
        ready = self.poller.poll(self._timeout_ms())
        for source, _ in ready:
            callback = readers.get(source)
            if callback is None:
                continue
            try:  # as _guard, inline: this runs for every request
                callback()
            except Exception:
                log.exception("loop callback %r failed", callback)
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._guard(timer.callback)
        for job in self.each_turn:
            try:
                job()
            except Exception:
                log.exception("loop callback %r failed", job)
        if not ready or now >= self._housekeeping_due:
            self._housekeeping_due = now + HOUSEKEEPING_INTERVAL_S
            for job in self.housekeeping:
                self._guard(job)

    def run(self, until: Callable[[], bool]) -> None:
        while not until():
            self.run_once()

    @staticmethod
    def _guard(callback: Callable[[], None]) -> None:
        # One faulty handler must not take the kernel down with it.
        try:
            callback()
        except Exception:
            log.exception("loop callback %r failed", callback)
