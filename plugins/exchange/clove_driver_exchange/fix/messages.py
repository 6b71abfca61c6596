"""FIX 4.4 messages: framing, parsing and building, over simplefix.

simplefix encodes (it computes BodyLength and CheckSum) and tokenises (raw-data fields
included), but its parser checks neither BodyLength nor CheckSum. A FIX engine must: a garbled
message is dropped without consuming a sequence number, and the sender repairs the gap by
resend. So :class:`Framer` cuts the stream into messages using BodyLength(9), verifies the
trailer and the checksum, and only then hands a frame to :func:`parse`.

A parsed :class:`Message` keeps the fields in wire order (``pairs``, what a resend re-encodes),
the first value of each top-level tag (``fields``, what callers read) and the repeating groups
the design uses (``groups``: MarketData entries, the symbols and entry types of a
MarketDataRequest), each a list of ``{tag: value}`` entries.

Builders return :class:`Outgoing` ``(msg_type, fields)`` bodies without a header:
:class:`~clove_driver_exchange.fix.session.FixSession` adds the header (CompIDs, MsgSeqNum,
SendingTime) when it sends them, so one builder serves a first send and a resend alike. Values
may be ``str``, ``int``, ``float`` (written without exponent, trailing zeros dropped), ``bool``
(``Y``/``N``) or ``None`` (field left out). A list of mappings under a group's count tag is a
repeating group: ``{268: [{269: "0", 270: 99.5, 271: 100}]}``.
"""

from __future__ import annotations

import calendar
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, NamedTuple

import simplefix

__all__ = [
    "ADMIN_TYPES",
    "BEGIN_STRING",
    "Fields",
    "FixError",
    "Frame",
    "Framer",
    "GROUPS",
    "HEADER_TAGS",
    "MAX_MESSAGE",
    "Message",
    "MsgType",
    "Outgoing",
    "Tag",
    "Value",
    "build",
    "encode",
    "execution_report",
    "flatten",
    "format_value",
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
    "parse",
    "parse_stream",
    "parse_utc_timestamp",
    "reject",
    "resend_request",
    "sequence_reset",
    "sequence_reset_gap_fill",
    "test_request",
    "utc_timestamp",
]

BEGIN_STRING: Final = "FIX.4.4"
SOH: Final = b"\x01"
#: The longest message the framer accepts; a larger BodyLength is taken for garbage.
MAX_MESSAGE: Final = 1 << 20


class Tag(IntEnum):
    """The tags the session and the exchange messages use (an ``int``: ``fields[Tag.SYMBOL]``)."""

    ACCOUNT = 1
    AVG_PX = 6
    BEGIN_SEQ_NO = 7
    BEGIN_STRING = 8
    BODY_LENGTH = 9
    CHECK_SUM = 10
    CL_ORD_ID = 11
    CUM_QTY = 14
    END_SEQ_NO = 16
    EXEC_ID = 17
    LAST_PX = 31
    LAST_QTY = 32
    MSG_SEQ_NUM = 34
    MSG_TYPE = 35
    NEW_SEQ_NO = 36
    ORDER_ID = 37
    ORDER_QTY = 38
    ORD_STATUS = 39
    ORD_TYPE = 40
    ORIG_CL_ORD_ID = 41
    POSS_DUP_FLAG = 43
    PRICE = 44
    REF_SEQ_NUM = 45
    SENDER_COMP_ID = 49
    SENDING_TIME = 52
    SIDE = 54
    SYMBOL = 55
    TARGET_COMP_ID = 56
    TEXT = 58
    TIME_IN_FORCE = 59
    TRANSACT_TIME = 60
    ENCRYPT_METHOD = 98
    CXL_REJ_REASON = 102
    HEART_BT_INT = 108
    TEST_REQ_ID = 112
    ORIG_SENDING_TIME = 122
    GAP_FILL_FLAG = 123
    RESET_SEQ_NUM_FLAG = 141
    NO_RELATED_SYM = 146
    EXEC_TYPE = 150
    LEAVES_QTY = 151
    MD_REQ_ID = 262
    SUBSCRIPTION_REQUEST_TYPE = 263
    MARKET_DEPTH = 264
    NO_MD_ENTRY_TYPES = 267
    NO_MD_ENTRIES = 268
    MD_ENTRY_TYPE = 269
    MD_ENTRY_PX = 270
    MD_ENTRY_SIZE = 271
    MD_REQ_REJ_REASON = 281
    REF_TAG_ID = 371
    REF_MSG_TYPE = 372
    SESSION_REJECT_REASON = 373
    CXL_REJ_RESPONSE_TO = 434
    USERNAME = 553
    PASSWORD = 554
    MASS_STATUS_REQ_ID = 584
    MASS_STATUS_REQ_TYPE = 585
    TOT_NUM_REPORTS = 911
    LAST_RPT_REQUESTED = 912
    #: Custom: ``Y`` asks the venue to cancel this session's open orders when it disconnects.
    CANCEL_ON_DISCONNECT = 8013


