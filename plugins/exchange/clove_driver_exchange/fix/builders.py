"""Builders of the FIX 4.4 messages this engine sends: the session-level ones (Logon, Heartbeat,
TestRequest, ResendRequest, SequenceReset, Reject, Logout) and the exchange's (NewOrderSingle,
OrderCancelRequest, ExecutionReport, OrderCancelReject, OrderMassStatusRequest, the market data
messages).

Builders return :class:`~clove_driver_exchange.fix.dictionary.Outgoing` ``(msg_type, fields)``
bodies without a header: :class:`~clove_driver_exchange.fix.session.FixSession` adds the header
(CompIDs, MsgSeqNum, SendingTime) when it sends them, so one builder serves a first send and a
resend alike.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Final

from clove_driver_exchange.fix.codec import utc_timestamp
from clove_driver_exchange.fix.dictionary import MsgType, Outgoing, Tag, Value

__all__ = [
    "ORD_TYPES",
    "SIDES",
    "TIME_IN_FORCE",
    "execution_report",
    "heartbeat",
    "logon",
    "logout",
    "market_data_request",
    "market_data_request_reject",
    "market_data_snapshot",
    "new_order_single",
    "order_cancel_reject",
    "order_cancel_request",
    "order_mass_status_request",
    "reject",
    "resend_request",
    "sequence_reset",
    "sequence_reset_gap_fill",
    "test_request",
]


# ---- session-level builders ---------------------------------------------------------------------


def logon(
    heartbeat_s: float,
    *,
    reset_seq_num: bool = False,
    username: str | None = None,
    password: str | None = None,
    cancel_on_disconnect: bool | None = None,
) -> Outgoing:
    """Logon(A): EncryptMethod 0, HeartBtInt, ResetSeqNumFlag, credentials, 8013 if set."""
    return Outgoing(
        MsgType.LOGON,
        {
            Tag.ENCRYPT_METHOD: 0,
            Tag.HEART_BT_INT: max(1, int(round(heartbeat_s))),
            Tag.RESET_SEQ_NUM_FLAG: True if reset_seq_num else None,
            Tag.USERNAME: username,
            Tag.PASSWORD: password,
            Tag.CANCEL_ON_DISCONNECT: cancel_on_disconnect,
        },
    )


def heartbeat(test_req_id: str | None = None) -> Outgoing:
    return Outgoing(MsgType.HEARTBEAT, {Tag.TEST_REQ_ID: test_req_id})


def test_request(test_req_id: str) -> Outgoing:
    return Outgoing(MsgType.TEST_REQUEST, {Tag.TEST_REQ_ID: test_req_id})


test_request.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def resend_request(begin: int, end: int = 0) -> Outgoing:
    """ResendRequest(2) for ``begin..end`` (``end`` 0: everything after ``begin``)."""
    return Outgoing(MsgType.RESEND_REQUEST, {Tag.BEGIN_SEQ_NO: begin, Tag.END_SEQ_NO: end})


def sequence_reset_gap_fill(new_seq_no: int) -> Outgoing:
    """SequenceReset(4) GapFill: the admin messages up to ``new_seq_no - 1`` are not resent."""
    return Outgoing(MsgType.SEQUENCE_RESET, {Tag.GAP_FILL_FLAG: True, Tag.NEW_SEQ_NO: new_seq_no})


def sequence_reset(new_seq_no: int) -> Outgoing:
    """SequenceReset(4) Reset mode: the receiver's expected sequence number becomes ``new_seq_no``."""
    return Outgoing(MsgType.SEQUENCE_RESET, {Tag.NEW_SEQ_NO: new_seq_no})


def reject(
    ref_seq_num: int,
    text: str,
    *,
    reason: int | None = None,
    ref_tag: int | None = None,
    ref_msg_type: str | None = None,
) -> Outgoing:
    """Reject(3), the session-level refusal of message ``ref_seq_num``."""
    return Outgoing(
        MsgType.REJECT,
        {
            Tag.REF_SEQ_NUM: ref_seq_num,
            Tag.REF_TAG_ID: ref_tag,
            Tag.REF_MSG_TYPE: ref_msg_type,
            Tag.SESSION_REJECT_REASON: reason,
            Tag.TEXT: text,
        },
    )


def logout(text: str | None = None) -> Outgoing:
    return Outgoing(MsgType.LOGOUT, {Tag.TEXT: text})


# ---- application builders -----------------------------------------------------------------------

