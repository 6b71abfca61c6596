"""The simulated venue's liquidity bot.

Unless the venue runs with ``liquidity=False``, the bot quotes ``bot_levels`` bids and offers of
``bot_size`` around a reference price per symbol, and every ``bot_interval`` seconds (the
venue's clock calls :meth:`LiquidityBot.step`) moves the reference by a seeded random step and
quotes again. Agents' marketable orders therefore fill, and resting orders get hit when the
reference moves through them. The bot's own fills are not reported or counted (its orders belong
to :data:`~hil.exchange.desk.BOT`).

Every method runs under the venue lock.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from typing import Protocol

from hil.exchange.book import Order
from hil.exchange.desk import BOT, OrderDesk

__all__ = ["LiquidityBot"]


class _Settings(Protocol):
    """The venue's knobs the bot reads, each time it quotes."""

    tick: float
    bot_levels: int
    bot_size: float
    bot_volatility: float


class LiquidityBot:
    """Quotes every book of ``desk`` around :attr:`reference` (symbol -> price, rounded to the
    tick), moving it by a random walk seeded with ``seed``."""

    def __init__(
        self, settings: _Settings, desk: OrderDesk, reference: Mapping[str, float], seed: int | None
    ) -> None:
        self._settings = settings
        self._desk = desk
        self._rng = random.Random(seed)
        self.reference = {sym: desk.books[sym].round_price(float(px)) for sym, px in reference.items()}
        self._bot_ids = itertools.count(1)

    def set_reference(self, symbol: str, price: float) -> None:
        self.reference[symbol] = self._desk.books[symbol].round_price(price)

    def step(self) -> None:
        """Move every reference price and quote around it again."""
        for symbol in self._desk.books:
            self.walk(symbol)
            self.requote(symbol)

    def walk(self, symbol: str) -> None:
        tick, ref = self._settings.tick, self.reference[symbol]
        step = self._rng.gauss(0.0, ref * self._settings.bot_volatility)
        self.reference[symbol] = self._desk.books[symbol].round_price(max(ref + step, tick * 10))

    def requote(self, symbol: str) -> None:
        """Replace the bot's quotes around the reference price (its new quotes may trade)."""
        settings = self._settings
        book, ref = self._desk.books[symbol], self.reference[symbol]
        book.cancel_all(BOT)
        half_spread = max(settings.tick, book.round_price(ref * 0.0005))
        for level in range(settings.bot_levels):
            offset = half_spread * (level + 1)
            for side, price in (("buy", ref - offset), ("sell", ref + offset)):
                if price < settings.tick:
                    continue
                order = Order(f"B{next(self._bot_ids)}", f"bot-{symbol}-{level}-{side}", BOT, symbol,
                              "buy" if side == "buy" else "sell", settings.bot_size, "limit",
                              book.round_price(price), "gtc")
                self._desk.execute(order)
        self._desk.dirty.add(symbol)