class MsgType:
    """MsgType(35) values."""

    HEARTBEAT: Final = "0"
    TEST_REQUEST: Final = "1"
    RESEND_REQUEST: Final = "2"
    REJECT: Final = "3"
    SEQUENCE_RESET: Final = "4"
    LOGOUT: Final = "5"
    LOGON: Final = "A"
    EXECUTION_REPORT: Final = "8"
    ORDER_CANCEL_REJECT: Final = "9"
    NEW_ORDER_SINGLE: Final = "D"
    ORDER_CANCEL_REQUEST: Final = "F"
    ORDER_MASS_STATUS_REQUEST: Final = "AF"
    MARKET_DATA_REQUEST: Final = "V"
    MARKET_DATA_SNAPSHOT: Final = "W"
    MARKET_DATA_REQUEST_REJECT: Final = "Y"


#: Session-level message types: never resent (a resend gap-fills them), never given to the app.
ADMIN_TYPES: Final = frozenset("012345A")

#: The standard header fields the session writes; a resend drops them from the stored body.
HEADER_TAGS: Final = frozenset((8, 9, 35, 49, 56, 34, 52, 43, 97, 122, 10))

#: Repeating groups parsed into ``Message.groups``: count tag -> the tags an entry may hold
#: (the first one starts each entry).
GROUPS: Final[Mapping[int, tuple[int, ...]]] = {
    Tag.NO_MD_ENTRIES: (269, 270, 271, 272, 273, 290, 346),
    Tag.NO_MD_ENTRY_TYPES: (269,),
    Tag.NO_RELATED_SYM: (55, 48, 22, 207),
}

Value = str | int | float | bool | None
GroupValue = Sequence[Mapping[int, Value]]
Fields = Mapping[int, Value | GroupValue]


class FixError(ValueError):
    """A message that is not valid FIX: bad framing, checksum, or a malformed field."""


class Outgoing(NamedTuple):
    """A message body to send: ``session.send_app(*builder(...))``."""

    msg_type: str
    fields: Fields


# ---- values and timestamps ----------------------------------------------------------------------


def format_value(value: Value) -> str | None:
    """The wire text of a field value (``None``: leave the field out)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float):
        # Never an exponent ("1e-05" is not a FIX float); 8 decimals cover any tick in use.
        text = f"{value:.8f}".rstrip("0").rstrip(".")
        return "0" if text in ("", "-0") else text
    return str(value)


def utc_timestamp(t: float) -> str:
    """A UTCTimestamp with milliseconds, ``YYYYMMDD-HH:MM:SS.sss``."""
    ms = int(round(t * 1000))
    secs, ms = divmod(ms, 1000)
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}"


def parse_utc_timestamp(text: str) -> float:
    """Seconds since the epoch from a UTCTimestamp (with or without fractional seconds)."""
    try:
        base, _, frac = text.partition(".")
        secs = calendar.timegm(time.strptime(base, "%Y%m%d-%H:%M:%S"))
        return secs + (float("0." + frac) if frac else 0.0)
    except ValueError as exc:
        raise FixError(f"bad UTCTimestamp {text!r}") from exc


def flatten(fields: Fields | Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """Wire-ordered ``(tag, text)`` pairs from a builder's mapping (groups expanded)."""
    if not isinstance(fields, Mapping):
        return [(int(t), v) for t, v in fields]
    pairs: list[tuple[int, str]] = []
    for tag, value in fields.items():
        if isinstance(value, (list, tuple)):
            pairs.append((int(tag), str(len(value))))
            for entry in value:
                for sub_tag, sub_value in entry.items():
                    text = format_value(sub_value)
                    if text is not None:
                        pairs.append((int(sub_tag), text))
            continue
        text = format_value(value)  # type: ignore[arg-type]
        if text is not None:
            pairs.append((int(tag), text))
    return pairs


