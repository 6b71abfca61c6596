"""A market maker: quotes ACME on both sides around the mid and keeps its inventory small.

From the ``md`` items of its exchange stream it takes the mid, and quotes
``bid = mid - spread/2`` and ``ask = mid + spread/2``, 10 each (the bid rounded down and the
ask rounded up to the tick). When the mid moves by more than a tick since the last quote, or one
of its quotes fills, it cancels both quotes and quotes again. Inventory control: both prices are
shifted against the position (long 100: half a spread lower, so it sells more readily and buys
less), and a side whose fill could take the position beyond +-100 is not quoted at all. A quote
made again at a price it sent less than a second ago steps a tick further from the market: the
risk engine refuses the very same order twice within its duplicate window.

It logs each fill, and its position and quotes every few seconds. A refused call (grant, risk
limit, kill switch) is logged as ``DENIED <reason>: <message>`` and it tries again a second
later; on a HALTED state it stops quoting (the kill switch has cancelled its quotes) until the
state is ACTIVE again. It runs until the kernel stops it, then cancels its quotes.

Configuration: ``MM_SYMBOL`` (ACME), ``MM_SPREAD`` (0.06), ``MM_SIZE`` (10), ``MM_MAX_INVENTORY``
(100), ``EXCHANGE_DEVICE`` (exchange).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

from trading_common import (
    DONE,
    TICK,
    DenialLog,
    already_done,
    ceil_tick,
    fill_delta,
    fill_line,
    floor_tick,
    log,
    mid_of,
    my_name,
    px,
    state_for_me,
    stop_on_signals,
)

from clove_sdk.errors import CloveError

SYMBOL = os.environ.get("MM_SYMBOL", "ACME")
SPREAD = float(os.environ.get("MM_SPREAD", "0.06"))
SIZE = float(os.environ.get("MM_SIZE", "10"))
MAX_INVENTORY = float(os.environ.get("MM_MAX_INVENTORY", "100"))
MIN_REQUOTE_S = 0.25  # at most 4 requotes (8 orders, 8 cancels) a second
DUPLICATE_WINDOW_S = 1.0  # the risk engine's default duplicate_window_s
RETRY_S = 1.0  # after a refusal
STATUS_EVERY_S = 5.0


# ---- the pure part: what to quote, and when ------------------------------------------------------


@dataclass(frozen=True)
class Quotes:
    """The prices to quote; ``None``: that side is not quoted (inventory at its limit)."""

    bid: float | None
    ask: float | None

    def __str__(self) -> str:
        bid = "-" if self.bid is None else px(self.bid)
        ask = "-" if self.ask is None else px(self.ask)
        return f"{bid} x {ask}"


def compute_quotes(
    mid: float,
    position: float,
    *,
    spread: float = SPREAD,
    size: float = SIZE,
    max_inventory: float = MAX_INVENTORY,
    tick: float = TICK,
) -> Quotes:
    """Bid and ask around ``mid``, skewed against ``position``.

    The centre moves down by ``position / max_inventory`` half-spreads (up when short), capped
    at one half-spread. A side is left out when filling it could take the position beyond
    ``max_inventory`` either way.
    """
    lean = max(-1.0, min(1.0, position / max_inventory)) * spread / 2
    centre = mid - lean
    bid = floor_tick(centre - spread / 2, tick)
    ask = ceil_tick(centre + spread / 2, tick)
    if ask - bid < tick / 2:  # a spread below one tick: keep the quotes one tick apart
        ask = round(bid + tick, 10)
    return Quotes(
        bid=bid if position + size <= max_inventory + 1e-9 and bid > 0 else None,
        ask=ask if position - size >= -max_inventory - 1e-9 else None,
    )


def needs_requote(quoted_mid: float | None, mid: float, tick: float = TICK) -> bool:
    """Whether the mid moved by more than a tick since the quotes were made (or there are none)."""
    return quoted_mid is None or abs(mid - quoted_mid) > tick * (1 + 1e-6)


def unrepeated(
    side: str,
    price: float,
    sent: dict[tuple[str, float], float],
    now: float,
    window: float = DUPLICATE_WINDOW_S,
    tick: float = TICK,
) -> float:
    """``price``, or the nearest price a few ticks further from the market (lower for a bid,
    higher for an ask) that this side has not sent within ``window`` seconds: the risk engine
    refuses the same order twice within its duplicate window, and a quote cancelled and made
    again at the same price is exactly that. ``sent`` maps ``(side, price)`` to when."""
    step = -tick if side == "buy" else tick
    for i in range(10):
        candidate = round(price + i * step, 10)
        if now - sent.get((side, candidate), -math.inf) >= window or candidate <= 0:
            return candidate
    return round(price + 10 * step, 10)


# ---- the agent -----------------------------------------------------------------------------------


class MarketMaker:
    """The quoting loop's state; every exchange call goes through :attr:`ex`."""

    def __init__(self, ex: Any, me: str, clock: Any = time.monotonic) -> None:
        self.ex = ex
        self.me = me
        self.clock = clock
        self.denials = DenialLog(self.say)
        self.position = 0.0
        self.mid: float | None = None
        self.quoted_mid: float | None = None
        self.quotes: Quotes | None = None
        self.live: dict[str, str] = {}  # client_id -> side, of quotes not yet cancelled
        self.sent: dict[tuple[str, float], float] = {}  # (side, price) -> when, for unrepeated()
        self.filled_since_quote = False
        self.halted = False
        self.next_quote_at = 0.0
        self.fills = self.requotes = 0

    def say(self, message: str) -> None:
        log("market_maker", message)

    def on_item(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "md" and item.get("symbol") == SYMBOL:
            mid = mid_of(item)
            if mid is not None:
                self.mid = mid
        elif kind == "exec":
            delta = fill_delta(item)
            if delta:
                self.position += delta
                self.fills += 1
                self.filled_since_quote = True
                self.say(fill_line(item, self.position))
            if item.get("status") in DONE:
                self.live.pop(str(item.get("client_id")), None)
            if item.get("status") == "rejected":
                self.say(f"REJECTED by the venue: {item.get('text')}")
        elif kind == "cancel_reject":
            self.live.pop(str(item.get("client_id")), None)  # too late: it filled or was done
        else:
            state = state_for_me(item, self.me)
            if state == "HALTED" and not self.halted:
                self.halted = True
                self.live.clear()  # the kill switch cancels every open order
                self.quotes = None
                self.say(f"HALTED ({item.get('reason')}): not quoting until trading is ACTIVE again")
            elif state is not None and state != "HALTED":
                if self.halted:
                    self.say(f"trading is {state} again: quoting")
                self.halted = False
                self.quoted_mid = None  # quote afresh

    def maybe_requote(self) -> None:
        now = self.clock()
        if self.halted or self.mid is None or now < self.next_quote_at:
            return
        if not (self.filled_since_quote or needs_requote(self.quoted_mid, self.mid)):
            return
        self.next_quote_at = now + MIN_REQUOTE_S
        self.requote(self.mid)

    def requote(self, mid: float) -> None:
        """Cancel what is quoted, then quote around ``mid``."""
        self.cancel_all()
        quotes = compute_quotes(mid, self.position)
        now = self.clock()
        self.sent = {key: t for key, t in self.sent.items() if now - t < DUPLICATE_WINDOW_S}
        made: dict[str, float | None] = {"buy": None, "sell": None}
        refused = False
        for side, price in (("buy", quotes.bid), ("sell", quotes.ask)):
            if price is None:
                continue
            price = unrepeated(side, price, self.sent, now)
            try:
                reply = self.ex.submit_order(SYMBOL, side, SIZE, price=price)
                self.live[str(reply["client_id"])] = side
                self.sent[(side, price)] = now
                made[side] = price
            except CloveError as err:
                self.denials.record(err)
                refused = True
        self.quoted_mid, self.quotes = mid, Quotes(made["buy"], made["sell"])
        self.filled_since_quote = False
        self.requotes += 1
        if refused:
            self.next_quote_at = self.clock() + RETRY_S
            self.quoted_mid = None  # try the whole quote again after the pause

    def cancel_all(self) -> None:
        for client_id in list(self.live):
            del self.live[client_id]  # its canceled (or filled) report follows on the stream
            try:
                self.ex.cancel(client_id)
            except CloveError as err:
                if not already_done(err):  # it filled a moment ago: nothing to cancel
                    self.denials.record(err)

    def status(self) -> None:
        try:
            gateway = f"{self.ex.positions().get(SYMBOL, 0.0):+g}"
        except CloveError as err:
            gateway = f"unknown ({err.code})"
        mid = "-" if self.mid is None else f"{self.mid:.3f}"  # half a tick shows
        self.say(
            f"position {self.position:+g} {SYMBOL} (gateway {gateway}), {self.fills} fills, "
            f"{self.requotes} quotes, mid {mid}, quoting {self.quotes or '-'}"
            + (" [HALTED]" if self.halted else "")
        )


def main() -> None:
    from clove_sdk import CloveClient

    stop = stop_on_signals()
    device = os.environ.get("EXCHANGE_DEVICE", "exchange")
    with CloveClient(timeout=10.0) as client:
        ex = client.device(device)
        mm = MarketMaker(ex, my_name("market_maker"))
        mm.say(f"quoting {SYMBOL}: spread {SPREAD:g}, size {SIZE:g}, inventory within +-{MAX_INVENTORY:g}")
        try:  # a restarted agent: take over the gateway's position, drop old quotes
            ex.subscribe()
            mm.position = float(ex.positions().get(SYMBOL, 0.0))
            for order in ex.orders():
                mm.live[str(order["client_id"])] = str(order.get("side"))
            mm.cancel_all()
        except CloveError as err:
            mm.denials.record(err)
        next_status = time.monotonic() + STATUS_EVERY_S
        while not stop.is_set():
            try:
                for item in ex.executions(max_items=500, timeout=0.2):
                    mm.on_item(item)
                mm.maybe_requote()
            except CloveError as err:  # the stream itself: the kernel or the device in trouble
                mm.denials.record(err)
                stop.wait(RETRY_S)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                mm.status()
        mm.cancel_all()
        mm.say(
            f"stopped: position {mm.position:+g} {SYMBOL}, {mm.fills} fills, denials: {mm.denials.tally()}"
        )


if __name__ == "__main__":
    main()
