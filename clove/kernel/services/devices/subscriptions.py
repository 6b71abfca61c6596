"""One principal's subscription to one device's stream: a bounded queue with counted drops,
filled through the principal's grant and its own filters, and at most one parked read.

When the queue is full the oldest data goes, so a slow subscriber costs bounded memory and
still sees the newest frames; ``dropped`` says how much it lost. "Full" is the queue's ``limit``
(items, or bytes for a byte stream) or, for items, ``max_bytes`` of their encoded size (each
item counts its share of the host message it came in: the subscriber's
``[limits].device_queue_bytes``). An item addressed to one agent
(a ``"to"`` key: an execution report for its own order) reaches that agent (and operators) only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clove.drivers.grants import DeviceGrant
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.core.loop import Loop, Timer


@dataclass(frozen=True, slots=True)
class ReadWant:
    """What a read asks for: at most ``max_items`` items, or ``max_bytes`` bytes ending at the
    first ``until`` terminator when one is given."""

    max_items: int = 100
    max_bytes: int = 4096
    until: bytes | None = None


class Subscription:
    __slots__ = ("principal_id", "owner", "grant", "admits", "wants", "kind", "limit", "max_bytes", "items", "sizes", "bytes",
                 "buf", "dropped", "delivered", "_parked")  # fmt: skip

    def __init__(
        self,
        principal_id: int,
        *,
        kind: str,
        limit: int,
        grant: DeviceGrant | None,
        wants: Callable[[Any], bool] | None,
        owner: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.principal_id = principal_id
        self.owner = owner  # the agent's name; None: an operator, who sees every item
        self.kind = kind  # "items" or "bytes"
        self.limit = limit
        self.max_bytes = max_bytes  # items: bound on their encoded bytes (None: count only)
        self.grant = grant  # None: an operator (everything); its stream_scope narrows the host
        self.admits = grant.admits if grant is not None else None
        self.wants = wants
        self.items: deque[Any] = deque()
        self.sizes: deque[int] = deque()  # each queued item's encoded bytes, beside ``items``
        self.bytes = 0
        self.buf = bytearray()
        self.dropped = 0
        self.delivered = 0
        self._parked: tuple[Deferred, ReadWant, Timer] | None = None

    # ---- filling ------------------------------------------------------------------------------

    def offer_items(self, items: list[Any], item_bytes: int = 0) -> None:
        """Queue what passes the grant and filters; ``item_bytes``: each item's encoded size."""
        admits, wants, queue, sizes, owner = self.admits, self.wants, self.items, self.sizes, self.owner
        added = 0
        for item in items:
            if owner is not None and item.get("to", owner) != owner:
                continue
            if (admits is None or admits(item)) and (wants is None or wants(item)):
                queue.append(item)
                sizes.append(item_bytes)
                added += 1
        self.bytes += added * item_bytes
        self._trim()
        if self._parked is not None and queue:
            self._answer()

    def _trim(self) -> None:
        """Drop the oldest items (counted) until the queue is within its count and bytes."""
        queue, sizes = self.items, self.sizes
        excess = len(queue) - self.limit
        if excess > 0:
            self.dropped += excess
            for _ in range(excess):
                queue.popleft()
                self.bytes -= sizes.popleft()
        if self.max_bytes is not None:
            while queue and self.bytes > self.max_bytes:
                queue.popleft()
                self.bytes -= sizes.popleft()
                self.dropped += 1

    def adopt(self, old: Subscription) -> None:
        """Take over ``old``'s queue and counts (a re-subscribe with new filters or bounds)."""
        self.items, self.sizes, self.bytes, self.buf = old.items, old.sizes, old.bytes, old.buf
        self.dropped, self.delivered = old.dropped, old.delivered
        self._trim()
        if self.kind == "bytes" and len(self.buf) > self.limit:
            excess = len(self.buf) - self.limit
            del self.buf[:excess]
            self.dropped += excess

    def offer_bytes(self, data: bytes) -> None:
        self.buf += data
        excess = len(self.buf) - self.limit
        if excess > 0:
            del self.buf[:excess]
            self.dropped += excess
        if self._parked is not None and self._ready(self._parked[1]):
            self._answer()

    # ---- taking -------------------------------------------------------------------------------

    def _ready(self, want: ReadWant) -> bool:
        if self.kind == "items":
            return bool(self.items)
        if want.until is None:
            return bool(self.buf)
        return want.until in self.buf or len(self.buf) >= want.max_bytes

    def take(self, want: ReadWant) -> dict[str, Any]:
        """A ``device.recv`` reply with what is queued now (possibly nothing)."""
        if self.kind == "items":
            n = min(want.max_items, len(self.items))
            out = [self.items.popleft() for _ in range(n)]
            sizes = self.sizes
            self.bytes -= sum(sizes.popleft() for _ in range(n))
            self.delivered += n
            return {"success": True, "items": out, "count": n, "dropped": self.dropped}
        size = min(want.max_bytes, len(self.buf))
        if want.until is not None:
            at = self.buf.find(want.until, 0, size)
            if at >= 0:
                size = at + len(want.until)
        data = bytes(self.buf[:size])
        del self.buf[:size]
        self.delivered += size
        return {"success": True, "data": data, "count": size, "dropped": self.dropped}

    def read(self, loop: Loop, want: ReadWant, timeout: float | None, deferred: Deferred) -> None:
        """Answer ``deferred`` now if data is ready or ``timeout`` is 0/None, else park it
        until data comes or the timeout passes (then with whatever is queued). A newer read
        answers an older parked one first."""
        self.cancel()
        if self._ready(want) or not timeout or timeout <= 0:
            deferred.resolve(self.take(want))
            return
        timer = loop.call_later(timeout, lambda: self._expire(deferred))
        self._parked = (deferred, want, timer)

    def _answer(self) -> None:
        assert self._parked is not None  # noqa: S101
        deferred, want, timer = self._parked
        self._parked = None
        timer.cancel()
        deferred.resolve(self.take(want))

    def _expire(self, deferred: Deferred) -> None:
        if self._parked is not None and self._parked[0] is deferred:
            want = self._parked[1]
            self._parked = None
            deferred.resolve(self.take(want))

    def cancel(self) -> None:
        """Answer a parked read with whatever is queued (its owner left, or a newer read came)."""
        if self._parked is not None:
            self._answer()

    def queued(self) -> int:
        return len(self.items) if self.kind == "items" else len(self.buf)

    def held_bytes(self) -> int:
        """Bytes held for the subscriber: its items' encoded size, or its byte buffer."""
        return self.bytes if self.kind == "items" else len(self.buf)
