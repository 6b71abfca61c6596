"""The trading agents' pure parts and their reactions, without a kernel: quote computation, the
momentum signal, the runaway's schedule, and each agent driven by a fake exchange device that
records orders and refuses what it is told to. Each agent is imported as a module (its ``main``
only runs as ``__main__``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from clove.errors import NotFound, PermissionDenied, RiskDenied

AGENTS = Path(__file__).resolve().parent.parent / "agents"
sys.path.insert(0, str(AGENTS))  # as the kernel runs them: the script's directory first

import trading_common as tc  # noqa: E402


def _load(name: str) -> ModuleType:
    """Import ``agents/<name>.py`` under a name no other test uses."""
    spec = importlib.util.spec_from_file_location(f"trading_agent_{name}", AGENTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mm = _load("market_maker")
momentum = _load("momentum")
runaway = _load("runaway")


def risk(reason: str, message: str) -> RiskDenied:
    """A limit's refusal as the risk engine words it (the message starts with the reason)."""
    return RiskDenied(f"{reason}: {message}", reason=reason)


class FakeExchange:
    """Records every call; ``refuse`` maps an operation to an error (or a function of the
    arguments returning one, or ``None`` to let it through)."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.refuse: dict[str, Any] = {}
        self.open: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self._ids = 0

    def _check(self, op: str, **args: Any) -> None:
        rule = self.refuse.get(op)
        err = rule(**args) if callable(rule) else rule
        if err is not None:
            raise err

    def submit_order(
        self,
        symbol: str,
        side: str,
        qty: float,
        price: float | None = None,
        type: str = "limit",
        tif: str = "day",
        client_id: str | None = None,
    ) -> dict[str, Any]:  # noqa: A002
        self._check("submit_order", symbol=symbol, side=side, qty=qty, price=price, tif=tif)
        self._ids += 1
        order = {
            "client_id": f"c{self._ids}",
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "price": price,
            "tif": tif,
        }
        self.submitted.append(order)
        return {"client_id": order["client_id"], "status": "sent"}

    def cancel(self, client_id: str) -> dict[str, Any]:
        self._check("cancel", client_id=client_id)
        self.cancelled.append(client_id)
        return {"client_id": client_id, "status": "cancel_sent"}

    def orders(self) -> list[dict[str, Any]]:
        return list(self.open)

    def positions(self) -> dict[str, float]:
        return {}

    def executions(self, max_items: int = 100, timeout: float | None = None) -> list[dict[str, Any]]:
        out, self.items = self.items, []
        return out


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def md(symbol: str, bid: float | None, ask: float | None) -> dict[str, Any]:
    return {"type": "md", "symbol": symbol, "bid": bid, "ask": ask, "last": None}


def fill(
    client_id: str, side: str, qty: float, px: float, status: str = "filled", symbol: str = "ACME"
) -> dict[str, Any]:
    return {
        "type": "exec",
        "client_id": client_id,
        "status": status,
        "side": side,
        "symbol": symbol,
        "last_qty": qty,
        "last_px": px,
        "cum_qty": qty,
        "leaves_qty": 0.0,
        "avg_px": px,
        "text": None,
    }


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every log line of every agent, without the timestamp."""
    out: list[str] = []

    def fake_log(agent: str, message: str) -> None:
        out.append(f"{agent}: {message}")

    for module in (mm, momentum, runaway):
        monkeypatch.setattr(module, "log", fake_log)
    return out


# ---- trading_common ------------------------------------------------------------------------------


def test_prices_round_to_the_tick_in_the_safe_direction() -> None:
    assert tc.floor_tick(99.975) == 99.97
    assert tc.ceil_tick(100.025) == 100.03
    assert tc.floor_tick(99.97) == 99.97
    assert tc.ceil_tick(100.03) == 100.03
    assert tc.floor_tick(0.1 + 0.2) == 0.3  # float noise is not a tick
    assert tc.px(100.2) == "100.20"
    assert tc.px(25.0, tick=0.5) == "25.0"
    assert tc.round_tick(25.004) == 25.0
    assert tc.round_tick(25.006) == 25.01


