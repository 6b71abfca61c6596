"""What the venue says, applied (on the FIX session's reader thread): execution reports are
journaled first, then applied to the risk engine and the order book, then, once their record is
durable (the group commit releases them), streamed to the agent that owns the order (stream
items carry ``"to"``: the kernel delivers them to that agent only); cancel rejects go to the
order's owner the same way; market data updates the risk engine's reference prices and streams
to agents granted the symbol at once (nothing of it is journaled). Reports the venue resends are skipped by ExecID, and
the OrderMassStatusRequest sent after a (re)connect is reconciled here.

:class:`VenueReports` is the :class:`~clove_driver_exchange.driver.ExchangeDriver`'s, made when
it opens; it shares the driver's lock, journal, order book, risk engine and counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from clove_driver_exchange.fix.messages import Message, MsgType, Tag
from clove_driver_exchange.journal import OrderJournal, Replayed, apply
from clove_driver_exchange.risk import RiskEngine

__all__ = ["VenueReports"]

log = logging.getLogger(__name__)

_STATUS = {"0": "new", "1": "partially_filled", "2": "filled", "4": "canceled", "6": "pending_cancel", "8": "rejected", "C": "expired", "A": "pending_new"}


class VenueReports:
    """Applies the venue's application messages to the driver's state.

    :param lock: the driver's lock, held while the journal, the book and the risk engine change.
    :param emit: puts an item on the driver's stream now.
    :param release: puts an item on the stream once every record written so far is durable.
    :param counters: the driver's counters (``reports``, ``fills``, ``duplicates``).
    """

    def __init__(
        self,
        lock: threading.RLock,
        journal: OrderJournal,
        book: Replayed,
        risk: RiskEngine,
        counters: dict[str, int],
        emit: Callable[[dict[str, Any]], None],
        release: Callable[[dict[str, Any]], None],
    ) -> None:
        self._lock = lock
        self._journal = journal
        self._book = book
        self._risk = risk
        self.counters = counters
        self._emit = emit
        self._release = release
        self._reconciling: set[str] | None = None

    def start_reconcile(self) -> None:
        """Remember which orders we think are open, before the venue is asked for its own list:
        those it does not list are finished when its last status report arrives."""
        with self._lock:
            self._reconciling = {cid for cid, o in self._book.orders.items() if o.open}

    def on_app(self, msg: Message) -> None:
        """The session's ``on_app_message``: apply what the venue says (never raises)."""
        try:
            if msg.msg_type == MsgType.EXECUTION_REPORT:
                self._on_report(msg)
            elif msg.msg_type == MsgType.ORDER_CANCEL_REJECT:
                self._on_cancel_reject(msg)
            elif msg.msg_type == MsgType.MARKET_DATA_SNAPSHOT:
                self._on_market_data(msg)
        except Exception:  # noqa: BLE001 - one bad report must not stop the session's thread
            log.exception("venue message not applied: %r", msg)

    def _on_report(self, msg: Message) -> None:
        exec_type = msg.get(Tag.EXEC_TYPE) or ""
        client_id = msg.get(Tag.CL_ORD_ID) or ""
        if exec_type in ("4",) and msg.get(Tag.ORIG_CL_ORD_ID):
            client_id = msg.get(Tag.ORIG_CL_ORD_ID) or client_id  # a cancel's report names the cancel request
        exec_id = msg.get(Tag.EXEC_ID) or ""
        status = _STATUS.get(msg.get(Tag.ORD_STATUS) or "", "unknown")
        last_qty = msg.get_float(Tag.LAST_QTY) or 0.0 if exec_type == "F" else 0.0
        last_px = msg.get_float(Tag.LAST_PX) or 0.0
        with self._lock:
            if exec_type == "I":  # mass status: this order is open at the venue
                if self._reconciling is not None:
                    self._reconciling.discard(client_id)
                if msg.get(Tag.LAST_RPT_REQUESTED) == "Y":
                    self._finish_reconcile()
                return
            if exec_id and exec_id in self._book.exec_ids:
                self.counters["duplicates"] += 1
                return
            order = self._book.orders.get(client_id)
            entry = self._journal.append(
                "exec", client_id=client_id, exec_id=exec_id, exec_type=exec_type, status=status, order_id=msg.get(Tag.ORDER_ID),
                last_qty=last_qty, last_px=last_px, text=msg.get(Tag.TEXT),
            )  # fmt: skip
            apply(self._book, entry)
            self.counters["reports"] += 1
            if order is None:
                return
            if exec_type == "0":
                self._risk.on_ack(client_id, msg.get(Tag.ORDER_ID))
            if last_qty:
                self.counters["fills"] += 1
                self._risk.on_fill(client_id, last_qty, last_px)
            if status in ("filled", "canceled", "rejected", "expired"):
                self._risk.on_done(client_id)
        self._release(
            {
                "type": "exec", "to": order.agent, "client_id": client_id, "order_id": msg.get(Tag.ORDER_ID), "exec_id": exec_id,
                "exec_type": exec_type, "status": status, "symbol": order.symbol, "side": order.side, "qty": order.qty,
                "last_qty": last_qty, "last_px": last_px, "cum_qty": order.cum_qty, "leaves_qty": order.leaves,
                "avg_px": order.avg_px, "text": msg.get(Tag.TEXT), "ts": time.time(),
            }  # fmt: skip
        )

    def _finish_reconcile(self) -> None:
        """Orders we thought open that the venue does not list were finished while we were away
        (their fills, if any, came in the venue's resend): close them as canceled."""
        missing = self._reconciling or set()
        self._reconciling = None
        for client_id in sorted(missing):
            order = self._book.orders.get(client_id)
            if order is None or not order.open:
                continue
            entry = self._journal.append("exec", client_id=client_id, exec_id=f"reconcile-{client_id}", exec_type="4", status="canceled", text="not open at the venue after reconnect")
            apply(self._book, entry)
            self._risk.on_done(client_id)
        self._journal.append("reconciled", missing=sorted(missing))

    def _on_cancel_reject(self, msg: Message) -> None:
        client_id = msg.get(Tag.ORIG_CL_ORD_ID) or ""
        with self._lock:
            order = self._book.orders.get(client_id)
        if order is not None:
            self._release({"type": "cancel_reject", "to": order.agent, "client_id": client_id, "text": msg.get(Tag.TEXT), "ts": time.time()})

    def _on_market_data(self, msg: Message) -> None:
        symbol = msg.get(Tag.SYMBOL) or ""
        best: dict[str, float | None] = {"bid": None, "ask": None, "last": None}
        for entry in msg.groups.get(Tag.NO_MD_ENTRIES, []):
            kind, px = entry.get(Tag.MD_ENTRY_TYPE), entry.get(Tag.MD_ENTRY_PX)
            if px is None:
                continue
            price = float(px)
            if kind == "0" and (best["bid"] is None or price > best["bid"]):
                best["bid"] = price
            elif kind == "1" and (best["ask"] is None or price < best["ask"]):
                best["ask"] = price
            elif kind == "2":
                best["last"] = price
        bid, ask = best["bid"], best["ask"]
        reference = (bid + ask) / 2 if bid is not None and ask is not None else best["last"]
        if reference is not None:
            with self._lock:
                self._risk.set_reference(symbol, reference)
        self._emit({"type": "md", "symbol": symbol, **best, "ts": time.time()})
