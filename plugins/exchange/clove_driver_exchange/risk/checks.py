"""The pre-trade checks of a new order, each a function of the state it reads. Each raises
:class:`~clove.errors.RiskDenied` naming its reason; :meth:`RiskEngine.check_new
<clove_driver_exchange.risk.engine.RiskEngine.check_new>` runs them in order."""

from __future__ import annotations

from collections.abc import Container

from clove.errors import RiskDenied
from clove_driver_exchange.risk.book import ScopeBook
from clove_driver_exchange.risk.limits import Limits, deny, exceeds, fmt, is_number
from clove_driver_exchange.risk.market import MarketData
from clove_driver_exchange.risk.orders import SIDES, Order
from clove_driver_exchange.risk.states import TradingState

#: Limits and the scope they belong to (``"agent"`` or ``"global"``).
Scope = tuple[Limits, str]
#: A scope's book, its limits and the scope's name: an aggregate check's inputs.
Aggregate = tuple[ScopeBook, Limits, str]


def check_shape(order: Order, open_ids: Container[str]) -> None:
    """``bad_order``: a malformed order, or one whose client id an open order already uses."""

    def bad(message: str) -> RiskDenied:
        return deny("bad_order", message)

    if not isinstance(order, Order):
        raise bad(f"expected an Order, got {type(order).__name__}")
    for name in ("client_id", "agent", "symbol"):
        value = getattr(order, name)
        if not isinstance(value, str) or not value:
            raise bad(f"{name} must be a non-empty string, got {value!r}")
    if order.side not in SIDES:
        raise bad(f"side must be 'buy' or 'sell', got {order.side!r}")
    if not (is_number(order.qty) and order.qty > 0):
        raise bad(f"qty must be a finite number > 0, got {order.qty!r}")
    if order.type == "limit":
        if order.price is None:
            raise bad("a limit order needs a price")
        if not (is_number(order.price) and order.price > 0):
            raise bad(f"price must be a finite number > 0, got {order.price!r}")
    elif order.type == "market":
        if order.price is not None:
            raise bad(f"a market order has no price, got {order.price!r}")
    else:
        raise bad(f"type must be 'limit' or 'market', got {order.type!r}")
    if not isinstance(order.tif, str):
        raise bad(f"tif must be a string, got {order.tif!r}")
    if order.client_id in open_ids:
        raise bad(f"client_id {order.client_id!r} is already in use by an open order")


def check_not_halted(global_state: TradingState, agent_state: TradingState, agent: str) -> None:
    """``state_halted``: the global state or the agent's is HALTED."""
    for state, scope, whose in (
        (global_state, "global", "global"),
        (agent_state, "agent", f"agent {agent}"),
    ):
        if state is TradingState.HALTED:
            raise deny(
                "state_halted", f"trading is HALTED ({whose}); only cancels are accepted", scope=scope
            )


def check_symbol(sym: str, scopes: list[Scope], market: MarketData) -> None:
    """``restricted_symbol`` (a scope's restricted or allowed symbols), ``unknown_instrument``."""
    for limits, scope in scopes:
        if sym in limits.restricted_symbols:
            raise deny(
                "restricted_symbol",
                f"{sym} is in the {scope} restricted_symbols",
                scope=scope,
                symbol=sym,
            )
        if limits.allowed_symbols is not None and sym not in limits.allowed_symbols:
            raise deny(
                "restricted_symbol",
                f"{sym} is not in the {scope} allowed_symbols",
                scope=scope,
                symbol=sym,
            )
    if sym not in market:
        raise deny("unknown_instrument", f"{sym} is not a known instrument", symbol=sym)


def check_reducing(book: ScopeBook, order: Order, qty: float, whose_state: str, whose_pos: str) -> None:
    """``state_reducing``: the order does not reduce ``book``'s position (open orders counted)."""
    sym = order.symbol
    pos = book.pos.get(sym, 0.0)
    if order.side == "buy":
        after = book.long(sym) + qty  # every open buy counted: two reducing buys cannot flip
        ok = pos < 0 and not exceeds(after, 0.0)
    else:
        after = -(book.short(sym) + qty)
        ok = pos > 0 and not exceeds(-after, 0.0)
    if not ok:
        why = "there is no position to reduce" if pos == 0 else f"the position would become {fmt(after)}"
        raise deny(
            "state_reducing",
            f"trading is REDUCING ({whose_state}): a {order.side} of {fmt(qty)} {sym} does not reduce "
            f"the {whose_pos} position {fmt(pos)} ({why}, counting open orders)",
            position=pos,
            value=after,
        )


