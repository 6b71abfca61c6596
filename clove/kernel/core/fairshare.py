"""The kernel's own time, shared between callers by weight (deficit round robin over time).

Every agent has its own socket and the operators share the control socket; each socket is one
*flow*. On every loop turn a ready flow is credited ``QUANTUM_NS × weight`` nanoseconds and
served until its credit is spent; what each request really cost (decode, policy, handler,
journal and recording work, reply) is measured and charged to it. A flow whose last request
cost more than its credit runs a debt and sits out turns until the debt is repaid, so an
agent whose calls are expensive (large state writes, big files) gets the same share of kernel
time as one whose calls are cheap, not the same number of calls. An idle flow banks nothing.

Weights follow the agent's CPU share (``cpu_quota_us`` per 100 ms; no quota counts as one
core) unless ``[limits] weight`` says otherwise; the operators' flow has weight 1.

Behind the fair share, a token bucket per agent (``syscall_rate``, ``syscall_burst``) caps the
request rate outright. A flow over its rate is *slowed, not failed*: the dispatcher stops
reading its socket until tokens are back (ZeroMQ queues, then blocks the agent's sends). Each
throttling episode is counted and announced once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from clove.ratelimit import TokenBucket

if TYPE_CHECKING:
    import zmq

#: Kernel time credited per turn at weight 1. Small enough that a caller behind a flooding
#: agent waits at most about this long for its turn; large enough for several cheap calls.
QUANTUM_NS: Final = 200_000
#: A flow never banks more than this many quanta of unused credit.
MAX_CREDIT_QUANTA: Final = 2
MIN_WEIGHT: Final = 0.05
MAX_WEIGHT: Final = 8.0


def weight_for(cpu_quota_us: int | None, configured: float | None) -> float:
    """An agent's weight: the configured one, else its CPU share (100 000 µs = one core = 1)."""
    weight = configured if configured is not None else (cpu_quota_us or 100_000) / 100_000
    return min(MAX_WEIGHT, max(MIN_WEIGHT, weight))


@dataclass(slots=True)
class Flow:
    """One caller's account: its credit, its rate bucket and what it has used."""

    weight: float
    bucket: TokenBucket | None = None
    credit_ns: int = 0
    used_ns: int = 0
    calls: int = 0
    denied: int = 0  # requests refused (perm.denied, resource limits, proto.*): what `clove top` shows
    throttled: int = 0
    throttled_until: float = 0.0
    label: dict[str, object] = field(default_factory=dict)

    def start_turn(self) -> bool:
        """Credit this turn's quantum; True when the flow may be served now."""
        quantum = int(QUANTUM_NS * self.weight)
        self.credit_ns = min(self.credit_ns + quantum, quantum * MAX_CREDIT_QUANTA)
        return self.credit_ns > 0

    def idle(self) -> None:
        """Nothing left to serve: unused credit is not kept (debts are)."""
        self.credit_ns = min(self.credit_ns, 0)

    def rate_wait(self) -> float:
        """Seconds to wait before the next request may be read (0: go ahead)."""
        if self.bucket is None or self.bucket.available() >= 1:
            return 0.0
        return max(self.bucket.retry_after(1), 0.001)

    def allowance(self, limit: int) -> int:
        """How many requests the rate lets through now, at most ``limit``: read once a turn,
        and the turn's calls are then charged together (:meth:`charge`)."""
        if self.bucket is None:
            return limit
        return min(limit, max(0, int(self.bucket.available())))

    def charge(self, ns: int, calls: int = 1) -> None:
        """``calls`` requests served in ``ns`` nanoseconds of kernel time."""
        self.credit_ns -= ns
        self.used_ns += ns
        self.calls += calls
        if self.bucket is not None:
            self.bucket.take(calls)

    def figures(self) -> dict[str, object]:
        return {
            **self.label,
            "weight": self.weight,
            "kernel_time_us": self.used_ns // 1000,
            "calls": self.calls,
            "denied": self.denied,
            "throttled": self.throttled,
        }


class Flows:
    """Every caller's flow, by its socket (held weakly: an agent's goes with its socket).

    :param new: builds the flow of a socket seen for the first time.
    """

    def __init__(self, new: Callable[[zmq.Socket[bytes]], Flow]) -> None:
        self._new = new
        self._by_socket: weakref.WeakKeyDictionary[zmq.Socket[bytes], Flow] = weakref.WeakKeyDictionary()
        self._last: tuple[zmq.Socket[bytes], Flow] | None = None

    def of(self, sock: zmq.Socket[bytes]) -> Flow:
        last = self._last
        if last is not None and last[0] is sock:  # one caller at a time is the common case: no weakref
            return last[1]
        flow = self._by_socket.get(sock)
        if flow is None:
            flow = self._by_socket[sock] = self._new(sock)
        self._last = (sock, flow)
        return flow

    def get(self, sock: zmq.Socket[bytes]) -> Flow | None:
        """The flow of ``sock``, or ``None`` before its first request."""
        return self._by_socket.get(sock)

    def figures(self) -> list[dict[str, object]]:
        """Kernel time used per caller since boot (open sockets only)."""
        return [flow.figures() for sock, flow in list(self._by_socket.items()) if not sock.closed]
