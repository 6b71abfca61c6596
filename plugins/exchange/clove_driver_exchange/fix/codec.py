"""FIX 4.4 on the wire, over simplefix: field values and timestamps as text, :func:`encode` (a
complete message: header, body, BodyLength, CheckSum) and :func:`parse` (one frame
:class:`~clove_driver_exchange.fix.framing.Framer` cut, into a :class:`Message`).

A parsed :class:`Message` keeps the fields in wire order (``pairs``, what a resend re-encodes),
the first value of each top-level tag (``fields``, what callers read) and the repeating groups
the design uses (``groups``: MarketData entries, the symbols and entry types of a
MarketDataRequest), each a list of ``{tag: value}`` entries.

Parsing splits a frame on SOH itself when it can (every field ``tag=value``, no raw-data field,
whose value may hold SOH): simplefix's parser walks the frame a byte at a time, which made it the
largest cost of a report in the driver host. Anything else goes to simplefix, which says what is
wrong with it; the two give the same pairs (the codec tests compare them).

Values may be ``str``, ``int``, ``float`` (written without exponent, trailing zeros dropped),
``bool`` (``Y``/``N``) or ``None`` (field left out). A list of mappings under a group's count tag
is a repeating group: ``{268: [{269: "0", 270: 99.5, 271: 100}]}``.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import simplefix
from simplefix.data import RAW_LEN_TAGS

from clove_driver_exchange.fix.dictionary import (
    ADMIN_TYPES,
    BEGIN_STRING,
    GROUPS,
    HEADER_TAGS,
    Fields,
    FixError,
    Tag,
    Value,
)
from clove_driver_exchange.fix.framing import Framer

__all__ = [
    "Message",
    "build",
    "encode",
    "flatten",
    "format_value",
    "parse",
    "parse_stream",
    "parse_utc_timestamp",
    "utc_timestamp",
]


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


_RAW_LEN_TAGS: frozenset[int] = frozenset(RAW_LEN_TAGS)


def _split(raw: bytes) -> list[tuple[int, str]] | None:
    """The fields of a frame that needs nothing of simplefix's care, else ``None``. (Decoding
    first is safe: SOH and ``=`` never occur inside a UTF-8 sequence.)"""
    if not raw.startswith(b"8=") or not raw.endswith(b"\x01"):
        return None
    pairs: list[tuple[int, str]] = []
    for field_ in raw[:-1].decode("utf-8", "replace").split("\x01"):
        tag, equals, value = field_.partition("=")
        if not equals or not value or not tag.isdigit() or not tag.isascii():
            return None
        number = int(tag)
        if number in _RAW_LEN_TAGS:
            return None
        pairs.append((number, value))
    return pairs if pairs[-1][0] == Tag.CHECK_SUM else None


def _simplefix_pairs(raw: bytes) -> list[tuple[int, str]]:
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    try:
        parsed = parser.get_message()
    except Exception as exc:  # simplefix raises its own error types, all "not FIX"
        raise FixError(f"unparsable message: {exc}") from exc
    if parsed is None:
        raise FixError("incomplete message")
    return [(int(tag), value.decode("utf-8", "replace")) for tag, value in parsed.pairs]


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
    pairs = _split(raw)
    if pairs is None:
        pairs = _simplefix_pairs(raw)
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
