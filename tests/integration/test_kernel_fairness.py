"""The kernel's time and its replies, under attack from an agent: a syscall flood is slowed by
the rate backstop (not failed) and every caller's kernel time is measured; a value nested too
deep to encode back is refused at the door, so nobody's later reply is poisoned by it."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq

from clove import wire
from clove.testing.kernel import poll_for
from tests.conftest import agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def _nested(depth: int) -> bytes:
    """msgpack of ``{"x": [[...nil...]]}``, ``depth`` levels deep, built by hand: the SDK's own
    encoder refuses to pack beyond 511 levels, an attacker's does not."""
    return b"\x81" + msgpack.packb("x") + b"\x91" * (depth - 1) + b"\xc0"


def _raw_request(request_id: int, call: str, body_fields: list[tuple[str, bytes]]) -> list[bytes]:
    """A request whose body values are given as raw msgpack."""
    body = bytes([0x80 | len(body_fields)]) + b"".join(msgpack.packb(k) + v for k, v in body_fields)
    payload = b"\x83" + msgpack.packb("id") + msgpack.packb(request_id) + msgpack.packb("call") + msgpack.packb(call)
    payload += msgpack.packb("body") + body
    return [wire.PROTOCOL, wire.KIND_REQUEST, payload]


def test_a_value_nested_too_deep_is_refused_and_poisons_no_reply(kernel) -> None:
    with kernel.client() as victim:
        victim_id = victim.hello()["session_id"]
        ctx = zmq.Context.instance()
        attacker = ctx.socket(zmq.DEALER)
        attacker.setsockopt(zmq.LINGER, 0)
        attacker.setsockopt(zmq.RCVTIMEO, 10_000)
        attacker.connect(f"ipc://{kernel.socket}")
        try:
            for request_id, depth in enumerate((50, 1000, 1021), start=1):
                attacker.send_multipart(
                    _raw_request(request_id, "ipc.send", [("to", msgpack.packb(victim_id)), ("message", _nested(depth))])
                )
                reply = wire.decode_reply(attacker.recv_multipart())
                assert reply.id == request_id
                if depth == 50:
                    assert reply.ok, reply.error
                else:
                    assert not reply.ok and reply.error is not None and reply.error.code == "proto.malformed"
                    assert "deeper than" in reply.error.message
        finally:
            attacker.close()
        got = victim.recv_messages(max_messages=10, timeout=2.0)
    assert got["success"] and len(got["messages"]) == 1  # the accepted one, and it encodes back
    records = kernel.call("audit.query", limit=50)["entries"]
    assert sum(r.get("code") == "proto.malformed" for r in records) >= 2, "refusals are journaled"


def test_a_syscall_flood_is_slowed_not_failed_and_its_kernel_time_is_counted(make_kernel) -> None:
    k = make_kernel("[limits]\nsyscall_rate = 200.0\nsyscall_burst = 20\n")
    with k.client() as op:
        op.subscribe("AGENT_THROTTLED")
        flooder = op.spawn("flooder", agent_script("syscall_flood.py"), args=["noop"])
        poll_for(lambda: b"FLOODING" in op.logs(name="flooder")["data"], 30, message="the flood to start")

        def flooder_figures() -> dict:
            return next(f for f in k.call("kernel.info")["kernel_time"] if f.get("agent_id") == flooder["id"])

        first, t0 = flooder_figures(), time.monotonic()
        throttled = poll_for(lambda: op.poll_events(max_events=10)["events"], 15, message="AGENT_THROTTLED")
        poll_for(lambda: time.monotonic() - t0 > 3.0, 10, message="a measuring window")  # the flood runs meanwhile
        last, t1 = flooder_figures(), time.monotonic()
        rate = (last["calls"] - first["calls"]) / (t1 - t0)
        logs = op.logs(name="flooder")["data"]
        row = next(a for a in op.list_agents() if a["name"] == "flooder")
    assert throttled[0]["type"] == "AGENT_THROTTLED" and throttled[0]["data"]["name"] == "flooder"
    assert last["throttled"] >= 1 and last["kernel_time_us"] > first["kernel_time_us"]
    # 200 calls/s with a burst of 20: measured over 3 s, anything near the unthrottled rate
    # (thousands per second) would mean the backstop does not hold.
    assert rate < 200 * 1.5, f"{rate:.0f} calls/s against a limit of 200"
    assert row["state"] == "running", "slowed, not failed"
    assert b"Traceback" not in logs and b"Error" not in logs
