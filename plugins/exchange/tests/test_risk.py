"""The exchange driver's pre-trade risk engine: every check at its exact boundary, the scopes
(agent, global), trading states and the kill switch, fail-closed reference prices, rates,
duplicates, fills, persistence, and hypothesis properties over random order flows."""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clove.drivers.schema import FieldError
from clove.errors import PermissionDenied, from_wire, to_wire

try:
    from clove_driver_exchange.risk import (
        REASONS,
        Limits,
        OpenOrder,
        Order,
        RiskDenied,
        RiskEngine,
        TradingState,
    )
except ModuleNotFoundError:  # the plugin is not installed (editable) in this venv yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from clove_driver_exchange.risk import (
        REASONS,
        Limits,
        OpenOrder,
        Order,
        RiskDenied,
        RiskEngine,
        TradingState,
    )

SYMBOLS = ("ACME", "BOLT", "CRUX")  # CRUX is known but has no reference price


class Clock:
    """A hand-driven monotonic clock; ``boom`` makes it fail (for the fail-closed test)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.boom = False

    def __call__(self) -> float:
        if self.boom:
            raise OSError("clock broke")
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def L(**kw: Any) -> Limits:
    """Limits without duplicate detection (tests send identical orders on purpose)."""
    kw.setdefault("duplicate_window_s", 0.0)
    return Limits(**kw)


def make(
    limits: Limits | None = None, *, refs: dict[str, float] | None = None, **kw: Any
) -> tuple[RiskEngine, Clock]:
    clock = Clock()
    kw.setdefault("instruments", SYMBOLS)
    eng = RiskEngine(limits if limits is not None else L(), clock=clock, **kw)
    for sym, px in (refs if refs is not None else {"ACME": 100.0, "BOLT": 50.0}).items():
        eng.set_reference(sym, px)
    return eng, clock


_ids = itertools.count()


def order(
    side: str = "buy",
    qty: float = 10.0,
    price: float | None = 100.0,
    *,
    symbol: str = "ACME",
    agent: str = "alice",
    type: str = "limit",
    cid: str | None = None,
) -> Order:
    return Order(f"c{next(_ids)}" if cid is None else cid, agent, symbol, side, qty, price, type)


def market(side: str = "buy", qty: float = 10.0, **kw: Any) -> Order:
    return order(side, qty, None, type="market", **kw)


def denied(eng: RiskEngine, o: Order, limits: Limits | None = None) -> RiskDenied:
    with pytest.raises(RiskDenied) as info:
        eng.check_new(o, limits)
    err = info.value
    assert err.reason in REASONS
    assert err.message.startswith(f"{err.reason}: ")
    assert err.details["reason"] == err.reason
    return err


# -- the error --------------------------------------------------------------------------------------


def test_risk_denied_is_a_permission_error_with_a_stable_code_that_survives_the_wire() -> None:
    eng, _ = make(L(max_order_qty=1))
    err = denied(eng, order(qty=2))
    assert isinstance(err, PermissionDenied)
    assert err.code == "risk.denied"
    back = from_wire(json.loads(json.dumps(to_wire(err))))
    assert isinstance(back, RiskDenied)
    assert back.reason == "max_order_qty"
    assert back.message == err.message
    assert back.details["limit"] == 1


# -- Limits -----------------------------------------------------------------------------------------


def test_limits_from_a_table() -> None:
    lim = Limits.from_table(
        {
            "max_order_qty": 100,
            "max_notional": 1e6,
            "price_collar_pct": 5,
            "max_position": 1000,
            "max_gross_exposure": 2e6,
            "max_open_orders": 20,
            "order_rate_per_s": 5,
            "cancel_rate_per_s": 10.5,
            "restricted_symbols": ["EVIL"],
            "allowed_symbols": ["ACME", "BOLT"],
            "duplicate_window_s": 0,
        }
    )
    assert lim.max_order_qty == 100.0
    assert isinstance(lim.max_order_qty, float)
    assert lim.max_open_orders == 20
    assert lim.restricted_symbols == ("EVIL",)
    assert lim.allowed_symbols == ("ACME", "BOLT")
    assert Limits.from_table({}) == Limits()
    assert Limits().duplicate_window_s == 1.0
    assert Limits().allowed_symbols is None


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"max_position": -1}, "max_position"),
        ({"max_notional": float("nan")}, "max_notional"),
        ({"max_order_qty": float("inf")}, "max_order_qty"),
        ({"max_notional": True}, "max_notional"),
        ({"max_open_orders": 1.5}, "max_open_orders"),
        ({"max_open_orders": -1}, "max_open_orders"),
        ({"order_rate_per_s": 0}, "order_rate_per_s"),
        ({"cancel_rate_per_s": -2}, "cancel_rate_per_s"),
        ({"duplicate_window_s": -0.1}, "duplicate_window_s"),
        ({"allowed_symbols": ["ACME", ""]}, "allowed_symbols[1]"),
        ({"restricted_symbols": "ACME"}, "restricted_symbols"),
        ({"restricted_symbols": [3]}, "restricted_symbols[0]"),
        ({"max_posiiton": 5}, "max_posiiton"),
    ],
)
def test_limits_from_table_names_the_bad_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(FieldError) as info:
        Limits.from_table(table)
    assert info.value.key == key


def test_zero_limits_are_valid_and_admit_nothing() -> None:
    eng, _ = make(L(max_position=0))
    assert denied(eng, order(qty=1)).reason == "max_position"
    eng, _ = make(L(max_open_orders=0))
    assert denied(eng, order(qty=1)).reason == "max_open_orders"


# -- malformed orders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "o",
    [
        order(qty=0),
        order(qty=-5),
        order(qty=float("nan")),
        order(qty=float("inf")),
        order(qty="10"),  # type: ignore[arg-type]
        order(qty=True),
        order(price=None),  # a limit order without a price
        order(price=0.0),
        order(price=-1.0),
        order(price=float("nan")),
        order(price=float("inf")),
        order(side="short"),
        order(type="stop"),
        order(agent=""),
        order(symbol=""),
        order(cid=""),
        Order("m1", "alice", "ACME", "buy", 10.0, 100.0, "market"),  # a market order with a price
    ],
    ids=lambda o: f"{o.side}-{o.qty!r}-{o.price!r}-{o.type}-{o.agent!r}-{o.symbol!r}-{o.client_id!r}",
)
def test_malformed_orders_are_bad_order(o: Order) -> None:
    eng, _ = make()
    assert denied(eng, o).reason == "bad_order"


def test_a_client_id_in_use_is_bad_order() -> None:
    eng, _ = make()
    eng.admit(order(cid="x1"), None)
    err = denied(eng, order(cid="x1", side="sell"))
    assert err.reason == "bad_order"
    assert "already in use" in err.message
    eng.on_done("x1")
    eng.check_new(order(cid="x1"), None)


def test_nan_never_slips_through_a_comparison() -> None:
    eng, _ = make(L(max_order_qty=10, max_notional=100, max_position=10))
    assert denied(eng, order(qty=float("nan"))).reason == "bad_order"
    assert denied(eng, order(price=float("nan"))).reason == "bad_order"


def test_a_check_that_crashes_fails_closed() -> None:
    eng, clock = make(L(max_position=10))
    clock.boom = True
    err = denied(eng, order(qty=1))
    assert err.reason == "check_failed"
    assert "OSError" in err.message
    clock.boom = False
    with pytest.raises(RuntimeError):  # nothing was remembered as passed
        eng.accept_new(order(qty=1))


# -- per-order limits -------------------------------------------------------------------------------


def test_max_order_qty_admits_the_limit_and_denies_above() -> None:
    eng, _ = make(L(max_order_qty=100))
    eng.check_new(order(qty=100), None)
    err = denied(eng, order(qty=100.01))
    assert err.reason == "max_order_qty"
    assert err.message == "max_order_qty: 100.01 ACME > global limit 100"
    assert err.details == {"reason": "max_order_qty", "scope": "global", "limit": 100.0, "value": 100.01}


@pytest.mark.parametrize(("agent_qty", "global_qty", "scope"), [(50, 100, "agent"), (100, 50, "global")])
def test_the_stricter_of_agent_and_global_limits_wins(
    agent_qty: float, global_qty: float, scope: str
) -> None:
    eng, _ = make(L(max_order_qty=global_qty))
    agent = L(max_order_qty=agent_qty)
    eng.check_new(order(qty=50), agent)
    err = denied(eng, order(qty=51), agent)
    assert err.details["scope"] == scope
    assert f"{scope} limit 50" in err.message



def test_the_kernels_grant_check_refuses_a_limit_as_risk_denied_and_a_symbol_as_perm_denied() -> None:
    from clove_driver_exchange.config import ExchangeGrant, SubmitArgs

    grant = ExchangeGrant(ops=("submit_order",), symbols=("ACME",), max_order_qty=20)
    grant.check("submit_order", SubmitArgs("ACME", "buy", 20, price=100.0))
    with pytest.raises(RiskDenied) as too_big:  # what an agent catching RiskDenied expects
        grant.check("submit_order", SubmitArgs("ACME", "buy", 64, price=100.0))
    err = too_big.value
    assert err.code == "risk.denied" and err.reason == "max_order_qty"
    assert err.message == "max_order_qty: 64 ACME > agent limit 20"  # the engine's wording
    assert err.details == {"reason": "max_order_qty", "scope": "agent", "limit": 20, "value": 64}
    with pytest.raises(PermissionDenied) as not_granted:
        grant.check("submit_order", SubmitArgs("BOLT", "buy", 1, price=25.0))
    assert not isinstance(not_granted.value, RiskDenied)
    assert not_granted.value.code == "perm.denied" and not_granted.value.details["reason"] == "symbol"

def test_max_notional_uses_the_limit_price() -> None:
    eng, _ = make(L(max_notional=10_000))
    eng.check_new(order(qty=100, price=100.0), None)
    eng.check_new(order(qty=200, price=50.0), None)
    err = denied(eng, order(qty=100, price=100.01))
    assert err.reason == "max_notional"
    assert "> global limit 10000" in err.message


def test_max_notional_values_a_market_order_at_the_reference_price() -> None:
    eng, _ = make(L(max_notional=10_000))  # ACME reference 100
    eng.check_new(market(qty=100), None)
    assert denied(eng, market(qty=100.01)).reason == "max_notional"
    eng.set_reference("ACME", 200.0)
    assert denied(eng, market(qty=100)).reason == "max_notional"
    eng.check_new(market(qty=50), None)


def test_a_market_order_without_a_reference_fails_closed_when_notional_is_limited() -> None:
    eng, _ = make(L(max_notional=10_000), refs={})
    err = denied(eng, market(qty=1))
    assert err.reason == "no_reference_price"
    assert "none received" in err.message
    eng.check_new(order(qty=1, price=100.0), None)  # a limit order carries its own price
    eng, _ = make(L(), refs={})
    eng.check_new(market(qty=1), None)  # nothing needs the price: nothing to fail


def test_the_reference_goes_stale_after_max_reference_age() -> None:
    eng, clock = make(L(max_notional=10_000), max_reference_age_s=30)
    clock.advance(30)
    eng.check_new(market(qty=1), None)  # exactly 30 s old: still fresh
    assert eng.reference("ACME") == 100.0
    clock.advance(0.001)
    err = denied(eng, market(qty=1))
    assert err.reason == "no_reference_price"
    assert "older than 30 s" in err.message
    assert eng.reference("ACME") is None
    eng.set_reference("ACME", 101.0)
    eng.check_new(market(qty=1), None)


def test_set_reference_drops_a_bad_price_and_ignores_an_older_one() -> None:
    eng, clock = make(L(price_collar_pct=10))
    assert eng.set_reference("ACME", 0.0) is False  # an empty book: fail closed, not a stale price
    assert denied(eng, order(price=100.0)).reason == "no_reference_price"
    assert eng.set_reference("ACME", float("nan")) is False
    assert eng.set_reference("ACME", 100.0, ts=clock.t) is True
    assert eng.set_reference("ACME", 500.0, ts=clock.t - 1) is False  # out of order
    assert eng.reference("ACME") == 100.0


@pytest.mark.parametrize(("price", "ok"), [(110.0, True), (90.0, True), (110.01, False), (89.99, False)])
def test_price_collar_boundaries(price: float, ok: bool) -> None:
    eng, _ = make(L(price_collar_pct=10))  # reference 100
    if ok:
        eng.check_new(order(price=price), None)
    else:
        err = denied(eng, order(price=price))
        assert err.reason == "price_collar"
        assert "from the reference 100 > global collar 10%" in err.message
        assert err.details["reference"] == 100.0


def test_price_collar_stricter_wins_and_needs_a_fresh_reference() -> None:
    eng, clock = make(L(price_collar_pct=10))
    agent = L(price_collar_pct=2)
    eng.check_new(order(price=102.0), agent)
    assert denied(eng, order(price=103.0), agent).details["scope"] == "agent"
    eng.check_new(market(qty=1), agent)  # a market order has no price to collar
    assert denied(eng, order(price=100.0, symbol="CRUX")).reason == "no_reference_price"
    clock.advance(31)
    assert denied(eng, order(price=100.0)).reason == "no_reference_price"


# -- symbols ----------------------------------------------------------------------------------------


def test_restricted_and_allowed_symbols() -> None:
    eng, _ = make(L(restricted_symbols=("BOLT",)))
    err = denied(eng, order(symbol="BOLT", price=50.0))
    assert err.reason == "restricted_symbol"
    assert "global restricted_symbols" in err.message
    agent = L(restricted_symbols=("ACME",))
    assert denied(eng, order(), agent).details["scope"] == "agent"
    eng.check_new(order(), None)

    eng, _ = make(L(allowed_symbols=("ACME", "BOLT")))
    only_acme = L(allowed_symbols=("ACME",))
    eng.check_new(order(), only_acme)
    err = denied(eng, order(symbol="BOLT", price=50.0), only_acme)
    assert err.reason == "restricted_symbol"
    assert "agent allowed_symbols" in err.message
    assert denied(eng, order(symbol="CRUX")).details["scope"] == "global"  # both lists apply


def test_unknown_instruments_are_denied() -> None:
    eng, _ = make()
    err = denied(eng, order(symbol="ZZZZ"))
    assert err.reason == "unknown_instrument"
    eng.add_instrument("ZZZZ")
    eng.check_new(order(symbol="ZZZZ"), None)


def test_without_an_instrument_list_market_data_makes_a_symbol_known() -> None:
    eng, _ = make(refs={}, instruments=None)
    assert denied(eng, order()).reason == "unknown_instrument"
    eng.set_reference("ACME", 100.0)
    eng.check_new(order(), None)
    assert eng.instruments() == {"ACME"}


# -- positions (worst case) -------------------------------------------------------------------------


def test_max_position_counts_open_orders_as_filled() -> None:
    eng, _ = make()
    agent = L(max_position=1000)
    eng.check_new(order(qty=1000), agent)
    eng.admit(order(qty=1000), agent)
    err = denied(eng, order(qty=200), agent)
    assert err.reason == "max_position"
    assert err.message.startswith("max_position: ACME position would be 1200 > agent limit 1000")
    eng.admit(order(qty=600, symbol="BOLT", price=50.0), agent)  # another symbol: its own limit


def test_max_position_boundary_on_both_sides() -> None:
    eng, _ = make()
    agent = L(max_position=1000)
    eng.admit(order("buy", 600), agent)
    eng.check_new(order("buy", 400), agent)
    assert denied(eng, order("buy", 400.5), agent).details["value"] == 1000.5
    # Open buys do not offset the short side: a sell of 1000 is the worst case -1000.
    eng.check_new(order("sell", 1000), agent)
    err = denied(eng, order("sell", 1000.01), agent)
    assert err.details["value"] == -1000.01
    assert "position would be -1000.01" in err.message


def test_fills_move_positions_and_the_worst_case() -> None:
    eng, _ = make()
    agent = L(max_position=1000)
    o = eng.admit(order("buy", 600), agent)
    eng.on_fill(o.client_id, 600, 100.0)
    assert eng.positions("alice") == {"ACME": 600.0}
    assert eng.open_orders("alice") == []
    eng.check_new(order("buy", 400), agent)
    assert denied(eng, order("buy", 401), agent).reason == "max_position"
    eng.check_new(order("sell", 1600), agent)  # long 600: a sell of 1600 ends at -1000
    assert denied(eng, order("sell", 1601), agent).reason == "max_position"


def test_float_sums_at_the_limit_are_not_denied() -> None:
    eng, _ = make()
    agent = L(max_position=0.3)
    eng.admit(order("buy", 0.1), agent)
    eng.check_new(order("buy", 0.2), agent)  # 0.1 + 0.2 = 0.30000000000000004
    assert denied(eng, order("buy", 0.2001), agent).reason == "max_position"


def test_an_order_towards_flat_passes_even_above_a_tightened_limit() -> None:
    eng, _ = make()
    eng.set_position("alice", "ACME", 600)
    agent = L(max_position=500)
    assert denied(eng, order("buy", 1), agent).reason == "max_position"
    eng.check_new(order("sell", 100), agent)
    eng.check_new(order("sell", 1100), agent)  # to -500
    assert denied(eng, order("sell", 1101), agent).reason == "max_position"


def test_the_global_max_position_bounds_the_account() -> None:
    eng, _ = make(L(max_position=1000))
    eng.admit(order("buy", 600, agent="alice"), None)
    generous = L(max_position=5000)
    eng.check_new(order("buy", 400, agent="bob"), generous)
    err = denied(eng, order("buy", 401, agent="bob"), generous)
    assert err.details["scope"] == "global"
    assert "global limit 1000" in err.message
    # ...and the agent limit still binds the agent alone.
    assert denied(eng, order("buy", 300, agent="bob"), L(max_position=200)).details["scope"] == "agent"


# -- gross exposure ---------------------------------------------------------------------------------


def test_max_gross_exposure_sums_worst_case_positions_at_reference_prices() -> None:
    eng, _ = make(L(max_gross_exposure=100_000))  # ACME 100, BOLT 50
    eng.admit(order("buy", 500), None)  # 50,000
    eng.check_new(order("buy", 1000, symbol="BOLT", price=50.0), None)  # + 50,000
    err = denied(eng, order("buy", 1000.01, symbol="BOLT", price=50.0))
    assert err.reason == "max_gross_exposure"
    assert "> global limit 100000" in err.message
    # A sell of 500 against 500 open buys leaves ACME's worst case at 500: no new exposure.
    eng.check_new(order("sell", 500), None)
    eng.admit(order("buy", 1000, symbol="BOLT", price=50.0), None)
    eng.check_new(order("sell", 500), None)
    assert denied(eng, order("sell", 501), None).reason == "max_gross_exposure"


def test_max_gross_exposure_values_at_the_reference_not_the_limit_price() -> None:
    eng, _ = make(L(max_gross_exposure=10_000))
    eng.check_new(order("buy", 100, price=1.0), None)  # 100 × reference 100
    assert denied(eng, order("buy", 101, price=1.0), None).reason == "max_gross_exposure"
    eng.check_new(market("buy", 100), None)


def test_max_gross_exposure_fails_closed_on_any_missing_reference() -> None:
    eng, clock = make(L(max_gross_exposure=1e9))
    assert denied(eng, order(symbol="CRUX")).reason == "no_reference_price"
    eng.admit(order("buy", 100, symbol="BOLT", price=50.0), None)
    clock.advance(31)
    eng.set_reference("ACME", 100.0)  # ACME fresh, BOLT stale
    err = denied(eng, order("buy", 1))
    assert err.reason == "no_reference_price"
    assert err.details["symbol"] == "BOLT"
    # An order that adds no exposure needs no price at all.
    eng.check_new(order("sell", 50, symbol="BOLT", price=50.0), None)


def test_agent_exposure_limit_applies_to_the_agents_book() -> None:
    eng, _ = make(L(max_gross_exposure=1e9))
    agent = L(max_gross_exposure=20_000)
    eng.admit(order("buy", 100, agent="bob"), None)  # bob's exposure is not alice's
    eng.admit(order("buy", 100), agent)
    eng.check_new(order("buy", 200, symbol="BOLT", price=50.0), agent)
    err = denied(eng, order("buy", 201, symbol="BOLT", price=50.0), agent)
    assert err.details["scope"] == "agent"


# -- open orders ------------------------------------------------------------------------------------


def test_max_open_orders_per_agent_and_per_account() -> None:
    eng, _ = make(L(max_open_orders=3))
    agent = L(max_open_orders=2)
    first = eng.admit(order(), agent)
    eng.admit(order(), agent)
    err = denied(eng, order(), agent)
    assert err.reason == "max_open_orders"
    assert err.message == "max_open_orders: agent alice would have 3 open orders > agent limit 2"
    eng.on_done(first.client_id)
    eng.admit(order(), agent)
    eng.admit(order(agent="bob"), None)  # the account's third
    err = denied(eng, order(agent="bob"), None)
    assert err.details["scope"] == "global"
    assert "the account would have 4" in err.message


# -- rates ------------------------------------------------------------------------------------------


def test_order_rate_admits_a_burst_of_the_rate_then_the_rate() -> None:
    eng, clock = make()
    agent = L(order_rate_per_s=5)
    for _ in range(5):
        eng.check_new(order(), agent)
    err = denied(eng, order(), agent)
    assert err.reason == "order_rate"
    assert err.details["retry_after_s"] == pytest.approx(0.2)
    clock.advance(1.0)
    for _ in range(5):
        eng.check_new(order(), agent)
    assert denied(eng, order(), agent).reason == "order_rate"


def test_order_rate_refills_at_the_exact_interval() -> None:
    eng, clock = make()
    agent = L(order_rate_per_s=4)  # one token per 0.25 s (exact in binary)
    for _ in range(4):
        eng.check_new(order(), agent)
    clock.advance(0.125)
    assert denied(eng, order(), agent).reason == "order_rate"
    clock.advance(0.125)
    eng.check_new(order(), agent)
    assert denied(eng, order(), agent).reason == "order_rate"


def test_a_slow_rate_still_admits_one_order() -> None:
    eng, clock = make()
    agent = L(order_rate_per_s=0.5)  # burst max(1, 0.5) = 1
    eng.check_new(order(), agent)
    clock.advance(1.999)
    assert denied(eng, order(), agent).reason == "order_rate"
    clock.advance(0.001)
    eng.check_new(order(), agent)


def test_the_venue_order_rate_is_shared_by_all_agents() -> None:
    eng, _ = make(L(order_rate_per_s=3))
    for _ in range(3):
        eng.check_new(order(agent="alice"), None)
    err = denied(eng, order(agent="bob"), None)
    assert err.reason == "venue_order_rate"
    assert "shared by all agents" in err.message
    assert err.details["scope"] == "global"


def test_rate_tokens_are_taken_from_both_buckets_or_neither() -> None:
    eng, clock = make(L(order_rate_per_s=2))
    bob = L(order_rate_per_s=1)
    eng.check_new(order(agent="alice"), None)
    eng.check_new(order(agent="alice"), None)
    assert denied(eng, order(agent="bob"), bob).reason == "venue_order_rate"
    clock.advance(0.5)  # the venue has one token again; bob's own bucket was never touched
    eng.check_new(order(agent="bob"), bob)


def test_a_denied_order_costs_no_rate_token() -> None:
    eng, _ = make(L(order_rate_per_s=1))
    agent = L(order_rate_per_s=1, max_order_qty=10)
    for _ in range(3):
        denied(eng, order(qty=11), agent)
    eng.check_new(order(qty=10), agent)


# -- cancels ----------------------------------------------------------------------------------------


def test_cancel_requires_the_agents_own_open_order() -> None:
    eng, _ = make()
    o = eng.admit(order(agent="alice"), None)
    assert eng.check_cancel("alice", o.client_id, None) == o
    with pytest.raises(RiskDenied) as info:
        eng.check_cancel("bob", o.client_id, None)
    assert info.value.reason == "unknown_order"
    with pytest.raises(RiskDenied) as info:
        eng.check_cancel("alice", "nope", None)
    assert info.value.reason == "unknown_order"
    eng.on_done(o.client_id)
    with pytest.raises(RiskDenied):
        eng.check_cancel("alice", o.client_id, None)


def test_cancel_rates_per_agent_and_per_venue() -> None:
    eng, clock = make(L(cancel_rate_per_s=3))
    a = eng.admit(order(agent="alice"), None)
    b = eng.admit(order(agent="bob"), None)
    agent = L(cancel_rate_per_s=2)
    eng.check_cancel("alice", a.client_id, agent)
    eng.check_cancel("alice", a.client_id, agent)
    with pytest.raises(RiskDenied) as info:
        eng.check_cancel("alice", a.client_id, agent)
    assert info.value.reason == "cancel_rate"
    eng.check_cancel("bob", b.client_id, None)  # the venue's third
    with pytest.raises(RiskDenied) as info:
        eng.check_cancel("bob", b.client_id, None)
    assert info.value.reason == "venue_cancel_rate"
    clock.advance(1.0)
    eng.check_cancel("bob", b.client_id, None)


# -- duplicates -------------------------------------------------------------------------------------


def test_duplicates_within_the_window_are_denied() -> None:
    eng, clock = make(Limits())  # duplicate_window_s = 1.0
    first = eng.admit(order("buy", 10, 100.0), None)
    clock.advance(0.999)
    err = denied(eng, order("buy", 10, 100.0))
    assert err.reason == "duplicate_order"
    assert "window 1 s" in err.message
    eng.check_new(order("buy", 10, 100.01), None)  # another price
    eng.check_new(order("buy", 11, 100.0), None)  # another quantity
    eng.check_new(order("sell", 10, 100.0), None)  # another side
    eng.check_new(order("buy", 10, 100.0, agent="bob"), None)  # another agent
    eng.on_done(first.client_id)  # canceled: a resend within the window is still a duplicate
    assert denied(eng, order("buy", 10, 100.0)).reason == "duplicate_order"
    clock.advance(0.001)  # exactly one window later
    eng.check_new(order("buy", 10, 100.0), None)


def test_duplicate_window_stricter_wins_and_zero_disables() -> None:
    eng, clock = make(Limits(duplicate_window_s=1.0))
    agent = Limits(duplicate_window_s=5.0)
    eng.admit(market("sell", 3), agent)
    clock.advance(2)
    assert denied(eng, market("sell", 3), agent).details["window_s"] == 5.0
    eng, _ = make(Limits(duplicate_window_s=0.0))
    eng.admit(order(), Limits(duplicate_window_s=0.0))
    eng.check_new(order(), Limits(duplicate_window_s=0.0))


# -- trading states ---------------------------------------------------------------------------------


def test_reducing_admits_only_orders_that_reduce_the_agents_position() -> None:
    eng, _ = make()
    eng.set_position("alice", "ACME", 100)
    assert eng.set_state(TradingState.REDUCING, agent="alice") == []
    assert eng.effective_state("alice") is TradingState.REDUCING
    eng.check_new(order("sell", 100), None)
    err = denied(eng, order("buy", 1))
    assert err.reason == "state_reducing"
    assert "agent alice" in err.message
    # Up to the position, never a flip (documented: flipping opens risk the other way).
    err = denied(eng, order("sell", 100.01))
    assert err.reason == "state_reducing"
    assert "would become -0.01" in err.message
    # Open reducing orders count: two sells cannot together flip the position.
    eng.admit(order("sell", 30), None)
    eng.check_new(order("sell", 70), None)
    assert denied(eng, order("sell", 71)).reason == "state_reducing"
    # Other agents trade on; a flat agent in REDUCING has nothing to reduce.
    eng.check_new(order("buy", 5, agent="bob"), None)
    eng.set_state("reducing", agent="bob")
    assert "no position to reduce" in denied(eng, order("buy", 5, agent="bob")).message
    assert denied(eng, order("sell", 5, agent="bob")).reason == "state_reducing"


def test_reducing_a_short_position_admits_buys() -> None:
    eng, _ = make()
    eng.set_position("alice", "ACME", -50)
    eng.set_state(TradingState.REDUCING, agent="alice")
    eng.check_new(order("buy", 50), None)
    assert denied(eng, order("buy", 51)).reason == "state_reducing"
    assert denied(eng, order("sell", 1)).reason == "state_reducing"
    eng.check_new(market("buy", 10), None)


def test_global_reducing_also_requires_the_account_position_to_shrink() -> None:
    eng, _ = make()
    eng.set_position("alice", "ACME", 100)
    eng.set_position("bob", "ACME", -100)
    assert eng.account_positions() == {}  # flat account
    eng.set_state(TradingState.REDUCING, agent="alice")
    eng.check_new(order("sell", 50, agent="alice"), None)  # agent REDUCING: the agent's position
    eng.set_state(TradingState.ACTIVE, agent="alice")
    eng.set_state(TradingState.REDUCING)
    err = denied(eng, order("sell", 50, agent="alice"))
    assert err.reason == "state_reducing"
    assert "account's position" in err.message
    eng.set_position("bob", "ACME", 0)
    eng.check_new(order("sell", 50, agent="alice"), None)
    assert denied(eng, order("buy", 1, agent="carol")).reason == "state_reducing"


def test_halted_denies_new_orders_admits_cancels_and_returns_the_orders_to_cancel() -> None:
    eng, _ = make()
    a1 = eng.admit(order(agent="alice"), None)
    a2 = eng.admit(order("sell", agent="alice"), None)
    b1 = eng.admit(order(agent="bob"), None)
    to_cancel = eng.set_state(TradingState.HALTED)
    assert [o.client_id for o in to_cancel] == [a1.client_id, a2.client_id, b1.client_id]
    assert all(isinstance(o, OpenOrder) for o in to_cancel)
    err = denied(eng, order(agent="carol"))
    assert err.reason == "state_halted"
    assert "HALTED (global)" in err.message
    assert denied(eng, order("sell", 1)).reason == "state_halted"  # even a reducing order
    assert eng.check_cancel("alice", a1.client_id, None) == a1
    for o in to_cancel:
        eng.on_done(o.client_id)
    assert eng.open_orders() == []
    assert eng.set_state(TradingState.ACTIVE) == []
    eng.check_new(order(), None)


def test_halting_one_agent_cancels_only_its_orders() -> None:
    eng, _ = make()
    a1 = eng.admit(order(agent="alice"), None)
    eng.admit(order(agent="bob"), None)
    assert eng.set_state("halted", agent="alice") == [a1]
    assert eng.state("alice") is TradingState.HALTED
    assert eng.state() is TradingState.ACTIVE
    err = denied(eng, order(agent="alice"))
    assert err.reason == "state_halted"
    assert "agent alice" in err.message
    eng.check_new(order(agent="bob"), None)
    eng.check_cancel("alice", a1.client_id, None)
    eng.set_state(TradingState.REDUCING)  # the more restrictive state wins
    assert eng.effective_state("alice") is TradingState.HALTED
    assert eng.effective_state("bob") is TradingState.REDUCING


def test_an_unknown_state_is_refused() -> None:
    eng, _ = make()
    with pytest.raises(ValueError, match="paused"):
        eng.set_state("paused")


# -- execution reports ------------------------------------------------------------------------------


def test_acks_partial_fills_fills_and_done() -> None:
    eng, _ = make()
    o = eng.admit(order("buy", 100), None)
    acked = eng.on_ack(o.client_id, "V-1")
    assert acked is not None
    assert acked.acked
    assert acked.venue_order_id == "V-1"
    part = eng.on_fill(o.client_id, 30, 99.5)
    assert part is not None
    assert part.remaining == 70
    assert eng.positions("alice") == {"ACME": 30.0}
    assert eng.worst_case("alice", "ACME") == (100.0, 30.0)
    assert eng.open_order(o.client_id) == part
    last = eng.on_fill(o.client_id, 70, 100.0)
    assert last is not None
    assert last.remaining == 0
    assert eng.open_orders() == []
    assert eng.positions("alice") == {"ACME": 100.0}
    assert eng.on_done(o.client_id) is None  # the fill already closed it


def test_a_canceled_partial_fill_keeps_its_position() -> None:
    eng, _ = make()
    o = eng.admit(order("sell", 100), None)
    eng.on_fill(o.client_id, 40, 100.0)
    done = eng.on_done(o.client_id)
    assert done is not None
    assert done.remaining == 60
    assert eng.positions("alice") == {"ACME": -40.0}
    assert eng.worst_case("alice", "ACME") == (-40.0, -40.0)
    assert eng.worst_case(None, "ACME") == (-40.0, -40.0)


def test_an_overfill_moves_the_position_by_what_the_venue_reports() -> None:
    eng, _ = make()
    o = eng.admit(order("sell", 10), None)
    filled = eng.on_fill(o.client_id, 15, 100.0)
    assert filled is not None
    assert filled.remaining == 0
    assert eng.positions("alice") == {"ACME": -15.0}
    assert eng.open_orders() == []


def test_fills_for_unknown_orders_and_bad_fills() -> None:
    eng, _ = make()
    assert eng.on_fill("ghost", 1, 100.0) is None
    assert eng.on_ack("ghost") is None
    o = eng.admit(order(), None)
    for qty, price in ((0, 100.0), (-1, 100.0), (float("nan"), 100.0), (1, 0.0)):
        with pytest.raises(ValueError, match="fill"):
            eng.on_fill(o.client_id, qty, price)
    assert eng.open_order(o.client_id) == o


def test_account_positions_sum_the_agents() -> None:
    eng, _ = make()
    a = eng.admit(order("buy", 10, agent="alice"), None)
    b = eng.admit(order("sell", 4, agent="bob"), None)
    eng.on_fill(a.client_id, 10, 100.0)
    eng.on_fill(b.client_id, 4, 100.0)
    assert eng.positions("alice") == {"ACME": 10.0}
    assert eng.positions("bob") == {"ACME": -4.0}
    assert eng.account_positions() == {"ACME": 6.0}
    assert eng.positions("nobody") == {}


# -- the check/accept contract ----------------------------------------------------------------------


def test_accept_new_refuses_an_order_that_was_not_checked() -> None:
    eng, _ = make(L(max_order_qty=10))
    with pytest.raises(RuntimeError):
        eng.accept_new(order(qty=1000))
    o = order(qty=10, cid="k1")
    eng.check_new(o, None)
    with pytest.raises(RuntimeError):  # same id, different order
        eng.accept_new(order(qty=1000, cid="k1"))
    eng.check_new(o, None)
    eng.accept_new(o)
    with pytest.raises(RuntimeError):  # one check, one accept
        eng.accept_new(o)
    assert [x.client_id for x in eng.open_orders()] == ["k1"]


def test_set_global_limits_keeps_an_unchanged_venue_bucket() -> None:
    eng, _ = make(L(order_rate_per_s=1))
    eng.check_new(order(), None)
    eng.set_global_limits(L(order_rate_per_s=1, max_order_qty=5))
    assert denied(eng, order(qty=5)).reason == "venue_order_rate"
    assert eng.global_limits.max_order_qty == 5
    eng.set_global_limits(L(order_rate_per_s=2))
    eng.check_new(order(), None)


# -- persistence ------------------------------------------------------------------------------------


def build_state(eng: RiskEngine) -> None:
    a = eng.admit(order("buy", 100, agent="alice"), None)
    eng.on_ack(a.client_id, "V1")
    eng.on_fill(a.client_id, 40, 100.0)
    eng.admit(order("sell", 25, agent="alice", symbol="BOLT", price=50.0), None)
    eng.admit(market("buy", 7, agent="bob"), None)
    eng.set_position("bob", "BOLT", -12.5)
    eng.set_state(TradingState.REDUCING, agent="bob")
    eng.set_state(TradingState.HALTED, agent="carol")


def test_snapshot_restore_round_trip_through_json() -> None:
    eng, _ = make()
    build_state(eng)
    eng.set_state(TradingState.REDUCING)
    snap = json.loads(json.dumps(eng.snapshot()))
    fresh, _ = make()
    fresh.restore(snap)
    assert fresh.snapshot() == eng.snapshot()
    assert fresh.open_orders() == eng.open_orders()
    assert fresh.state() is TradingState.REDUCING
    assert fresh.state("bob") is TradingState.REDUCING
    assert fresh.state("carol") is TradingState.HALTED
    for agent in ("alice", "bob", None):
        for sym in ("ACME", "BOLT"):
            assert fresh.worst_case(agent, sym) == eng.worst_case(agent, sym)
    assert fresh.account_positions() == eng.account_positions()
    # The restored orders count: cancel, fill and limits work on them.
    fresh.set_state(TradingState.ACTIVE)
    acme = next(o for o in fresh.open_orders("alice") if o.symbol == "ACME")
    assert acme.remaining == 60
    assert acme.acked
    assert acme.venue_order_id == "V1"
    fresh.check_new(order("buy", 900), L(max_position=1000))  # 40 held + 60 open + 900
    assert denied(fresh, order("buy", 901), L(max_position=1000)).reason == "max_position"
    fresh.check_cancel("alice", acme.client_id, None)
    fresh.on_fill(acme.client_id, 60, 100.0)
    assert fresh.positions("alice") == {"ACME": 100.0}


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda s: s.update(version=2), "version"),
        (lambda s: s.update(state="paused"), "state"),
        (lambda s: s.update(agent_states={"bob": "asleep"}), "agent_states.bob"),
        (lambda s: s["positions"]["alice"].update(ACME="lots"), "positions.alice.ACME"),
        (lambda s: s["open_orders"][0].update(side="long"), "open_orders[0].side"),
        (lambda s: s["open_orders"][0].update(remaining=1e9), "open_orders[0].remaining"),
        (
            lambda s: s["open_orders"][1].update(client_id=s["open_orders"][0]["client_id"]),
            "open_orders[1].client_id",
        ),
        (lambda s: s.update(open_orders={}), "open_orders"),
    ],
)
def test_restore_refuses_a_damaged_snapshot_and_changes_nothing(mutate: Any, key: str) -> None:
    eng, _ = make()
    build_state(eng)
    before = eng.snapshot()
    snap = json.loads(json.dumps(before))
    mutate(snap)
    with pytest.raises(FieldError) as info:
        eng.restore(snap)
    assert info.value.key == key
    assert eng.snapshot() == before


# -- properties -------------------------------------------------------------------------------------

AGENTS = ("alice", "bob")
TRADED = ("ACME", "BOLT")
REFS = {"ACME": 100.0, "BOLT": 50.0}
_SIDES = st.sampled_from(("buy", "sell"))

# An order of a random size; an order sized to land exactly on a limit (agent's or the
# account's), one unit short of it, or one unit past it; a fill of an open order; a cancel.
_new = st.tuples(
    st.just("new"), st.sampled_from(AGENTS), st.sampled_from(TRADED), _SIDES, st.integers(1, 400)
)
_edge = st.tuples(
    st.just("edge"),
    st.sampled_from(AGENTS),
    st.sampled_from(TRADED),
    _SIDES,
    st.sampled_from((-1, 0, 1)),
    st.booleans(),
)
_fill = st.tuples(st.just("fill"), st.integers(0, 1000), st.integers(1, 400))
_done = st.tuples(st.just("done"), st.integers(0, 1000))
_flows = st.lists(st.one_of(_new, _edge, _edge, _fill, _done), max_size=60)


def model_sides(eng: RiskEngine, agent: str | None, sym: str) -> tuple[float, float]:
    """(worst long, worst short) recomputed from the public views, not the engine's sums."""
    pos = (eng.positions(agent) if agent else eng.account_positions()).get(sym, 0.0)
    opens = [o for o in eng.open_orders(agent) if o.symbol == sym]
    buys = sum(o.remaining for o in opens if o.side == "buy")
    sells = sum(o.remaining for o in opens if o.side == "sell")
    return pos + buys, sells - pos