def test_denial_lines_name_the_reason_once() -> None:
    assert tc.denial_line(risk("max_position", "ACME position would be 223 > agent limit 200")) == (
        "DENIED max_position: ACME position would be 223 > agent limit 200"
    )
    kernel = PermissionDenied("trading 'BOLT' is not granted", details={"reason": "symbol"})
    assert tc.denial_line(kernel) == "DENIED symbol: trading 'BOLT' is not granted"
    assert (
        tc.denial_line(NotFound("no open order 'x' of yours"))
        == "DENIED notfound: no open order 'x' of yours"
    )


def test_the_denial_log_counts_everything_and_prints_at_most_one_line_per_reason_a_second() -> None:
    out: list[str] = []
    clock = Clock()
    log = tc.DenialLog(out.append, every_s=1.0, clock=clock)
    for _ in range(5):
        log.record(risk("order_rate", "too fast"))
    log.record(risk("max_position", "too long"))
    clock.t += 1.0
    log.record(risk("order_rate", "too fast"))
    assert out == [
        "DENIED order_rate: too fast",
        "DENIED max_position: too long",
        "DENIED order_rate: too fast (+4 more like it)",
    ]
    log.quiet.add("state_halted")
    assert log.record(risk("state_halted", "trading is HALTED")) == "state_halted"
    assert len(out) == 3
    assert log.tally() == "order_rate 6, max_position 1, state_halted 1"


def test_market_data_fills_and_states() -> None:
    assert tc.mid_of(md("ACME", 99.95, 100.05)) == pytest.approx(100.0)
    assert tc.mid_of(md("ACME", None, 100.05)) is None
    assert tc.top_of_book({"type": "exec"}) is None
    assert tc.fill_delta(fill("a", "buy", 10, 100)) == 10
    assert tc.fill_delta(fill("a", "sell", 4, 100)) == -4
    assert tc.fill_delta({"type": "exec", "status": "new", "side": "buy", "last_qty": 0.0}) == 0
    assert tc.state_for_me({"type": "state", "state": "HALTED", "agent": None}, "me") == "HALTED"
    assert tc.state_for_me({"type": "state", "state": "HALTED", "agent": "other"}, "me") is None
    assert tc.state_for_me(md("ACME", 1, 2), "me") is None


# ---- market_maker --------------------------------------------------------------------------------


def test_quotes_straddle_the_mid_by_half_the_spread() -> None:
    q = mm.compute_quotes(100.0, 0, spread=0.06, size=10, max_inventory=100)
    assert (q.bid, q.ask) == (99.97, 100.03)
    q = mm.compute_quotes(100.004, 0, spread=0.05, size=10, max_inventory=100)
    assert (q.bid, q.ask) == (99.97, 100.03)  # the bid rounds down, the ask up: never narrower
    assert str(q) == "99.97 x 100.03"


def test_quotes_lean_against_the_inventory_and_drop_the_side_that_would_break_it() -> None:
    flat = mm.compute_quotes(100.0, 0, spread=0.1, size=10, max_inventory=100)
    long = mm.compute_quotes(100.0, 50, spread=0.1, size=10, max_inventory=100)
    short = mm.compute_quotes(100.0, -50, spread=0.1, size=10, max_inventory=100)
    assert long.bid < flat.bid
    assert long.ask < flat.ask
    assert short.bid > flat.bid
    assert short.ask > flat.ask
    assert (long.bid, long.ask) == (99.92, 100.03)
    at_limit = mm.compute_quotes(100.0, 95, spread=0.1, size=10, max_inventory=100)
    assert at_limit.bid is None
    assert at_limit.ask == 100.01
    assert mm.compute_quotes(100.0, -100, spread=0.1, size=10, max_inventory=100).ask is None
    assert (
        mm.compute_quotes(100.0, 90, spread=0.1, size=10, max_inventory=100).bid is not None
    )  # exactly 100 is fine
    assert str(at_limit) == "- x 100.01"


def test_requote_only_when_the_mid_moves_by_more_than_a_tick() -> None:
    assert mm.needs_requote(None, 100.0)
    assert not mm.needs_requote(100.0, 100.005)
    assert not mm.needs_requote(100.0, 100.01)  # exactly a tick: not more
    assert mm.needs_requote(100.0, 100.015)
    assert mm.needs_requote(100.0, 99.98)


def test_a_quote_made_again_within_the_duplicate_window_steps_away_from_the_market() -> None:
    sent = {("buy", 99.97): 10.0, ("buy", 99.96): 10.5, ("sell", 100.03): 10.0}
    assert mm.unrepeated("buy", 99.97, sent, now=10.8, window=1.0) == 99.95
    assert mm.unrepeated("sell", 100.03, sent, now=10.8, window=1.0) == 100.04
    assert mm.unrepeated("buy", 99.97, sent, now=11.0, window=1.0) == 99.97  # the window has passed
    assert mm.unrepeated("sell", 100.02, sent, now=10.8, window=1.0) == 100.02


