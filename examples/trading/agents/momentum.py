"""A momentum trader: buys BOLT when its mid keeps rising, sells when it keeps falling.

It keeps the last N distinct mids of BOLT from the ``md`` items of its exchange stream. When each
of the last N mids is above the one before (a steady rise of at least ``MIN_MOVE`` overall) it
buys 5 with a marketable limit order a little above the ask; a steady fall sells 5 a little below
the bid. The orders are IOC, so nothing rests: what does not fill at once expires. Its position
stays within +-50 (a signal that would go beyond is skipped), it has at most one order in flight,
after each signal it waits for the mid to change N-1 more times, and while trading is HALTED it
only watches. Every decision is logged.

A refused order is logged as ``DENIED <reason>: <message>`` and the agent carries on. It runs
until the kernel stops it.

Configuration: ``MOMENTUM_SYMBOL`` (BOLT), ``MOMENTUM_N`` (4), ``MOMENTUM_MIN_MOVE`` (0.02),
``MOMENTUM_SIZE`` (5), ``MOMENTUM_MAX_POSITION`` (50), ``EXCHANGE_DEVICE`` (exchange).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trading_common import (
    DONE,
    TICK,
    DenialLog,
    fill_delta,
    fill_line,
    log,
    my_name,
    px,
    round_tick,
    state_for_me,
    stop_on_signals,
    top_of_book,
)

from clove_sdk.errors import CloveError

SYMBOL = os.environ.get("MOMENTUM_SYMBOL", "BOLT")
N = int(os.environ.get("MOMENTUM_N", "4"))
MIN_MOVE = float(os.environ.get("MOMENTUM_MIN_MOVE", "0.02"))
SIZE = float(os.environ.get("MOMENTUM_SIZE", "5"))
MAX_POSITION = float(os.environ.get("MOMENTUM_MAX_POSITION", "50"))
OFFSET_TICKS = 2  # how far through the touch a marketable order is priced
INFLIGHT_TIMEOUT_S = 5.0  # forget an order whose final report never came
STATUS_EVERY_S = 10.0


# ---- the pure part: the signal and the order -----------------------------------------------------


def momentum_signal(mids: Sequence[float], n: int = N, min_move: float = MIN_MOVE) -> str | None:
    """``"buy"`` when each of the last ``n`` mids is above the one before and they rose by at
    least ``min_move`` in all, ``"sell"`` for the mirror image, else ``None`` (also with fewer
    than ``n`` mids)."""
    if n < 2 or len(mids) < n:
        return None
    last = list(mids)[-n:]
    steps = [b - a for a, b in zip(last, last[1:], strict=False)]
    move = last[-1] - last[0]
    if all(step > 0 for step in steps) and move >= min_move - 1e-9:
        return "buy"
    if all(step < 0 for step in steps) and -move >= min_move - 1e-9:
        return "sell"
    return None


@dataclass(frozen=True)
class Plan:
    side: str
    qty: float
    price: float


def plan_order(
    signal: str,
    bid: float,
    ask: float,
    position: float,
    *,
    size: float = SIZE,
    max_position: float = MAX_POSITION,
    tick: float = TICK,
    offset_ticks: int = OFFSET_TICKS,
) -> tuple[Plan | None, str]:
    """The marketable order for ``signal``, or ``None`` with why not (the position limit)."""
    if signal == "buy":
        if position + size > max_position + 1e-9:
            return None, f"long {position:g} already, limit {max_position:g}"
        return Plan("buy", size, round_tick(ask + offset_ticks * tick, tick)), "rising"
    if signal == "sell":
        if position - size < -max_position - 1e-9:
            return None, f"short {-position:g} already, limit {max_position:g}"
        price = round_tick(bid - offset_ticks * tick, tick)
        if price <= 0:
            return None, f"no price below the bid {px(bid)}"
        return Plan("sell", size, price), "falling"
    return None, "no signal"


# ---- the agent -----------------------------------------------------------------------------------


class Momentum:
    def __init__(self, ex: Any, me: str, clock: Any = time.monotonic) -> None:
        self.ex = ex
        self.me = me
        self.clock = clock
        self.denials = DenialLog(self.say)
        self.mids: deque[float] = deque(maxlen=N)
        self.top: tuple[float, float] | None = None
        self.position = 0.0
        self.inflight: tuple[str, float] | None = None  # (client_id, sent at)
        self.trades = 0
        self.halted = False

    def say(self, message: str) -> None:
        log("momentum", message)

    def on_item(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "md" and item.get("symbol") == SYMBOL:
            top = top_of_book(item)
            if top is None:
                return
            self.top = top
            mid = round((top[0] + top[1]) / 2, 10)
            if not self.mids or mid != self.mids[-1]:  # only changes count
                self.mids.append(mid)
                self.decide()
        elif kind == "exec":
            delta = fill_delta(item)
            if delta:
                self.position += delta
                self.say(fill_line(item, self.position))
            if (
                self.inflight is not None
                and item.get("client_id") == self.inflight[0]
                and item.get("status") in DONE
            ):
                if item.get("status") in ("expired", "rejected") and not item.get("cum_qty"):
                    self.say(f"order {item.get('status')} unfilled: {item.get('text') or 'the market moved'}")
                self.inflight = None
        else:
            state = state_for_me(item, self.me)
            if state is not None and (state == "HALTED") != self.halted:
                self.halted = state == "HALTED"
                self.say(f"trading is {state} ({item.get('reason')})")

    def decide(self) -> None:
        signal = momentum_signal(self.mids)
        if signal is None or self.top is None:
            return
        mids = " -> ".join(px(m) for m in self.mids)
        self.mids = deque([self.mids[-1]], maxlen=N)  # the next signal needs fresh mids
        if self.halted:
            self.say(f"{SYMBOL} {signal} signal ({mids}): skipped, trading is HALTED")
            return
        if self.inflight is not None:
            if self.clock() - self.inflight[1] < INFLIGHT_TIMEOUT_S:
                self.say(f"{SYMBOL} {signal} signal ({mids}): skipped, an order is still in flight")
                return
            self.inflight = None
        plan, why = plan_order(signal, *self.top, self.position)
        if plan is None:
            self.say(f"{SYMBOL} {signal} signal ({mids}): skipped, {why}")
            return
        self.say(
            f"{SYMBOL} {why} ({mids}): {plan.side.upper()} {plan.qty:g} @ {px(plan.price)}"
            f" (position {self.position:+g})"
        )
        try:
            reply = self.ex.submit_order(SYMBOL, plan.side, plan.qty, price=plan.price, tif="ioc")
            self.inflight = (str(reply["client_id"]), self.clock())
            self.trades += 1
        except CloveError as err:
            self.denials.record(err)

    def status(self) -> None:
        mid = px(self.mids[-1]) if self.mids else "-"
        self.say(
            f"position {self.position:+g} {SYMBOL}, {self.trades} orders sent, mid {mid},"
            f" denials: {self.denials.tally()}"
        )


def main() -> None:
    from clove_sdk import CloveClient

    stop = stop_on_signals()
    device = os.environ.get("EXCHANGE_DEVICE", "exchange")
    with CloveClient(timeout=10.0) as client:
        ex = client.device(device)
        bot = Momentum(ex, my_name("momentum"))
        bot.say(
            f"watching {SYMBOL}: {N} rising (falling) mids -> buy (sell) {SIZE:g},"
            f" position within +-{MAX_POSITION:g}"
        )
        try:
            ex.subscribe()
            bot.position = float(ex.positions().get(SYMBOL, 0.0))  # a restarted agent keeps its position
        except CloveError as err:
            bot.denials.record(err)
        next_status = time.monotonic() + STATUS_EVERY_S
        while not stop.is_set():
            try:
                for item in ex.executions(max_items=500, timeout=0.5):
                    bot.on_item(item)
            except CloveError as err:
                bot.denials.record(err)
                stop.wait(1.0)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                bot.status()
        bot.say(f"stopped: position {bot.position:+g} {SYMBOL}")


if __name__ == "__main__":
    main()
