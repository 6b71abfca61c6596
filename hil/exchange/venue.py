"""The simulated venue: a FIX 4.4 acceptor over TCP in front of one order book per symbol, with a
liquidity bot and fault switches, so the exchange driver and the agents behind it can be tested
end to end without a real exchange.

**Sessions.** Each counterparty SenderCompID is one FIX session with its own sequence store
(``<store_dir>/<VENUE>-<COMPID>.seqs``), kept for the venue's lifetime across reconnects: what
the venue reports while a client is away (cancel-on-disconnect) reaches it by resend after its
next logon. Logons are checked against ``credentials`` (Username 553 -> Password 554;
``None`` admits anyone). One connection per CompID at a time: a second is closed at once.

**Orders.** NewOrderSingle gets an ExecutionReport New, then one Trade report per fill, and an
Expired report (150=C, 39=C) for an IOC/market remainder or an unfillable FOK. Refused orders
get ExecType Rejected with the reason in Text(58): ``duplicate ClOrdID`` (ClOrdIDs are unique
per session, cancels included), ``unknown symbol X``, ``throttle``, a bad field, or an injected
reject. OrderCancelRequest gets Canceled (150=4) or an OrderCancelReject (102: 0 too late,
1 unknown order, 6 duplicate ClOrdID). OrderMassStatusRequest gets one ExecType I report per
open order of the session (911 TotNumReports, 912=Y on the last); with none open, one report
with OrderID(37) ``NONE``, OrdStatus 8 and 911=0. MarketDataRequest (263=1) gets a snapshot at
once and then one on every change of the book, at most every ``md_interval`` seconds per
symbol; 263=0 is one snapshot, 263=2 unsubscribes; an unknown symbol gets a
MarketDataRequestReject. Unsupported messages get a session-level Reject.

**Liquidity.** Unless ``liquidity=False``, a bot quotes ``bot_levels`` bids and offers of
``bot_size`` around a reference price per symbol, and every ``bot_interval`` seconds moves the
reference by a seeded random step and quotes again. Agents' marketable orders therefore fill,
and resting orders get hit when the reference moves through them. The bot's own fills are not
reported or counted.

**Faults** (in-process methods, effective at once): :meth:`SimVenue.reject_next`,
:meth:`~SimVenue.disconnect`, :meth:`~SimVenue.latency`, :meth:`~SimVenue.throttle`,
:meth:`~SimVenue.skip_seqnum`; :meth:`~SimVenue.clear_faults` turns them off.

**Threads.** One accept thread, one short handshake thread per new connection (it reads the
Logon to find the CompID), two per connection (:class:`FixConnection`), and a clock thread for
the bot and market data. One venue lock guards the books and the per-session state; it is
always taken before a session's lock, never after.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import os
import random
import re
import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Final

from clove_driver_exchange.fix import messages as m
from clove_driver_exchange.fix.messages import Framer, Message, MsgType, Tag
from clove_driver_exchange.fix.session import FixSession, State
from clove_driver_exchange.fix.store import SeqStore
from clove_driver_exchange.fix.transport import FixConnection
from hil.exchange.book import BookError, Order, OrderBook, OrdType, Side, SubmitResult, TimeInForce

__all__ = ["BOT", "DEFAULT_CREDENTIALS", "DEFAULT_SYMBOLS", "SimVenue", "VenueFill"]

DEFAULT_SYMBOLS: Final[Mapping[str, float]] = MappingProxyType({"ACME": 100.0, "BOLT": 25.0})
DEFAULT_CREDENTIALS: Final[Mapping[str, str]] = MappingProxyType({"CLOVE": "secret"})
#: The owner of the liquidity bot's orders.
BOT: Final = "__liquidity__"
#: Seconds a new connection has to send its Logon.
HANDSHAKE_TIMEOUT: Final = 5.0
#: Levels each side in a snapshot when the request asks for full depth (264=0).
FULL_DEPTH: Final = 10
#: Inbound messages kept for :meth:`SimVenue.messages_received`.
MESSAGE_LOG: Final = 100_000

_COMP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_STATUS: Final = {"new": "0", "partially_filled": "1", "filled": "2", "canceled": "4", "rejected": "8",
                  "expired": "C"}
_SIDES: Final[Mapping[str, Side]] = {"1": "buy", "2": "sell"}
_ORD_TYPES: Final[Mapping[str, OrdType]] = {"1": "market", "2": "limit"}
_TIFS: Final[Mapping[str, TimeInForce]] = {"0": "day", "1": "gtc", "3": "ioc", "4": "fok"}

_log = logging.getLogger(__name__)


class _Refused(Exception):
    """An order the venue rejects; the message is the report's Text(58)."""


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One session's side of a trade."""

    session: str
    account: str | None
    symbol: str
    side: Side
    qty: float
    price: float
    order_id: str
    cl_ord_id: str
    exec_id: str
    aggressor: bool
    time: float