SIDES: Final = {"buy": "1", "sell": "2"}
ORD_TYPES: Final = {"market": "1", "limit": "2"}
TIME_IN_FORCE: Final = {"day": "0", "gtc": "1", "ioc": "3", "fok": "4"}


def _code(table: Mapping[str, str], value: str, what: str) -> str:
    """A FIX code from a name (``"buy"``) or the code itself (``"1"``)."""
    if value in table:
        return table[value]
    if value in table.values():
        return value
    raise ValueError(f"unknown {what} {value!r}; one of {sorted(table)}")


def new_order_single(
    cl_ord_id: str,
    symbol: str,
    side: str,
    qty: float,
    *,
    ord_type: str = "limit",
    price: float | None = None,
    time_in_force: str = "day",
    account: str | None = None,
    transact_time: float | None = None,
) -> Outgoing:
    """NewOrderSingle(D). ``side``/``ord_type``/``time_in_force`` by name or FIX code."""
    ord_code = _code(ORD_TYPES, ord_type, "order type")
    if ord_code == "2" and price is None:
        raise ValueError("a limit order needs a price")
    return Outgoing(
        MsgType.NEW_ORDER_SINGLE,
        {
            Tag.CL_ORD_ID: cl_ord_id,
            Tag.ACCOUNT: account,
            Tag.SYMBOL: symbol,
            Tag.SIDE: _code(SIDES, side, "side"),
            Tag.ORDER_QTY: qty,
            Tag.ORD_TYPE: ord_code,
            Tag.PRICE: price if ord_code == "2" else None,
            Tag.TIME_IN_FORCE: _code(TIME_IN_FORCE, time_in_force, "time in force"),
            Tag.TRANSACT_TIME: utc_timestamp(time.time() if transact_time is None else transact_time),
        },
    )


def order_cancel_request(
    cl_ord_id: str,
    orig_cl_ord_id: str,
    symbol: str,
    side: str,
    *,
    qty: float | None = None,
    account: str | None = None,
    transact_time: float | None = None,
) -> Outgoing:
    """OrderCancelRequest(F) for the order first sent as ``orig_cl_ord_id``."""
    return Outgoing(
        MsgType.ORDER_CANCEL_REQUEST,
        {
            Tag.ORIG_CL_ORD_ID: orig_cl_ord_id,
            Tag.CL_ORD_ID: cl_ord_id,
            Tag.ACCOUNT: account,
            Tag.SYMBOL: symbol,
            Tag.SIDE: _code(SIDES, side, "side"),
            Tag.ORDER_QTY: qty,
            Tag.TRANSACT_TIME: utc_timestamp(time.time() if transact_time is None else transact_time),
        },
    )


def execution_report(
    *,
    order_id: str,
    cl_ord_id: str,
    exec_id: str,
    exec_type: str,
    ord_status: str,
    symbol: str,
    side: str,
    qty: float,
    cum_qty: float,
    leaves_qty: float,
    avg_px: float,
    orig_cl_ord_id: str | None = None,
    ord_type: str | None = None,
    price: float | None = None,
    time_in_force: str | None = None,
    last_qty: float | None = None,
    last_px: float | None = None,
    account: str | None = None,
    text: str | None = None,
    transact_time: float | None = None,
    extra: Mapping[int, Value] | None = None,
) -> Outgoing:
    """ExecutionReport(8). ``extra`` adds fields (MassStatusReqID, TotNumReports, ...)."""
    fields: dict[int, Value] = {
        Tag.ORDER_ID: order_id,
        Tag.CL_ORD_ID: cl_ord_id,
        Tag.ORIG_CL_ORD_ID: orig_cl_ord_id,
        Tag.EXEC_ID: exec_id,
        Tag.EXEC_TYPE: exec_type,
        Tag.ORD_STATUS: ord_status,
        Tag.ACCOUNT: account,
        Tag.SYMBOL: symbol,
        Tag.SIDE: _code(SIDES, side, "side"),
        Tag.ORDER_QTY: qty,
        Tag.ORD_TYPE: None if ord_type is None else _code(ORD_TYPES, ord_type, "order type"),
        Tag.PRICE: price,
        Tag.TIME_IN_FORCE: (
            None if time_in_force is None else _code(TIME_IN_FORCE, time_in_force, "time in force")
        ),
        Tag.LAST_QTY: last_qty,
        Tag.LAST_PX: last_px,
        Tag.CUM_QTY: cum_qty,
        Tag.LEAVES_QTY: leaves_qty,
        Tag.AVG_PX: avg_px,
        Tag.TEXT: text,
        Tag.TRANSACT_TIME: utc_timestamp(time.time() if transact_time is None else transact_time),
    }
    if extra:
        fields.update(extra)
    return Outgoing(MsgType.EXECUTION_REPORT, fields)


