"""FIX 4.4 messages: framing, parsing and building, over simplefix. The one module callers import
(``from clove_driver_exchange.fix import messages as m``); the work is done in:

* :mod:`~clove_driver_exchange.fix.dictionary` — the definitions: :class:`Tag`, :class:`MsgType`,
  the admin types, header tags and repeating groups, the value types, :class:`Outgoing`,
  :class:`FixError`;
* :mod:`~clove_driver_exchange.fix.framing` — :class:`Framer`, which cuts a stream into messages
  and checks BodyLength(9) and CheckSum(10) before anything is parsed;
* :mod:`~clove_driver_exchange.fix.codec` — values and timestamps as text, :func:`encode` and
  :func:`parse` into a :class:`Message`;
* :mod:`~clove_driver_exchange.fix.builders` — one builder per message this engine sends.

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

from clove_driver_exchange.fix.builders import ORD_TYPES as ORD_TYPES  # "X as X": public, not in __all__
from clove_driver_exchange.fix.builders import SIDES as SIDES
from clove_driver_exchange.fix.builders import TIME_IN_FORCE as TIME_IN_FORCE
from clove_driver_exchange.fix.builders import (
    execution_report,
    heartbeat,
    logon,
    logout,
    market_data_request,
    market_data_request_reject,
    market_data_snapshot,
    new_order_single,
    order_cancel_reject,
    order_cancel_request,
    order_mass_status_request,
    reject,
    resend_request,
    sequence_reset,
    sequence_reset_gap_fill,
    test_request,
)
from clove_driver_exchange.fix.codec import (
    Message,
    build,
    encode,
    flatten,
    format_value,
    parse,
    parse_stream,
    parse_utc_timestamp,
    utc_timestamp,
)
from clove_driver_exchange.fix.dictionary import (
    ADMIN_TYPES,
    BEGIN_STRING,
    GROUPS,
    HEADER_TAGS,
    MAX_MESSAGE,
    Fields,
    FixError,
    MsgType,
    Outgoing,
    Tag,
    Value,
)
from clove_driver_exchange.fix.dictionary import SOH as SOH
from clove_driver_exchange.fix.dictionary import GroupValue as GroupValue
from clove_driver_exchange.fix.framing import Frame, Framer

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
