"""A principal's mailbox and the messages in it, each kept msgpack-encoded (the bytes counted
are the bytes held): see :mod:`clove.kernel.services.messaging`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack

from clove import wire
from clove.kernel.core.waiting import WaitSlot

__all__ = ["Mailbox", "Message"]


@dataclass(slots=True)
class Message:
    from_id: int
    from_name: str | None
    payload: bytes | memoryview  # the message, msgpack-encoded (as its sender encoded it, if it could)
    at: float

    @property
    def size(self) -> int:
        return len(self.payload)

    def to_wire(self, now: float) -> dict[str, Any]:
        """The message as a receive returns it, decoded."""
        return {
            "from_id": self.from_id,
            "from_name": self.from_name,
            "message": msgpack.unpackb(self.payload, raw=False),
            "age_ms": max(0, round((now - self.at) * 1000, 3)),
        }

    def packed(self, now: float) -> dict[str, Any]:
        """:meth:`to_wire` with the message left encoded, for a reply that splices it in."""
        return {
            "from_id": self.from_id,
            "from_name": self.from_name,
            "message": wire.Packed(self.payload),
            "age_ms": max(0, round((now - self.at) * 1000, 3)),
        }


@dataclass(eq=False)
class Mailbox:
    queue: deque[Message] = field(default_factory=deque)
    bytes: int = 0
    wait: WaitSlot = field(default_factory=WaitSlot)

    def take(self, limit: int) -> list[Message]:
        out: list[Message] = []
        while self.queue and len(out) < limit:
            msg = self.queue.popleft()
            self.bytes -= msg.size
            out.append(msg)
        return out