def order_cancel_reject(
    *,
    order_id: str,
    cl_ord_id: str,
    orig_cl_ord_id: str,
    ord_status: str,
    reason: int,
    text: str,
    account: str | None = None,
) -> Outgoing:
    """OrderCancelReject(9) answering a cancel request (434=1). ``reason``: 0 too late, 1 unknown."""
    return Outgoing(
        MsgType.ORDER_CANCEL_REJECT,
        {
            Tag.ORDER_ID: order_id,
            Tag.CL_ORD_ID: cl_ord_id,
            Tag.ORIG_CL_ORD_ID: orig_cl_ord_id,
            Tag.ORD_STATUS: ord_status,
            Tag.ACCOUNT: account,
            Tag.CXL_REJ_RESPONSE_TO: "1",
            Tag.CXL_REJ_REASON: reason,
            Tag.TEXT: text,
        },
    )


def order_mass_status_request(mass_status_req_id: str, *, symbol: str | None = None) -> Outgoing:
    """OrderMassStatusRequest(AF): all orders (585=7), or one security's (585=1) if ``symbol``."""
    return Outgoing(
        MsgType.ORDER_MASS_STATUS_REQUEST,
        {
            Tag.MASS_STATUS_REQ_ID: mass_status_req_id,
            Tag.MASS_STATUS_REQ_TYPE: 7 if symbol is None else 1,
            Tag.SYMBOL: symbol,
        },
    )


def market_data_request(
    md_req_id: str,
    symbols: Sequence[str],
    *,
    subscribe: bool = True,
    depth: int = 0,
    entry_types: Sequence[str] = ("0", "1", "2"),
) -> Outgoing:
    """MarketDataRequest(V): 263=1 subscribe (snapshots on every change) or 0 one snapshot."""
    return Outgoing(
        MsgType.MARKET_DATA_REQUEST,
        {
            Tag.MD_REQ_ID: md_req_id,
            Tag.SUBSCRIPTION_REQUEST_TYPE: "1" if subscribe else "0",
            Tag.MARKET_DEPTH: depth,
            Tag.NO_MD_ENTRY_TYPES: [{Tag.MD_ENTRY_TYPE: t} for t in entry_types],
            Tag.NO_RELATED_SYM: [{Tag.SYMBOL: s} for s in symbols],
        },
    )


def market_data_snapshot(
    md_req_id: str | None,
    symbol: str,
    *,
    bids: Sequence[tuple[float, float]] = (),
    offers: Sequence[tuple[float, float]] = (),
    trade: tuple[float, float] | None = None,
) -> Outgoing:
    """MarketDataSnapshotFullRefresh(W): bid levels (269=0), offer levels (1), the last trade (2)."""
    entries: list[Mapping[int, Value]] = list(
        itertools.chain(
            ({Tag.MD_ENTRY_TYPE: "0", Tag.MD_ENTRY_PX: p, Tag.MD_ENTRY_SIZE: q} for p, q in bids),
            ({Tag.MD_ENTRY_TYPE: "1", Tag.MD_ENTRY_PX: p, Tag.MD_ENTRY_SIZE: q} for p, q in offers),
        )
    )
    if trade is not None:
        entries.append({Tag.MD_ENTRY_TYPE: "2", Tag.MD_ENTRY_PX: trade[0], Tag.MD_ENTRY_SIZE: trade[1]})
    return Outgoing(
        MsgType.MARKET_DATA_SNAPSHOT,
        {Tag.MD_REQ_ID: md_req_id, Tag.SYMBOL: symbol, Tag.NO_MD_ENTRIES: entries},
    )


def market_data_request_reject(md_req_id: str, text: str, *, reason: str = "0") -> Outgoing:
    """MarketDataRequestReject(Y); reason 0 is "unknown symbol"."""
    return Outgoing(
        MsgType.MARKET_DATA_REQUEST_REJECT,
        {Tag.MD_REQ_ID: md_req_id, Tag.MD_REQ_REJ_REASON: reason, Tag.TEXT: text},
    )
