"""Rate limits of the risk engine: token buckets of new orders and cancels, one per agent (its
limits' rates) and one per venue session (the global limits' rates, shared by all agents)."""

from __future__ import annotations

from collections.abc import Callable

from clove.drivers.grants import TokenBucket
from clove_driver_exchange.risk.limits import Limits, deny, fmt


class Throttles:
    """The order and cancel buckets. A bucket of rate ``r`` holds ``max(1, r)`` tokens; a check
    takes one token from the agent's bucket and one from the venue's, or none at all."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._order_buckets: dict[str, TokenBucket] = {}
        self._cancel_buckets: dict[str, TokenBucket] = {}
        self._venue_orders: TokenBucket | None = None
        self._venue_cancels: TokenBucket | None = None

    def set_venue_rates(self, limits: Limits) -> None:
        """Take the venue rates of the global ``limits``: a bucket whose rate is unchanged keeps
        its tokens; a changed one starts full."""
        self._venue_orders = self._rebucket(self._venue_orders, limits.order_rate_per_s)
        self._venue_cancels = self._rebucket(self._venue_cancels, limits.cancel_rate_per_s)

    def take_order(self, agent: str, agent_limits: Limits | None) -> None:
        """Take a new order's tokens.

        :raises RiskDenied: ``order_rate`` or ``venue_order_rate`` (no token taken).
        """
        mine = self._agent_bucket(
            self._order_buckets, agent, agent_limits.order_rate_per_s if agent_limits is not None else None
        )
        self._take(mine, self._venue_orders, "order_rate", "venue_order_rate", "orders")

    def take_cancel(self, agent: str, agent_limits: Limits | None) -> None:
        """Take a cancel's tokens.

        :raises RiskDenied: ``cancel_rate`` or ``venue_cancel_rate`` (no token taken).
        """
        mine = self._agent_bucket(
            self._cancel_buckets, agent, agent_limits.cancel_rate_per_s if agent_limits is not None else None
        )
        self._take(mine, self._venue_cancels, "cancel_rate", "venue_cancel_rate", "cancels")

    def _rebucket(self, bucket: TokenBucket | None, rate: float | None) -> TokenBucket | None:
        if rate is None:
            return None
        if bucket is not None and bucket.rate == rate:
            return bucket
        return TokenBucket(rate, max(1.0, rate), clock=self._clock)

    def _agent_bucket(
        self, buckets: dict[str, TokenBucket], agent: str, rate: float | None
    ) -> TokenBucket | None:
        bucket = self._rebucket(buckets.get(agent), rate)
        if bucket is None:
            buckets.pop(agent, None)
        else:
            buckets[agent] = bucket
        return bucket

    def _take(
        self, mine: TokenBucket | None, venue: TokenBucket | None, reason: str, venue_reason: str, what: str
    ) -> None:
        if mine is not None and mine.available() < 1.0:
            raise deny(
                reason,
                f"more than {fmt(mine.rate)} {what} per second for this agent; "
                f"retry in {mine.retry_after(1.0):.3g} s",
                scope="agent",
                limit=mine.rate,
                retry_after_s=mine.retry_after(1.0),
            )
        if venue is not None and venue.available() < 1.0:
            raise deny(
                venue_reason,
                f"more than {fmt(venue.rate)} {what} per second for the venue session "
                "(shared by all agents); "
                f"retry in {venue.retry_after(1.0):.3g} s",
                scope="global",
                limit=venue.rate,
                retry_after_s=venue.retry_after(1.0),
            )
        if mine is not None:
            mine.take(1.0)
        if venue is not None:
            venue.take(1.0)
