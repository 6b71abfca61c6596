"""Bad input never crashes or stalls the kernel; every bad request gets a structured error."""

from __future__ import annotations

import pytest
import zmq

from clove import wire
from clove.errors import InvalidArguments, UnknownSyscall
from tests.conftest import requires_root

pytestmark = [pytest.mark.integration, requires_root]


@pytest.fixture
def raw(kernel):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{kernel.socket}")
    yield sock
    sock.close()


def _reply(sock) -> wire.Reply:
    assert sock.poll(5000), "no reply"
    return wire.decode_reply(sock.recv_multipart())


@pytest.mark.parametrize(
    ("frames", "code", "echo_id"),
    [
        ([b"garbage"], "proto.malformed", None),
        ([wire.PROTOCOL, wire.KIND_REQUEST], "proto.malformed", None),
        ([wire.PROTOCOL, wire.KIND_REQUEST, b"\xc1\xff not msgpack"], "proto.malformed", None),
        ([b"CLOVE9", wire.KIND_REQUEST, wire._pack({"id": 1, "call": "noop"})], "proto.version", None),
        ([wire.PROTOCOL, wire.KIND_REQUEST, wire._pack([1, 2, 3])], "proto.malformed", None),
        ([wire.PROTOCOL, wire.KIND_REQUEST, wire._pack({"id": 5, "call": ""})], "proto.malformed", 5),
        ([wire.PROTOCOL, wire.KIND_REQUEST, wire._pack({"id": 6, "call": "noop", "body": [1]})], "proto.malformed", 6),
        ([wire.PROTOCOL, wire.KIND_REQUEST, wire._pack({"id": 7, "call": "noop"})[:-3]], "proto.malformed", None),
        (wire.encode_request(8, "no.such.call"), "proto.unknown_syscall", 8),
        (wire.encode_request(9, "noop", {"msg": 5}), "proto.invalid_args", 9),
        (wire.encode_request(10, "agent.spawn", {"name": "x"}), "proto.invalid_args", 10),
    ],
)
def test_bad_requests_get_structured_errors(kernel, raw, frames, code, echo_id):
    raw.send_multipart(frames)
    reply = _reply(raw)
    assert not reply.ok and reply.error.code == code and reply.id == echo_id
    assert reply.error.message
    with kernel.client() as c:
        assert c.noop("alive") == "alive"
        last = [e for e in c.get_audit_log(category="SECURITY", limit=1000)["entries"]][-1]
        assert last["code"] == code and last["decision"] == "denied"


def test_oversized_request_gets_too_large_and_kernel_lives(kernel, raw):
    raw.send_multipart(wire.encode_request(11, "noop", {"msg": "x" * (2 << 20)}))
    reply = _reply(raw)
    assert reply.error.code == "proto.too_large" and reply.id == 11
    assert reply.error.details["max_bytes"] == 1 << 20
    # Beyond the hard cap libzmq drops the peer; the kernel carries on.
    raw.send_multipart(wire.encode_request(12, "noop", {"msg": "x" * (8 << 20)}))
    with kernel.client() as c:
        assert c.noop("alive") == "alive"


def test_flood_of_garbage_does_not_stall_others(kernel, raw):
    for i in range(2000):
        raw.send_multipart([b"junk", str(i).encode()])
    with kernel.client(timeout=10) as c:
        assert c.noop("through") == "through"
    got = 0
    while raw.poll(2000):
        raw.recv_multipart()
        got += 1
        if got == 2000:
            break
    assert got == 2000


def test_sdk_raises_typed_errors(kernel):
    with kernel.client() as c:
        with pytest.raises(UnknownSyscall):
            c.call("nope")
        with pytest.raises(InvalidArguments) as info:
            c.call("noop", msg=1)
        assert info.value.details["argument"] == "msg"


def test_dead_kernel_times_out_instead_of_hanging(tmp_path):
    from clove.errors import KernelUnavailable
    from clove_sdk import CloveClient

    with CloveClient(str(tmp_path / "none.sock"), timeout=0.3) as c, pytest.raises(KernelUnavailable):
        c.noop("anyone?")


def test_connect_and_disconnect_as_the_original_sdk_without_a_with_block(kernel):
    from clove.errors import KernelUnavailable
    from clove_sdk import CloveClient

    c = CloveClient(kernel.socket, timeout=10)
    assert c.connect() is True
    first = c.hello()["session_id"]
    c.disconnect()  # ends the operator session
    with pytest.raises(KernelUnavailable, match="connect"):
        c.noop("closed")
    assert c.connect() is True
    assert c.noop("again") == "again"
    assert c.hello()["session_id"] != first  # a new connection is a new session
    c.disconnect()
