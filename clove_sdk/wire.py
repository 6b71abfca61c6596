"""The Clove wire protocol: the only place where messages are encoded and decoded.

A message is a ZeroMQ multipart message of three frames::

    [PROTOCOL, kind, payload]        PROTOCOL = b"CLOVE1", kind = b"REQ" | b"REP"

``payload`` is a msgpack map. A request is ``{"id": int|str, "call": str, "body": map}``; a reply
echoes the id and is ``{"id", "ok": true, "result": any}`` or
``{"id", "ok": false, "error": {"code", "message", "details"}}``. See ``docs/protocol.md``.

msgpack rather than JSON: it carries bytes (device frames, file contents) without base64 and
decodes in about 1.5 µs, so the envelope costs little next to a ~60 µs ZeroMQ round trip.

The version is the first frame, and the ``clove-sdk`` release carries the same number as its
major version (:mod:`clove_sdk.version`). Either side meeting another version says so plainly:
the kernel answers ``proto.version`` naming the SDK release it needs; the SDK, handed a reply of
another version, raises :class:`VersionMismatch` naming both. This module is the one definition:
it lives in the SDK (an agent's environment has nothing else) and the kernel imports it through
:mod:`clove.wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, cast

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
    "BadRequest",
    "Reply",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "error_reply",
    "ok_reply",
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
    """A decoded request. ``id`` is echoed in the reply; ``call`` names the syscall."""

    id: int | str
    call: str
    body: dict[str, Any] = field(default_factory=dict)


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


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def encode_request(request_id: int | str, call: str, body: dict[str, Any] | None = None) -> list[bytes]:
    """Frames for a request (a DEALER sends these as they are)."""
    return [PROTOCOL, KIND_REQUEST, _pack({"id": request_id, "call": call, "body": body or {}})]


def _peek_id(payload: bytes) -> int | str | None:
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


def decode_request(frames: list[bytes], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Request:
    """Decode request frames (without any routing id).

    :raises BadRequest: wrapping ``proto.malformed``, ``proto.too_large`` or ``proto.version``,
        with the request id when the payload was readable.
    """
    if len(frames) != 3:
        raise BadRequest(ProtocolError(f"expected 3 frames, got {len(frames)}", details={"frames": len(frames)}))
    version, kind, payload = frames
    if version != PROTOCOL:
        got = version[:16].decode("latin-1")
        raise BadRequest(
            VersionMismatch(
                f"unsupported protocol version {got!r}: this kernel speaks {PROTOCOL.decode()}; "
                f"give the agent {SDK_REQUIREMENT}",
                details={"got": got, "supported": PROTOCOL.decode(), "sdk": SDK_REQUIREMENT},
            )
        )
    if kind != KIND_REQUEST:
        raise BadRequest(ProtocolError("expected a request frame (REQ)", details={"kind": kind[:16].decode("latin-1")}))
    if len(payload) > max_bytes:
        raise BadRequest(
            MessageTooLarge(
                f"request of {len(payload)} bytes exceeds the limit of {max_bytes}",
                details={"size": len(payload), "max_bytes": max_bytes},
            ),
            _peek_id(payload),
        )
    try:
        message = _unpack(payload)
    except Exception as err:  # msgpack raises several unrelated types for bad input
        raise BadRequest(ProtocolError(f"payload is not valid msgpack: {type(err).__name__}")) from None
    if not isinstance(message, dict):
        raise BadRequest(ProtocolError("payload must be a map"))
    request_id = message.get("id")
    if not _valid_id(request_id):
        raise BadRequest(ProtocolError("request id must be an int or a short string"))
    call = message.get("call")
    if not isinstance(call, str) or not call or len(call) > _MAX_CALL_NAME:
        raise BadRequest(ProtocolError("'call' must be a non-empty syscall name"), request_id)
    body = message.get("body", {})
    if not isinstance(body, dict):
        raise BadRequest(ProtocolError("'body' must be a map"), request_id)
    unknown = set(message) - {"id", "call", "body"}
    if unknown:
        raise BadRequest(ProtocolError(f"unknown envelope keys: {sorted(unknown, key=str)}"), request_id)
    if too_deep(body, MAX_DEPTH):
        raise BadRequest(
            ProtocolError(f"'body' nests deeper than {MAX_DEPTH} levels", details={"max_depth": MAX_DEPTH}), request_id
        )
    return Request(cast("int | str", request_id), call, body)  # _valid_id checked it


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


def ok_reply(request_id: int | str | None, result: Any) -> list[bytes]:
    """Frames of a successful reply."""
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
