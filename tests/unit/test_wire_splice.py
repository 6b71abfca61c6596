"""Values passed on as their sender encoded them: clove.wire.encoded_tail finds them exactly or not
at all, and a reply that splices them in is byte for byte the reply encoding would give."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from clove import wire

BIG = "z" * (wire.SPLICE_MIN_BYTES + 10)


def sdk_request(call: str, body: dict[str, Any], request_id: int | str = 7) -> wire.Request:
    """A request as the SDK encodes it, decoded as the kernel does."""
    return wire.decode_request(wire.encode_request(request_id, call, body))


@pytest.mark.parametrize("request_id", [7, 1 << 40, "req-α"])
@pytest.mark.parametrize("before", [{}, {"to": 3}, {"to_name": "pong", "to": None}])
def test_the_last_value_is_found_byte_for_byte(request_id: int | str, before: dict[str, Any]) -> None:
    message = {"blob": BIG, "nested": [1, 2.5, None, {"k": b"\x00\xff"}]}
    request = sdk_request("ipc.send", {**before, "message": message}, request_id)
    tail = wire.encoded_tail(request, "message")
    assert tail is not None
    assert bytes(tail) == wire.pack(message)  # what encoding it again would give
    assert tail.obj is request.payload  # a view of the frame, not a copy


def test_nothing_is_found_unless_it_is_exact() -> None:
    message = {"blob": BIG}
    first = sdk_request("ipc.send", {"message": message, "to": 3})
    assert wire.encoded_tail(first, "message") is None  # not the last value: the caller encodes it
    assert wire.encoded_tail(first, "to") is None  # last, but small
    small = sdk_request("ipc.send", {"to": 3, "message": {"x": 1}})
    assert wire.encoded_tail(small, "message") is None  # small: encoding again is cheaper
    assert wire.encoded_tail(small, "message", min_bytes=0) is not None
    by_hand = wire.Request(7, "ipc.send", {"to": 3, "message": message})
    assert wire.encoded_tail(by_hand, "message") is None  # no payload to take it from


def _payload(*tokens: bytes) -> bytes:
    return b"".join(tokens)


def test_a_prefix_encoded_otherwise_is_not_trusted() -> None:
    """The same decoded request with the id as a uint8 (0xcc 0x07) rather than a fixint: the
    prefix no longer matches its canonical encoding, so nothing is spliced."""
    p = msgpack.packb
    body = b"\x82" + p("to") + p(3) + p("message") + p({"blob": BIG})
    odd = _payload(b"\x83", p("id"), b"\xcc\x07", p("call"), p("ipc.send"), p("body"), body)
    request = wire.decode_request([wire.PROTOCOL, wire.KIND_REQUEST, odd])
    assert request.id == 7 and wire.encoded_tail(request, "message") is None
    canonical = _payload(b"\x83", p("id"), p(7), p("call"), p("ipc.send"), p("body"), body)
    assert wire.encoded_tail(wire.decode_request([wire.PROTOCOL, wire.KIND_REQUEST, canonical]), "message") is not None


def test_a_repeated_key_is_not_trusted() -> None:
    """``{"message": A, "to": 3, "message": B}`` decodes to two keys under a map of three."""
    p = msgpack.packb
    body = b"\x83" + p("message") + p({"a": BIG}) + p("to") + p(3) + p("message") + p({"b": BIG})
    payload = _payload(b"\x83", p("id"), p(1), p("call"), p("ipc.send"), p("body"), body)
    request = wire.decode_request([wire.PROTOCOL, wire.KIND_REQUEST, payload])
    assert request.body == {"message": {"b": BIG}, "to": 3}
    assert wire.encoded_tail(request, "message") is None


CASES: list[Any] = [
    {"success": True, "messages": [], "count": 0},
    {"a": [1, {"b": None}], "c": "x" * 40},
    [{"k": i} for i in range(20)],
    {f"key{i}": i for i in range(40)},  # a map past 15 entries: a map16 header
    list(range(70_000)),  # an array past 65535 items: an array32 header
]


@pytest.mark.parametrize("value", CASES)
def test_a_spliced_value_is_the_value_encoded(value: Any) -> None:
    def packed_leaves(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: wire.Packed(wire.pack(v)) if isinstance(v, (str, int)) else packed_leaves(v) for k, v in item.items()}
        if isinstance(item, list):
            return [packed_leaves(v) for v in item]
        return item

    spliced = wire.pack_spliced(packed_leaves(value))
    assert bytes(spliced.data) == wire.pack(value)
    assert spliced.value() == value and len(spliced) == len(wire.pack(value))


def test_a_packed_result_makes_the_same_reply() -> None:
    result = {"success": True, "messages": [{"from_id": 1, "from_name": "a", "message": {"blob": BIG}, "age_ms": 0.5}], "count": 1}
    message = wire.Packed(memoryview(b"..." + wire.pack({"blob": BIG}))[3:])
    spliced = wire.pack_spliced({**result, "messages": [{**result["messages"][0], "message": message}]})
    assert wire.ok_reply(42, spliced) == wire.ok_reply(42, result)
    assert wire.decode_reply(wire.ok_reply("id", spliced)).result == result


def test_the_packer_is_not_kept_at_a_large_size() -> None:
    big = wire.pack({"blob": "y" * (2 << 20)})
    assert msgpack.unpackb(big) == {"blob": "y" * (2 << 20)}
    assert wire.pack({"x": 1}) == msgpack.packb({"x": 1}, use_bin_type=True)


def test_large_frames_may_arrive_as_views() -> None:
    """The kernel reads a large frame as a view of libzmq's buffer (no copy): decoding and
    splicing work on it, and a malformed one still gets its structured error."""
    message = {"blob": BIG}
    frames = wire.encode_request(3, "ipc.send", {"to": 2, "message": message})
    request = wire.decode_request([memoryview(frame) for frame in frames])
    assert request.body["message"] == message
    tail = wire.encoded_tail(request, "message")
    assert tail is not None and bytes(tail) == wire.pack(message)
    odd = [memoryview(b"CLOVE9" + b"x" * 100_000), memoryview(wire.KIND_REQUEST), memoryview(frames[2])]
    with pytest.raises(wire.BadRequest) as err:
        wire.decode_request(odd)
    assert err.value.error.code == "proto.version" and err.value.error.details["got"] == "CLOVE9xxxxxxxxxx"
