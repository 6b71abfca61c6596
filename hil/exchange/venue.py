"""The simulated venue: a FIX 4.4 acceptor over TCP in front of one order book per symbol, with a
liquidity bot and fault switches, so the exchange driver and the agents behind it can be tested
end to end without a real exchange.

:class:`SimVenue` puts together and runs:

* :mod:`hil.exchange.acceptor` — the listening socket and one FIX session per counterparty
  CompID (:class:`~hil.exchange.acceptor.Acceptor`): sequence stores kept across reconnects,
  logons checked against ``credentials``, one connection per CompID at a time;
* :mod:`hil.exchange.desk` — the order books and what orders, cancels, mass status and market
  data requests do to them (:class:`~hil.exchange.desk.OrderDesk`);
* :mod:`hil.exchange.liquidity` — the liquidity bot (:class:`~hil.exchange.liquidity.LiquidityBot`);
* :mod:`hil.exchange.faults` — the fault switches (:class:`~hil.exchange.faults.VenueFaults`).

**Faults** (in-process methods, effective at once): :meth:`SimVenue.reject_next`,
:meth:`~SimVenue.disconnect`, :meth:`~SimVenue.latency`, :meth:`~SimVenue.throttle`,
:meth:`~SimVenue.skip_seqnum`; :meth:`~SimVenue.clear_faults` turns them off.

**Threads.** One accept thread, one short handshake thread per new connection (it reads the
Logon to find the CompID), two per connection
(:class:`~clove_driver_exchange.fix.transport.FixConnection`), and a clock thread for the bot and
market data. One venue lock guards the books and the per-session state; it is
always taken before a session's lock, never after.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType, TracebackType
from typing import Final

from clove_driver_exchange.fix.messages import Message, Tag
from clove_driver_exchange.fix.session import FixSession, State
from hil.exchange.acceptor import COMP_ID, Acceptor, Client
from hil.exchange.acceptor import HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT  # "X as X": public, not in __all__
from hil.exchange.book import Order, OrderBook
from hil.exchange.desk import BOT, OrderDesk, VenueFill
from hil.exchange.desk import FULL_DEPTH as FULL_DEPTH
from hil.exchange.faults import VenueFaults
from hil.exchange.liquidity import LiquidityBot

__all__ = ["BOT", "DEFAULT_CREDENTIALS", "DEFAULT_SYMBOLS", "SimVenue", "VenueFill"]

DEFAULT_SYMBOLS: Final[Mapping[str, float]] = MappingProxyType({"ACME": 100.0, "BOLT": 25.0})
DEFAULT_CREDENTIALS: Final[Mapping[str, str]] = MappingProxyType({"CLOVE": "secret"})
#: Inbound messages kept for :meth:`SimVenue.messages_received`.
MESSAGE_LOG: Final = 100_000

_log = logging.getLogger(__name__)


class SimVenue:
    """A simulated exchange speaking FIX 4.4 on ``host:port`` (``port=0``: any free port; the
    bound one is :attr:`port` after :meth:`start`).

    :param symbols: symbol -> initial reference price.
    :param sender: the venue's CompID (clients' TargetCompID).
    :param credentials: username -> password; ``None`` accepts any logon.
    :param store_dir: where session sequence stores live (default: a temporary directory,
        removed by :meth:`stop`); pass one to keep sequence numbers across venue restarts.
    :param seed: seed of the liquidity bot's random walk.
    :param liquidity: run the liquidity bot.
    :param durable: fsync the sequence stores (a simulation normally needs only process-crash
        safety, which an unsynced append already gives).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        symbols: Mapping[str, float] = DEFAULT_SYMBOLS,
        sender: str = "VENUE",
        credentials: Mapping[str, str] | None = DEFAULT_CREDENTIALS,
        store_dir: str | os.PathLike[str] | None = None,
        seed: int | None = None,
        *,
        tick: float = 0.01,
        liquidity: bool = True,
        bot_interval: float = 0.5,
        bot_levels: int = 3,
        bot_size: float = 100.0,
        bot_volatility: float = 0.0005,
        md_interval: float = 0.05,
        heartbeat_s: float = 30.0,
        durable: bool = False,
    ) -> None:
        if not symbols:
            raise ValueError("a venue needs at least one symbol")
        if not COMP_ID.fullmatch(sender):
            raise ValueError(f"bad venue CompID {sender!r}")
        self.host = host
        self.port = port
        self.sender = sender
        self.credentials = None if credentials is None else dict(credentials)
        self.tick = tick
        self.liquidity = liquidity
        self.bot_interval = bot_interval
        self.bot_levels = bot_levels
        self.bot_size = bot_size
        self.bot_volatility = bot_volatility
        self.md_interval = md_interval
        self.heartbeat_s = heartbeat_s
        self.durable = durable
        self._store_dir = None if store_dir is None else os.fspath(store_dir)
        self._own_store_dir = False
        self._lock = threading.RLock()
        self._clients: dict[str, Client] = {}
        self._received: deque[Message] = deque(maxlen=MESSAGE_LOG)
        self._faults = VenueFaults()
        self._desk = OrderDesk({sym: OrderBook(sym, tick) for sym in symbols}, self._clients, self._faults,
                               self._lock)
        self._bot = LiquidityBot(self, self._desk, symbols, seed)
        # lifecycle
        self._lifecycle = threading.Lock()
        self._started = self._stopped = False
        self._stopping = threading.Event()
        self._acceptor = Acceptor(self, self._clients, self._lock, self._stopping, self._faults,
                                  on_app=self._desk.on_app, on_lost=self._desk.on_lost,
                                  on_inbound=self._received.append)
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SimVenue:
        """Listen and serve in daemon threads; returns once :attr:`port` accepts connections.
        A second call does nothing.

        :raises OSError: the address cannot be bound.
        :raises RuntimeError: the venue was stopped (make a new one).
        """
        with self._lifecycle:
            if self._started:
                if self._stopped:
                    raise RuntimeError("a stopped SimVenue cannot start again; make a new one")
                return self
            if self._store_dir is None:
                self._store_dir = tempfile.mkdtemp(prefix="clove-venue-")
                self._own_store_dir = True
            os.makedirs(self._store_dir, exist_ok=True)
            try:
                self.port = self._acceptor.listen(self.host, self.port)
            except OSError:
                if self._own_store_dir:
                    shutil.rmtree(self._store_dir, ignore_errors=True)
                    self._store_dir, self._own_store_dir = None, False
                raise
            self._started = True
            if self.liquidity:
                with self._lock:
                    for symbol in self._desk.books:
                        self._bot.requote(symbol)
            for target, name in ((self._acceptor.serve, "accept"), (self._clock_loop, "clock")):
                thread = threading.Thread(target=target, name=f"venue-{self.sender}-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
            _log.info("venue %s ready on %s:%d", self.sender, self.host, self.port)
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Log every session out, close every connection, free the port (safe twice)."""
        with self._lifecycle:
            if not self._started or self._stopped:
                self._stopped = self._started
                return
            self._stopped = True
            self._stopping.set()
            self._acceptor.wake()
            for thread in self._threads:
                thread.join(timeout)
            self._acceptor.shutdown(timeout)
            if self._own_store_dir and self._store_dir is not None:
                shutil.rmtree(self._store_dir, ignore_errors=True)

    def __enter__(self) -> SimVenue:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def store_dir(self) -> str | None:
        return self._store_dir

    # ---- faults -------------------------------------------------------------------------------

    def reject_next(self, n: int = 1, text: str = "rejected by the venue") -> None:
        """Reject the next ``n`` NewOrderSingles (any session) with ``text``."""
        with self._lock:
            self._faults.reject_next = max(0, n)
            self._faults.reject_text = text

    def disconnect(self, session: str | None = None) -> None:
        """Drop the connection of ``session`` (default: all) now, without a Logout."""
        self._acceptor.disconnect(session)

    def latency(self, seconds: float) -> None:
        """Hold every outbound message ``seconds`` before it is sent (0: off)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0, got {seconds!r}")
        with self._lock:
            self._faults.latency = seconds
            self._acceptor.set_send_delay(seconds)

    def throttle(self, max_msgs_per_s: float | None) -> None:
        """Reject (Text ``throttle``) a session's orders beyond this many in any second (None: off)."""
        if max_msgs_per_s is not None and max_msgs_per_s <= 0:
            raise ValueError(f"throttle must be positive or None, got {max_msgs_per_s!r}")
        with self._lock:
            self._faults.throttle = max_msgs_per_s

    def skip_seqnum(self, session: str | None = None) -> None:
        """Skip one outbound sequence number of ``session`` (default: all): the client sees a gap
        on the next message, asks for a resend and gets a GapFill."""
        self._acceptor.skip_seqnum(session)

    def set_reference(self, symbol: str, price: float) -> None:
        """Move ``symbol``'s reference price now and requote the bot around it: resting agent
        orders the new quotes cross are hit (as a market moving through them would)."""
        with self._lock:
            self._bot.set_reference(symbol, price)
            if self.liquidity:
                self._bot.requote(symbol)

    def clear_faults(self) -> None:
        self.reject_next(0)
        self.latency(0.0)
        self.throttle(None)

    # ---- introspection ------------------------------------------------------------------------

    def sessions(self) -> dict[str, State]:
        """CompID -> session state, for every counterparty seen."""
        with self._lock:
            return {comp: c.session.state for comp, c in self._clients.items()}

    def session(self, comp_id: str) -> FixSession | None:
        with self._lock:
            client = self._clients.get(comp_id)
            return None if client is None else client.session

    def orders(self, session: str, *, open_only: bool = False) -> list[Order]:
        """Copies of the session's orders in arrival order (rejected ones have OrderID ``NONE``)."""
        with self._lock:
            client = self._clients.get(session)
            if client is None:
                return []
            return [copy.copy(o) for o in client.orders.values() if o.is_open or not open_only]

    def positions(self, session: str, account: str | None = None) -> dict[str, float]:
        """Net quantity per symbol from the session's fills (buys positive), for one account or all."""
        net: dict[str, float] = {}
        with self._lock:
            for fill in self._desk.fills:
                if fill.session == session and account in (None, fill.account):
                    signed = fill.qty if fill.side == "buy" else -fill.qty
                    net[fill.symbol] = net.get(fill.symbol, 0.0) + signed
        return net

    def fills(self, session: str | None = None) -> list[VenueFill]:
        with self._lock:
            return [f for f in self._desk.fills if session in (None, f.session)]

    def messages_received(self, session: str | None = None) -> list[Message]:
        """Every sound inbound message (admin ones too), oldest first; the last
        :data:`MESSAGE_LOG` are kept."""
        return [msg for msg in list(self._received) if session in (None, msg.get(Tag.SENDER_COMP_ID))]

    def book(self, symbol: str) -> OrderBook:
        return self._desk.books[symbol]

    def reference_price(self, symbol: str) -> float:
        with self._lock:
            return self._bot.reference[symbol]

    # ---- the clock: liquidity bot and market data ---------------------------------------------

    def _clock_loop(self) -> None:
        next_bot = time.monotonic() + self.bot_interval
        while not self._stopping.wait(self.md_interval):
            try:
                with self._lock:
                    if self.liquidity and time.monotonic() >= next_bot:
                        next_bot = time.monotonic() + self.bot_interval
                        self._bot.step()
                    self._desk.publish_market_data()
            except Exception:
                _log.exception("venue clock failed")
