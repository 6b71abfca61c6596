"""Inbound sequence gaps: the messages a :class:`~clove_driver_exchange.fix.session.FixSession`
holds because they arrived beyond a gap, and the one ResendRequest it has out to fill it.

:class:`InboundGaps` only keeps the books; the session decides what to do with a message, sends
the requests and moves its expected sequence number (all under its lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from clove_driver_exchange.fix.codec import Message

__all__ = ["InboundGaps"]

#: Seconds (at least; else one HeartBtInt) a ResendRequest may go unanswered before it is re-sent.
RESEND_STALL: Final = 2.0


class InboundGaps:
    """Held inbound messages by sequence number (``None``: already handled, only the number is
    to be consumed) and the ResendRequest out, if any (``resend_upto``: the last number it asked
    for, 0 when none is out).

    One request at a time: messages arriving meanwhile are held, and a later gap is asked for
    once this one is filled.
    """

    def __init__(self) -> None:
        self.held: dict[int, Message | None] = {}
        self.resend_upto = 0
        self.resend_sent_at = 0.0

    def reset(self) -> None:
        """Forget the held messages and the request out (a new or lost connection)."""
        self.held.clear()
        self.resend_upto = 0

    def hold(self, seq: int, msg: Message | None) -> None:
        self.held[seq] = msg

    def next_request(self, expected: int, clock: Callable[[], float]) -> tuple[int, int] | None:
        """The range to ask for, from ``expected`` up to the first held message, or ``None``
        (nothing held, a request already covers ``expected``, or there is no gap). A returned
        range counts as sent."""
        if not self.held or (self.resend_upto and expected <= self.resend_upto):
            return None
        upto = min(self.held) - 1
        if upto < expected:
            return None
        self.resend_upto = upto
        self.resend_sent_at = clock()
        return expected, upto

    def take(self, expected: int) -> tuple[bool, Message | None]:
        """Drop what is held below ``expected``; then ``(True, message)`` if ``expected`` was
        held (the message is ``None`` when only its number is to be consumed), else
        ``(False, None)``."""
        held = self.held
        for seq in [s for s in held if s < expected]:
            del held[seq]
        if expected not in held:
            return False, None
        return True, held.pop(expected)

    def filled(self, expected: int) -> None:
        """The request out is answered once ``expected`` is past what it asked for."""
        if self.resend_upto and expected > self.resend_upto:
            self.resend_upto = 0

    def stalled(self, now: float, heartbeat_s: float) -> bool:
        """Whether messages are still held long after the last request (then it is forgotten,
        so :meth:`next_request` asks again)."""
        if self.held and now - self.resend_sent_at >= max(RESEND_STALL, heartbeat_s):
            self.resend_upto = 0
            return True
        return False

