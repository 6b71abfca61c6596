"""What one agent may do on one CAN bus (``[agents.A.devices.D]``), checked in the kernel.

Ids are granted as ranges (``send_ids = ["0x100-0x10F"]``); an empty list grants nothing (grants
fail closed). A granted id covers both the 11-bit and the 29-bit frame with that number. Runs
for every frame of every subscriber, so the ranges are parsed once, at config load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clove.drivers import DeviceGrant, IdRanges, deny, invalid
from clove_driver_can.frames import MAX_EXT_ID

__all__ = ["CanGrant"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CanGrant(DeviceGrant):
    """A CAN grant.

    :param send_ids: ids the agent may send (``"0x100-0x10F"``, ``"0x7DF"``, ``"256"``).
    :param recv_ids: ids of the frames the agent receives; others never reach it.
    :param max_send_rate_hz: frames per second the agent may send (``None``: unlimited).
    :param recv_error_frames: also deliver error frames (bus errors concern the whole bus).
    """

    send_ids: tuple[str, ...] = ()
    recv_ids: tuple[str, ...] = ()
    max_send_rate_hz: float | None = None
    recv_error_frames: bool = False
    # Parsed once in __post_init__; not config keys (schema.build passes init fields only).
    _send: IdRanges = field(init=False, repr=False, compare=False)
    _recv: IdRanges = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Explicit base call: zero-argument super() breaks in slotted dataclasses before 3.14.
        DeviceGrant.__post_init__(self)
        if self.max_send_rate_hz is not None and not self.max_send_rate_hz > 0:
            raise invalid("max_send_rate_hz", f"must be positive, got {self.max_send_rate_hz!r}")
        object.__setattr__(self, "_send", IdRanges(self.send_ids, key="send_ids", maximum=MAX_EXT_ID))
        object.__setattr__(self, "_recv", IdRanges(self.recv_ids, key="recv_ids", maximum=MAX_EXT_ID))

    def check(self, op: str, args: Any) -> None:
        """Refuse a ``send`` whose id is outside ``send_ids``."""
        if op == "send" and args.id not in self._send:
            granted = list(self.send_ids)
            raise deny(
                f"CAN id 0x{args.id:X} is outside this agent's send_ids [{', '.join(granted)}]",
                can_id=args.id,
                granted=granted,
            )

    def admits(self, item: Any) -> bool:
        """Error frames only with ``recv_error_frames``; other frames when their id is in
        ``recv_ids``."""
        if item.get("err"):
            return self.recv_error_frames
        return item.get("id") in self._recv

    def stream_scope(self) -> tuple[tuple[int, int], ...]:
        """The ``recv_ids`` ranges as ``(low, high)`` pairs: what the host's receive filter must
        let through for this grant (error frames are never id-filtered)."""
        return self._recv.spans()

    def rates(self) -> dict[str, float]:
        """The base ``calls`` bucket, plus a ``send`` bucket at ``max_send_rate_hz``."""
        buckets = DeviceGrant.rates(self)
        if self.max_send_rate_hz is not None:
            buckets["send"] = self.max_send_rate_hz
        return buckets

    def cost(self, op: str, args: Any) -> dict[str, float]:
        """One token from ``send`` per frame sent, on top of the base ``calls`` cost."""
        costs = DeviceGrant.cost(self, op, args)
        if op == "send" and self.max_send_rate_hz is not None:
            costs["send"] = 1.0
        return costs