def model_exposure(eng: RiskEngine, agent: str | None, extra: tuple[str, str, float] | None = None) -> float:
    total = 0.0
    for sym in TRADED:
        long, short = model_sides(eng, agent, sym)
        if extra is not None and extra[0] == sym:
            long, short = (long + extra[2], short) if extra[1] == "buy" else (long, short + extra[2])
        total += max(long, short, 0.0) * REFS[sym]
    return total


Expect = Callable[[RiskEngine, Order], "tuple[bool, str | None]"]
Edge = Callable[[RiskEngine, str, str, str, bool], float]


def run_flow(eng: RiskEngine, flow: list[tuple[Any, ...]], limits: Limits, expect: Expect, edge: Edge) -> int:
    """Play ``flow``; every new order is admitted exactly when the model says so. Returns how
    many orders were denied (so a property can show it reached its limits)."""
    denials = 0
    for op in flow:
        if op[0] in ("new", "edge"):
            _, agent, sym, side = op[:4]
            qty = float(op[4]) if op[0] == "new" else edge(eng, agent, sym, side, op[5]) + op[4]
            if qty <= 0:
                continue
            o = order(side, qty, REFS[sym], symbol=sym, agent=agent)
            ok, reason = expect(eng, o)
            if ok:
                eng.admit(o, limits)
            else:
                denials += 1
                with pytest.raises(RiskDenied) as info:
                    eng.admit(o, limits)
                assert info.value.reason == reason, info.value.message
        else:
            opens = eng.open_orders()
            if not opens:
                continue
            held = opens[op[1] % len(opens)]
            if op[0] == "fill":
                eng.on_fill(held.client_id, min(float(op[2]), held.remaining), REFS[held.symbol])
            else:
                eng.on_done(held.client_id)
        for agent in (*AGENTS, None):
            for sym in TRADED:
                long, short = model_sides(eng, agent, sym)
                assert eng.worst_case(agent, sym) == pytest.approx((long, -short))
    return denials