def test_a_cancel_that_comes_too_late_is_not_a_denial() -> None:
    assert tc.already_done(NotFound("no open order 'x' of yours"))
    assert tc.already_done(risk("unknown_order", "agent runaway has no open order 'x'"))
    assert not tc.already_done(risk("cancel_rate", "more than 5 cancels per second"))


def _maker() -> tuple[Any, FakeExchange, Clock]:
    ex, clock = FakeExchange(), Clock()
    return mm.MarketMaker(ex, "market_maker", clock=clock), ex, clock


def test_the_market_maker_quotes_requotes_on_moves_and_fills(lines: list[str]) -> None:
    maker, ex, clock = _maker()
    maker.on_item(md("ACME", 99.95, 100.05))
    maker.maybe_requote()
    assert [(o["side"], o["qty"], o["price"]) for o in ex.submitted] == [
        ("buy", 10, 99.97),
        ("sell", 10, 100.03),
    ]
    clock.t += 1
    maker.on_item(md("ACME", 99.96, 100.05))  # mid +0.005: keep the quotes
    maker.maybe_requote()
    assert len(ex.submitted) == 2
    assert ex.cancelled == []
    maker.on_item(md("ACME", 99.98, 100.06))  # mid +0.02: cancel both, quote again
    maker.maybe_requote()
    assert ex.cancelled == ["c1", "c2"]
    assert len(ex.submitted) == 4
    clock.t += 1
    maker.on_item(fill("c4", "sell", 10, 100.05))  # the ask filled: position -10, quote again
    maker.maybe_requote()
    assert maker.position == -10
    assert ex.cancelled[-1] == "c3"
    assert len(ex.submitted) == 6
    assert ex.submitted[-1]["price"] > ex.submitted[-3]["price"]  # short: the quotes lean up
    assert any("FILL sold 10 ACME @ 100.05 (position -10)" in line for line in lines)


def test_the_market_maker_logs_refusals_backs_off_and_stops_quoting_when_halted(lines: list[str]) -> None:
    maker, ex, clock = _maker()
    ex.refuse["submit_order"] = lambda side, **_: risk("max_position", "too long") if side == "buy" else None
    maker.on_item(md("ACME", 99.95, 100.05))
    maker.maybe_requote()
    assert "market_maker: DENIED max_position: too long" in lines
    assert [o["side"] for o in ex.submitted] == ["sell"]
    maker.maybe_requote()
    assert len(ex.submitted) == 1  # backing off for a second
    ex.refuse["cancel"] = NotFound("already filled")
    clock.t += 1.5
    maker.maybe_requote()  # tries again; the cancel race is not worth a line
    assert len(ex.submitted) == 2
    assert not any("notfound" in line for line in lines)
    maker.on_item({"type": "state", "state": "HALTED", "agent": None, "reason": "operator"})
    clock.t += 5
    maker.on_item(md("ACME", 98.0, 98.1))
    maker.maybe_requote()
    assert len(ex.submitted) == 2
    assert any("HALTED (operator)" in line for line in lines)
    maker.on_item({"type": "state", "state": "ACTIVE", "agent": None})
    ex.refuse.clear()
    maker.maybe_requote()
    assert len(ex.submitted) == 4


# ---- momentum ------------------------------------------------------------------------------------


def test_the_momentum_signal_wants_a_steady_move() -> None:
    assert momentum.momentum_signal([25.0, 25.01, 25.02, 25.03, 25.04], n=5, min_move=0.02) == "buy"
    assert momentum.momentum_signal([25.04, 25.03, 25.02, 25.01, 25.0], n=5, min_move=0.02) == "sell"
    assert momentum.momentum_signal([25.0, 25.01, 25.0, 25.02, 25.03], n=5, min_move=0.02) is None  # a dip
    assert momentum.momentum_signal([25.0, 25.01, 25.02, 25.03], n=5, min_move=0.02) is None  # too few
    assert (
        momentum.momentum_signal([25.0, 25.001, 25.002, 25.003, 25.004], n=5, min_move=0.02) is None
    )  # too small
    assert (
        momentum.momentum_signal([30.0, 25.0, 25.01, 25.02, 25.03, 25.04], n=5, min_move=0.02) == "buy"
    )  # the last n