# ---- encoding -----------------------------------------------------------------------------------


def encode(
    msg_type: str,
    body: Fields | Iterable[tuple[int, str]],
    *,
    sender: str,
    target: str,
    seq_num: int,
    sending_time: float | str,
    poss_dup: bool = False,
    orig_sending_time: str | None = None,
) -> bytes:
    """One complete wire message: the standard header, ``body``, BodyLength and CheckSum.

    :param sending_time: seconds since the epoch, or a UTCTimestamp already formatted.
    :param orig_sending_time: OrigSendingTime(122) of a resend (sent with PossDupFlag=Y).
    """
    msg = simplefix.FixMessage()
    msg.append_pair(8, BEGIN_STRING, header=True)
    msg.append_pair(35, msg_type, header=True)
    msg.append_pair(49, sender, header=True)
    msg.append_pair(56, target, header=True)
    msg.append_pair(34, seq_num, header=True)
    if poss_dup:
        msg.append_pair(43, "Y", header=True)
    stamp = sending_time if isinstance(sending_time, str) else utc_timestamp(sending_time)
    msg.append_pair(52, stamp, header=True)
    if orig_sending_time is not None:
        msg.append_pair(122, orig_sending_time, header=True)
    for tag, text in flatten(body):
        msg.append_pair(tag, text)
    raw: bytes = msg.encode()
    return raw


#: The name the design uses for :func:`encode`.
build = encode


# ---- framing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One message cut from the stream: ``error`` is ``None`` when it is sound."""

    raw: bytes
    error: str | None = None


