"""The simulated venue's fault switches (:meth:`hil.exchange.venue.SimVenue.reject_next`,
``latency``, ``throttle``; ``disconnect`` and ``skip_seqnum`` act at once and keep no state) and
how they bite on an order.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

__all__ = ["VenueFaults"]


@dataclass
class VenueFaults:
    """The switches in force. The venue lock guards them."""

    #: NewOrderSingles (any session) still to reject, with ``reject_text``.
    reject_next: int = 0
    reject_text: str = ""
    #: Seconds every outbound message is held before it is sent (new connections get it too).
    latency: float = 0.0
    #: A session's orders beyond this many in any second are rejected (``None``: off).
    throttle: float | None = None

    def refusal(self, order_times: deque[float]) -> str | None:
        """Why a fault refuses the next order of a session whose admitted orders were at
        ``order_times`` (monotonic; the order is added when admitted), or ``None``. An injected
        reject is used up by the order it refuses."""
        if self.reject_next > 0:
            self.reject_next -= 1
            return self.reject_text
        if self.throttle is not None:
            now = time.monotonic()
            while order_times and order_times[0] <= now - 1.0:
                order_times.popleft()
            if len(order_times) >= self.throttle:
                return "throttle"
            order_times.append(now)
        return None