def test_momentum_orders_cross_the_spread_within_the_position_limit() -> None:
    plan, _ = momentum.plan_order("buy", 24.99, 25.01, 0, size=5, max_position=50, offset_ticks=2)
    assert plan == momentum.Plan("buy", 5, 25.03)
    plan, _ = momentum.plan_order("sell", 24.99, 25.01, 0, size=5, max_position=50, offset_ticks=2)
    assert plan == momentum.Plan("sell", 5, 24.97)
    assert momentum.plan_order("buy", 24.99, 25.01, 45, size=5, max_position=50)[0] is not None
    plan, why = momentum.plan_order("buy", 24.99, 25.01, 50, size=5, max_position=50)
    assert plan is None
    assert "long 50" in why
    assert momentum.plan_order("sell", 24.99, 25.01, -50, size=5, max_position=50)[0] is None


def _rising(bot: Any, start: float) -> None:
    """N - 1 mids rising a tick each from ``start``: with the mid before, a steady rise."""
    for i in range(momentum.N - 1):
        mid = round(start + i * 0.01, 2)
        bot.on_item(md("BOLT", round(mid - 0.01, 2), round(mid + 0.01, 2)))


def test_the_momentum_agent_trades_once_per_run_and_logs_why(lines: list[str]) -> None:
    ex = FakeExchange()
    bot = momentum.Momentum(ex, "momentum", clock=Clock())
    bot.on_item(md("BOLT", 24.99, 25.01))
    bot.on_item(md("BOLT", 24.99, 25.01))  # unchanged mids do not count
    _rising(bot, 25.01)
    top = round(25.0 + (momentum.N - 1) * 0.01, 2)
    price = round(top + 0.01 + momentum.OFFSET_TICKS * 0.01, 2)  # the ask, and a little more
    assert [(o["side"], o["qty"], o["price"], o["tif"]) for o in ex.submitted] == [("buy", 5, price, "ioc")]
    assert f"-> {top:.2f}): BUY 5 @ {price:.2f} (position +0)" in lines[-1]
    assert "BOLT rising (25.00 -> 25.01 -> " in lines[-1]
    _rising(bot, top + 0.01)  # one in flight: skipped
    assert len(ex.submitted) == 1
    assert "still in flight" in lines[-1]
    bot.on_item(fill("c1", "buy", 5, 25.05, symbol="BOLT"))
    assert bot.position == 5
    assert bot.inflight is None
    ex.refuse["submit_order"] = risk("max_position", "BOLT position would be 65 > agent limit 60")
    _rising(bot, top + 0.1)
    assert lines[-1] == "momentum: DENIED max_position: BOLT position would be 65 > agent limit 60"
    bot.position = 50
    _rising(bot, top + 0.2)
    assert "skipped, long 50 already" in lines[-1]
    bot.on_item({"type": "state", "state": "HALTED", "agent": None, "reason": "operator"})
    bot.position = 0
    _rising(bot, top + 0.3)
    assert "skipped, trading is HALTED" in lines[-1]
    assert len(ex.submitted) == 1


# ---- runaway -------------------------------------------------------------------------------------


def test_the_runaway_doubles_then_keeps_sending_the_big_ones() -> None:
    assert [runaway.drip_qty(n) for n in range(11)] == [1, 2, 4, 8, 16, 32, 64, 32, 64, 32, 64]
    prices = [runaway.drip_price(n, 100.0) for n in range(24)]
    assert prices[0] == 100.0
    assert min(prices) == 99.89
    assert len(set(zip(prices, map(runaway.drip_qty, range(24)), strict=False))) == 24
    assert runaway.drip_price(24, 100.0) == 100.0


def test_runaway_bursts_alternate_sides_never_repeat_and_stay_inside_a_5_percent_collar() -> None:
    for k, tif in ((0, "day"), (1, "ioc")):
        children = runaway.burst_orders(k, 99.95, 100.05)
        assert len(children) == 20
        assert {c.tif for c in children} == {tif}
        assert [c.side for c in children[:4]] == ["buy", "sell", "buy", "sell"]
        assert len({(c.side, c.price) for c in children}) == 20
        assert all(abs(c.price - 100.0) / 100.0 < 0.05 and c.qty == 1 for c in children)
    resting, crossing = runaway.burst_orders(0, 99.95, 100.05), runaway.burst_orders(1, 99.95, 100.05)
    assert resting[0].price == 99.94
    assert resting[1].price == 100.06
    assert crossing[0].price == 100.06
    assert crossing[1].price == 99.94
    assert runaway.fat_finger_price(100.0) == 80.0


