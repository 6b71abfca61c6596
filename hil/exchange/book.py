"""A price-time priority limit order book, one per symbol: the matching engine of the simulated
venue. It knows nothing of FIX or sessions, so its rules can be tested on their own.

Rules, as on a typical continuous-trading venue:

* An incoming order trades against the best opposite price first and, within a price, against
  the order that rested first. Each trade is at the resting order's price.
* A limit order trades while the opposite side is at or better than its price; what remains
  rests (``day`` and ``gtc`` alike: the simulation has no session end), except for ``ioc``,
  whose remainder expires. A market order trades at any price; its remainder expires.
* ``fok`` fills completely at once or not at all (it expires untouched).
* There is no self-trade prevention: an owner's order may trade with its own resting order.

Prices are kept as integer ticks internally so that levels compare exactly; a price that is
not a multiple of the tick is refused. Quantities may be fractional.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["EPSILON", "BookError", "Execution", "Order", "OrderBook", "SubmitResult", "Trade"]

Side = Literal["buy", "sell"]
OrdType = Literal["market", "limit"]
TimeInForce = Literal["day", "gtc", "ioc", "fok"]
OrdStatus = Literal["new", "partially_filled", "filled", "canceled", "rejected", "expired"]

#: Quantities closer than this are equal (fractional quantities are floats).
EPSILON: Final = 1e-9


class BookError(ValueError):
    """An order the book cannot take (bad price, quantity or side)."""


@dataclass(eq=False)
class Order:
    """An order and its state; the book updates ``cum_qty``, ``notional`` and ``status``."""

    order_id: str
    cl_ord_id: str
    owner: str
    symbol: str
    side: Side
    qty: float
    ord_type: OrdType = "limit"
    price: float | None = None
    tif: TimeInForce = "day"
    account: str | None = None
    cum_qty: float = 0.0
    notional: float = 0.0  #: sum of price x quantity over the fills (for the average price)
    status: OrdStatus = "new"
    created: float = field(default_factory=time.time)
    seq: int = 0  #: time priority, assigned by the book

    @property
    def is_open(self) -> bool:
        return self.status in ("new", "partially_filled")

    @property
    def leaves_qty(self) -> float:
        """What may still trade (0 once the order is done)."""
        return max(0.0, self.qty - self.cum_qty) if self.is_open else 0.0

    @property
    def avg_px(self) -> float:
        return self.notional / self.cum_qty if self.cum_qty > EPSILON else 0.0


@dataclass(frozen=True, slots=True)
class Trade:
    """One match between an incoming (aggressor) and a resting order."""

    match_id: int
    symbol: str
    price: float
    qty: float
    aggressor: Order
    resting: Order
    time: float


@dataclass(frozen=True, slots=True)
class Execution:
    """One order's part in a trade, with the order's state right after it (for its report)."""

    trade: Trade
    order: Order
    cum_qty: float
    leaves_qty: float
    avg_px: float
    status: OrdStatus

    @property
    def price(self) -> float:
        return self.trade.price

    @property
    def qty(self) -> float:
        return self.trade.qty


@dataclass
class SubmitResult:
    """What :meth:`OrderBook.submit` did: the executions in trade order (for each trade, the
    aggressor's first, then the resting order's), whether the order rested, and what expired."""

    order: Order
    executions: list[Execution] = field(default_factory=list)
    rested: bool = False
    expired_qty: float = 0.0


def _beyond(side: Side, ticks: int, limit_ticks: int | None) -> bool:
    """Whether a resting price is worse than an incoming order's limit (``None``: a market order)."""
    if limit_ticks is None:
        return False
    return ticks > limit_ticks if side == "buy" else ticks < limit_ticks


