"""A blocking read parked on the loop: the Deferred of a ``recv_messages``/``poll_events`` with
a timeout, answered as soon as items arrive or with nothing when the timeout fires."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.core.loop import Loop, Timer


class WaitSlot:
    """At most one parked read per queue owner; a newer one answers the older empty."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: tuple[Deferred, int, Timer] | None = None

    @property
    def parked(self) -> bool:
        return self._pending is not None

    def park(self, loop: Loop, deferred: Deferred, limit: int, timeout: float) -> None:
        self.cancel()
        timer = loop.call_later(timeout, lambda: self._expire(deferred))
        self._pending = (deferred, limit, timer)

    def answer(self, take: Callable[[int], list[Any]]) -> None:
        """Resolve the parked read with ``take(limit)`` (no-op when nothing is parked)."""
        if self._pending is None:
            return
        deferred, limit, timer = self._pending
        self._pending = None
        timer.cancel()
        deferred.resolve(take(limit))

    def cancel(self) -> None:
        """Answer the parked read with nothing (its owner is gone, or a newer read came)."""
        if self._pending is not None:
            deferred, _, timer = self._pending
            self._pending = None
            timer.cancel()
            deferred.resolve([])

    def _expire(self, deferred: Deferred) -> None:
        if self._pending is not None and self._pending[0] is deferred:
            self._pending = None
        deferred.resolve([])
