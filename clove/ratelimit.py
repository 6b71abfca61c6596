"""The one token bucket: device grants' rates, exchange order throttles, the kernel's
per-agent syscall rate and the LLM gateway's requests and tokens per minute all count with it.

A bucket holds at most ``burst`` tokens and refills at ``rate`` a second. Each method reads the
time from its ``now`` argument when given (the LLM gateway's injected clock), else from the
bucket's ``clock``. Two ways to spend, for two kinds of caller:

* :meth:`take` asks: it takes ``amount`` if it is there, or, when the bucket is full, takes a
  cost larger than the burst and owes it (a large write is slowed, never refused forever);
* :meth:`wait` then :meth:`consume` plan: how long until ``amount`` fits (``inf`` if it never
  will), then take it unconditionally; :meth:`give_back` returns what a reservation did not use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst`` (default: a tenth of a second's
    worth, at least one), full at the start.

    A rate of 0 never refills: the burst is all there is.

    :raises ValueError: ``rate`` is negative.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "_clock")

    def __init__(
        self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic, now: float | None = None
    ) -> None:
        if not rate >= 0:
            raise ValueError(f"a rate must not be negative, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate / 10)
        self._tokens = self.burst
        self._clock = clock
        self._stamp = clock() if now is None else now

    @classmethod
    def per_minute(cls, per_minute: int, now: float) -> TokenBucket:
        """An allowance per minute that is also the burst: 60 admits a burst of 60, then one a second.

        :raises ValueError: ``per_minute`` is not positive.
        """
        if per_minute <= 0:
            raise ValueError(f"a per-minute limit must be positive, got {per_minute}")
        return cls(per_minute / 60.0, float(per_minute), now=now)

    @property
    def capacity(self) -> float:
        return self.burst

    def _refill(self, now: float | None) -> None:
        t = self._clock() if now is None else now
        if t > self._stamp:
            self._tokens = min(self.burst, self._tokens + (t - self._stamp) * self.rate)
            self._stamp = t

    def available(self, now: float | None = None) -> float:
        self._refill(now)
        return self._tokens

    def take(self, amount: float, now: float | None = None) -> bool:
        """Take ``amount`` if it is there (a cost larger than the burst is admitted when the
        bucket is full, then owed, so a large write is slowed rather than refused forever)."""
        self._refill(now)
        if self._tokens >= amount or self._tokens >= self.burst:
            self._tokens -= amount
            return True
        return False

    def retry_after(self, amount: float, now: float | None = None) -> float:
        """Seconds until :meth:`take` of ``amount`` would succeed."""
        self._refill(now)
        need = min(amount, self.burst) - self._tokens
        if need <= 0:
            return 0.0
        return need / self.rate if self.rate else math.inf

    def wait(self, amount: float, now: float | None = None) -> float:
        """Seconds until ``amount`` fits (0: now; ``inf``: never, it exceeds the burst)."""
        if amount > self.burst:
            return math.inf
        self._refill(now)
        if self._tokens >= amount:
            return 0.0
        return (amount - self._tokens) / self.rate if self.rate else math.inf

    def consume(self, amount: float, now: float | None = None) -> None:
        """Take ``amount`` unconditionally (after :meth:`wait` said 0)."""
        self._refill(now)
        self._tokens -= amount

    def give_back(self, amount: float, now: float | None = None) -> None:
        """Return what a reservation did not use (never above the burst)."""
        self._refill(now)
        self._tokens = min(self.burst, self._tokens + max(0.0, amount))
