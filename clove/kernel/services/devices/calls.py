"""The operations of one device waiting for their host's reply: who asked, until when, and how
many each caller may have at once.

A caller that pipelines (sends its next ``device.call`` before the last one is answered, as a raw
DEALER can) holds a pending entry and a timer in the kernel per call, so its calls in flight are
bounded per device: past :data:`MAX_CALLS_PER_CALLER` it gets ``quota.exceeded``; past
:data:`MAX_CALLS_PER_DEVICE` from everyone, ``device.busy``. The kernel's own calls (an
interlock's action) are never refused here.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, final

from clove.errors import CloveError, DeviceBusy, QuotaExceeded

if TYPE_CHECKING:
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.core.loop import Timer

__all__ = ["MAX_CALLS_PER_CALLER", "MAX_CALLS_PER_DEVICE", "CallBook", "Pending"]

#: Calls one agent or operator session may have in flight on one device.
MAX_CALLS_PER_CALLER = 32
#: Calls in flight on one device from every caller. Above the host's own window
#: (``clove.drivers.host.MAX_IN_FLIGHT``) ZeroMQ queues them, within its default HWM (1,000).
MAX_CALLS_PER_DEVICE = 1024


@final
class Pending:
    """One call in flight."""

    __slots__ = ("deferred", "op", "principal", "timer")

    def __init__(self, deferred: Deferred, op: str, principal: int | None, timer: Timer) -> None:
        self.deferred, self.op, self.principal, self.timer = deferred, op, principal, timer


@final
class CallBook:
    """The calls in flight on one device, by call id, and their count per caller."""

    def __init__(self, device: str, *, per_caller: int = MAX_CALLS_PER_CALLER, per_device: int = MAX_CALLS_PER_DEVICE) -> None:
        self.device = device
        self.per_caller = per_caller
        self.per_device = per_device
        self._pending: dict[int, Pending] = {}
        self._by_caller: dict[int, int] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._pending)

    def ids(self) -> list[int]:
        return list(self._pending)

    def of(self, principal: int) -> int:
        """The caller's calls in flight."""
        return self._by_caller.get(principal, 0)

    def admit(self, principal: int | None, op: str) -> None:
        """Refuse a call past a bound (``principal`` ``None``: the kernel's own, always admitted).

        :raises QuotaExceeded: the caller is at :attr:`per_caller`.
        :raises DeviceBusy: the device is at :attr:`per_device`.
        """
        if principal is None:
            return
        held = self._by_caller.get(principal, 0)
        if held >= self.per_caller:
            raise QuotaExceeded(
                f"device {self.device}: {held} of your calls are in flight already (at most {self.per_caller}); wait for their replies",
                details={"device": self.device, "op": op, "in_flight": held, "max_in_flight": self.per_caller},
            )
        if len(self._pending) >= self.per_device:
            raise DeviceBusy(
                f"device {self.device}: {len(self._pending)} calls are in flight (at most {self.per_device}); retry shortly",
                details={"device": self.device, "op": op, "in_flight": len(self._pending), "max_in_flight": self.per_device},
            )

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, call_id: int, pending: Pending) -> None:
        """Book an admitted call (:meth:`admit` first)."""
        self._pending[call_id] = pending
        if pending.principal is not None:
            self._by_caller[pending.principal] = self._by_caller.get(pending.principal, 0) + 1

    def get(self, call_id: Any) -> Pending | None:
        return self._pending.get(call_id)

    def settle(self, call_id: Any) -> Pending | None:
        """Take a call out of the books and cancel its timer (``None``: answered or timed out)."""
        pending = self._pending.pop(call_id, None)
        if pending is None:
            return None
        pending.timer.cancel()
        principal = pending.principal
        if principal is not None:
            left = self._by_caller.get(principal, 1) - 1
            if left > 0:
                self._by_caller[principal] = left
            else:
                del self._by_caller[principal]
        return pending

    def fail(self, call_id: Any, error: CloveError) -> bool:
        """Answer a call with ``error``; False if it was answered already."""
        pending = self.settle(call_id)
        if pending is None:
            return False
        pending.deferred.reject(error)
        return True