@dataclass(eq=False)
class _Client:
    """The venue's state for one counterparty CompID."""

    comp_id: str
    session: FixSession
    store: SeqStore
    conn: FixConnection | None = None
    cancel_on_disconnect: bool = False
    cl_ord_ids: set[str] = field(default_factory=set)
    orders: dict[str, Order] = field(default_factory=dict)  # by ClOrdID, in arrival order
    md_subs: dict[str, tuple[str, int]] = field(default_factory=dict)  # symbol -> (MDReqID, depth)
    order_times: deque[float] = field(default_factory=deque)  # admitted orders, for the throttle


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
        if not _COMP_ID.fullmatch(sender):
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
        self._rng = random.Random(seed)
        self._books = {sym: OrderBook(sym, tick) for sym in symbols}
        self._reference = {sym: self._books[sym].round_price(float(px)) for sym, px in symbols.items()}
        self._lock = threading.RLock()
        self._clients: dict[str, _Client] = {}
        self._fills: list[VenueFill] = []
        self._received: deque[Message] = deque(maxlen=MESSAGE_LOG)
        self._dirty: set[str] = set()
        self._order_ids = itertools.count(1)
        self._exec_ids = itertools.count(1)
        self._bot_ids = itertools.count(1)
        # faults
        self._reject_next = 0
        self._reject_text = ""
        self._latency = 0.0
        self._throttle: float | None = None
        # lifecycle
        self._lifecycle = threading.Lock()
        self._started = self._stopped = False
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
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
                listener = socket.create_server((self.host, self.port), backlog=64)
            except OSError:
                if self._own_store_dir:
                    shutil.rmtree(self._store_dir, ignore_errors=True)
                    self._store_dir, self._own_store_dir = None, False
                raise
            listener.setblocking(False)
            self._listener = listener
            self.port = listener.getsockname()[1]
            self._wake = socket.socketpair()
            self._started = True
            if self.liquidity:
                with self._lock:
                    for symbol in self._books:
                        self._requote(symbol)
            for target, name in ((self._accept_loop, "accept"), (self._clock_loop, "clock")):
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
            if self._wake is not None:
                with contextlib.suppress(OSError):
                    self._wake[1].send(b"x")
            for thread in self._threads:
                thread.join(timeout)
            with self._lock:
                clients = list(self._clients.values())
            for client in clients:
                conn = client.conn
                if conn is None:
                    continue
                client.session.logout("the venue is shutting down")
                if not conn.join(1.0):
                    conn.close("the venue is shutting down")
                    conn.join(timeout)
            for client in clients:
                client.store.close()
            if self._listener is not None:
                self._listener.close()
            if self._wake is not None:
                for sock in self._wake:
                    sock.close()
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
            self._reject_next = max(0, n)
            self._reject_text = text

    def disconnect(self, session: str | None = None) -> None:
        """Drop the connection of ``session`` (default: all) now, without a Logout."""
        with self._lock:
            conns = [c.conn for c in self._clients.values()
                     if c.conn is not None and session in (None, c.comp_id)]
        for conn in conns:
            conn.close("disconnected by the venue (fault injection)")

    def latency(self, seconds: float) -> None:
        """Hold every outbound message ``seconds`` before it is sent (0: off)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0, got {seconds!r}")
        with self._lock:
            self._latency = seconds
            for client in self._clients.values():
                if client.conn is not None:
                    client.conn.send_delay = seconds

    def throttle(self, max_msgs_per_s: float | None) -> None:
        """Reject (Text ``throttle``) a session's orders beyond this many in any second (None: off)."""
        if max_msgs_per_s is not None and max_msgs_per_s <= 0:
            raise ValueError(f"throttle must be positive or None, got {max_msgs_per_s!r}")
        with self._lock:
            self._throttle = max_msgs_per_s

    def skip_seqnum(self, session: str | None = None) -> None:
        """Skip one outbound sequence number of ``session`` (default: all): the client sees a gap
        on the next message, asks for a resend and gets a GapFill."""
        with self._lock:
            for client in self._clients.values():
                if session in (None, client.comp_id):
                    client.session.skip_seqnum()

    def set_reference(self, symbol: str, price: float) -> None:
        """Move ``symbol``'s reference price now and requote the bot around it: resting agent
        orders the new quotes cross are hit (as a market moving through them would)."""
        with self._lock:
            self._reference[symbol] = self._books[symbol].round_price(price)
            if self.liquidity:
                self._requote(symbol)

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
            for fill in self._fills:
                if fill.session == session and account in (None, fill.account):
                    signed = fill.qty if fill.side == "buy" else -fill.qty
                    net[fill.symbol] = net.get(fill.symbol, 0.0) + signed
        return net

    def fills(self, session: str | None = None) -> list[VenueFill]:
        with self._lock:
            return [f for f in self._fills if session in (None, f.session)]

    def messages_received(self, session: str | None = None) -> list[Message]:
        """Every sound inbound message (admin ones too), oldest first; the last
        :data:`MESSAGE_LOG` are kept."""
        return [msg for msg in list(self._received) if session in (None, msg.get(Tag.SENDER_COMP_ID))]

    def book(self, symbol: str) -> OrderBook:
        return self._books[symbol]

    def reference_price(self, symbol: str) -> float:
        with self._lock:
            return self._reference[symbol]

    # ---- connections --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener, wake = self._listener, self._wake
        assert listener is not None
        assert wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is wake[0]:
                        return
                    try:
                        sock, _addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if self._stopping.is_set():
                            return
                        raise
                    threading.Thread(target=self._handshake, args=(sock,), name="venue-handshake",
                                     daemon=True).start()

    def _handshake(self, sock: socket.socket) -> None:
        """Read up to the first message (the Logon) to learn the CompID, then hand the socket
        and what was read to that session's :class:`FixConnection`."""
        sock.settimeout(HANDSHAKE_TIMEOUT)
        framer, received = Framer(), bytearray()
        first: Message | None = None
        try:
            while first is None:
                data = sock.recv(65536)
                if not data or len(received) > 65536:
                    sock.close()
                    return
                received += data
                for frame in framer.feed(data):
                    if frame.error is None:
                        first = m.parse(frame.raw, verify=False)
                        break
        except (OSError, m.FixError) as exc:
            _log.info("venue: connection dropped before a Logon: %s", exc)
            sock.close()
            return
        comp_id = first.get(Tag.SENDER_COMP_ID) or ""
        if not _COMP_ID.fullmatch(comp_id) or first.get(Tag.TARGET_COMP_ID) != self.sender:
            _log.info("venue: refused a connection from CompID %r to %r", comp_id,
                      first.get(Tag.TARGET_COMP_ID))
            sock.close()
            return
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            client = self._client(comp_id)
            if client.conn is not None or client.session.connected:
                _log.info("venue: %s is already connected; second connection closed", comp_id)
                sock.close()
                return
            conn = FixConnection(client.session, sock, on_disconnect=self._on_disconnect,
                                 initial=bytes(received), send_delay=self._latency, name=f"venue-{comp_id}")
            client.conn = conn
            conn.start()

    def _client(self, comp_id: str) -> _Client:
        client = self._clients.get(comp_id)
        if client is None:
            assert self._store_dir is not None
            path = os.path.join(self._store_dir, f"{self.sender}-{comp_id}.seqs")
            store = SeqStore(path, fsync=self.durable)
            session = FixSession(
                "acceptor", self.sender, comp_id, store, self.heartbeat_s,
                on_app_message=functools.partial(self._on_app, comp_id),
                authenticate=self._authenticate,
                on_state_change=functools.partial(self._on_state, comp_id),
                on_inbound=self._received.append,
            )
            client = self._clients[comp_id] = _Client(comp_id, session, store)
        return client

    def _authenticate(self, username: str | None, password: str | None) -> bool:
        if self.credentials is None:
            return True
        return username is not None and self.credentials.get(username) == password

    def _on_state(self, comp_id: str, old: State, new: State) -> None:
        if new != "active":
            return
        with self._lock:
            client = self._clients[comp_id]
            logon = client.session.peer_logon
            client.cancel_on_disconnect = logon is not None and logon.get(Tag.CANCEL_ON_DISCONNECT) == "Y"

    def _on_disconnect(self, conn: FixConnection, reason: str) -> None:
        with self._lock:
            client = self._clients.get(conn.session.target)
            if client is None or client.conn is not conn:
                return
            client.conn = None
            client.md_subs.clear()
            _log.info("venue: %s disconnected: %s", client.comp_id, reason)
            if client.cancel_on_disconnect:
                client.cancel_on_disconnect = False
                for order in [o for o in client.orders.values() if o.is_open]:
                    self._books[order.symbol].cancel(order.order_id)
                    self._dirty.add(order.symbol)
                    self._report(order, "4", text="canceled on disconnect")

    # ---- application messages -----------------------------------------------------------------

    def _on_app(self, comp_id: str, msg: Message) -> None:
        with self._lock:
            client = self._clients[comp_id]
            kind = msg.msg_type
            try:
                if kind == MsgType.NEW_ORDER_SINGLE:
                    self._new_order(client, msg)
                elif kind == MsgType.ORDER_CANCEL_REQUEST:
                    self._cancel(client, msg)
                elif kind == MsgType.ORDER_MASS_STATUS_REQUEST:
                    self._mass_status(client, msg)
                elif kind == MsgType.MARKET_DATA_REQUEST:
                    self._market_data_request(client, msg)
                elif kind != MsgType.REJECT:
                    client.session.reject(msg, f"unsupported MsgType {kind}", reason=11, ref_tag=35)
            except m.FixError as exc:
                client.session.reject(msg, str(exc), reason=5)

    def _new_order(self, client: _Client, msg: Message) -> None:
        cl_ord_id = msg.get(Tag.CL_ORD_ID)
        if not cl_ord_id:
            client.session.reject(msg, "ClOrdID(11) missing", reason=1, ref_tag=Tag.CL_ORD_ID)
            return
        if cl_ord_id in client.cl_ord_ids:
            self._refuse(client, msg, "duplicate ClOrdID")
            return
        client.cl_ord_ids.add(cl_ord_id)
        try:
            order = self._parse_order(client, msg, cl_ord_id)
        except _Refused as exc:
            self._refuse(client, msg, str(exc))
            return
        client.orders[cl_ord_id] = order
        try:
            if order.symbol not in self._books:
                raise _Refused(f"unknown symbol {order.symbol}")
            if self._reject_next > 0:
                self._reject_next -= 1
                raise _Refused(self._reject_text)
            if self._throttle is not None:
                now = time.monotonic()
                times = client.order_times
                while times and times[0] <= now - 1.0:
                    times.popleft()
                if len(times) >= self._throttle:
                    raise _Refused("throttle")
                times.append(now)
            if order.price is not None:
                self._books[order.symbol].to_ticks(order.price)  # BookError: not on the tick
        except (_Refused, BookError) as exc:
            order.status = "rejected"
            self._refuse(client, msg, str(exc))
            return
        order.order_id = f"O{next(self._order_ids)}"
        self._report(order, "0")
        self._execute(order)

    def _parse_order(self, client: _Client, msg: Message, cl_ord_id: str) -> Order:
        symbol = msg.get(Tag.SYMBOL)
        if not symbol:
            raise _Refused("Symbol(55) missing")
        side = _SIDES.get(msg.get(Tag.SIDE) or "")
        if side is None:
            raise _Refused(f"unsupported Side(54) {msg.get(Tag.SIDE)!r}")
        ord_type = _ORD_TYPES.get(msg.get(Tag.ORD_TYPE) or "")
        if ord_type is None:
            raise _Refused(f"unsupported OrdType(40) {msg.get(Tag.ORD_TYPE)!r}")
        tif = _TIFS.get(msg.get(Tag.TIME_IN_FORCE) or "0")
        if tif is None:
            raise _Refused(f"unsupported TimeInForce(59) {msg.get(Tag.TIME_IN_FORCE)!r}")
        try:
            qty = msg.get_float(Tag.ORDER_QTY)
            price = msg.get_float(Tag.PRICE) if ord_type == "limit" else None
        except m.FixError as exc:
            raise _Refused(str(exc)) from exc
        if qty is None or not qty > 0:
            raise _Refused(f"OrderQty(38) must be positive, got {msg.get(Tag.ORDER_QTY)!r}")
        if ord_type == "limit" and price is None:
            raise _Refused("Price(44) missing on a limit order")
        return Order("NONE", cl_ord_id, client.comp_id, symbol, side, qty, ord_type, price, tif,
                     msg.get(Tag.ACCOUNT))

    def _execute(self, order: Order) -> SubmitResult:
        """Put an accepted order in its book and report what happens to everyone involved."""
        book = self._books[order.symbol]
        result = book.submit(order)
        for execution in result.executions:
            owner = execution.order
            if owner.owner == BOT:
                continue
            exec_id = self._report(
                owner, "F", status=execution.status, cum_qty=execution.cum_qty,
                leaves_qty=execution.leaves_qty, avg_px=execution.avg_px,
                last_qty=execution.qty, last_px=execution.price,
            )
            self._fills.append(VenueFill(
                owner.owner, owner.account, owner.symbol, owner.side, execution.qty, execution.price,
                owner.order_id, owner.cl_ord_id, exec_id, execution.order is execution.trade.aggressor,
                execution.trade.time,
            ))
        if result.expired_qty > 0 and order.owner != BOT:
            if order.tif == "fok":
                text = "FOK order could not be filled completely"
            elif order.ord_type == "market":
                text = "market order remainder expired: no more liquidity"
            else:
                text = "IOC remainder expired"
            self._report(order, "C", text=text)
        if result.executions or result.rested:
            self._dirty.add(order.symbol)
        return result

    def _report(
        self,
        order: Order,
        exec_type: str,
        *,
        status: str | None = None,
        cum_qty: float | None = None,
        leaves_qty: float | None = None,
        avg_px: float | None = None,
        last_qty: float | None = None,
        last_px: float | None = None,
        cl_ord_id: str | None = None,
        orig_cl_ord_id: str | None = None,
        text: str | None = None,
        extra: Mapping[int, m.Value] | None = None,
    ) -> str:
        """Send an ExecutionReport about ``order`` to its owner; returns the ExecID."""
        exec_id = f"E{next(self._exec_ids)}"
        client = self._clients.get(order.owner)
        if client is None:
            return exec_id
        client.session.send_app(*m.execution_report(
            order_id=order.order_id, cl_ord_id=cl_ord_id or order.cl_ord_id, orig_cl_ord_id=orig_cl_ord_id,
            exec_id=exec_id, exec_type=exec_type, ord_status=_STATUS[status or order.status],
            symbol=order.symbol, side=order.side, qty=order.qty,
            cum_qty=order.cum_qty if cum_qty is None else cum_qty,
            leaves_qty=order.leaves_qty if leaves_qty is None else leaves_qty,
            avg_px=order.avg_px if avg_px is None else avg_px,
            ord_type=order.ord_type, price=order.price, time_in_force=order.tif,
            last_qty=last_qty, last_px=last_px, account=order.account, text=text, extra=extra,
        ))
        return exec_id

    def _refuse(self, client: _Client, msg: Message, text: str) -> None:
        """ExecutionReport Rejected for an order that never reached a book (fields echoed raw)."""
        client.session.send_app(MsgType.EXECUTION_REPORT, {
            Tag.ORDER_ID: "NONE",
            Tag.CL_ORD_ID: msg.get(Tag.CL_ORD_ID),
            Tag.EXEC_ID: f"E{next(self._exec_ids)}",
            Tag.EXEC_TYPE: "8",
            Tag.ORD_STATUS: "8",
            Tag.ACCOUNT: msg.get(Tag.ACCOUNT),
            Tag.SYMBOL: msg.get(Tag.SYMBOL),
            Tag.SIDE: msg.get(Tag.SIDE),
            Tag.ORDER_QTY: msg.get(Tag.ORDER_QTY),
            Tag.CUM_QTY: 0,
            Tag.LEAVES_QTY: 0,
            Tag.AVG_PX: 0,
            Tag.TEXT: text,
            Tag.TRANSACT_TIME: m.utc_timestamp(time.time()),
        })

    def _cancel(self, client: _Client, msg: Message) -> None:
        cl_ord_id, orig = msg.get(Tag.CL_ORD_ID), msg.get(Tag.ORIG_CL_ORD_ID)
        if not cl_ord_id or not orig:
            missing = Tag.CL_ORD_ID if not cl_ord_id else Tag.ORIG_CL_ORD_ID
            client.session.reject(msg, f"tag {int(missing)} missing", reason=1, ref_tag=missing)
            return
        order = client.orders.get(orig)

        def refuse(reason: int, text: str) -> None:
            client.session.send_app(*m.order_cancel_reject(
                order_id=order.order_id if order is not None else "NONE", cl_ord_id=cl_ord_id,
                orig_cl_ord_id=orig, ord_status=_STATUS[order.status] if order is not None else "8",
                reason=reason, text=text, account=msg.get(Tag.ACCOUNT),
            ))

        if cl_ord_id in client.cl_ord_ids:
            refuse(6, "duplicate ClOrdID")
            return
        client.cl_ord_ids.add(cl_ord_id)
        if order is None or order.order_id == "NONE":
            refuse(1, f"unknown order {orig}")
        elif not order.is_open:
            refuse(0, f"too late to cancel: order is {order.status}")
        else:
            self._books[order.symbol].cancel(order.order_id)
            self._dirty.add(order.symbol)
            self._report(order, "4", cl_ord_id=cl_ord_id, orig_cl_ord_id=orig)

    def _mass_status(self, client: _Client, msg: Message) -> None:
        req_id = msg.get(Tag.MASS_STATUS_REQ_ID)
        if not req_id:
            client.session.reject(msg, "MassStatusReqID(584) missing", reason=1,
                                  ref_tag=Tag.MASS_STATUS_REQ_ID)
            return
        symbol = msg.get(Tag.SYMBOL) if msg.get(Tag.MASS_STATUS_REQ_TYPE) == "1" else None
        account = msg.get(Tag.ACCOUNT)
        open_orders = [o for o in client.orders.values()
                       if o.is_open and symbol in (None, o.symbol) and account in (None, o.account)]
        if not open_orders:
            client.session.send_app(MsgType.EXECUTION_REPORT, {
                Tag.ORDER_ID: "NONE", Tag.CL_ORD_ID: "NONE", Tag.EXEC_ID: f"E{next(self._exec_ids)}",
                Tag.EXEC_TYPE: "I", Tag.ORD_STATUS: "8", Tag.SYMBOL: symbol or "NA", Tag.SIDE: "1",
                Tag.ORDER_QTY: 0, Tag.CUM_QTY: 0, Tag.LEAVES_QTY: 0, Tag.AVG_PX: 0,
                Tag.MASS_STATUS_REQ_ID: req_id, Tag.TOT_NUM_REPORTS: 0, Tag.LAST_RPT_REQUESTED: True,
                Tag.TEXT: "no open orders",
            })
            return
        for i, order in enumerate(open_orders, 1):
            last = i == len(open_orders)
            self._report(order, "I", extra={
                Tag.MASS_STATUS_REQ_ID: req_id, Tag.TOT_NUM_REPORTS: len(open_orders),
                Tag.LAST_RPT_REQUESTED: True if last else None,
            })

    def _market_data_request(self, client: _Client, msg: Message) -> None:
        req_id = msg.get(Tag.MD_REQ_ID)
        if not req_id:
            client.session.reject(msg, "MDReqID(262) missing", reason=1, ref_tag=Tag.MD_REQ_ID)
            return
        kind = msg.get(Tag.SUBSCRIPTION_REQUEST_TYPE) or "0"
        if kind == "2":
            for symbol in [s for s, (rid, _) in client.md_subs.items() if rid == req_id]:
                del client.md_subs[symbol]
            return
        symbols = [e[Tag.SYMBOL] for e in msg.groups.get(Tag.NO_RELATED_SYM, []) if Tag.SYMBOL in e]
        if not symbols and msg.get(Tag.SYMBOL):
            symbols = [msg[Tag.SYMBOL]]
        unknown = [s for s in symbols if s not in self._books]
        if not symbols or unknown:
            text = f"unknown symbol {', '.join(unknown)}" if unknown else "no symbol requested"
            client.session.send_app(*m.market_data_request_reject(req_id, text))
            return
        depth = msg.get_int(Tag.MARKET_DEPTH, 0) or FULL_DEPTH
        for symbol in symbols:
            self._snapshot(client, symbol, req_id, depth)
            if kind == "1":
                client.md_subs[symbol] = (req_id, depth)

    def _snapshot(self, client: _Client, symbol: str, req_id: str, depth: int) -> None:
        book = self._books[symbol]
        bids, offers = book.depth(depth)
        trade = book.last_trade
        last = None if trade is None else (trade.price, trade.qty)
        client.session.send_app(*m.market_data_snapshot(req_id, symbol, bids=bids, offers=offers, trade=last))

    # ---- the clock: liquidity bot and market data ---------------------------------------------

    def _clock_loop(self) -> None:
        next_bot = time.monotonic() + self.bot_interval
        while not self._stopping.wait(self.md_interval):
            try:
                with self._lock:
                    if self.liquidity and time.monotonic() >= next_bot:
                        next_bot = time.monotonic() + self.bot_interval
                        for symbol in self._books:
                            self._walk(symbol)
                            self._requote(symbol)
                    dirty, self._dirty = self._dirty, set()
                    for symbol in sorted(dirty):
                        for client in self._clients.values():
                            sub = client.md_subs.get(symbol)
                            if sub is not None and client.session.is_active:
                                self._snapshot(client, symbol, *sub)
            except Exception:
                _log.exception("venue clock failed")

    def _walk(self, symbol: str) -> None:
        ref = self._reference[symbol]
        step = self._rng.gauss(0.0, ref * self.bot_volatility)
        self._reference[symbol] = self._books[symbol].round_price(max(ref + step, self.tick * 10))

    def _requote(self, symbol: str) -> None:
        """Replace the bot's quotes around the reference price (its new quotes may trade)."""
        book, ref = self._books[symbol], self._reference[symbol]
        book.cancel_all(BOT)
        half_spread = max(self.tick, book.round_price(ref * 0.0005))
        for level in range(self.bot_levels):
            offset = half_spread * (level + 1)
            for side, price in (("buy", ref - offset), ("sell", ref + offset)):
                if price < self.tick:
                    continue
                order = Order(f"B{next(self._bot_ids)}", f"bot-{symbol}-{level}-{side}", BOT, symbol,
                              "buy" if side == "buy" else "sell", self.bot_size, "limit",
                              book.round_price(price), "gtc")
                self._execute(order)
        self._dirty.add(symbol)
