"""The simulated venue's order desk: what the sessions' application messages do to the order
books, and the reports that go back.

**Orders.** NewOrderSingle gets an ExecutionReport New, then one Trade report per fill, and an
Expired report (150=C, 39=C) for an IOC/market remainder or an unfillable FOK. Refused orders
get ExecType Rejected with the reason in Text(58): ``duplicate ClOrdID`` (ClOrdIDs are unique
per session, cancels included), ``unknown symbol X``, ``throttle``, a bad field, or an injected
reject. OrderCancelRequest gets Canceled (150=4) or an OrderCancelReject (102: 0 too late,
1 unknown order, 6 duplicate ClOrdID). OrderMassStatusRequest gets one ExecType I report per
open order of the session (911 TotNumReports, 912=Y on the last); with none open, one report
with OrderID(37) ``NONE``, OrdStatus 8 and 911=0. MarketDataRequest (263=1) gets a snapshot at
once and then one on every change of the book (:meth:`OrderDesk.publish_market_data`, which the
venue's clock calls at most every ``md_interval`` seconds); 263=0 is one snapshot, 263=2
unsubscribes; an unknown symbol gets a MarketDataRequestReject. Unsupported messages get a
session-level Reject. What the venue reports while a client is away (cancel-on-disconnect)
reaches it by resend after its next logon.

Every method runs under the venue lock (the session callbacks take it).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from clove_driver_exchange.fix import messages as m
from clove_driver_exchange.fix.messages import Message, MsgType, Tag
from hil.exchange.acceptor import Client
from hil.exchange.book import BookError, Order, OrderBook, OrdType, Side, SubmitResult, TimeInForce
from hil.exchange.faults import VenueFaults

__all__ = ["BOT", "FULL_DEPTH", "OrderDesk", "VenueFill"]

#: The owner of the liquidity bot's orders.
BOT: Final = "__liquidity__"
#: Levels each side in a snapshot when the request asks for full depth (264=0).
FULL_DEPTH: Final = 10

_STATUS: Final = {"new": "0", "partially_filled": "1", "filled": "2", "canceled": "4", "rejected": "8",
                  "expired": "C"}
_SIDES: Final[Mapping[str, Side]] = {"1": "buy", "2": "sell"}
_ORD_TYPES: Final[Mapping[str, OrdType]] = {"1": "market", "2": "limit"}
_TIFS: Final[Mapping[str, TimeInForce]] = {"0": "day", "1": "gtc", "3": "ioc", "4": "fok"}


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


class OrderDesk:
    """One order book per symbol and the sessions' orders in them.

    :param books: symbol -> its book.
    :param clients: the acceptor's clients by CompID (the desk reports to their sessions).
    :param faults: the venue's switches (an injected reject, the throttle).
    """

    def __init__(
        self,
        books: dict[str, OrderBook],
        clients: Mapping[str, Client],
        faults: VenueFaults,
        lock: threading.RLock,
    ) -> None:
        self.books = books
        self._clients = clients
        self._faults = faults
        self._lock = lock
        #: Every session's fills, in order (the bot's are not kept).
        self.fills: list[VenueFill] = []
        #: Symbols whose book changed since the last market data went out.
        self.dirty: set[str] = set()
        self._order_ids = itertools.count(1)
        self._exec_ids = itertools.count(1)

    def on_lost(self, client: Client) -> None:
        """A client's connection ended: its market data subscriptions end, and with
        cancel-on-disconnect (8013=Y in its Logon) its open orders are canceled."""
        client.md_subs.clear()
        if client.cancel_on_disconnect:
            client.cancel_on_disconnect = False
            for order in [o for o in client.orders.values() if o.is_open]:
                self.books[order.symbol].cancel(order.order_id)
                self.dirty.add(order.symbol)
                self._report(order, "4", text="canceled on disconnect")

    def publish_market_data(self) -> None:
        """A snapshot of each book that changed to every active session subscribed to it."""
        dirty, self.dirty = self.dirty, set()
        for symbol in sorted(dirty):
            for client in self._clients.values():
                sub = client.md_subs.get(symbol)
                if sub is not None and client.session.is_active:
                    self._snapshot(client, symbol, *sub)

    # ---- application messages -----------------------------------------------------------------

    def on_app(self, comp_id: str, msg: Message) -> None:
        """A session's ``on_app_message``: one application message from ``comp_id``."""
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

    def _new_order(self, client: Client, msg: Message) -> None:
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
            if order.symbol not in self.books:
                raise _Refused(f"unknown symbol {order.symbol}")
            refusal = self._faults.refusal(client.order_times)
            if refusal is not None:
                raise _Refused(refusal)
            if order.price is not None:
                self.books[order.symbol].to_ticks(order.price)  # BookError: not on the tick
        except (_Refused, BookError) as exc:
            order.status = "rejected"
            self._refuse(client, msg, str(exc))
            return
        order.order_id = f"O{next(self._order_ids)}"
        self._report(order, "0")
        self.execute(order)

    def _parse_order(self, client: Client, msg: Message, cl_ord_id: str) -> Order:
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

    def execute(self, order: Order) -> SubmitResult:
        """Put an accepted order in its book and report what happens to everyone involved."""
        book = self.books[order.symbol]
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
            self.fills.append(VenueFill(
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
            self.dirty.add(order.symbol)
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

    def _refuse(self, client: Client, msg: Message, text: str) -> None:
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

    def _cancel(self, client: Client, msg: Message) -> None:
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
            self.books[order.symbol].cancel(order.order_id)
            self.dirty.add(order.symbol)
            self._report(order, "4", cl_ord_id=cl_ord_id, orig_cl_ord_id=orig)

    def _mass_status(self, client: Client, msg: Message) -> None:
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

    def _market_data_request(self, client: Client, msg: Message) -> None:
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
        unknown = [s for s in symbols if s not in self.books]
        if not symbols or unknown:
            text = f"unknown symbol {', '.join(unknown)}" if unknown else "no symbol requested"
            client.session.send_app(*m.market_data_request_reject(req_id, text))
            return
        depth = msg.get_int(Tag.MARKET_DEPTH, 0) or FULL_DEPTH
        for symbol in symbols:
            self._snapshot(client, symbol, req_id, depth)
            if kind == "1":
                client.md_subs[symbol] = (req_id, depth)

    def _snapshot(self, client: Client, symbol: str, req_id: str, depth: int) -> None:
        book = self.books[symbol]
        bids, offers = book.depth(depth)
        trade = book.last_trade
        last = None if trade is None else (trade.price, trade.qty)
        client.session.send_app(*m.market_data_snapshot(req_id, symbol, bids=bids, offers=offers, trade=last))
