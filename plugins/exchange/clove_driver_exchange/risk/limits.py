"""Risk limits: :class:`Limits`, the engine's global (account-wide) limits or one agent's, read
from a TOML table; and how the checks measure a value against a limit (*Tolerance* in
:mod:`clove_driver_exchange.risk`) and report a denial (:data:`REASONS`, :func:`deny`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clove.drivers.schema import build, invalid
from clove.errors import RiskDenied

#: Every reason code a denial can carry. Stable: clients may match on them.
REASONS: tuple[str, ...] = (
    "bad_order",
    "state_halted",
    "state_reducing",
    "restricted_symbol",
    "unknown_instrument",
    "max_order_qty",
    "max_notional",
    "price_collar",
    "no_reference_price",
    "max_position",
    "max_gross_exposure",
    "max_open_orders",
    "duplicate_order",
    "order_rate",
    "venue_order_rate",
    "unknown_order",
    "cancel_rate",
    "venue_cancel_rate",
    "check_failed",
)
_REASON_SET = frozenset(REASONS)

#: The relative tolerance of :func:`exceeds` (and of a position counted as flat).
REL_EPS = 1e-9


def exceeds(value: float, limit: float) -> bool:
    """``value > limit``, forgiving float noise (see *Tolerance* in :mod:`clove_driver_exchange.risk`)."""
    return value > limit + REL_EPS * max(1.0, abs(limit))


def fmt(x: float) -> str:
    """A number for a message: ``1200`` rather than ``1200.0``, no float noise."""
    return f"{x:.10g}"


def is_number(x: object) -> bool:
    """Whether ``x`` is a finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# RiskDenied lives in clove.errors (a core code, so every client rebuilds it from a reply).


def deny(reason: str, message: str, **details: Any) -> RiskDenied:
    """A denial for ``reason`` (one of :data:`REASONS`); the message starts with the reason."""
    assert reason in _REASON_SET, reason
    return RiskDenied(f"{reason}: {message}", reason=reason, details=details)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Risk limits: the engine's global (account-wide) limits, or one agent's.

    :param max_order_qty: largest quantity of one order.
    :param max_notional: largest ``qty × price`` of one order (a market order is valued at the
        reference price; without a fresh one it is denied).
    :param price_collar_pct: a limit price more than this many percent away from the reference
        price is denied (``10`` admits 90..110 around 100).
    :param max_position: largest absolute net position per symbol, worst case (open orders on
        the order's side counted as filled).
    :param max_gross_exposure: largest ``sum(|worst-case position| × reference price)``.
    :param max_open_orders: largest number of open orders.
    :param order_rate_per_s: new orders per second (burst ``max(1, rate)``).
    :param cancel_rate_per_s: cancels per second (burst ``max(1, rate)``).
    :param restricted_symbols: symbols that may not be traded.
    :param allowed_symbols: the only symbols that may be traded (``None``: any known instrument).
    :param duplicate_window_s: the same agent sending the same symbol, side, type, quantity and
        price again within this many seconds is a duplicate (``0``: no detection).
    """

    max_order_qty: float | None = None
    max_notional: float | None = None
    price_collar_pct: float | None = None
    max_position: float | None = None
    max_gross_exposure: float | None = None
    max_open_orders: int | None = None
    order_rate_per_s: float | None = None
    cancel_rate_per_s: float | None = None
    restricted_symbols: tuple[str, ...] = ()
    allowed_symbols: tuple[str, ...] | None = None
    duplicate_window_s: float = 1.0

    def __post_init__(self) -> None:
        for key in (
            "max_order_qty",
            "max_notional",
            "price_collar_pct",
            "max_position",
            "max_gross_exposure",
        ):
            value = getattr(self, key)
            if value is not None and not (is_number(value) and value >= 0):
                raise invalid(key, f"must be a finite number >= 0, got {value!r}")
        if self.max_open_orders is not None and not (
            isinstance(self.max_open_orders, int)
            and not isinstance(self.max_open_orders, bool)
            and self.max_open_orders >= 0
        ):
            raise invalid("max_open_orders", f"must be an int >= 0, got {self.max_open_orders!r}")
        for key in ("order_rate_per_s", "cancel_rate_per_s"):
            value = getattr(self, key)
            if value is not None and not (is_number(value) and value > 0):
                raise invalid(key, f"must be a finite number > 0, got {value!r}")
        if not (is_number(self.duplicate_window_s) and self.duplicate_window_s >= 0):
            raise invalid(
                "duplicate_window_s", f"must be a finite number >= 0, got {self.duplicate_window_s!r}"
            )
        for key in ("restricted_symbols", "allowed_symbols"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, (tuple, list)):
                raise invalid(key, f"expected an array of symbols, got {value!r}")
            for i, sym in enumerate(value):
                if not isinstance(sym, str) or not sym.strip():
                    raise invalid(f"{key}[{i}]", f"expected a non-empty symbol, got {sym!r}")
            object.__setattr__(self, key, tuple(value))

    @classmethod
    def from_table(cls, data: Mapping[str, Any]) -> Limits:
        """Limits from a TOML table (``[devices.exchange.risk]``, an agent's risk table).

        :raises clove.drivers.schema.FieldError: an unknown, mistyped or out-of-range key.
        """
        return build(cls, dict(data))
