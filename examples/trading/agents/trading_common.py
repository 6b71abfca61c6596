"""What the three trading agents share: log lines, denial lines, tick arithmetic, market data and
fills. Not an agent: the kernel puts each script's directory first on ``sys.path``, so the
agents import it (as the rover's agents import ``rover_can``). No I/O besides stdout.

Every refusal an agent gets from the exchange is a :class:`clove.errors.CloveError`: a limit,
whether the kernel checked it against the grant (``max_order_qty``) or the driver's risk engine
did, is ``risk.denied`` with ``details["reason"]`` naming the check; a symbol outside the grant
is ``perm.denied`` (``details["reason"]`` ``"symbol"``). :func:`denial_line` turns either into
``DENIED <reason>: <message>``.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

#: The simulated venue's price increment (hil.exchange.venue.SimVenue's default).
TICK = 0.01

#: Final order states: the order no longer rests at the venue.
DONE = frozenset({"filled", "canceled", "rejected", "expired"})


def log(agent: str, message: str) -> None:
    """One short line, written in one piece and flushed (the kernel keeps the agent's stdout)."""
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {agent}: {message}\n")
    sys.stdout.flush()


def my_name(default: str) -> str:
    """This agent's name as the kernel knows it (trading states may name one agent)."""
    return os.environ.get("CLOVE_AGENT_NAME") or default


# ---- refusals ------------------------------------------------------------------------------------


def reason_of(err: Any) -> str:
    """The refusal's reason code (``details["reason"]``), else the error's code."""
    details = getattr(err, "details", None) or {}
    return str(details.get("reason") or getattr(err, "code", "error"))


def message_of(err: Any) -> str:
    """The refusal's message without the leading ``<reason>: `` the risk engine puts there."""
    reason = reason_of(err)
    message = str(getattr(err, "message", err))
    return message[len(reason) + 2 :] if message.startswith(f"{reason}: ") else message


def denial_line(err: Any) -> str:
    """``DENIED <reason>: <message>`` (the reason is not repeated)."""
    return f"DENIED {reason_of(err)}: {message_of(err)}"


def already_done(err: Any) -> bool:
    """A cancel refused because the order is no longer open (it filled or expired a moment
    ago): the gateway's ``notfound``, or the risk engine's ``unknown_order``. Not worth a line."""
    return getattr(err, "code", None) == "notfound" or reason_of(err) == "unknown_order"


class DenialLog:
    """Counts every refusal by reason and prints it, at most one line per reason every
    ``every_s`` seconds (0: every one); the lines held back are counted in the next one.

    :param quiet: reasons that are only counted, never printed (the runaway's ``state_halted``
        once it has said it is halted).
    """

    def __init__(
        self, out: Callable[[str], None], every_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = out
        self.every_s = every_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.quiet: set[str] = set()
        self._held: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    def record(self, err: Any) -> str:
        """Count (and maybe print) one refusal; returns its reason."""
        reason = reason_of(err)
        self.counts[reason] += 1
        if reason in self.quiet:
            return reason
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.every_s:
            self._held[reason] += 1
            return reason
        held = self._held.pop(reason, 0)
        self._last[reason] = now
        self.out(denial_line(err) + (f" (+{held} more like it)" if held else ""))
        return reason

    def tally(self) -> str:
        """``max_position 12, order_rate 3`` (most frequent first), or ``none``."""
        return ", ".join(f"{reason} {n}" for reason, n in self.counts.most_common()) or "none"


# ---- prices --------------------------------------------------------------------------------------


def px(price: float, tick: float = TICK) -> str:
    """A price for a log line, with as many decimals as the tick has (``100.20``)."""
    decimals = max(0, -math.floor(math.log10(tick) + 1e-9))
    return f"{price:.{decimals}f}"


def floor_tick(price: float, tick: float = TICK) -> float:
    """The highest multiple of ``tick`` at or below ``price`` (a bid never rounds up)."""
    return round(math.floor(price / tick + 1e-9) * tick, 10)


def ceil_tick(price: float, tick: float = TICK) -> float:
    """The lowest multiple of ``tick`` at or above ``price`` (an ask never rounds down)."""
    return round(math.ceil(price / tick - 1e-9) * tick, 10)


def round_tick(price: float, tick: float = TICK) -> float:
    """The nearest multiple of ``tick``."""
    return round(round(price / tick) * tick, 10)


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def top_of_book(item: dict[str, Any]) -> tuple[float, float] | None:
    """``(bid, ask)`` of an ``md`` item with both sides quoted, else ``None``."""
    bid: Any = item.get("bid")
    ask: Any = item.get("ask")
    if item.get("type") != "md" or not (_positive(bid) and _positive(ask)):
        return None
    return float(bid), float(ask)


def mid_of(item: dict[str, Any]) -> float | None:
    """The mid of an ``md`` item, or ``None`` when a side of the book is empty."""
    top = top_of_book(item)
    return None if top is None else (top[0] + top[1]) / 2


# ---- fills and states ----------------------------------------------------------------------------


def fill_delta(item: dict[str, Any]) -> float:
    """How an ``exec`` item moves the position: ``+last_qty`` for a buy, ``-last_qty`` for a
    sell, 0 when it is not a fill."""
    qty = item.get("last_qty") or 0.0
    if item.get("type") != "exec" or not _positive(qty):
        return 0.0
    return float(qty) if item.get("side") == "buy" else -float(qty)


def fill_line(item: dict[str, Any], position: float) -> str:
    """``FILL bought 10 ACME @ 100.03 (position +10)``."""
    verb = "bought" if item.get("side") == "buy" else "sold"
    qty, price = item.get("last_qty") or 0.0, item.get("last_px") or 0.0
    return f"FILL {verb} {qty:g} {item.get('symbol')} @ {px(price)} (position {position:+g})"


def state_for_me(item: dict[str, Any], me: str) -> str | None:
    """The trading state a ``state`` item sets for this agent (``ACTIVE``, ``REDUCING``,
    ``HALTED``), or ``None`` when it is not a state item or names another agent."""
    if item.get("type") != "state":
        return None
    target = item.get("agent")
    if target not in (None, "", me):
        return None
    return str(item.get("state", "")).upper() or None


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (the kernel stopping the agent) or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop
