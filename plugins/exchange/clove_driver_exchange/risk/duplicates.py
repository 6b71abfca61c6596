"""Duplicate detection: the same agent sending the same symbol, side, type, quantity and price
again within a window (``duplicate_window_s``) is denied as ``duplicate_order``."""

from __future__ import annotations

from clove_driver_exchange.risk.limits import deny, fmt
from clove_driver_exchange.risk.orders import Order

_DupKey = tuple[str, str, str, str, float, float | None]


def _dup_key(order: Order) -> _DupKey:
    return (order.agent, order.symbol, order.side, order.type, float(order.qty), order.price)


class DuplicateWindow:
    """When each order was last accepted, kept as long as the longest window seen needs it."""

    def __init__(self) -> None:
        self._recent: dict[_DupKey, float] = {}
        self._horizon = 0.0
        self._prune_at = 256

    def widen(self, window_s: float) -> None:
        """Keep accepted orders at least ``window_s`` seconds."""
        self._horizon = max(self._horizon, window_s)

    def check(self, order: Order, window_s: float, now: float) -> None:
        """Deny ``order`` if the same one was accepted less than ``window_s`` ago (``0``: never).

        :raises RiskDenied: ``duplicate_order``.
        """
        self.widen(window_s)
        last = self._recent.get(_dup_key(order))
        if window_s > 0 and last is not None and now - last < window_s:
            at = "market" if order.price is None else fmt(order.price)
            raise deny(
                "duplicate_order",
                f"the same {order.side} of {fmt(float(order.qty))} {order.symbol} at {at} was sent "
                f"{now - last:.3g} s ago (window {fmt(window_s)} s)",
                window_s=window_s,
                age_s=now - last,
            )

    def record(self, order: Order, now: float) -> None:
        """``order`` was accepted at ``now``."""
        self._recent[_dup_key(order)] = now
        if len(self._recent) > self._prune_at:
            self._recent = {k: t for k, t in self._recent.items() if now - t < self._horizon}
            self._prune_at = max(256, 2 * len(self._recent))
