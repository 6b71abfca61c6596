"""Orders as the risk engine sees them: an :class:`Order` an agent asks for, and an
:class:`OpenOrder` the engine counts until it is done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clove.drivers.schema import invalid
from clove_driver_exchange.risk.limits import is_number

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market")


@dataclass(frozen=True, slots=True)
class Order:
    """A new order as the agent asked for it. Not validated here: :meth:`RiskEngine.check_new`
    denies a malformed one with ``bad_order``.

    :param side: ``"buy"`` or ``"sell"``.
    :param price: the limit price; ``None`` for a market order.
    :param type: ``"limit"`` or ``"market"``.
    :param tif: time in force (``"day"``, ``"gtc"``, ``"ioc"``, ``"fok"``); not checked here.
    """

    client_id: str
    agent: str
    symbol: str
    side: str
    qty: float
    price: float | None = None
    type: str = "limit"
    tif: str = "day"


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An order the engine counts as open: sent, not yet done. ``remaining`` shrinks with fills."""

    client_id: str
    agent: str
    symbol: str
    side: str
    qty: float
    price: float | None
    type: str
    tif: str
    remaining: float
    acked: bool = False
    venue_order_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "agent": self.agent,
            "symbol": self.symbol,
            "side": self.side,
            "qty": self.qty,
            "price": self.price,
            "type": self.type,
            "tif": self.tif,
            "remaining": self.remaining,
            "acked": self.acked,
            "venue_order_id": self.venue_order_id,
        }

    @classmethod
    def from_dict(cls, data: Any, *, key: str = "open_orders") -> OpenOrder:
        """The inverse of :meth:`to_dict`, checked (a snapshot may come from a damaged file).

        :raises clove.drivers.schema.FieldError: naming the bad entry.
        """
        if not isinstance(data, dict):
            raise invalid(key, f"expected a table, got {type(data).__name__}")
        for name in ("client_id", "agent", "symbol"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise invalid(f"{key}.{name}", f"expected a non-empty string, got {data.get(name)!r}")
        if data.get("side") not in SIDES:
            raise invalid(f"{key}.side", f"expected 'buy' or 'sell', got {data.get('side')!r}")
        if data.get("type") not in ORDER_TYPES:
            raise invalid(f"{key}.type", f"expected 'limit' or 'market', got {data.get('type')!r}")
        qty: Any = data.get("qty")
        remaining: Any = data.get("remaining")
        price: Any = data.get("price")
        if not (is_number(qty) and qty > 0):
            raise invalid(f"{key}.qty", f"expected a number > 0, got {qty!r}")
        if not (is_number(remaining) and 0 < remaining <= qty):
            raise invalid(f"{key}.remaining", f"expected a number in (0, qty], got {remaining!r}")
        if price is not None and not (is_number(price) and price > 0):
            raise invalid(f"{key}.price", f"expected a number > 0 or null, got {price!r}")
        venue_id = data.get("venue_order_id")
        if venue_id is not None and not isinstance(venue_id, str):
            raise invalid(f"{key}.venue_order_id", f"expected a string or null, got {venue_id!r}")
        return cls(
            client_id=data["client_id"],
            agent=data["agent"],
            symbol=data["symbol"],
            side=data["side"],
            qty=float(qty),
            price=None if price is None else float(price),
            type=data["type"],
            tif=str(data.get("tif", "day")),
            remaining=float(remaining),
            acked=bool(data.get("acked", False)),
            venue_order_id=venue_id,
        )