def test_the_runaway_schedule_drips_every_tick_and_bursts_every_few_seconds() -> None:
    schedule = runaway.Schedule(0.0, burst_every_s=3.0, first_burst_s=1.0)
    steps = [schedule.step(i * 0.05) for i in range(81)]  # 4 s of 50 ms ticks
    bursts = [i for i, (kind, _) in enumerate(steps) if kind == "burst"]
    assert bursts == [20, 80]
    assert steps[20] == ("burst", 0)
    assert steps[80] == ("burst", 1)
    drips = [value for kind, value in steps if kind == "drip"]
    assert drips == list(range(79))


def test_the_runaway_logs_every_reason_and_says_halted_once(lines: list[str]) -> None:
    ex, clock = FakeExchange(), Clock()
    bot = runaway.Runaway(ex, "runaway", clock=clock)
    bot.on_item(md("ACME", 99.95, 100.05))

    def limits(symbol: str, qty: float, price: float, **_: Any) -> Any:
        if symbol != "ACME":
            return PermissionDenied(f"trading {symbol!r} is not granted", details={"reason": "symbol"})
        if qty > 50:  # the kernel's grant check: a limit, so risk.denied as the engine's are
            return risk("max_order_qty", f"{qty:g} {symbol} > agent limit 50")
        if abs(price - 100) > 5:
            return risk("price_collar", f"limit {price:g} is 20% from the reference 100 > agent collar 5%")
        return None

    ex.refuse["submit_order"] = limits
    bot.try_once("a symbol it has no grant for", "BOLT", "buy", 1, 25.0)
    bot.try_once("a fat-finger price", "ACME", "buy", 1, runaway.fat_finger_price(100.0))
    for n in range(8):
        bot.drip(n)
    assert "runaway: DENIED symbol: trading 'BOLT' is not granted" in lines
    assert any(line.startswith("runaway: DENIED price_collar: limit 80") for line in lines)
    assert "runaway: DENIED max_order_qty: 64 ACME > agent limit 50" in lines
    assert [o["qty"] for o in ex.submitted] == [1, 2, 4, 8, 16, 32, 32]
    assert not any("ALLOWED" in line for line in lines)

    ex.open = [{"client_id": "c1"}, {"client_id": "c2"}]
    bot.burst(0)
    assert ex.cancelled == ["c1", "c2"]
    assert len(ex.submitted) == 27
    assert "burst 0 (resting): cancelled 2, sent 20 of 20" in lines[-1]

    ex.refuse["submit_order"] = risk("state_halted", "trading is HALTED (global); only cancels are accepted")
    bot.on_item({"type": "state", "state": "HALTED", "agent": None, "reason": "operator"})
    for n in range(8, 40):
        clock.t += 0.05
        bot.drip(n)
    halted = [line for line in lines if "HALTED:" in line]
    assert halted == ["runaway: HALTED: the kill switch: trading HALTED (operator); trying anyway"]
    assert not any("DENIED state_halted" in line for line in lines)
    assert bot.denials.counts["state_halted"] == 32  # it keeps trying
    bot.status()
    assert "state_halted 32" in lines[-1]
    assert "[HALTED, still trying]" in lines[-1]


def test_a_state_halted_refusal_alone_is_enough_to_notice_the_kill_switch(lines: list[str]) -> None:
    ex = FakeExchange()
    ex.refuse["submit_order"] = risk(
        "state_halted", "trading is HALTED (agent runaway); only cancels are accepted"
    )
    bot = runaway.Runaway(ex, "runaway", clock=Clock())
    bot.on_item(md("ACME", 99.95, 100.05))
    bot.drip(0)
    bot.drip(1)
    assert [line for line in lines if "HALTED" in line] == [
        "runaway: HALTED: trading is HALTED (agent runaway); only cancels are accepted; trying anyway",
    ]
    assert bot.denials.counts["state_halted"] == 2
    bot.on_item({"type": "state", "state": "ACTIVE", "agent": "runaway"})
    assert not bot.halted
    assert "again" in lines[-1]
