"""The risk engine: :class:`RiskEngine` decides on every new order and cancel, from the limits,
the order book, the market data, the trading states, the rate buckets and the duplicate window
(each in its own module of :mod:`clove_driver_exchange.risk`, whose docstring states the rules)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clove.drivers.schema import invalid
from clove.errors import RiskDenied
from clove_driver_exchange.risk.book import OrderBook
from clove_driver_exchange.risk.checks import (
    Aggregate,
    Scope,
    check_exposure,
    check_not_halted,
    check_open_orders,
    check_order_size,
    check_position,
    check_reducing,
    check_shape,
    check_symbol,
)
from clove_driver_exchange.risk.duplicates import DuplicateWindow
from clove_driver_exchange.risk.limits import Limits, deny
from clove_driver_exchange.risk.market import MarketData
from clove_driver_exchange.risk.orders import OpenOrder, Order
from clove_driver_exchange.risk.states import TradingState, TradingStates
from clove_driver_exchange.risk.throttles import Throttles


class RiskEngine:
    """Pre-trade checks and the state they need: open orders, positions, reference prices,
    trading states and rate buckets.

    :param global_limits: the account-wide limits (see *Scopes* in :mod:`clove_driver_exchange.risk`).
    :param instruments: the tradable symbols; ``None``: a symbol becomes known when
        :meth:`set_reference` first names it (market data for it exists).
    :param max_reference_age_s: a reference price older than this counts as missing.
    :param clock: seconds, monotonic; the time base of :meth:`set_reference`'s ``ts``.
    """

    def __init__(
        self,
        global_limits: Limits,
        *,
        instruments: Iterable[str] | None = None,
        max_reference_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._market = MarketData(instruments, max_reference_age_s, clock)
        self._clock = clock
        self._book = OrderBook()
        self._states = TradingStates()
        self._throttles = Throttles(clock)
        self._duplicates = DuplicateWindow()
        self._passed: dict[str, Order] = {}
        self._limits = global_limits
        self.set_global_limits(global_limits)

    # -- configuration ----------------------------------------------------------------------------

    @property
    def global_limits(self) -> Limits:
        return self._limits

    def set_global_limits(self, limits: Limits) -> None:
        """Replace the global limits (a config reload). A venue bucket whose rate is unchanged
        keeps its tokens; a changed one starts full."""
        self._limits = limits
        self._throttles.set_venue_rates(limits)
        self._duplicates.widen(limits.duplicate_window_s)

    def add_instrument(self, symbol: str) -> None:
        """Make ``symbol`` a known instrument."""
        self._market.add_instrument(symbol)

    def instruments(self) -> set[str]:
        return self._market.instruments()

    # -- market data ------------------------------------------------------------------------------

    def set_reference(self, symbol: str, price: float, ts: float | None = None) -> bool:
        """Record the reference price of ``symbol`` (a mid or last trade) seen at ``ts``
        (the engine's clock; default: now). A price that is not a finite number > 0 (an empty
        book) removes the reference, so checks that need it fail closed; an update older than
        the one held is ignored. Returns whether the price was taken."""
        return self._market.set_reference(symbol, price, ts)

    def reference(self, symbol: str) -> float | None:
        """The fresh reference price of ``symbol``, or ``None`` (missing or stale)."""
        return self._market.reference(symbol, self._clock())

    # -- new orders -------------------------------------------------------------------------------

    def check_new(self, order: Order, agent_limits: Limits | None) -> None:
        """Check a new order against the agent's and the global limits; on success take one
        token from the order-rate buckets and remember the order for :meth:`accept_new`.

        :raises RiskDenied: naming the first check that failed (see :data:`REASONS`).
        """
        try:
            self._check_new(order, agent_limits)
        except RiskDenied:
            raise
        except Exception as err:  # fail closed: a check that cannot run denies
            raise deny(
                "check_failed",
                f"the risk checks could not be evaluated ({type(err).__name__}: {err})",
                error=type(err).__name__,
            ) from err

    def accept_new(self, order: Order) -> OpenOrder:
        """Count ``order`` as open (from now on it is in every worst case). Call it right after
        :meth:`check_new` passed for this very order, before sending it.

        :raises RuntimeError: the order did not pass :meth:`check_new` (a driver bug).
        """
        passed = self._passed.pop(order.client_id, None)
        if passed is None or passed != order:
            raise RuntimeError(f"order {order.client_id!r} was not checked by check_new (or changed since)")
        if order.client_id in self._book:
            raise RuntimeError(f"order {order.client_id!r} is already open")
        now = self._clock()
        opened = self._book.open(order)
        self._duplicates.record(order, now)
        return opened

    def admit(self, order: Order, agent_limits: Limits | None) -> OpenOrder:
        """:meth:`check_new` and :meth:`accept_new` in one step."""
        self.check_new(order, agent_limits)
        return self.accept_new(order)

    def _check_new(self, order: Order, agent_limits: Limits | None) -> None:
        now = self._clock()
        check_shape(order, self._book)
        agent, sym = order.agent, order.symbol
        qty = float(order.qty)

        # Trading state: HALTED first; REDUCING needs the position, below.
        global_state, agent_state = self._states.get(), self._states.get(agent)
        check_not_halted(global_state, agent_state, agent)

        scopes: list[Scope] = [(agent_limits, "agent")] if agent_limits is not None else []
        scopes.append((self._limits, "global"))
        check_symbol(sym, scopes, self._market)

        book = self._book.peek(agent)
        if agent_state is TradingState.REDUCING or global_state is TradingState.REDUCING:
            whose = "global" if global_state is TradingState.REDUCING else f"agent {agent}"
            check_reducing(book, order, qty, whose, f"agent {agent}'s")
            if global_state is TradingState.REDUCING:
                check_reducing(self._book.account, order, qty, whose, "account's")

        # Per order: quantity, notional, collar.
        ref = self._market.reference(sym, now)
        check_order_size(order, qty, scopes, ref, self._market)

        # Aggregates: the agent's limits on the agent's book, the global limits on the account's.
        aggregates: list[Aggregate] = []
        if agent_limits is not None:
            aggregates.append((book, agent_limits, "agent"))
        aggregates.append((self._book.account, self._limits, "global"))
        check_position(aggregates, order, qty)
        for scope_book, limits, scope in aggregates:
            if limits.max_gross_exposure is not None:
                check_exposure(
                    scope_book, limits.max_gross_exposure, scope, order, qty, ref, now, self._market
                )
        check_open_orders(aggregates, agent)

        # Duplicates: the stricter (longer) window.
        self._duplicates.check(order, max(limits.duplicate_window_s for limits, _ in scopes), now)

        # Rates last, so a denied order costs no token; both buckets or neither.
        self._throttles.take_order(agent, agent_limits)
        self._passed.pop(order.client_id, None)
        self._passed[order.client_id] = order
        if len(self._passed) > 1024:  # checked but never accepted: forget the oldest
            del self._passed[next(iter(self._passed))]

    # -- cancels ----------------------------------------------------------------------------------

    def check_cancel(self, agent: str, client_id: str, agent_limits: Limits | None) -> OpenOrder:
        """Check a cancel: the order must be open and the agent's; the cancel rates apply (no
        trading state blocks a cancel). Takes a token from the cancel buckets on success.

        :returns: the open order (its symbol and side go into the cancel request).
        :raises RiskDenied: ``unknown_order`` (also for another agent's order: no agent learns
            of another's orders), ``cancel_rate``, ``venue_cancel_rate``.
        """
        held = self._book.get(client_id)
        if held is None or held.agent != agent:
            raise deny(
                "unknown_order", f"agent {agent} has no open order {client_id!r}", client_id=client_id
            )
        self._throttles.take_cancel(agent, agent_limits)
        return held

    # -- execution reports ------------------------------------------------------------------------

    def on_ack(self, client_id: str, venue_order_id: str | None = None) -> OpenOrder | None:
        """The venue accepted the order (ExecType New). Returns it, or ``None`` if not open."""
        return self._book.ack(client_id, venue_order_id)

    def on_fill(self, client_id: str, qty: float, price: float) -> OpenOrder | None:
        """A fill of ``qty`` at ``price``: the position moves by the full ``qty`` (the venue is the
        truth, even for an overfill) and the remaining quantity shrinks; at zero the order is
        done. Returns the updated order (``remaining`` 0 when filled), or ``None`` for an order
        that is not open (reconcile with :meth:`set_position`).

        :raises ValueError: ``qty`` or ``price`` not a finite number > 0.
        """
        return self._book.fill(client_id, qty, price)

    def on_done(self, client_id: str) -> OpenOrder | None:
        """The order is over (canceled, rejected, expired, filled, or never sent): it no longer
        counts. Returns it, or ``None`` if it was not open."""
        return self._book.done(client_id)

    def set_position(self, agent: str, symbol: str, qty: float) -> None:
        """Set a position outright (reconciliation with the venue, a fill that matched no
        open order)."""
        self._book.set_position(agent, symbol, qty)

    # -- views ------------------------------------------------------------------------------------

    def positions(self, agent: str) -> dict[str, float]:
        """The agent's non-zero net positions by symbol (from fills)."""
        return self._book.positions(agent)

    def account_positions(self) -> dict[str, float]:
        """The account's non-zero net positions by symbol (all agents)."""
        return self._book.account_positions()

    def open_orders(self, agent: str | None = None) -> list[OpenOrder]:
        """The open orders of ``agent`` (of everyone when ``None``), oldest first."""
        return self._book.open_orders(agent)

    def open_order(self, client_id: str) -> OpenOrder | None:
        return self._book.get(client_id)

    def worst_case(self, agent: str | None, symbol: str) -> tuple[float, float]:
        """``(position if every open buy filled, position if every open sell filled)`` for the
        agent (the account when ``None``)."""
        return self._book.worst_case(agent, symbol)

    # -- trading state ----------------------------------------------------------------------------

    def state(self, agent: str | None = None) -> TradingState:
        """The global state, or the state set for ``agent`` (not combined with the global one;
        see :meth:`effective_state`)."""
        return self._states.get(agent)

    def effective_state(self, agent: str) -> TradingState:
        """The more restrictive of the agent's state and the global state."""
        return self._states.effective(agent)

    def set_state(self, state: TradingState | str, agent: str | None = None) -> list[OpenOrder]:
        """Set the global state (``agent=None``) or one agent's.

        :returns: entering HALTED, the open orders to cancel now (every order, or the agent's):
            the kill switch. Otherwise an empty list.
        """
        new = self._states.set(state, agent)
        if new is not TradingState.HALTED:
            return []
        return self.open_orders(agent)

    # -- persistence ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Positions, open orders and trading states as plain JSON-able data. Rate buckets,
        reference prices and the duplicate window are not kept: they are only meaningful now."""
        return {"version": 1, **self._states.snapshot(), **self._book.snapshot()}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace positions, open orders and trading states with a :meth:`snapshot`'s. All or
        nothing: a bad snapshot changes nothing.

        :raises clove.drivers.schema.FieldError: naming what is wrong in the snapshot.
        """
        if not isinstance(snapshot, Mapping):
            raise invalid("", f"expected a table, got {type(snapshot).__name__}")
        if snapshot.get("version") != 1:
            raise invalid("version", f"expected 1, got {snapshot.get('version')!r}")
        states = TradingStates.from_snapshot(snapshot)
        book = OrderBook.from_snapshot(snapshot)
        self._states = states
        self._book = book
        self._passed.clear()