class Framer:
    """Cut a byte stream into FIX messages, checking BodyLength and CheckSum.

    Bytes before a ``8=FIX`` are skipped. A frame whose checksum is wrong is returned with an
    ``error`` (the receiver ignores it, as the standard says); a BodyLength that does not land
    on a ``10=nnn`` trailer means the stream lost sync, and the framer resumes at the next
    ``8=FIX`` after the bad one (also reported as an error frame).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        while True:
            start = buf.find(b"8=FIX", pos)
            while start > 0 and buf[start - 1] != 1:  # inside a value, not a message start
                start = buf.find(b"8=FIX", start + 1)
            if start < 0:
                pos = max(pos, len(buf) - 4)  # keep what could be the start of "8=FIX"
                break
            head_end = buf.find(SOH, start)
            if head_end < 0 or len(buf) < head_end + 3:
                pos = start
                break
            if buf[head_end + 1 : head_end + 3] != b"9=":
                frames.append(Frame(bytes(buf[start : head_end + 1]), "BodyLength(9) is not second"))
                pos = start + 1
                continue
            len_end = buf.find(SOH, head_end + 3)
            if len_end < 0:
                if len(buf) - head_end > 12:
                    frames.append(Frame(bytes(buf[start:]), "BodyLength(9) is not a number"))
                    pos = start + 1
                    continue
                pos = start
                break
            digits = bytes(buf[head_end + 3 : len_end])
            if not digits.isdigit() or int(digits) > MAX_MESSAGE:
                frames.append(Frame(bytes(buf[start : len_end + 1]), f"bad BodyLength(9) {digits!r}"))
                pos = start + 1
                continue
            body_end = len_end + 1 + int(digits)
            end = body_end + 7  # "10=nnn\x01"
            if len(buf) < end:
                pos = start
                break
            trailer = bytes(buf[body_end:end])
            if trailer[:3] != b"10=" or trailer[6] != 1 or not trailer[3:6].isdigit():
                frames.append(Frame(bytes(buf[start:end]), "BodyLength(9) does not end at CheckSum(10)"))
                pos = start + 1
                continue
            raw = bytes(buf[start:end])
            checksum = sum(memoryview(buf)[start:body_end]) % 256
            if checksum != int(trailer[3:6]):
                frames.append(Frame(raw, f"CheckSum(10) is {trailer[3:6].decode()}, computed {checksum:03d}"))
            else:
                frames.append(Frame(raw))
            pos = end
        del buf[:pos]
        return frames


# ---- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Message:
    """A parsed message. ``msg[Tag.SYMBOL]`` raises ``KeyError``; ``msg.get(55)`` may be ``None``."""

    msg_type: str
    pairs: tuple[tuple[int, str], ...]
    fields: dict[int, str]
    groups: dict[int, list[dict[int, str]]] = field(default_factory=dict)
    raw: bytes = b""

    def __getitem__(self, tag: int) -> str:
        return self.fields[tag]

    def __contains__(self, tag: object) -> bool:
        return tag in self.fields

    def get(self, tag: int, default: str | None = None) -> str | None:
        return self.fields.get(tag, default)

    def get_int(self, tag: int, default: int | None = None) -> int | None:
        text = self.fields.get(tag)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError as exc:
            raise FixError(f"tag {tag} is not an integer: {text!r}") from exc

    def get_float(self, tag: int, default: float | None = None) -> float | None:
        text = self.fields.get(tag)
        if text is None:
            return default
        try:
            return float(text)
        except ValueError as exc:
            raise FixError(f"tag {tag} is not a number: {text!r}") from exc

    @property
    def seq_num(self) -> int:
        value = self.get_int(Tag.MSG_SEQ_NUM)
        if value is None:
            raise FixError("no MsgSeqNum(34)")
        return value

    @property
    def poss_dup(self) -> bool:
        return self.fields.get(Tag.POSS_DUP_FLAG) == "Y"

    @property
    def is_admin(self) -> bool:
        return self.msg_type in ADMIN_TYPES

    def body(self) -> list[tuple[int, str]]:
        """The fields after the standard header, without the trailer (what a resend re-sends)."""
        return [(t, v) for t, v in self.pairs if t not in HEADER_TAGS]

    def __repr__(self) -> str:
        text = "|".join(f"{t}={'***' if t == Tag.PASSWORD else v}" for t, v in self.pairs)
        return f"Message({self.msg_type!r}, {text})"


def _group(
    pairs: list[tuple[int, str]], i: int, members: tuple[int, ...]
) -> tuple[list[dict[int, str]], int]:
    """The entries of a group whose first field is at ``pairs[i]``; returns them and the next index."""
    first, allowed = members[0], frozenset(members)
    entries: list[dict[int, str]] = []
    while i < len(pairs) and pairs[i][0] in allowed:
        tag, value = pairs[i]
        if tag == first or not entries or tag in entries[-1]:
            entries.append({})
        entries[-1][tag] = value
        i += 1
    return entries, i


def parse(raw: bytes, *, verify: bool = True) -> Message:
    """Parse one complete message (as cut by :class:`Framer`).

    :param verify: check BodyLength and CheckSum first (skip it for frames a Framer passed).
    :raises FixError: not a valid FIX message.
    """
    if verify:
        frames = Framer().feed(raw)
        if len(frames) != 1 or frames[0].raw != raw:
            raise FixError("not exactly one FIX message")
        if frames[0].error is not None:
            raise FixError(frames[0].error)
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    try:
        parsed = parser.get_message()
    except Exception as exc:  # simplefix raises its own error types, all "not FIX"
        raise FixError(f"unparsable message: {exc}") from exc
    if parsed is None:
        raise FixError("incomplete message")
    pairs: list[tuple[int, str]] = [
        (int(tag), value.decode("utf-8", "replace")) for tag, value in parsed.pairs
    ]
    fields: dict[int, str] = {}
    groups: dict[int, list[dict[int, str]]] = {}
    i = 0
    while i < len(pairs):
        tag, value = pairs[i]
        i += 1
        fields.setdefault(tag, value)
        members = GROUPS.get(tag)
        if members is not None and i < len(pairs) and pairs[i][0] == members[0]:
            groups[tag], i = _group(pairs, i, members)
    msg_type = fields.get(Tag.MSG_TYPE)
    if msg_type is None:
        raise FixError("no MsgType(35)")
    return Message(msg_type, tuple(pairs), fields, groups, raw)


def parse_stream(data: bytes) -> Iterator[Message]:
    """Every sound message in ``data`` (a capture, a test's pipe); garbled ones are skipped."""
    for frame in Framer().feed(data):
        if frame.error is None:
            yield parse(frame.raw, verify=False)


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
