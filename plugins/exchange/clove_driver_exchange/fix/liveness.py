"""The liveness timers of a FIX connection: a Heartbeat after HeartBtInt seconds of sending
nothing; a TestRequest after :data:`TEST_REQUEST_AFTER` x HeartBtInt of hearing nothing; the
connection is dead if that goes unanswered for another HeartBtInt.

:class:`Liveness` only keeps the clocks and says what is due; the
:class:`~clove_driver_exchange.fix.session.FixSession` sends and closes (under its lock).
"""

from __future__ import annotations

import itertools
from typing import Final

__all__ = ["TEST_REQUEST_AFTER", "Liveness"]

#: Silence, in heartbeat intervals, after which a TestRequest goes out.
TEST_REQUEST_AFTER: Final = 1.2


class Liveness:
    """When we last sent and heard something, and the TestRequest out, if any."""

    def __init__(self, now: float) -> None:
        self.last_sent = self.last_received = now
        self.test_req_id: str | None = None
        self.test_req_at = 0.0
        self._test_ids = itertools.count(1)  # TEST-1, TEST-2, ... for the session's whole life

    def restart(self, now: float) -> None:
        """A new connection: both clocks start now."""
        self.last_sent = self.last_received = now

    def forget_test_request(self) -> None:
        self.test_req_id = None

    def sent(self, now: float) -> None:
        self.last_sent = now

    def heard(self, now: float) -> None:
        """Anything received answers the TestRequest out."""
        self.last_received = now
        self.test_req_id = None

    def unanswered(self, now: float, heartbeat_s: float) -> str | None:
        """The TestRequest out that went unanswered for a HeartBtInt (the connection is dead)."""
        if self.test_req_id is not None and now - self.test_req_at >= heartbeat_s:
            return self.test_req_id
        return None

    def test_request_due(self, now: float, heartbeat_s: float) -> str | None:
        """The TestReqID to send now after a long silence (counted as sent), or ``None``."""
        if self.test_req_id is not None or now - self.last_received < heartbeat_s * TEST_REQUEST_AFTER:
            return None
        self.test_req_id = f"TEST-{next(self._test_ids)}"
        self.test_req_at = now
        return self.test_req_id

    def heartbeat_due(self, now: float, heartbeat_s: float) -> bool:
        return now - self.last_sent >= heartbeat_s
