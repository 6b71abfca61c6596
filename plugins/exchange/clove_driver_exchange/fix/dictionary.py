"""The FIX 4.4 definitions the rest of the engine shares: the tags (:class:`Tag`) and message
types (:class:`MsgType`) this engine speaks, which of them are session-level (``ADMIN_TYPES``)
or header fields (``HEADER_TAGS``), the repeating groups it parses (``GROUPS``), the types of a
builder's field values, :class:`Outgoing` (a message body to send) and :class:`FixError`.

Everything here is re-exported by :mod:`~clove_driver_exchange.fix.messages`, the module callers
import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Final, NamedTuple

__all__ = [
    "ADMIN_TYPES",
    "BEGIN_STRING",
    "Fields",
    "FixError",
    "GROUPS",
    "GroupValue",
    "HEADER_TAGS",
    "MAX_MESSAGE",
    "MsgType",
    "Outgoing",
    "SOH",
    "Tag",
    "Value",
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
