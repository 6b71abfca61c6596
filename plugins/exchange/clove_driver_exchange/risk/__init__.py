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

Modules: :mod:`~clove_driver_exchange.risk.limits` (:class:`Limits`, :data:`REASONS`, the
tolerance), :mod:`~clove_driver_exchange.risk.orders` (:class:`Order`, :class:`OpenOrder`),
:mod:`~clove_driver_exchange.risk.book` (open orders and positions, per agent and for the
account), :mod:`~clove_driver_exchange.risk.states` (:class:`TradingState`),
:mod:`~clove_driver_exchange.risk.market` (instruments and reference prices),
:mod:`~clove_driver_exchange.risk.throttles` (rate buckets),
:mod:`~clove_driver_exchange.risk.duplicates` (the duplicate window),
:mod:`~clove_driver_exchange.risk.checks` (the checks of a new order) and
:mod:`~clove_driver_exchange.risk.engine` (:class:`RiskEngine`, which runs them).
"""

from __future__ import annotations

from clove.errors import RiskDenied
from clove_driver_exchange.risk.engine import RiskEngine
from clove_driver_exchange.risk.limits import REASONS, Limits
from clove_driver_exchange.risk.orders import ORDER_TYPES as ORDER_TYPES  # public, not in __all__ (as before)
from clove_driver_exchange.risk.orders import SIDES as SIDES  # public, not in __all__ (as before)
from clove_driver_exchange.risk.orders import OpenOrder, Order
from clove_driver_exchange.risk.states import TradingState

__all__ = [
    "REASONS",
    "Limits",
    "OpenOrder",
    "Order",
    "RiskDenied",
    "RiskEngine",
    "TradingState",
]
