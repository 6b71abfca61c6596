"""clove.wire: the envelope round trips, and every malformed request becomes a BadRequest."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from clove import errors, wire
from clove.errors import (
    CloveError,
    ConfigError,
    Conflict,
    InternalError,
    InvalidArguments,
    IsolationUnavailable,
    KernelUnavailable,
    MessageTooLarge,
    NotFound,
    PermissionDenied,
    ProtocolError,
    SandboxError,
    SpawnFailed,
    UnknownSyscall,
    VersionMismatch,
)
from clove.wire import PROTOCOL, BadRequest, decode_reply, decode_request, encode_request

try:
    import hypothesis
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - optional test dependency
    hypothesis = None  # type: ignore[assignment]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def req_frames(payload: bytes) -> list[bytes]:
    return [wire.PROTOCOL, wire.KIND_REQUEST, payload]


def valid_id(value: object) -> bool:
    return (type(value) is int) or (isinstance(value, str) and len(value) <= 128)


def bad(frames: list[bytes], **kwargs: Any) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode_request(frames, **kwargs)
    assert isinstance(info.value.error, ProtocolError)
    assert str(info.value) == info.value.error.message
    return info.value


# -- constants ---------------------------------------------------------------------------------


def test_header_constants_are_frozen() -> None:
    assert (wire.PROTOCOL, wire.KIND_REQUEST, wire.KIND_REPLY) == (b"CLOVE1", b"REQ", b"REP")
    assert wire.DEFAULT_MAX_MESSAGE_BYTES == 1 << 20


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", [0, 1, -7, 2**63 - 1, "", "abc", "x" * 128, "ünïcode"])
@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"name": "a", "limits": {"memory": "64M", "cpu": 20}, "args": ["x", "y"]},
        {"data": b"\x00\xff raw bytes", "nested": {"f": 1.5, "n": None, "t": True}},
    ],
)
def test_request_round_trip(request_id: int | str, body: dict[str, Any] | None) -> None:
    frames = encode_request(request_id, "agent.spawn", body)
    assert frames[:2] == [b"CLOVE1", b"REQ"]
    assert len(frames) == 3
    assert all(isinstance(f, bytes) for f in frames)
    request = decode_request(frames)
    assert request == wire.Request(request_id, "agent.spawn", body or {})
    assert type(request.id) is type(request_id)


def test_request_without_body_key_gets_an_empty_body() -> None:
    request = decode_request(req_frames(pack({"id": 3, "call": "kernel.info"})))
    assert request == wire.Request(3, "kernel.info", {})


@pytest.mark.parametrize("request_id", [5, "req-5", None])
@pytest.mark.parametrize("result", [None, 0, "text", b"\x00bytes", [1, "two"], {"agents": [{"id": 1}]}])
def test_ok_reply_round_trip(request_id: int | str | None, result: Any) -> None:
    frames = wire.ok_reply(request_id, result)
    assert frames[:2] == [b"CLOVE1", b"REP"]
    reply = decode_reply(frames)
    assert reply == wire.Reply(request_id, True, result, None)
    assert wire.encode_reply(request_id, result) == frames


def test_reply_echoes_the_request_id() -> None:
    request = decode_request(encode_request("id-42", "agent.list"))
    assert decode_reply(wire.ok_reply(request.id, {"success": True})).id == "id-42"
    assert decode_reply(wire.error_reply(request.id, NotFound("gone"))).id == "id-42"


_ALL_ERRORS = [
    CloveError,
    ConfigError,
    ProtocolError,
    MessageTooLarge,
    VersionMismatch,
    UnknownSyscall,
    InvalidArguments,
    PermissionDenied,
    NotFound,
    Conflict,
    SandboxError,
    IsolationUnavailable,
    SpawnFailed,
    KernelUnavailable,
    InternalError,
]


@pytest.mark.parametrize("cls", _ALL_ERRORS, ids=lambda c: c.__name__)
def test_error_reply_rebuilds_the_exact_class(cls: type[CloveError]) -> None:
    sent = cls("it broke", details={"name": "a", "limit": 4})
    frames = wire.error_reply(9, sent)
    assert wire.encode_reply(9, "ignored", error=sent) == frames
    reply = decode_reply(frames)
    assert (reply.id, reply.ok, reply.result) == (9, False, None)
    assert type(reply.error) is cls
    assert reply.error is not None
    assert (reply.error.code, reply.error.message, reply.error.details) == (
        cls.code,
        "it broke",
        {"name": "a", "limit": 4},
    )


def test_error_reply_with_an_unknown_code_keeps_the_code() -> None:
    payload = pack(
        {"id": 1, "ok": False, "error": {"code": "lidar.fogged", "message": "leased", "details": {"by": 3}}}
    )
    reply = decode_reply([wire.PROTOCOL, wire.KIND_REPLY, payload])
    assert type(reply.error) is CloveError
    assert reply.error is not None
    assert (reply.error.code, reply.error.message, reply.error.details) == (
        "lidar.fogged",
        "leased",
        {"by": 3},
    )
    assert CloveError.code == "error"  # the class attribute is untouched


@pytest.mark.parametrize("error", [None, "oops", [1], {}])
def test_error_reply_with_a_broken_error_map_is_still_an_error(error: Any) -> None:
    reply = decode_reply([wire.PROTOCOL, wire.KIND_REPLY, pack({"id": 1, "ok": False, "error": error})])
    assert reply.ok is False
    assert type(reply.error) is CloveError
    assert reply.error is not None
    assert reply.error.code == "error"


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [PROTOCOL],
        [PROTOCOL, wire.KIND_REPLY],
        [PROTOCOL, wire.KIND_REPLY, pack({"ok": True}), b""],
        [b"CLOVEx", wire.KIND_REPLY, pack({"id": 1, "ok": True})],  # CLOVE2: test_sdk_distribution.py
        [PROTOCOL, wire.KIND_REQUEST, pack({"id": 1, "ok": True})],
        [PROTOCOL, wire.KIND_REPLY, b"\xc1"],
        [PROTOCOL, wire.KIND_REPLY, pack([1, True])],
        [PROTOCOL, wire.KIND_REPLY, pack({"id": 1, "result": 3})],
    ],
)
def test_decode_reply_rejects_non_replies(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply(frames)
    assert type(info.value) is ProtocolError
    assert info.value.code == "proto.malformed"


# -- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 4])
def test_wrong_frame_count(count: int) -> None:
    frames = [*encode_request(1, "agent.list"), b"extra"][:count]
    err = bad(frames)
    assert type(err.error) is ProtocolError
    assert err.error.code == "proto.malformed"
    assert err.error.details == {"frames": count}
    assert err.request_id is None


@pytest.mark.parametrize("version", [b"CLOVE2", b"", b"clove1", b"CLOVE1 ", b"\xff" * 100])
def test_wrong_version(version: bytes) -> None:
    err = bad([version, wire.KIND_REQUEST, pack({"id": 1, "call": "agent.list"})])
    assert type(err.error) is VersionMismatch
    assert err.error.code == "proto.version"
    assert err.error.details["supported"] == "CLOVE1"
    assert err.error.details["got"] == version[:16].decode("latin-1")
    assert err.request_id is None


@pytest.mark.parametrize("kind", [b"REP", b"", b"req", b"REQUEST"])
def test_wrong_kind(kind: bytes) -> None:
    err = bad([PROTOCOL, kind, pack({"id": 1, "call": "agent.list"})])
    assert type(err.error) is ProtocolError
    assert err.error.code == "proto.malformed"
    assert err.error.details == {"kind": kind.decode("latin-1")}


def test_payload_over_the_limit() -> None:
    frames = encode_request(1, "agent.spawn", {"blob": b"x" * 2000})
    size = len(frames[2])
    err = bad(frames, max_bytes=size - 1)
    assert type(err.error) is MessageTooLarge
    assert err.error.code == "proto.too_large"
    assert err.error.details == {"size": size, "max_bytes": size - 1}
    assert decode_request(frames, max_bytes=size).body == {"blob": b"x" * 2000}


def test_default_limit_is_one_mebibyte() -> None:
    frames = req_frames(b"\x00" * (wire.DEFAULT_MAX_MESSAGE_BYTES + 1))
    assert type(bad(frames).error) is MessageTooLarge


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # the one byte msgpack never uses
        b"\x92\x01",  # an array of 2 with one element
        pack({"id": 1, "call": "x"}) + b"\x00",  # trailing data
        b"not msgpack at all, just text",
        pack({1: "int keys are refused"}),
    ],
)
def test_payload_not_msgpack(payload: bytes) -> None:
    err = bad(req_frames(payload))
    assert type(err.error) is ProtocolError
    assert err.error.message.startswith("payload is not valid msgpack")
    assert err.request_id is None


@pytest.mark.parametrize("payload", [[1, "agent.list", {}], "a string", 7, None, b"bytes"])
def test_payload_not_a_map(payload: Any) -> None:
    err = bad(req_frames(pack(payload)))
    assert type(err.error) is ProtocolError
    assert err.error.message == "payload must be a map"
    assert err.request_id is None


@pytest.mark.parametrize("request_id", [True, False, 1.0, 2.5, None, "x" * 129, b"bytes", [1], {"a": 1}])
def test_bad_request_id(request_id: Any) -> None:
    err = bad(req_frames(pack({"id": request_id, "call": "agent.list"})))
    assert type(err.error) is ProtocolError
    assert "request id" in err.error.message
    assert err.request_id is None


def test_missing_request_id() -> None:
    err = bad(req_frames(pack({"call": "agent.list"})))
    assert "request id" in err.error.message
    assert err.request_id is None


@pytest.mark.parametrize("call", [None, "", 5, b"agent.list", ["agent.list"], "x" * 65])
@pytest.mark.parametrize("request_id", [11, "r-11"])
def test_bad_call_keeps_the_request_id(call: Any, request_id: int | str) -> None:
    message: dict[str, Any] = {"id": request_id}
    if call is not None:
        message["call"] = call
    err = bad(req_frames(pack(message)))
    assert type(err.error) is ProtocolError
    assert "'call'" in err.error.message
    assert err.request_id == request_id


def test_call_name_at_the_length_limit_is_accepted() -> None:
    assert decode_request(encode_request(1, "x" * 64)).call == "x" * 64


@pytest.mark.parametrize("body", [[], [1, 2], "body", 0, None, b"\x00"])
def test_body_not_a_map(body: Any) -> None:
    err = bad(req_frames(pack({"id": 12, "call": "agent.list", "body": body})))
    assert err.error.message == "'body' must be a map"
    assert err.request_id == 12


@pytest.mark.parametrize(
    ("extra", "listed"),
    [
        ({"token": "x"}, "['token']"),
        ({"b": 1, "a": 2}, "['a', 'b']"),
        ({b"raw": 1}, "[b'raw']"),
        ({b"raw": 1, "zed": 2}, "[b'raw', 'zed']"),  # str and bytes keys together used to raise TypeError
    ],
)
def test_unknown_envelope_keys(extra: dict[Any, Any], listed: str) -> None:
    err = bad(req_frames(pack({"id": 13, "call": "agent.list", "body": {}, **extra})))
    assert type(err.error) is ProtocolError
    assert err.error.message == f"unknown envelope keys: {listed}"
    assert err.request_id == 13


def test_checks_run_in_order_version_before_size() -> None:
    """An oversized payload with a bad version reports the version: nothing is unpacked."""
    err = bad([b"OLD", wire.KIND_REQUEST, b"\xc1" * 100], max_bytes=10)
    assert type(err.error) is VersionMismatch


def test_bad_request_wraps_the_error_and_is_not_a_clove_error() -> None:
    """The kernel turns BadRequest into an error reply; it must not pass for a CloveError."""
    inner = ProtocolError("nope")
    exc = BadRequest(inner, 4)
    assert (exc.error, exc.request_id, str(exc)) == (inner, 4, "nope")
    assert not isinstance(exc, CloveError)
    assert errors.to_wire(exc.error)["code"] == "proto.malformed"


# -- fuzzing -----------------------------------------------------------------------------------

if hypothesis is not None:
    _frames = st.lists(st.binary(max_size=64), max_size=5)
    _valid_header_frames = st.binary(max_size=256).map(lambda p: [PROTOCOL, wire.KIND_REQUEST, p])
    _json_like = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=6) | st.binary(max_size=4), inner, max_size=4)
        ),
        max_leaves=12,
    )
    _envelopes = st.dictionaries(
        st.sampled_from(["id", "call", "body", "extra"]) | st.binary(max_size=3), _json_like, max_size=5
    ).map(lambda m: [PROTOCOL, wire.KIND_REQUEST, pack(m)])

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.one_of(_frames, _valid_header_frames, _envelopes))
    def test_decode_request_only_raises_bad_request(frames: list[bytes]) -> None:
        try:
            request = decode_request(frames)
        except BadRequest as err:
            error, request_id = err.error, err.request_id
            assert isinstance(error, ProtocolError)  # noqa: PT017 - any other exception fails the test
            assert request_id is None or valid_id(request_id)  # noqa: PT017
        else:
            assert valid_id(request.id)
            assert isinstance(request.call, str)
            assert 0 < len(request.call) <= 64
            assert isinstance(request.body, dict)

else:  # pragma: no cover

    def test_decode_request_only_raises_bad_request() -> None:
        pytest.skip("hypothesis is not installed")