class _Side:
    """The resting orders of one side: price levels (FIFO each) in priority order."""

    def __init__(self, buy: bool) -> None:
        self.sign = -1 if buy else 1  # keys ascend in priority: bids by -ticks, asks by ticks
        self.keys: list[int] = []
        self.levels: dict[int, deque[Order]] = {}

    def add(self, ticks: int, order: Order) -> None:
        key = self.sign * ticks
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = deque()
            bisect.insort(self.keys, key)
        level.append(order)

    def remove(self, ticks: int, order: Order) -> bool:
        key = self.sign * ticks
        level = self.levels.get(key)
        if level is None:
            return False
        try:
            level.remove(order)
        except ValueError:
            return False
        if not level:
            self._drop(key)
        return True

    def _drop(self, key: int) -> None:
        del self.levels[key]
        del self.keys[bisect.bisect_left(self.keys, key)]

    def best(self) -> tuple[int, deque[Order]] | None:
        if not self.keys:
            return None
        key = self.keys[0]
        return self.sign * key, self.levels[key]

    def pop_front(self, ticks: int) -> None:
        key = self.sign * ticks
        level = self.levels[key]
        level.popleft()
        if not level:
            self._drop(key)

    def walk(self) -> Iterator[tuple[int, deque[Order]]]:
        for key in self.keys:
            yield self.sign * key, self.levels[key]