def strictest(scopes: list[Scope], key: str) -> tuple[float, str] | None:
    """The smallest value of the limit ``key`` over ``scopes`` and its scope; ``None``: no limit."""
    best: tuple[float, str] | None = None
    for limits, scope in scopes:
        value = getattr(limits, key)
        if value is not None and (best is None or value < best[0]):
            best = (float(value), scope)
    return best


def check_order_size(
    order: Order, qty: float, scopes: list[Scope], ref: float | None, market: MarketData
) -> None:
    """Per order, the strictest limit of the scopes: ``max_order_qty``, ``max_notional``,
    ``price_collar`` (and ``no_reference_price`` when those need a price there is none of)."""
    sym = order.symbol
    best = strictest(scopes, "max_order_qty")
    if best is not None and exceeds(qty, best[0]):
        raise deny(
            "max_order_qty",
            f"{fmt(qty)} {sym} > {best[1]} limit {fmt(best[0])}",
            scope=best[1],
            limit=best[0],
            value=qty,
        )
    best = strictest(scopes, "max_notional")
    if best is not None:
        px = order.price if order.type == "limit" else ref
        if px is None:
            raise market.missing(sym, "max_notional of a market order")
        notional = qty * px
        if exceeds(notional, best[0]):
            raise deny(
                "max_notional",
                f"{fmt(qty)} {sym} at {fmt(px)} is {fmt(notional)} > {best[1]} limit {fmt(best[0])}",
                scope=best[1],
                limit=best[0],
                value=notional,
            )
    best = strictest(scopes, "price_collar_pct")
    if best is not None and order.price is not None:
        if ref is None:
            raise market.missing(sym, "price_collar_pct")
        distance = abs(order.price - ref)
        if exceeds(distance, ref * best[0] / 100.0):
            pct = distance / ref * 100.0
            raise deny(
                "price_collar",
                f"limit {fmt(order.price)} is {pct:.4g}% from the reference {fmt(ref)} "
                f"> {best[1]} collar {fmt(best[0])}%",
                scope=best[1],
                limit=best[0],
                value=pct,
                reference=ref,
            )


def check_position(aggregates: list[Aggregate], order: Order, qty: float) -> None:
    """``max_position``: each scope's worst-case position on the order's side."""
    sym, buy = order.symbol, order.side == "buy"
    for scope_book, limits, scope in aggregates:
        if limits.max_position is None:
            continue
        worst = (scope_book.long(sym) if buy else scope_book.short(sym)) + qty
        if exceeds(worst, limits.max_position):
            signed = worst if buy else -worst
            raise deny(
                "max_position",
                f"{sym} position would be {fmt(signed)} > {scope} limit {fmt(limits.max_position)} "
                "(worst case: open orders count as filled)",
                scope=scope,
                limit=limits.max_position,
                value=signed,
                symbol=sym,
            )


def check_exposure(
    book: ScopeBook,
    limit: float,
    scope: str,
    order: Order,
    qty: float,
    ref: float | None,
    now: float,
    market: MarketData,
) -> None:
    """``max_gross_exposure`` of one scope, if the order raises its symbol's worst case."""
    sym = order.symbol
    old = book.worst(sym)
    if order.side == "buy":
        new = max(book.long(sym) + qty, book.short(sym), 0.0)
    else:
        new = max(book.long(sym), book.short(sym) + qty, 0.0)
    if new <= old:
        return  # adds no exposure: passes even above a (tightened) limit, and needs no price
    total = 0.0
    for s in book.symbols() | {sym}:
        worst = new if s == sym else book.worst(s)
        if worst <= 0:
            continue
        price = ref if s == sym else market.reference(s, now)
        if price is None:
            raise market.missing(s, f"{scope} max_gross_exposure")
        total += worst * price
    if exceeds(total, limit):
        raise deny(
            "max_gross_exposure",
            f"gross exposure would be {fmt(total)} > {scope} limit {fmt(limit)} "
            "(worst case: open orders count as filled)",
            scope=scope,
            limit=limit,
            value=total,
        )


def check_open_orders(aggregates: list[Aggregate], agent: str) -> None:
    """``max_open_orders``: one more open order in each scope."""
    for scope_book, limits, scope in aggregates:
        if limits.max_open_orders is not None and scope_book.count + 1 > limits.max_open_orders:
            who = f"agent {agent}" if scope == "agent" else "the account"
            raise deny(
                "max_open_orders",
                f"{who} would have {scope_book.count + 1} open orders "
                f"> {scope} limit {limits.max_open_orders}",
                scope=scope,
                limit=limits.max_open_orders,
                value=scope_book.count + 1,
            )