AGENT_POSITION, GLOBAL_POSITION = 500.0, 800.0


def position_expect(eng: RiskEngine, o: Order) -> tuple[bool, str | None]:
    """Exactly the orders whose worst case stays within both limits are admitted."""
    for who, limit in ((o.agent, AGENT_POSITION), (None, GLOBAL_POSITION)):
        long, short = model_sides(eng, who, o.symbol)
        if (long if o.side == "buy" else short) + o.qty > limit:
            return False, "max_position"
    return True, None


def position_edge(eng: RiskEngine, agent: str, sym: str, side: str, at_agent: bool) -> float:
    who, limit = (agent, AGENT_POSITION) if at_agent else (None, GLOBAL_POSITION)
    long, short = model_sides(eng, who, sym)
    return limit - (long if side == "buy" else short)


@settings(max_examples=200, deadline=None)
@given(_flows)
def test_property_no_accepted_flow_lets_the_worst_case_position_exceed_max_position(
    flow: list[tuple[Any, ...]],
) -> None:
    eng, _ = make(L(max_position=GLOBAL_POSITION), refs=REFS)
    run_flow(eng, flow, L(max_position=AGENT_POSITION), position_expect, position_edge)
    for who, limit in [(a, AGENT_POSITION) for a in AGENTS] + [(None, GLOBAL_POSITION)]:
        for sym in TRADED:
            long, short = model_sides(eng, who, sym)
            assert long <= limit
            assert short <= limit


