"""The Clove wire protocol: the only place where messages are encoded and decoded.

A message is a ZeroMQ multipart message of three frames::

    [PROTOCOL, kind, payload]        PROTOCOL = b"CLOVE1", kind = b"REQ" | b"REP"

``payload`` is a msgpack map. A request is ``{"id": int|str, "call": str, "body": map}``; a reply
echoes the id and is ``{"id", "ok": true, "result": any}`` or
``{"id", "ok": false, "error": {"code", "message", "details"}}``. See ``docs/protocol.md``.

msgpack rather than JSON: it carries bytes (device frames, file contents) without base64 and
decodes in about 1.5 µs, so the envelope costs little next to a ~60 µs ZeroMQ round trip.

Large values are not encoded twice: :func:`encoded_tail` finds a request's last value (a message,
an event's data) as the client encoded it, and a :class:`Packed` value (already encoded) is
spliced into a reply as it is (:func:`ok_reply`, :func:`pack_spliced`), byte for byte what
encoding its decoded form would give.

The version is the first frame, and the ``clove-sdk`` release carries the same number as its
major version (:mod:`clove_sdk.version`). Either side meeting another version says so plainly:
the kernel answers ``proto.version`` naming the SDK release it needs; the SDK, handed a reply of
another version, raises :class:`VersionMismatch` naming both. This module is the one definition:
it lives in the SDK (an agent's environment has nothing else) and the kernel imports it through
:mod:`clove.wire`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast, final

import msgpack

from clove_sdk.errors import (
    CloveError,
    MessageTooLarge,
    ProtocolError,
    VersionMismatch,
    from_wire,
    to_wire,
)
from clove_sdk.version import PROTOCOL_VERSION, SDK_REQUIREMENT, __version__

__all__ = [
    "DEFAULT_SOCKET",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "KIND_REPLY",
    "KIND_REQUEST",
    "MAX_DEPTH",
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "SPLICE_MIN_BYTES",
    "BadRequest",
    "Packed",
    "Reply",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "encoded_tail",
    "error_reply",
    "ok_reply",
    "pack",
    "pack_spliced",
    "request_payload",
    "too_deep",
]

#: The kernel's control socket unless ``CLOVE_SOCKET`` or the config says otherwise.
DEFAULT_SOCKET: Final = "/tmp/clove.sock"
PROTOCOL: Final = b"CLOVE%d" % PROTOCOL_VERSION
KIND_REQUEST: Final = b"REQ"
KIND_REPLY: Final = b"REP"
#: Largest request payload the kernel accepts by default; larger ones get ``proto.too_large``.
DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20
_MAX_CALL_NAME: Final = 64
_FAMILY: Final = "CLOVE"
#: Deepest nesting of lists and maps a request body may have. msgpack decodes about 1,024
#: levels but encodes only 511, and a reply wraps what a caller sent (a message, an event, a
#: stored value) a few levels deeper: a body the kernel accepts must always fit back in a reply.
MAX_DEPTH: Final = 100


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request. ``id`` is echoed in the reply; ``call`` names the syscall; ``payload``
    is the frame it was decoded from (for :func:`encoded_tail`; empty when built by hand)."""

    id: int | str
    call: str
    body: dict[str, Any] = field(default_factory=dict)
    payload: bytes | memoryview = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: ``result`` when ``ok``, else ``error`` (a :class:`CloveError`)."""

    id: int | str | None
    ok: bool
    result: Any = None
    error: CloveError | None = None


class BadRequest(Exception):
    """A request that cannot be dispatched; ``request_id`` is set when it could be read."""

    def __init__(self, error: ProtocolError, request_id: int | str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.request_id = request_id


@final
class Packed:
    """A value already msgpack-encoded (a message as its sender encoded it, an event encoded once
    for every queue): :func:`ok_reply` and :func:`pack_spliced` copy its bytes into a reply
    instead of encoding it again. A handler may return one as its result.

    It may be held in pieces (what :func:`pack_spliced` builds), joined only where one buffer is
    needed (:attr:`data`): a reply joins them once, with its own envelope.
    """

    __slots__ = ("_data", "parts")

    def __init__(self, data: bytes | memoryview | None = None, *, parts: tuple[bytes | memoryview, ...] = ()) -> None:
        self.parts = (data,) if data is not None else parts
        self._data = data

    @property
    def data(self) -> bytes | memoryview:
        """The encoding in one buffer."""
        if self._data is None:
            self._data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
            self.parts = (self._data,)
        return self._data

    def __len__(self) -> int:
        return sum(map(len, self.parts))

    def value(self) -> Any:
        """The decoded value (for a recording, a test)."""
        return _unpack(self.data)


_local = threading.local()
#: A packer that grew past this for one large value is dropped rather than kept at that size.
_KEEP_PACKER_BYTES: Final = 1 << 20


def pack(obj: Any) -> bytes:
    """``obj`` msgpack-encoded as every Clove message is (``use_bin_type``).

    One packer per thread, kept: ``msgpack.packb`` builds a packer and its buffer on every call.
    (A packer runs no Python code for the plain values a reply holds, so it is never re-entered.)
    """
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(obj)
    if len(data) > _KEEP_PACKER_BYTES:
        _local.packer = None  # its buffer stays at its largest size: let it go
    return data


_pack = pack


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def encode_request(request_id: int | str, call: str, body: dict[str, Any] | None = None) -> list[bytes]:
    """Frames for a request (a DEALER sends these as they are)."""
    return [PROTOCOL, KIND_REQUEST, request_payload(request_id, call, body)]


def request_payload(request_id: int | str, call: str, body: dict[str, Any] | None = None) -> bytes:
    """A request's payload frame (after :data:`PROTOCOL` and :data:`KIND_REQUEST`). Values the
    kernel may pass on as they are (:func:`encoded_tail`) go last in ``body``."""
    return _pack({"id": request_id, "call": call, "body": body or {}})


def _map_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x80 | count,))
    return (b"\xde" + count.to_bytes(2, "big")) if count < 0x10000 else (b"\xdf" + count.to_bytes(4, "big"))


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    return (b"\xdc" + count.to_bytes(2, "big")) if count < 0x10000 else (b"\xdd" + count.to_bytes(4, "big"))


#: How :func:`encode_request` begins every payload: a map of three, ``id`` first.
_REQUEST_HEAD: Final = b"\x83" + _pack("id")
#: Below this, encoding a value again costs less than finding and splicing its bytes.
SPLICE_MIN_BYTES: Final = 32 * 1024


def encoded_tail(request: Request, key: str, min_bytes: int = SPLICE_MIN_BYTES) -> memoryview | None:
    """``request.body[key]`` exactly as the client encoded it (a view of the payload, no copy),
    when it is the payload's last value and everything before it is encoded as
    :func:`encode_request` would (the SDK's layout: ``id``, ``call``, ``body``, that key last in
    the body). ``None`` otherwise, and for a value under ``min_bytes``: the caller encodes the
    decoded value instead.

    Only for a request :func:`decode_request` accepted, so the bytes are known to decode to a
    value within every bound. The check is exact: the payload must begin with the canonical
    encoding of everything before the value, and since it decoded with nothing left over, what
    follows is that one value's encoding. Costs a few small encodes, nothing per byte of the value.
    """
    body, payload = request.body, request.payload
    if len(payload) < max(min_bytes, 1) or not body or next(reversed(body)) != key:
        return None
    parts = [_REQUEST_HEAD, _pack(request.id), _pack("call"), _pack(request.call), _pack("body"), _map_header(len(body))]
    for name, value in body.items():
        parts.append(_pack(name))
        if name == key:
            break
        parts.append(_pack(value))
    prefix = b"".join(parts)
    size = len(prefix)
    if len(payload) - size < max(min_bytes, 1) or payload[:size] != prefix:
        return None
    return memoryview(payload)[size:]


def pack_spliced(value: Any) -> Packed:
    """``value`` encoded, with any :class:`Packed` inside it (in maps and lists) copied in as it
    is: the bytes :func:`pack` would give for the decoded value. Walks maps and lists in
    Python, so meant for small frames around large packed values (a receive's messages)."""
    parts: list[bytes | memoryview] = []
    _splice(value, parts)
    return Packed(parts=tuple(parts))


def _splice(value: Any, parts: list[bytes | memoryview]) -> None:
    kind = type(value)
    if kind is Packed:
        parts.extend(value.parts)
    elif kind is dict:
        parts.append(_map_header(len(value)))
        for key, item in value.items():
            parts.append(_pack(key))
            _splice(item, parts)
    elif kind is list:
        parts.append(_array_header(len(value)))
        for item in value:
            _splice(item, parts)
    else:
        parts.append(_pack(value))


def _peek_id(payload: bytes | memoryview) -> int | str | None:
    """The request id of an oversized payload, read without decoding the rest (the SDK packs
    ``id`` first; anything else gives up after three keys)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(payload))
    unpacker.feed(payload)
    try:
        for _ in range(min(3, unpacker.read_map_header())):
            key = unpacker.unpack()
            if key == "id":
                value = unpacker.unpack()
                return value if _valid_id(value) else None
            unpacker.skip()
    except Exception:  # not a map, truncated, ...: no id to echo
        return None
    return None


def _valid_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and len(value) <= 128
    )


def decode_request(frames: Sequence[bytes | memoryview], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Request:
    """Decode request frames (without any routing id); a large frame may be a view.

    :raises BadRequest: wrapping ``proto.malformed``, ``proto.too_large`` or ``proto.version``,
        with the request id when the payload was readable.
    """
    if len(frames) != 3:
        raise BadRequest(ProtocolError(f"expected 3 frames, got {len(frames)}", details={"frames": len(frames)}))
    version, kind, payload = frames
    if version != PROTOCOL:
        got = bytes(version[:16]).decode("latin-1")
        raise BadRequest(
            VersionMismatch(
                f"unsupported protocol version {got!r}: this kernel speaks {PROTOCOL.decode()}; "
                f"give the agent {SDK_REQUIREMENT}",
                details={"got": got, "supported": PROTOCOL.decode(), "sdk": SDK_REQUIREMENT},
            )
        )
    if kind != KIND_REQUEST:
        raise BadRequest(ProtocolError("expected a request frame (REQ)", details={"kind": bytes(kind[:16]).decode("latin-1")}))
    if len(payload) > max_bytes:
        raise BadRequest(
            MessageTooLarge(
                f"request of {len(payload)} bytes exceeds the limit of {max_bytes}",
                details={"size": len(payload), "max_bytes": max_bytes},
            ),
            _peek_id(payload),
        )
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)  # _unpack, inline: every request
    except Exception as err:  # msgpack raises several unrelated types for bad input
        raise BadRequest(ProtocolError(f"payload is not valid msgpack: {type(err).__name__}")) from None
    if type(message) is not dict:
        raise BadRequest(ProtocolError("payload must be a map"))
    request_id = message.get("id")
    if not (type(request_id) is int or _valid_id(request_id)):
        raise BadRequest(ProtocolError("request id must be an int or a short string"))
    call = message.get("call")
    if type(call) is not str or not call or len(call) > _MAX_CALL_NAME:
        raise BadRequest(ProtocolError("'call' must be a non-empty syscall name"), request_id)
    body = message.get("body", {})
    if type(body) is not dict:
        raise BadRequest(ProtocolError("'body' must be a map"), request_id)
    if len(message) != (3 if "body" in message else 2):  # no keys but id, call and body
        unknown = set(message) - {"id", "call", "body"}
        raise BadRequest(ProtocolError(f"unknown envelope keys: {sorted(unknown, key=str)}"), request_id)
    if body and _has_containers(body.values()) and too_deep(body, MAX_DEPTH):
        raise BadRequest(
            ProtocolError(f"'body' nests deeper than {MAX_DEPTH} levels", details={"max_depth": MAX_DEPTH}), request_id
        )
    return Request(cast("int | str", request_id), call, body, payload)  # _valid_id checked it


def _has_containers(values: Any) -> bool:
    kinds = set(map(type, values))
    return dict in kinds or list in kinds


def too_deep(value: Any, limit: int) -> bool:
    """True when lists and maps in ``value`` nest more than ``limit`` levels (``value`` itself
    is level 1). Iterative, so a hostile value cannot exhaust the interpreter's stack; a list
    or map is scanned for containers at C speed (``set(map(type, ...))``), so the walk costs
    little beside the decode that built the value, and nothing per byte of a long string."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if type(item) is dict else item
        kinds = set(map(type, children))
        if dict in kinds or list in kinds:
            stack.extend((child, depth + 1) for child in children if type(child) is dict or type(child) is list)
    return False


#: A successful reply's payload around its id and result: ``{"id": …, "ok": true, "result": …}``.
_OK_HEAD: Final = b"\x83" + _pack("id")
_OK_MIDDLE: Final = _pack("ok") + _pack(True) + _pack("result")


def ok_reply(request_id: int | str | None, result: Any) -> list[bytes]:
    """Frames of a successful reply (a :class:`Packed` result is copied in as it is)."""
    if type(result) is Packed:
        return [PROTOCOL, KIND_REPLY, b"".join((_OK_HEAD, _pack(request_id), _OK_MIDDLE, *result.parts))]
    return [PROTOCOL, KIND_REPLY, _pack({"id": request_id, "ok": True, "result": result})]


def error_reply(request_id: int | str | None, error: CloveError) -> list[bytes]:
    """Frames of an error reply carrying ``{code, message, details}``."""
    return [PROTOCOL, KIND_REPLY, _pack({"id": request_id, "ok": False, "error": to_wire(error)})]


def encode_reply(request_id: int | str | None, result: Any = None, error: CloveError | None = None) -> list[bytes]:
    """Frames of a reply: an error reply when ``error`` is given."""
    return error_reply(request_id, error) if error is not None else ok_reply(request_id, result)


def decode_reply(frames: list[bytes]) -> Reply:
    """Decode reply frames.

    :raises VersionMismatch: when the kernel answered in another protocol version.
    :raises ProtocolError: when the frames are not a Clove reply.
    """
    if len(frames) == 3 and frames[0] != PROTOCOL and _other_version(frames[0]):
        kernel = frames[0].decode("ascii")
        raise VersionMismatch(
            f"the kernel speaks {kernel}, but this clove-sdk {__version__} speaks {PROTOCOL.decode()}: "
            f"install the clove-sdk release whose major version is {kernel[len(_FAMILY):]} in the agent's environment",
            details={"got": kernel, "supported": PROTOCOL.decode(), "sdk": __version__},
        )
    if len(frames) != 3 or frames[0] != PROTOCOL or frames[1] != KIND_REPLY:
        raise ProtocolError("not a Clove reply")
    try:
        message = _unpack(frames[2])
    except Exception as err:
        raise ProtocolError(f"reply is not valid msgpack: {type(err).__name__}") from None
    if not isinstance(message, dict) or "ok" not in message:
        raise ProtocolError("reply must be a map with 'ok'")
    if message["ok"]:
        return Reply(message.get("id"), True, message.get("result"))
    error = message.get("error")
    return Reply(message.get("id"), False, error=from_wire(error if isinstance(error, dict) else {}))


def _other_version(frame: bytes) -> bool:
    """Whether a first frame is a Clove envelope of some other protocol version (``CLOVE2``)."""
    number = frame[len(_FAMILY) :]
    return frame.startswith(_FAMILY.encode()) and 0 < len(number) <= 4 and number.isdigit()
