"""Per-minute limits (requests or tokens) as token buckets on an injected clock.

A bucket holds at most one minute's allowance and refills continuously, so ``rpm = 60`` admits
a burst of 60 and then one a second. The gateway takes a request's *maximum* tokens when it
dispatches it and gives back what it did not use when it settles.
"""

from __future__ import annotations

import math
from typing import final

__all__ = ["TokenBucket"]


@final
class TokenBucket:
    """:param per_minute: the allowance per minute (also the burst size).
    :param now: the clock reading to start from (full)."""

    __slots__ = ("capacity", "rate", "level", "last")

    def __init__(self, per_minute: int, now: float) -> None:
        if per_minute <= 0:
            raise ValueError(f"a per-minute limit must be positive, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.last = now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
            self.last = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0: now; ``inf``: never, it exceeds the burst)."""
        if amount > self.capacity:
            return math.inf
        self._refill(now)
        if self.level >= amount:
            return 0.0
        return (amount - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Take ``amount`` (call after :meth:`wait` said 0)."""
        self._refill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + max(0.0, amount))

    def available(self, now: float) -> float:
        self._refill(now)
        return self.level
