"""Order book keeping of the risk engine: the open orders, the positions and open quantities
they add up to (per agent, and for the whole account), and their part of the snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from clove.drivers.schema import invalid
from clove_driver_exchange.risk.limits import REL_EPS, is_number
from clove_driver_exchange.risk.orders import OpenOrder, Order


class ScopeBook:
    """Positions and open quantities of one scope (an agent, or the whole account), kept
    incrementally so that a check costs O(1) (O(symbols) for gross exposure)."""

    __slots__ = ("pos", "buys", "sells", "_n", "count")

    def __init__(self) -> None:
        self.pos: dict[str, float] = {}
        self.buys: dict[str, float] = {}
        self.sells: dict[str, float] = {}
        self._n: dict[tuple[str, str], int] = {}
        self.count = 0

    def long(self, sym: str) -> float:
        """The position if every open buy filled."""
        return self.pos.get(sym, 0.0) + self.buys.get(sym, 0.0)

    def short(self, sym: str) -> float:
        """Minus the position if every open sell filled."""
        return self.sells.get(sym, 0.0) - self.pos.get(sym, 0.0)

    def worst(self, sym: str) -> float:
        """Worst-case absolute position."""
        return max(self.long(sym), self.short(sym), 0.0)

    def symbols(self) -> set[str]:
        return set(self.pos) | set(self.buys) | set(self.sells)

    def open(self, sym: str, side: str, qty: float) -> None:
        side_sums = self.buys if side == "buy" else self.sells
        side_sums[sym] = side_sums.get(sym, 0.0) + qty
        self._n[(sym, side)] = self._n.get((sym, side), 0) + 1
        self.count += 1

    def unopen(self, sym: str, side: str, qty: float) -> None:
        """Open quantity gone (filled or canceled), the order still open."""
        side_sums = self.buys if side == "buy" else self.sells
        if sym in side_sums:
            side_sums[sym] = max(0.0, side_sums[sym] - qty)

    def close(self, sym: str, side: str, remaining: float) -> None:
        """An order done with ``remaining`` unfilled. The last open order of a symbol and side
        resets the sum to zero, so float residue cannot build up."""
        side_sums = self.buys if side == "buy" else self.sells
        n = self._n.get((sym, side), 0) - 1
        self.count -= 1
        if n <= 0:
            self._n.pop((sym, side), None)
            side_sums.pop(sym, None)
        else:
            self._n[(sym, side)] = n
            side_sums[sym] = max(0.0, side_sums.get(sym, 0.0) - remaining)

    def move(self, sym: str, delta: float) -> None:
        pos = self.pos.get(sym, 0.0) + delta
        if abs(pos) <= REL_EPS * max(1.0, abs(delta)):
            self.pos.pop(sym, None)
        else:
            self.pos[sym] = pos


class OrderBook:
    """The open orders by client id, with a :class:`ScopeBook` per agent and one for the account
    that they keep current. Fills move the positions; an order counts from :meth:`open` to its
    last fill or :meth:`done`."""

    def __init__(self) -> None:
        self._orders: dict[str, OpenOrder] = {}
        self._agents: dict[str, ScopeBook] = {}
        #: The whole account's book (every agent summed).
        self.account = ScopeBook()

    def agent(self, agent: str) -> ScopeBook:
        """The agent's book, made on first use."""
        book = self._agents.get(agent)
        if book is None:
            book = self._agents[agent] = ScopeBook()
        return book

    def peek(self, agent: str) -> ScopeBook:
        """The agent's book, or an empty one (not kept) if the agent has none."""
        book = self._agents.get(agent)
        return book if book is not None else ScopeBook()

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._orders

    def get(self, client_id: str) -> OpenOrder | None:
        return self._orders.get(client_id)

    # -- changes ------------------------------------------------------------------------------------

    def open(self, order: Order) -> OpenOrder:
        """Count ``order`` as open, unfilled (the caller checked that its client id is free)."""
        qty = float(order.qty)
        opened = OpenOrder(
            client_id=order.client_id,
            agent=order.agent,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=None if order.price is None else float(order.price),
            type=order.type,
            tif=order.tif,
            remaining=qty,
        )
        self._orders[order.client_id] = opened
        self.agent(order.agent).open(order.symbol, order.side, qty)
        self.account.open(order.symbol, order.side, qty)
        return opened

    def ack(self, client_id: str, venue_order_id: str | None) -> OpenOrder | None:
        """Mark the order acknowledged by the venue; ``None`` if it is not open."""
        held = self._orders.get(client_id)
        if held is None:
            return None
        held = self._orders[client_id] = replace(
            held,
            acked=True,
            venue_order_id=venue_order_id if venue_order_id is not None else held.venue_order_id,
        )
        return held

    def fill(self, client_id: str, qty: float, price: float) -> OpenOrder | None:
        """Apply a fill (see :meth:`RiskEngine.on_fill`).

        :raises ValueError: ``qty`` or ``price`` not a finite number > 0.
        """
        if not (is_number(qty) and qty > 0):
            raise ValueError(f"fill qty must be a finite number > 0, got {qty!r}")
        if not (is_number(price) and price > 0):
            raise ValueError(f"fill price must be a finite number > 0, got {price!r}")
        held = self._orders.get(client_id)
        if held is None:
            return None
        qty = float(qty)
        sign = 1.0 if held.side == "buy" else -1.0
        used = min(qty, held.remaining)
        remaining = held.remaining - used
        book = self.agent(held.agent)
        done = remaining <= REL_EPS * max(1.0, held.qty)
        for scope_book in (book, self.account):
            scope_book.move(held.symbol, sign * qty)
            if done:
                scope_book.close(held.symbol, held.side, held.remaining)
            else:
                scope_book.unopen(held.symbol, held.side, used)
        if done:
            del self._orders[client_id]
            return replace(held, remaining=0.0)
        held = self._orders[client_id] = replace(held, remaining=remaining)
        return held

    def done(self, client_id: str) -> OpenOrder | None:
        """The order no longer counts; returns it, or ``None`` if it was not open."""
        held = self._orders.pop(client_id, None)
        if held is None:
            return None
        for scope_book in (self.agent(held.agent), self.account):
            scope_book.close(held.symbol, held.side, held.remaining)
        return held

    def set_position(self, agent: str, symbol: str, qty: float) -> None:
        """Set the agent's position in ``symbol`` outright; the account's moves by the same.

        :raises ValueError: ``qty`` not a finite number.
        """
        if not is_number(qty):
            raise ValueError(f"position must be a finite number, got {qty!r}")
        book = self.agent(agent)
        delta = float(qty) - book.pos.get(symbol, 0.0)
        book.move(symbol, delta)
        self.account.move(symbol, delta)

    # -- views --------------------------------------------------------------------------------------

    def positions(self, agent: str) -> dict[str, float]:
        """The agent's non-zero net positions by symbol."""
        book = self._agents.get(agent)
        return dict(book.pos) if book is not None else {}

    def account_positions(self) -> dict[str, float]:
        """The account's non-zero net positions by symbol."""
        return dict(self.account.pos)

    def open_orders(self, agent: str | None = None) -> list[OpenOrder]:
        """The open orders of ``agent`` (of everyone when ``None``), oldest first."""
        return [o for o in self._orders.values() if agent is None or o.agent == agent]

    def worst_case(self, agent: str | None, symbol: str) -> tuple[float, float]:
        """``(position if every open buy filled, position if every open sell filled)`` for the
        agent (the account when ``None``)."""
        book = self.account if agent is None else self.peek(agent)
        return book.long(symbol), -book.short(symbol)

    # -- snapshot -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The snapshot's ``positions`` and ``open_orders`` entries."""
        return {
            "positions": {agent: dict(book.pos) for agent, book in sorted(self._agents.items()) if book.pos},
            "open_orders": [o.to_dict() for o in self._orders.values()],
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> OrderBook:
        """The book of a snapshot (its ``positions`` and ``open_orders``), checked.

        :raises clove.drivers.schema.FieldError: naming what is wrong.
        """
        new = cls()
        raw_positions = snapshot.get("positions", {})
        if not isinstance(raw_positions, dict):
            raise invalid("positions", "expected a table")
        for agent, table in raw_positions.items():
            if not isinstance(table, dict):
                raise invalid(f"positions.{agent}", "expected a table of symbol = quantity")
            for sym, qty in table.items():
                if not is_number(qty):
                    raise invalid(f"positions.{agent}.{sym}", f"expected a number, got {qty!r}")
                new.agent(str(agent)).move(str(sym), float(qty))
                new.account.move(str(sym), float(qty))
        raw_orders = snapshot.get("open_orders", [])
        if not isinstance(raw_orders, list):
            raise invalid("open_orders", "expected an array")
        for i, raw in enumerate(raw_orders):
            held = OpenOrder.from_dict(raw, key=f"open_orders[{i}]")
            if held.client_id in new._orders:
                raise invalid(f"open_orders[{i}].client_id", f"{held.client_id!r} appears twice")
            new._orders[held.client_id] = held
            new.agent(held.agent).open(held.symbol, held.side, held.remaining)
            new.account.open(held.symbol, held.side, held.remaining)
        return new