class OrderBook:
    """The book of one symbol.

    :param tick: the price increment; prices must be multiples of it.
    :param clock: seconds since the epoch, for trade times.
    """

    def __init__(self, symbol: str, tick: float = 0.01, clock: Callable[[], float] = time.time) -> None:
        if tick <= 0:
            raise ValueError(f"tick must be positive, got {tick!r}")
        self.symbol = symbol
        self.tick = tick
        self.clock = clock
        self.last_trade: Trade | None = None
        self._bids = _Side(buy=True)
        self._asks = _Side(buy=False)
        self._open: dict[str, Order] = {}
        self._by_cl_ord_id: dict[tuple[str, str], Order] = {}
        self._seq = itertools.count(1)
        self._match_ids = itertools.count(1)

    # ---- prices -------------------------------------------------------------------------------

    def to_ticks(self, price: float) -> int:
        """``price`` in ticks. :raises BookError: not a positive multiple of the tick."""
        ticks = round(price / self.tick)
        if ticks <= 0 or abs(ticks * self.tick - price) > self.tick * 1e-6:
            raise BookError(f"price {price!r} is not a positive multiple of the tick {self.tick:g}")
        return ticks

    def to_price(self, ticks: int) -> float:
        return round(ticks * self.tick, 10)

    def round_price(self, price: float) -> float:
        """The nearest valid price (at least one tick)."""
        return self.to_price(max(1, round(price / self.tick)))

    # ---- lookups ------------------------------------------------------------------------------

    def get(self, order_id: str) -> Order | None:
        """A resting order by OrderID."""
        return self._open.get(order_id)

    def by_cl_ord_id(self, owner: str, cl_ord_id: str) -> Order | None:
        """A resting order by its owner's ClOrdID."""
        return self._by_cl_ord_id.get((owner, cl_ord_id))

    def open_orders(self, owner: str | None = None) -> list[Order]:
        """Resting orders (of ``owner``), oldest first."""
        orders = [o for o in self._open.values() if owner is None or o.owner == owner]
        return sorted(orders, key=lambda o: o.seq)

    def best_bid(self) -> tuple[float, float] | None:
        """``(price, total quantity)`` of the best bid level."""
        return self._level_top(self._bids)

    def best_ask(self) -> tuple[float, float] | None:
        return self._level_top(self._asks)

    def depth(self, levels: int = 5) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best ``levels`` price levels each side (0: all): ``(bids, asks)`` of ``(price, qty)``."""
        def side(book: _Side) -> list[tuple[float, float]]:
            out: list[tuple[float, float]] = []
            for ticks, level in book.walk():
                if levels and len(out) >= levels:
                    break
                out.append((self.to_price(ticks), sum(o.leaves_qty for o in level)))
            return out

        return side(self._bids), side(self._asks)

    def _level_top(self, book: _Side) -> tuple[float, float] | None:
        best = book.best()
        if best is None:
            return None
        ticks, level = best
        return self.to_price(ticks), sum(o.leaves_qty for o in level)

    # ---- orders -------------------------------------------------------------------------------

    def submit(self, order: Order) -> SubmitResult:
        """Match ``order`` and rest what may rest.

        :raises BookError: a wrong symbol, side, quantity, order type, time in force or price
            (the order is not touched).
        """
        limit_ticks = self._check(order)
        order.seq = next(self._seq)
        result = SubmitResult(order)
        if order.tif == "fok" and self._available(order, limit_ticks) < order.qty - EPSILON:
            order.status = "expired"
            result.expired_qty = order.qty
            return result
        opposite = self._asks if order.side == "buy" else self._bids
        while order.qty - order.cum_qty > EPSILON:
            best = opposite.best()
            if best is None:
                break
            ticks, level = best
            if _beyond(order.side, ticks, limit_ticks):
                break
            resting = level[0]
            qty = min(order.qty - order.cum_qty, resting.qty - resting.cum_qty)
            trade = Trade(next(self._match_ids), self.symbol, self.to_price(ticks), qty, order, resting,
                          self.clock())
            self.last_trade = trade
            result.executions.append(self._fill(order, trade))
            result.executions.append(self._fill(resting, trade))
            if not resting.is_open:
                opposite.pop_front(ticks)
                self._forget(resting)
        remaining = order.qty - order.cum_qty
        if remaining > EPSILON:
            if limit_ticks is None or order.tif in ("ioc", "fok"):
                order.status = "expired"
                result.expired_qty = remaining
            else:
                (self._bids if order.side == "buy" else self._asks).add(limit_ticks, order)
                self._open[order.order_id] = order
                self._by_cl_ord_id[(order.owner, order.cl_ord_id)] = order
                result.rested = True
        return result

    def cancel(self, order_id: str) -> Order | None:
        """Cancel a resting order; returns it, or ``None`` if it is not resting here."""
        order = self._open.get(order_id)
        if order is None:
            return None
        assert order.price is not None
        (self._bids if order.side == "buy" else self._asks).remove(self.to_ticks(order.price), order)
        self._forget(order)
        order.status = "canceled"
        return order

    def cancel_all(self, owner: str) -> list[Order]:
        """Cancel every resting order of ``owner``; returns them, oldest first."""
        return [o for o in (self.cancel(o.order_id) for o in self.open_orders(owner)) if o is not None]

    # ---- internals ----------------------------------------------------------------------------

    def _check(self, order: Order) -> int | None:
        if order.symbol != self.symbol:
            raise BookError(f"order for {order.symbol!r} sent to the {self.symbol!r} book")
        if order.side not in ("buy", "sell"):
            raise BookError(f"unknown side {order.side!r}")
        if not order.qty > EPSILON:
            raise BookError(f"quantity must be positive, got {order.qty!r}")
        if order.tif not in ("day", "gtc", "ioc", "fok"):
            raise BookError(f"unknown time in force {order.tif!r}")
        if order.ord_type == "market":
            return None
        if order.ord_type != "limit":
            raise BookError(f"unknown order type {order.ord_type!r}")
        if order.price is None:
            raise BookError("a limit order needs a price")
        return self.to_ticks(order.price)

    def _available(self, order: Order, limit_ticks: int | None) -> float:
        total = 0.0
        for ticks, level in (self._asks if order.side == "buy" else self._bids).walk():
            if _beyond(order.side, ticks, limit_ticks):
                break
            total += sum(o.leaves_qty for o in level)
            if total >= order.qty - EPSILON:
                break
        return total

    @staticmethod
    def _fill(order: Order, trade: Trade) -> Execution:
        order.cum_qty += trade.qty
        order.notional += trade.qty * trade.price
        order.status = "filled" if order.qty - order.cum_qty <= EPSILON else "partially_filled"
        return Execution(trade, order, order.cum_qty, order.leaves_qty, order.avg_px, order.status)

    def _forget(self, order: Order) -> None:
        self._open.pop(order.order_id, None)
        self._by_cl_ord_id.pop((order.owner, order.cl_ord_id), None)