AGENT_EXPOSURE, GLOBAL_EXPOSURE = 40_000.0, 60_000.0


def exposure_expect(eng: RiskEngine, o: Order) -> tuple[bool, str | None]:
    """Denied exactly when the order raises a gross exposure above its limit."""
    for who, limit in ((o.agent, AGENT_EXPOSURE), (None, GLOBAL_EXPOSURE)):
        before = model_exposure(eng, who)
        after = model_exposure(eng, who, (o.symbol, o.side, o.qty))
        if after > before and after > limit + 1e-6:
            return False, "max_gross_exposure"
    return True, None


def exposure_edge(eng: RiskEngine, agent: str, sym: str, side: str, at_agent: bool) -> float:
    """The quantity that brings the exposure exactly to the limit."""
    who, limit = (agent, AGENT_EXPOSURE) if at_agent else (None, GLOBAL_EXPOSURE)
    long, short = model_sides(eng, who, sym)
    others = model_exposure(eng, who) - max(long, short, 0.0) * REFS[sym]
    return (limit - others) / REFS[sym] - (long if side == "buy" else short)


@settings(max_examples=150, deadline=None)
@given(_flows)
def test_property_no_accepted_flow_lets_gross_exposure_exceed_its_limit(flow: list[tuple[Any, ...]]) -> None:
    eng, _ = make(L(max_gross_exposure=GLOBAL_EXPOSURE), refs=REFS)
    run_flow(eng, flow, L(max_gross_exposure=AGENT_EXPOSURE), exposure_expect, exposure_edge)
    assert model_exposure(eng, None) <= GLOBAL_EXPOSURE + 1e-6
    for agent in AGENTS:
        assert model_exposure(eng, agent) <= AGENT_EXPOSURE + 1e-6


