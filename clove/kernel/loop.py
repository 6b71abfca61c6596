"""The kernel's single event loop: one ZeroMQ poller over sockets and raw fds, plus timers.

Modelled on the Majordomo broker's ``mediate()``: poll with a timeout no longer than the next
timer (or the housekeeping tick), run ready handlers, run due timers, run housekeeping. Nothing
here blocks; handlers must not either.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
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


class Loop:
    """Readers, timers and a housekeeping hook on one zmq.Poller."""

    def __init__(self, *, tick: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.poller = zmq.Poller()
        self.clock = clock
        self.tick = tick
        self._readers: dict[Any, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self.housekeeping: list[Callable[[], None]] = []

    def add_reader(self, source: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``source`` (a zmq socket or an fd) is readable."""
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

    def run_once(self) -> None:
        for source, _ in self.poller.poll(self._timeout_ms()):
            callback = self._readers.get(source)
            if callback is not None:
                self._guard(callback)
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._guard(timer.callback)
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
