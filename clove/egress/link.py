"""The proxy's line to the kernel for what goes back: a DEALER on the kernel's ROUTER carrying
connection records, ``ready`` and heartbeats, in batches (orders come on the control socket,
with fds).

Records are never dropped silently. Each connection reserves its record's place when it is
admitted (:meth:`Link.reserve`); when ``bound`` records are unsent or reserved (the kernel is
not reading), new connections are refused with 503 ``backlog`` and only counted, and that count
goes to the kernel as one ``overflow`` message as soon as there is room again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import msgpack
import zmq
import zmq.asyncio

__all__ = ["Link"]

log = logging.getLogger(__name__)

#: How long the sender gathers messages into one batch, and the most in one.
BATCH_S = 0.005
BATCH_MAX = 256


class Link:
    def __init__(self, endpoint: str, identity: bytes, bound: int) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(endpoint)
        self.bound = bound
        self.reserved = 0
        self.overflow = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()

    def reserve(self) -> bool:
        """Room for one more connection's record? If not, the refusal is counted."""
        if self.reserved + len(self._pending) >= self.bound:
            self.overflow += 1
            self._wake.set()
            return False
        self.reserved += 1
        return True

    def record(self, record: dict[str, Any], *, reserved: bool = True) -> None:
        """Queue a connection's record (its place was reserved, so this never fails)."""
        if reserved:
            self.reserved -= 1
        self._pending.append(record)
        self._wake.set()

    def send(self, message: dict[str, Any]) -> None:
        """A control message (ready, bound, heartbeat): not counted against the bound (there
        are few)."""
        self._pending.append(message)
        self._wake.set()

    async def sender(self) -> None:
        """Send everything queued, in order, in batches; an ``overflow`` count once it can go.

        A batch is what arrived within :data:`BATCH_S` of the first (at most :data:`BATCH_MAX`),
        as one message: the kernel's loop wakes once per batch, not once per connection.
        """
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_S)
            self._wake.clear()
            while self._pending or self.overflow:
                if self.overflow and len(self._pending) + self.reserved < self.bound:
                    count, self.overflow = self.overflow, 0
                    self._pending.append({"t": "overflow", "count": count})
                if not self._pending:
                    break
                await self.sock.send(self._batch())

    def _batch(self) -> bytes:
        batch = [self._pending.popleft() for _ in range(min(BATCH_MAX, len(self._pending)))]
        return bytes(msgpack.packb(batch, use_bin_type=True))

    async def flush(self, timeout: float) -> None:
        """At exit: give queued records ``timeout`` seconds to leave."""

        async def drain() -> None:
            while self._pending:
                await self.sock.send(self._batch())

        try:
            await asyncio.wait_for(drain(), timeout)
        except asyncio.TimeoutError:
            log.warning("egress: %d records unsent at exit", len(self._pending))

    def close(self) -> None:
        self.sock.close(linger=1000)
        self.ctx.term()