@settings(max_examples=75, deadline=None)
@given(_flows)
def test_property_snapshot_restore_is_lossless(flow: list[tuple[Any, ...]]) -> None:
    eng, _ = make(L(max_position=GLOBAL_POSITION), refs=REFS)
    run_flow(eng, flow, L(max_position=AGENT_POSITION), position_expect, position_edge)
    snap = json.loads(json.dumps(eng.snapshot()))
    fresh, _ = make(refs=REFS)
    fresh.restore(snap)
    assert fresh.snapshot() == eng.snapshot()
    assert fresh.open_orders() == eng.open_orders()
    for who in (*AGENTS, None):
        for sym in TRADED:
            assert fresh.worst_case(who, sym) == pytest.approx(eng.worst_case(who, sym))
    assert all(math.isfinite(o.remaining) and o.remaining > 0 for o in fresh.open_orders())


def test_grant_limits_are_parsed_once_per_distinct_grant_and_never_mixed_up() -> None:
    from clove_driver_exchange.config import grant_limits

    small = {"ops": ["submit_order"], "symbols": ["ACME"], "max_order_qty": 5}
    assert grant_limits(small).max_order_qty == 5.0
    assert grant_limits(dict(small)) is grant_limits(small)  # the same content: parsed once
    assert grant_limits({**small, "max_order_qty": 50}).max_order_qty == 50.0  # changed: parsed again
    assert grant_limits({**small, "symbols": ["ACME", "BOLT"]}).allowed_symbols == ("ACME", "BOLT")
    with pytest.raises(FieldError):
        grant_limits({**small, "max_order_qty": "lots"})
