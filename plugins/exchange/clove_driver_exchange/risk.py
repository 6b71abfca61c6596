"""The pre-trade risk engine of the exchange driver: every order an agent sends is checked here,
in the driver host, before a byte of it reaches the venue.

Modeled on nautilus_trader's ``RiskEngine`` (trading states ACTIVE / REDUCING / HALTED, order and
cancel throttles, max notional per order) and on market-access practice (SEC rule 15c3-5:
pre-set credit and capital thresholds, erroneous-order checks such as price collars and duplicate
detection, restricted securities, a kill switch). The principles:

- **Outside the agent, not bypassable.** The agent only reaches the venue through the kernel and
  this driver; :meth:`RiskEngine.accept_new` refuses an order that did not pass
  :meth:`RiskEngine.check_new`, so driver code cannot skip the checks by accident either.
- **Every denial names its reason.** :class:`RiskDenied` (wire code ``"risk.denied"``) carries a
  stable reason code (:data:`REASONS`) in ``details["reason"]`` and a message that starts with it
  and says which limit (``agent`` or ``global``) was hit, e.g. ``"max_position: ACME position
  would be 1200 > agent limit 1000"``.
- **Fail closed.** A check that cannot be evaluated denies: no reference price, or one older than
  ``max_reference_age_s``, denies what needs it (``no_reference_price``); a malformed order is
  ``bad_order``; an unexpected error inside the checks is ``check_failed``. (nautilus skips a
  market order's notional check without a price; this engine does not.)

Scopes. A :class:`Limits` is given twice: the *global* limits of the engine (the venue
credential is shared by every agent, so they bound the whole account) and optional per-*agent*
limits passed with each call. Both always apply and the stricter wins:

- per-order limits (``max_order_qty``, ``max_notional``, ``price_collar_pct``, symbol lists,
  ``duplicate_window_s``) apply to each order; the strictest of the two values is reported;
- aggregate limits apply to their scope's aggregate: the agent's limit to the agent's
  positions and open orders, the global limit to the account's (all agents summed):
  ``max_position``, ``max_gross_exposure``, ``max_open_orders``;
- rates are token buckets, one per agent (``order_rate`` / ``cancel_rate``) and one shared by
  the account (``venue_order_rate`` / ``venue_cancel_rate``). A bucket of rate ``r`` holds
  ``max(1, r)`` tokens: a rate of 5/s admits a burst of 5, then one order every 0.2 s. Tokens
  are taken only when every other check passed, and from both buckets or neither.

Worst case. Position limits count the agent's open orders as if filled: a buy is checked as
``position + open buys + qty`` and a sell as ``open sells + qty - position``, against
``max_position``. Only the side the order adds to is checked, so an order that moves the
position back towards flat is never denied by a position or exposure limit, even when a
tightened limit is already exceeded. Gross exposure is ``sum over symbols of worst-case
|position| × reference price``, where worst-case ``|position|`` is ``max(position + open buys,
open sells - position)``; an order that does not raise its symbol's worst case needs no price
and passes.

States. ``REDUCING`` admits only orders that reduce the agent's position (and for the global
state, the account's position too), *counting open orders on the same side*: a sell when long
100 with 30 already offered may be at most 70. An order that would flip the position (sell 150
when long 100) is denied: flipping opens new risk in the other direction, and the caller can
still send the exact reducing quantity. ``HALTED`` admits no new order; cancels always pass the
state check, and entering HALTED returns the open orders to cancel (the kill switch). An agent's
effective state is the more restrictive of its own and the global one.

Tolerance. Quantities and prices are floats; a value exceeds a limit when it is above it by more
than ``1e-9`` relative (``value > limit + 1e-9 * max(1, |limit|)``), so a position that sums to
exactly the limit through float arithmetic (0.1 + 0.2) is not denied. Zero limits are valid and
admit nothing (``max_position = 0`` locks an agent out); a missing limit (``None``) is no limit.

Concurrency. The engine is pure, synchronous and not thread-safe: the driver calls it from its
event loop. Call :meth:`RiskEngine.accept_new` right after :meth:`RiskEngine.check_new` passes,
with no ``await`` between (or use :meth:`RiskEngine.admit`), and :meth:`RiskEngine.on_done` if
sending fails: the order counts from the moment it is accepted, the conservative choice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from clove.drivers.grants import TokenBucket
from clove.drivers.schema import build, invalid
from clove.errors import RiskDenied

__all__ = [
    "REASONS",
    "Limits",
    "OpenOrder",
    "Order",
    "RiskDenied",
    "RiskEngine",
    "TradingState",
]

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

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market")

_REL_EPS = 1e-9


def _exceeds(value: float, limit: float) -> bool:
    """``value > limit``, forgiving float noise (see the module's *Tolerance*)."""
    return value > limit + _REL_EPS * max(1.0, abs(limit))


def _fmt(x: float) -> str:
    """A number for a message: ``1200`` rather than ``1200.0``, no float noise."""
    return f"{x:.10g}"


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- errors ----------------------------------------------------------------------------------------


# RiskDenied lives in clove.errors (a core code, so every client rebuilds it from a reply).


def _deny(reason: str, message: str, **details: Any) -> RiskDenied:
    assert reason in _REASON_SET, reason
    return RiskDenied(f"{reason}: {message}", reason=reason, details=details)


# -- configuration ---------------------------------------------------------------------------------


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
            if value is not None and not (_is_number(value) and value >= 0):
                raise invalid(key, f"must be a finite number >= 0, got {value!r}")
        if self.max_open_orders is not None and not (
            isinstance(self.max_open_orders, int)
            and not isinstance(self.max_open_orders, bool)
            and self.max_open_orders >= 0
        ):
            raise invalid("max_open_orders", f"must be an int >= 0, got {self.max_open_orders!r}")
        for key in ("order_rate_per_s", "cancel_rate_per_s"):
            value = getattr(self, key)
            if value is not None and not (_is_number(value) and value > 0):
                raise invalid(key, f"must be a finite number > 0, got {value!r}")
        if not (_is_number(self.duplicate_window_s) and self.duplicate_window_s >= 0):
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


class TradingState(Enum):
    """What may be sent: everything, only position-reducing orders, or nothing but cancels."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


# -- orders ----------------------------------------------------------------------------------------


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
        if not (_is_number(qty) and qty > 0):
            raise invalid(f"{key}.qty", f"expected a number > 0, got {qty!r}")
        if not (_is_number(remaining) and 0 < remaining <= qty):
            raise invalid(f"{key}.remaining", f"expected a number in (0, qty], got {remaining!r}")
        if price is not None and not (_is_number(price) and price > 0):
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


# -- books -----------------------------------------------------------------------------------------


class _Book:
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
        if abs(pos) <= _REL_EPS * max(1.0, abs(delta)):
            self.pos.pop(sym, None)
        else:
            self.pos[sym] = pos


# -- the engine ------------------------------------------------------------------------------------


_Scope = tuple[Limits, str]


class RiskEngine:
    """Pre-trade checks and the state they need: open orders, positions, reference prices,
    trading states and rate buckets.

    :param global_limits: the account-wide limits (see the module's *Scopes*).
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
        if not (_is_number(max_reference_age_s) and max_reference_age_s >= 0):
            raise invalid("max_reference_age_s", f"must be a finite number >= 0, got {max_reference_age_s!r}")
        self._clock = clock
        self._max_age = float(max_reference_age_s)
        self._learn_instruments = instruments is None
        self._known: set[str] = set(instruments or ())
        self._refs: dict[str, tuple[float, float]] = {}  # symbol -> (price, ts)
        self._orders: dict[str, OpenOrder] = {}
        self._books: dict[str, _Book] = {}
        self._account = _Book()
        self._state = TradingState.ACTIVE
        self._agent_states: dict[str, TradingState] = {}
        self._order_buckets: dict[str, TokenBucket] = {}
        self._cancel_buckets: dict[str, TokenBucket] = {}
        self._venue_orders: TokenBucket | None = None
        self._venue_cancels: TokenBucket | None = None
        self._recent: dict[tuple[str, str, str, str, float, float | None], float] = {}
        self._horizon = 0.0
        self._prune_at = 256
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
        self._venue_orders = self._rebucket(self._venue_orders, limits.order_rate_per_s)
        self._venue_cancels = self._rebucket(self._venue_cancels, limits.cancel_rate_per_s)
        self._horizon = max(self._horizon, limits.duplicate_window_s)

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

    def add_instrument(self, symbol: str) -> None:
        """Make ``symbol`` a known instrument."""
        self._known.add(symbol)

    def instruments(self) -> set[str]:
        return set(self._known)

    # -- market data ------------------------------------------------------------------------------

    def set_reference(self, symbol: str, price: float, ts: float | None = None) -> bool:
        """Record the reference price of ``symbol`` (a mid or last trade) seen at ``ts``
        (the engine's clock; default: now). A price that is not a finite number > 0 (an empty
        book) removes the reference, so checks that need it fail closed; an update older than
        the one held is ignored. Returns whether the price was taken."""
        when = self._clock() if ts is None else ts
        if not (_is_number(price) and price > 0 and _is_number(when)):
            self._refs.pop(symbol, None)
            return False
        held = self._refs.get(symbol)
        if held is not None and held[1] > when:
            return False
        self._refs[symbol] = (float(price), float(when))
        if self._learn_instruments:
            self._known.add(symbol)
        return True

    def reference(self, symbol: str) -> float | None:
        """The fresh reference price of ``symbol``, or ``None`` (missing or stale)."""
        return self._reference(symbol, self._clock())

    def _reference(self, symbol: str, now: float) -> float | None:
        held = self._refs.get(symbol)
        if held is None or now - held[1] > self._max_age:
            return None
        return held[0]

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
            raise _deny(
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
        if order.client_id in self._orders:
            raise RuntimeError(f"order {order.client_id!r} is already open")
        now = self._clock()
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
        self._book(order.agent).open(order.symbol, order.side, qty)
        self._account.open(order.symbol, order.side, qty)
        self._recent[_dup_key(order)] = now
        if len(self._recent) > self._prune_at:
            self._recent = {k: t for k, t in self._recent.items() if now - t < self._horizon}
            self._prune_at = max(256, 2 * len(self._recent))
        return opened

    def admit(self, order: Order, agent_limits: Limits | None) -> OpenOrder:
        """:meth:`check_new` and :meth:`accept_new` in one step."""
        self.check_new(order, agent_limits)
        return self.accept_new(order)

    def _book(self, agent: str) -> _Book:
        book = self._books.get(agent)
        if book is None:
            book = self._books[agent] = _Book()
        return book

    def _strictest(self, scopes: list[_Scope], key: str) -> tuple[float, str] | None:
        best: tuple[float, str] | None = None
        for limits, scope in scopes:
            value = getattr(limits, key)
            if value is not None and (best is None or value < best[0]):
                best = (float(value), scope)
        return best

    def _check_new(self, order: Order, agent_limits: Limits | None) -> None:
        now = self._clock()
        self._check_shape(order)
        agent, sym, side = order.agent, order.symbol, order.side
        qty = float(order.qty)
        buy = side == "buy"

        # Trading state: HALTED first; REDUCING needs the position, below.
        agent_state = self._agent_states.get(agent, TradingState.ACTIVE)
        for state, scope, whose in (
            (self._state, "global", "global"),
            (agent_state, "agent", f"agent {agent}"),
        ):
            if state is TradingState.HALTED:
                raise _deny(
                    "state_halted", f"trading is HALTED ({whose}); only cancels are accepted", scope=scope
                )

        scopes: list[_Scope] = [(agent_limits, "agent")] if agent_limits is not None else []
        scopes.append((self._limits, "global"))

        # Symbols.
        for limits, scope in scopes:
            if sym in limits.restricted_symbols:
                raise _deny(
                    "restricted_symbol",
                    f"{sym} is in the {scope} restricted_symbols",
                    scope=scope,
                    symbol=sym,
                )
            if limits.allowed_symbols is not None and sym not in limits.allowed_symbols:
                raise _deny(
                    "restricted_symbol",
                    f"{sym} is not in the {scope} allowed_symbols",
                    scope=scope,
                    symbol=sym,
                )
        if sym not in self._known:
            raise _deny("unknown_instrument", f"{sym} is not a known instrument", symbol=sym)

        book = self._books.get(agent) or _Book()
        if agent_state is TradingState.REDUCING or self._state is TradingState.REDUCING:
            whose = "global" if self._state is TradingState.REDUCING else f"agent {agent}"
            self._check_reducing(book, order, qty, whose, f"agent {agent}'s")
            if self._state is TradingState.REDUCING:
                self._check_reducing(self._account, order, qty, whose, "account's")

        # Per order: quantity, notional, collar.
        best = self._strictest(scopes, "max_order_qty")
        if best is not None and _exceeds(qty, best[0]):
            raise _deny(
                "max_order_qty",
                f"{_fmt(qty)} {sym} > {best[1]} limit {_fmt(best[0])}",
                scope=best[1],
                limit=best[0],
                value=qty,
            )
        ref = self._reference(sym, now)
        best = self._strictest(scopes, "max_notional")
        if best is not None:
            px = order.price if order.type == "limit" else ref
            if px is None:
                raise self._no_reference(sym, "max_notional of a market order")
            notional = qty * px
            if _exceeds(notional, best[0]):
                raise _deny(
                    "max_notional",
                    f"{_fmt(qty)} {sym} at {_fmt(px)} is {_fmt(notional)} > {best[1]} limit {_fmt(best[0])}",
                    scope=best[1],
                    limit=best[0],
                    value=notional,
                )
        best = self._strictest(scopes, "price_collar_pct")
        if best is not None and order.price is not None:
            if ref is None:
                raise self._no_reference(sym, "price_collar_pct")
            distance = abs(order.price - ref)
            if _exceeds(distance, ref * best[0] / 100.0):
                pct = distance / ref * 100.0
                raise _deny(
                    "price_collar",
                    f"limit {_fmt(order.price)} is {pct:.4g}% from the reference {_fmt(ref)} "
                    f"> {best[1]} collar {_fmt(best[0])}%",
                    scope=best[1],
                    limit=best[0],
                    value=pct,
                    reference=ref,
                )

        # Aggregates: the agent's limits on the agent's book, the global limits on the account's.
        checks: list[tuple[_Book, Limits, str]] = []
        if agent_limits is not None:
            checks.append((book, agent_limits, "agent"))
        checks.append((self._account, self._limits, "global"))
        for scope_book, limits, scope in checks:
            if limits.max_position is None:
                continue
            worst = (scope_book.long(sym) if buy else scope_book.short(sym)) + qty
            if _exceeds(worst, limits.max_position):
                signed = worst if buy else -worst
                raise _deny(
                    "max_position",
                    f"{sym} position would be {_fmt(signed)} > {scope} limit {_fmt(limits.max_position)} "
                    "(worst case: open orders count as filled)",
                    scope=scope,
                    limit=limits.max_position,
                    value=signed,
                    symbol=sym,
                )
        for scope_book, limits, scope in checks:
            if limits.max_gross_exposure is not None:
                self._check_exposure(scope_book, limits.max_gross_exposure, scope, order, qty, ref, now)
        for scope_book, limits, scope in checks:
            if limits.max_open_orders is not None and scope_book.count + 1 > limits.max_open_orders:
                who = f"agent {agent}" if scope == "agent" else "the account"
                raise _deny(
                    "max_open_orders",
                    f"{who} would have {scope_book.count + 1} open orders "
                    f"> {scope} limit {limits.max_open_orders}",
                    scope=scope,
                    limit=limits.max_open_orders,
                    value=scope_book.count + 1,
                )

        # Duplicates: the stricter (longer) window.
        window = max(limits.duplicate_window_s for limits, _ in scopes)
        self._horizon = max(self._horizon, window)
        last = self._recent.get(_dup_key(order))
        if window > 0 and last is not None and now - last < window:
            at = "market" if order.price is None else _fmt(order.price)
            raise _deny(
                "duplicate_order",
                f"the same {side} of {_fmt(qty)} {sym} at {at} was sent {now - last:.3g} s ago "
                f"(window {_fmt(window)} s)",
                window_s=window,
                age_s=now - last,
            )

        # Rates last, so a denied order costs no token; both buckets or neither.
        mine = self._agent_bucket(
            self._order_buckets, agent, agent_limits.order_rate_per_s if agent_limits is not None else None
        )
        self._take(mine, self._venue_orders, "order_rate", "venue_order_rate", "orders")
        self._passed.pop(order.client_id, None)
        self._passed[order.client_id] = order
        if len(self._passed) > 1024:  # checked but never accepted: forget the oldest
            del self._passed[next(iter(self._passed))]

    def _check_shape(self, order: Order) -> None:
        def bad(message: str) -> RiskDenied:
            return _deny("bad_order", message)

        if not isinstance(order, Order):
            raise bad(f"expected an Order, got {type(order).__name__}")
        for name in ("client_id", "agent", "symbol"):
            value = getattr(order, name)
            if not isinstance(value, str) or not value:
                raise bad(f"{name} must be a non-empty string, got {value!r}")
        if order.side not in SIDES:
            raise bad(f"side must be 'buy' or 'sell', got {order.side!r}")
        if not (_is_number(order.qty) and order.qty > 0):
            raise bad(f"qty must be a finite number > 0, got {order.qty!r}")
        if order.type == "limit":
            if order.price is None:
                raise bad("a limit order needs a price")
            if not (_is_number(order.price) and order.price > 0):
                raise bad(f"price must be a finite number > 0, got {order.price!r}")
        elif order.type == "market":
            if order.price is not None:
                raise bad(f"a market order has no price, got {order.price!r}")
        else:
            raise bad(f"type must be 'limit' or 'market', got {order.type!r}")
        if not isinstance(order.tif, str):
            raise bad(f"tif must be a string, got {order.tif!r}")
        if order.client_id in self._orders:
            raise bad(f"client_id {order.client_id!r} is already in use by an open order")

    def _check_reducing(
        self, book: _Book, order: Order, qty: float, whose_state: str, whose_pos: str
    ) -> None:
        sym = order.symbol
        pos = book.pos.get(sym, 0.0)
        if order.side == "buy":
            after = book.long(sym) + qty  # every open buy counted: two reducing buys cannot flip
            ok = pos < 0 and not _exceeds(after, 0.0)
        else:
            after = -(book.short(sym) + qty)
            ok = pos > 0 and not _exceeds(-after, 0.0)
        if not ok:
            why = "there is no position to reduce" if pos == 0 else f"the position would become {_fmt(after)}"
            raise _deny(
                "state_reducing",
                f"trading is REDUCING ({whose_state}): a {order.side} of {_fmt(qty)} {sym} does not reduce "
                f"the {whose_pos} position {_fmt(pos)} ({why}, counting open orders)",
                position=pos,
                value=after,
            )

    def _check_exposure(
        self, book: _Book, limit: float, scope: str, order: Order, qty: float, ref: float | None, now: float
    ) -> None:
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
            price = ref if s == sym else self._reference(s, now)
            if price is None:
                raise self._no_reference(s, f"{scope} max_gross_exposure")
            total += worst * price
        if _exceeds(total, limit):
            raise _deny(
                "max_gross_exposure",
                f"gross exposure would be {_fmt(total)} > {scope} limit {_fmt(limit)} "
                "(worst case: open orders count as filled)",
                scope=scope,
                limit=limit,
                value=total,
            )

    def _no_reference(self, sym: str, needed_for: str) -> RiskDenied:
        held = self._refs.get(sym)
        state = "none received" if held is None else f"the last is older than {_fmt(self._max_age)} s"
        return _deny(
            "no_reference_price",
            f"no fresh reference price for {sym} ({state}), needed for the {needed_for} check",
            symbol=sym,
        )

    def _take(
        self, mine: TokenBucket | None, venue: TokenBucket | None, reason: str, venue_reason: str, what: str
    ) -> None:
        if mine is not None and mine.available() < 1.0:
            raise _deny(
                reason,
                f"more than {_fmt(mine.rate)} {what} per second for this agent; "
                f"retry in {mine.retry_after(1.0):.3g} s",
                scope="agent",
                limit=mine.rate,
                retry_after_s=mine.retry_after(1.0),
            )
        if venue is not None and venue.available() < 1.0:
            raise _deny(
                venue_reason,
                f"more than {_fmt(venue.rate)} {what} per second for the venue session "
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

    # -- cancels ----------------------------------------------------------------------------------

    def check_cancel(self, agent: str, client_id: str, agent_limits: Limits | None) -> OpenOrder:
        """Check a cancel: the order must be open and the agent's; the cancel rates apply (no
        trading state blocks a cancel). Takes a token from the cancel buckets on success.

        :returns: the open order (its symbol and side go into the cancel request).
        :raises RiskDenied: ``unknown_order`` (also for another agent's order: no agent learns
            of another's orders), ``cancel_rate``, ``venue_cancel_rate``.
        """
        held = self._orders.get(client_id)
        if held is None or held.agent != agent:
            raise _deny(
                "unknown_order", f"agent {agent} has no open order {client_id!r}", client_id=client_id
            )
        mine = self._agent_bucket(
            self._cancel_buckets, agent, agent_limits.cancel_rate_per_s if agent_limits is not None else None
        )
        self._take(mine, self._venue_cancels, "cancel_rate", "venue_cancel_rate", "cancels")
        return held

    # -- execution reports ------------------------------------------------------------------------

    def on_ack(self, client_id: str, venue_order_id: str | None = None) -> OpenOrder | None:
        """The venue accepted the order (ExecType New). Returns it, or ``None`` if not open."""
        held = self._orders.get(client_id)
        if held is None:
            return None
        held = self._orders[client_id] = replace(
            held,
            acked=True,
            venue_order_id=venue_order_id if venue_order_id is not None else held.venue_order_id,
        )
        return held

    def on_fill(self, client_id: str, qty: float, price: float) -> OpenOrder | None:
        """A fill of ``qty`` at ``price``: the position moves by the full ``qty`` (the venue is the
        truth, even for an overfill) and the remaining quantity shrinks; at zero the order is
        done. Returns the updated order (``remaining`` 0 when filled), or ``None`` for an order
        that is not open (reconcile with :meth:`set_position`).

        :raises ValueError: ``qty`` or ``price`` not a finite number > 0.
        """
        if not (_is_number(qty) and qty > 0):
            raise ValueError(f"fill qty must be a finite number > 0, got {qty!r}")
        if not (_is_number(price) and price > 0):
            raise ValueError(f"fill price must be a finite number > 0, got {price!r}")
        held = self._orders.get(client_id)
        if held is None:
            return None
        qty = float(qty)
        sign = 1.0 if held.side == "buy" else -1.0
        used = min(qty, held.remaining)
        remaining = held.remaining - used
        book = self._book(held.agent)
        done = remaining <= _REL_EPS * max(1.0, held.qty)
        for scope_book in (book, self._account):
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

    def on_done(self, client_id: str) -> OpenOrder | None:
        """The order is over (canceled, rejected, expired, filled, or never sent): it no longer
        counts. Returns it, or ``None`` if it was not open."""
        held = self._orders.pop(client_id, None)
        if held is None:
            return None
        for scope_book in (self._book(held.agent), self._account):
            scope_book.close(held.symbol, held.side, held.remaining)
        return held

    def set_position(self, agent: str, symbol: str, qty: float) -> None:
        """Set a position outright (reconciliation with the venue, a fill that matched no
        open order)."""
        if not _is_number(qty):
            raise ValueError(f"position must be a finite number, got {qty!r}")
        book = self._book(agent)
        delta = float(qty) - book.pos.get(symbol, 0.0)
        book.move(symbol, delta)
        self._account.move(symbol, delta)

    # -- views ------------------------------------------------------------------------------------

    def positions(self, agent: str) -> dict[str, float]:
        """The agent's non-zero net positions by symbol (from fills)."""
        book = self._books.get(agent)
        return dict(book.pos) if book is not None else {}

    def account_positions(self) -> dict[str, float]:
        """The account's non-zero net positions by symbol (all agents)."""
        return dict(self._account.pos)

    def open_orders(self, agent: str | None = None) -> list[OpenOrder]:
        """The open orders of ``agent`` (of everyone when ``None``), oldest first."""
        return [o for o in self._orders.values() if agent is None or o.agent == agent]

    def open_order(self, client_id: str) -> OpenOrder | None:
        return self._orders.get(client_id)

    def worst_case(self, agent: str | None, symbol: str) -> tuple[float, float]:
        """``(position if every open buy filled, position if every open sell filled)`` for the
        agent (the account when ``None``)."""
        book = self._account if agent is None else self._books.get(agent, _Book())
        return book.long(symbol), -book.short(symbol)

    # -- trading state ----------------------------------------------------------------------------

    def state(self, agent: str | None = None) -> TradingState:
        """The global state, or the state set for ``agent`` (not combined with the global one;
        see :meth:`effective_state`)."""
        if agent is None:
            return self._state
        return self._agent_states.get(agent, TradingState.ACTIVE)

    def effective_state(self, agent: str) -> TradingState:
        """The more restrictive of the agent's state and the global state."""
        mine = self.state(agent)
        return mine if _SEVERITY[mine] > _SEVERITY[self._state] else self._state

    def set_state(self, state: TradingState | str, agent: str | None = None) -> list[OpenOrder]:
        """Set the global state (``agent=None``) or one agent's.

        :returns: entering HALTED, the open orders to cancel now (every order, or the agent's):
            the kill switch. Otherwise an empty list.
        """
        new = TradingState(state)
        if agent is None:
            self._state = new
        elif new is TradingState.ACTIVE:
            self._agent_states.pop(agent, None)
        else:
            self._agent_states[agent] = new
        if new is not TradingState.HALTED:
            return []
        return self.open_orders(agent)

    # -- persistence ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Positions, open orders and trading states as plain JSON-able data. Rate buckets,
        reference prices and the duplicate window are not kept: they are only meaningful now."""
        return {
            "version": 1,
            "state": self._state.value,
            "agent_states": {agent: s.value for agent, s in sorted(self._agent_states.items())},
            "positions": {agent: dict(book.pos) for agent, book in sorted(self._books.items()) if book.pos},
            "open_orders": [o.to_dict() for o in self._orders.values()],
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace positions, open orders and trading states with a :meth:`snapshot`'s. All or
        nothing: a bad snapshot changes nothing.

        :raises clove.drivers.schema.FieldError: naming what is wrong in the snapshot.
        """
        if not isinstance(snapshot, Mapping):
            raise invalid("", f"expected a table, got {type(snapshot).__name__}")
        if snapshot.get("version") != 1:
            raise invalid("version", f"expected 1, got {snapshot.get('version')!r}")
        try:
            state = TradingState(snapshot.get("state"))
        except ValueError:
            raise invalid(
                "state", f"expected one of active, reducing, halted, got {snapshot.get('state')!r}"
            ) from None
        raw_states = snapshot.get("agent_states", {})
        if not isinstance(raw_states, dict):
            raise invalid("agent_states", "expected a table")
        agent_states: dict[str, TradingState] = {}
        for agent, value in raw_states.items():
            try:
                parsed = TradingState(value)
            except ValueError:
                raise invalid(
                    f"agent_states.{agent}", f"expected active, reducing or halted, got {value!r}"
                ) from None
            if parsed is not TradingState.ACTIVE:
                agent_states[str(agent)] = parsed
        books: dict[str, _Book] = {}
        account = _Book()
        raw_positions = snapshot.get("positions", {})
        if not isinstance(raw_positions, dict):
            raise invalid("positions", "expected a table")
        for agent, table in raw_positions.items():
            if not isinstance(table, dict):
                raise invalid(f"positions.{agent}", "expected a table of symbol = quantity")
            for sym, qty in table.items():
                if not _is_number(qty):
                    raise invalid(f"positions.{agent}.{sym}", f"expected a number, got {qty!r}")
                books.setdefault(str(agent), _Book()).move(str(sym), float(qty))
                account.move(str(sym), float(qty))
        raw_orders = snapshot.get("open_orders", [])
        if not isinstance(raw_orders, list):
            raise invalid("open_orders", "expected an array")
        orders: dict[str, OpenOrder] = {}
        for i, raw in enumerate(raw_orders):
            held = OpenOrder.from_dict(raw, key=f"open_orders[{i}]")
            if held.client_id in orders:
                raise invalid(f"open_orders[{i}].client_id", f"{held.client_id!r} appears twice")
            orders[held.client_id] = held
            books.setdefault(held.agent, _Book()).open(held.symbol, held.side, held.remaining)
            account.open(held.symbol, held.side, held.remaining)
        self._state = state
        self._agent_states = agent_states
        self._books = books
        self._account = account
        self._orders = orders
        self._passed.clear()


def _dup_key(order: Order) -> tuple[str, str, str, str, float, float | None]:
    return (order.agent, order.symbol, order.side, order.type, float(order.qty), order.price)
