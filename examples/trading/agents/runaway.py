"""A runaway: a buggy ACME buyer that the grant, the risk engine and the kill switch must contain.

Its bugs, on purpose:

* every 50 ms it bids for a doubling quantity: 1, 2, 4, ... 64, and from then on it keeps
  sending the big ones (32 and 64 in turn). 64 is above its grant's ``max_order_qty`` (the
  kernel refuses it); the 32s rest and pile up until ``max_position`` (open buys count as
  filled) or ``max_open_orders`` stops them, or the order rate when a burst spent it. Its price
  steps down from the bid a tick every other order (11 ticks, then back to the bid), so it does
  not repeat an order within a second: the duplicate check would stop it first;
* every 3 s it "rebalances": cancels everything it has open and fires 20 orders of 1 at once,
  buys and sells in turn. One burst rests them away from the market (the 11th meets
  ``max_open_orders``), the next crosses the spread with IOC orders (they fill at once, so the
  per-agent ``order_rate`` is what stops them; the shared ``venue_order_rate`` when other
  agents spent the session's budget);
* once, at the start, it tries BOLT (not granted: the kernel refuses it) and a limit price 20 %
  below the market (``price_collar``).

Every refusal is counted by reason and printed as ``DENIED <reason>: <message>``, at most one
line per reason a second (the lines held back are counted in the next one); a status line every
5 s tallies them all. When the kill switch is thrown (a ``HALTED`` state item on its stream, or a
``state_halted`` refusal) it prints ``HALTED: ...`` once, and then keeps trying, as a runaway
does: the refusals go on being counted, not printed. It runs until the kernel stops it.

Configuration: ``RUNAWAY_SYMBOL`` (ACME), ``RUNAWAY_OTHER_SYMBOL`` (BOLT), ``EXCHANGE_DEVICE``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trading_common import (
    TICK,
    DenialLog,
    already_done,
    fill_delta,
    log,
    message_of,
    my_name,
    px,
    reason_of,
    round_tick,
    state_for_me,
    stop_on_signals,
    top_of_book,
)

from clove_sdk.errors import CloveError

SYMBOL = os.environ.get("RUNAWAY_SYMBOL", "ACME")
OTHER_SYMBOL = os.environ.get("RUNAWAY_OTHER_SYMBOL", "BOLT")
DRIP_S = 0.05
BURST_EVERY_S = 3.0
FIRST_BURST_S = 1.0
BURST_SIZE = 20
DOUBLINGS = 7  # 1, 2, 4, ..., 64
BIG = (32, 64)  # what it keeps sending once the doubling has run its course
COLLAR_MISS = 0.20  # the "fat finger": 20 % below the market
STATUS_EVERY_S = 5.0


# ---- the pure part: the schedule -----------------------------------------------------------------


def drip_qty(n: int) -> int:
    """The quantity of the ``n``-th drip order (from 0): 1, 2, 4, ..., 64, then 32, 64, 32, ..."""
    if n < DOUBLINGS:
        return int(2**n)
    return BIG[(n - DOUBLINGS) % len(BIG)]


def drip_price(n: int, bid: float, tick: float = TICK) -> float:
    """The limit price of the ``n``-th drip order: the bid, then a tick lower every other order,
    down to 11 ticks below and back (no price repeats within 24 orders, 1.2 s)."""
    return round_tick(max(bid - ((n // 2) % 12) * tick, tick), tick)


@dataclass(frozen=True)
class Child:
    """One order of a burst."""

    side: str
    qty: float
    price: float
    tif: str


def burst_orders(k: int, bid: float, ask: float, count: int = BURST_SIZE, tick: float = TICK) -> list[Child]:
    """Burst number ``k``: ``count`` orders of 1, buy and sell in turn, each at its own price (no
    two are duplicates). Even bursts rest outside the spread (buys below the bid, sells above the
    ask, day orders); odd bursts cross it (buys above the ask, sells below the bid, IOC)."""
    resting = k % 2 == 0
    out: list[Child] = []
    for i in range(count):
        side = "buy" if i % 2 == 0 else "sell"
        away = (i // 2 + 1) * tick
        if resting:
            price = bid - away if side == "buy" else ask + away
        else:
            price = ask + away if side == "buy" else bid - away
        out.append(Child(side, 1.0, round_tick(max(price, tick), tick), "day" if resting else "ioc"))
    return out


def fat_finger_price(mid: float, miss: float = COLLAR_MISS, tick: float = TICK) -> float:
    """A limit price ``miss`` (a fraction) below ``mid``: far outside any sane collar."""
    return round_tick(max(mid * (1 - miss), tick), tick)


class Schedule:
    """What the runaway does at each 50 ms tick: the next drip order, or every
    ``burst_every_s`` (the first after ``first_burst_s``) a rebalance with a burst."""

    def __init__(
        self, start: float, burst_every_s: float = BURST_EVERY_S, first_burst_s: float = FIRST_BURST_S
    ) -> None:
        self.burst_every_s = burst_every_s
        self.next_burst = start + first_burst_s
        self.n = 0  # drip orders so far
        self.k = 0  # bursts so far

    def step(self, now: float) -> tuple[str, int]:
        """``("burst", k)`` for the ``k``-th burst, or ``("drip", n)`` for the ``n``-th drip
        order (:func:`drip_qty` and :func:`drip_price` say what it is)."""
        if now >= self.next_burst:
            self.next_burst = now + self.burst_every_s
            self.k += 1
            return "burst", self.k - 1
        self.n += 1
        return "drip", self.n - 1


# ---- the agent -----------------------------------------------------------------------------------


class Runaway:
    def __init__(self, ex: Any, me: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.ex = ex
        self.me = me
        self.clock = clock
        self.denials = DenialLog(self.say, every_s=1.0, clock=clock)
        self.top: tuple[float, float] | None = None
        self.position = 0.0
        self.sent = self.fills = 0
        self.halted = False

    def say(self, message: str) -> None:
        log("runaway", message)

    # -- the stream --

    def pump(self, timeout: float = 0.0) -> None:
        """Take what the stream holds (waiting up to ``timeout`` for the first item)."""
        for item in self.ex.executions(max_items=1000, timeout=timeout):
            self.on_item(item)

    def on_item(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "md" and item.get("symbol") == SYMBOL:
            self.top = top_of_book(item) or self.top
        elif kind == "exec":
            delta = fill_delta(item)
            if delta:
                self.position += delta
                self.fills += 1
        else:
            state = state_for_me(item, self.me)
            if state == "HALTED":
                self.on_halted(f"the kill switch: trading HALTED ({item.get('reason')})")
            elif state is not None and self.halted:
                self.halted = False
                self.denials.quiet.discard("state_halted")
                self.say(f"trading is {state} again: back to it")

    def on_halted(self, why: str) -> None:
        if not self.halted:
            self.halted = True
            self.denials.quiet.add("state_halted")  # counted from now on, not printed
            self.say(f"HALTED: {why}; trying anyway")

    # -- sending --

    def send(self, symbol: str, side: str, qty: float, price: float, tif: str = "day") -> bool:
        """One order; a refusal is logged and counted. Returns whether it went out."""
        try:
            self.ex.submit_order(symbol, side, qty, price=price, tif=tif)
        except CloveError as err:
            if reason_of(err) == "state_halted":  # the kill switch, before its state item came
                self.on_halted(message_of(err))
            self.denials.record(err)
            return False
        self.sent += 1
        return True

    def try_once(self, what: str, symbol: str, side: str, qty: float, price: float) -> None:
        """The one-off mistakes: they should be refused; say so loudly if one is not."""
        self.say(f"trying {what}: {side} {qty:g} {symbol} @ {px(price)}")
        if self.send(symbol, side, qty, price):
            self.say(f"ALLOWED {what} (the grant or the risk limits have a hole)")

    def drip(self, n: int) -> None:
        if self.top is not None:
            self.send(SYMBOL, "buy", drip_qty(n), drip_price(n, self.top[0]))

    def burst(self, k: int) -> None:
        """Cancel everything open, give the cancels a moment, then fire the burst."""
        try:
            open_orders = self.ex.orders()
        except CloveError as err:
            self.denials.record(err)
            open_orders = []
        for order in open_orders:
            try:
                self.ex.cancel(str(order["client_id"]))
            except CloveError as err:
                if not already_done(err):  # filled a moment ago
                    self.denials.record(err)
        self.pump(timeout=0.2 if open_orders else 0.0)
        if self.top is None:
            return
        children = burst_orders(k, *self.top)
        before = self.sent
        for child in children:
            self.send(SYMBOL, child.side, child.qty, child.price, child.tif)
        kind = "resting" if k % 2 == 0 else "crossing"
        self.say(
            f"burst {k} ({kind}): cancelled {len(open_orders)}, sent {self.sent - before} of {len(children)}"
        )

    def status(self) -> None:
        self.say(
            f"position {self.position:+g} {SYMBOL}, {self.sent} orders out, {self.fills} fills, "
            f"denials: {self.denials.tally()}" + (" [HALTED, still trying]" if self.halted else "")
        )


def main() -> None:
    from clove_sdk import CloveClient

    stop = stop_on_signals()
    device = os.environ.get("EXCHANGE_DEVICE", "exchange")
    with CloveClient(timeout=10.0) as client:
        bot = Runaway(client.device(device), my_name("runaway"))
        bot.say(
            f"buying {SYMBOL} every {DRIP_S * 1000:g} ms, doubling;"
            f" a burst of {BURST_SIZE} every {BURST_EVERY_S:g} s"
        )
        next_note = time.monotonic() + 5.0
        while bot.top is None and not stop.is_set():  # it needs a price to (mis)trade around
            try:
                bot.pump(timeout=0.5)
            except CloveError as err:
                bot.denials.record(err)
                stop.wait(1.0)
            if bot.top is None and time.monotonic() >= next_note:
                next_note = time.monotonic() + 5.0
                bot.say(f"waiting for {SYMBOL} market data")
        if bot.top is not None:
            bid, ask = bot.top
            bot.try_once("a symbol it has no grant for", OTHER_SYMBOL, "buy", 1, 25.0)
            bot.try_once("a fat-finger price", SYMBOL, "buy", 1, fat_finger_price((bid + ask) / 2))
        schedule = Schedule(time.monotonic())
        next_tick = next_status = time.monotonic()
        while not stop.is_set():
            try:
                bot.pump()
                action, value = schedule.step(time.monotonic())
                if action == "burst":
                    bot.burst(value)
                else:
                    bot.drip(value)
            except CloveError as err:  # the stream or orders() failed: the kernel or the device
                bot.say(f"FAILED {reason_of(err)}: {err.message}")
                stop.wait(1.0)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                bot.status()
            next_tick = max(next_tick + DRIP_S, time.monotonic())
            stop.wait(max(0.0, next_tick - time.monotonic()))
        bot.say(f"stopped: {bot.sent} orders out, {sum(bot.denials.counts.values())} refused")


if __name__ == "__main__":
    main()
