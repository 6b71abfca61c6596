"""Device calls in flight on a real kernel and real driver hosts: a caller that pipelines (a raw
DEALER sends its next ``device.call`` before the last reply is back) is bounded per device, and
the exchange host takes further orders while earlier ones wait for their commit, keeping every
acknowledged order across a SIGKILL in the middle of a pipelined burst."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from clove import wire
from clove.kernel.services.devices.calls import MAX_CALLS_PER_CALLER
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import requires_root

pytestmark = [pytest.mark.integration, requires_root]

LOOP = """
[devices.loop]
driver = "loopback"
call_timeout = 5
"""


class Raw:
    """A raw DEALER on the control socket: requests go out without waiting for replies."""

    def __init__(self, k: KernelProcess) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"ipc://{k.socket}")

    def send(self, request_id: int, call: str, **body: Any) -> None:
        self.sock.send_multipart(wire.encode_request(request_id, call, body))

    def replies(self, n: int, timeout_ms: int = 20_000) -> list[wire.Reply]:
        got: list[wire.Reply] = []
        while len(got) < n:
            assert self.sock.poll(timeout_ms), f"only {len(got)} of {n} replies"
            got.append(wire.decode_reply(self.sock.recv_multipart()))
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_loop(make_kernel: Any) -> Iterator[tuple[KernelProcess, Raw]]:
    k = make_kernel(LOOP)
    poll_for(lambda: k.call("device.info", device="loop")["device"]["state"] == "ready", 20, message="loop ready")
    raw = Raw(k)
    yield k, raw
    raw.close()


def test_a_pipelining_caller_past_its_bound_is_refused_and_others_are_not(raw_loop: tuple[KernelProcess, Raw]) -> None:
    k, raw = raw_loop
    extra = 9
    raw.send(0, "device.call", device="loop", op="hang", args={"seconds": 2.0})  # holds the host
    for i in range(1, MAX_CALLS_PER_CALLER + extra):
        raw.send(i, "device.call", device="loop", op="write", args={"tag": "t", "data": i})
    refused = raw.replies(extra, timeout_ms=1500)  # at once: the host is still hanging
    assert sorted(int(r.id or 0) for r in refused) == list(range(MAX_CALLS_PER_CALLER, MAX_CALLS_PER_CALLER + extra))
    for reply in refused:
        assert not reply.ok and reply.error is not None and reply.error.code == "quota.exceeded"
        assert reply.error.details["in_flight"] == MAX_CALLS_PER_CALLER == reply.error.details["max_in_flight"]
    assert k.call("kernel.info")["resources"]["device_calls_in_flight"] == MAX_CALLS_PER_CALLER
    with k.client() as other:  # another caller is not held to this one's bound
        assert other.device("loop").write(tag="t", data="other")["written"] == 1
    admitted = raw.replies(MAX_CALLS_PER_CALLER)
    assert [r.id for r in admitted] == list(range(MAX_CALLS_PER_CALLER))  # in call order
    assert all(r.ok for r in admitted)
    seqs = [r.result["result"]["seq"] for r in admitted[1:]]
    assert seqs == sorted(seqs)  # run in the order they arrived
    raw.send(99, "device.call", device="loop", op="write", args={"tag": "t"})  # the bound is free again
    assert raw.replies(1)[0].ok
    denied = k.call("device.info", device="loop")["device"]["counters"]["denied"]
    assert denied == extra


# ---- the exchange: pipelined orders share commits and survive a SIGKILL of the host -------------

venue_module = pytest.importorskip("hil.exchange.venue")

EXCHANGE = """
[devices.exchange]
driver = "exchange"
port = {port}
sender_comp_id = "CLOVE"
target_comp_id = "VENUE"
username = "CLOVE"
password = "secret"
symbols = ["ACME"]
heartbeat_s = 2
cancel_on_disconnect = false
fsync = true
backoff_initial = 0.1
backoff_max = 0.5
risk = {{ max_order_qty = 1000, max_notional = 100000000, max_open_orders = 100000, order_rate_per_s = 100000 }}
"""


@pytest.fixture
def venue() -> Iterator[Any]:
    v = venue_module.SimVenue(seed=7, liquidity=False, credentials={"CLOVE": "secret"}).start()
    v.set_reference("ACME", 100.0)
    yield v
    v.stop()


def _order(i: int) -> dict[str, Any]:
    return {"symbol": "ACME", "side": "buy", "qty": 1 + i // 100, "price": round(95.0 + (i % 100) * 0.01, 2), "client_id": f"p-{i}"}


def test_pipelined_orders_are_acknowledged_in_order_and_share_commits(make_kernel: Any, venue: Any) -> None:
    k = make_kernel(EXCHANGE.format(port=venue.port))
    poll_for(lambda: k.call("device.info", device="exchange")["device"]["state"] == "ready", 20, message="exchange ready")
    raw = Raw(k)
    try:
        n = 200
        for i in range(n):  # the kernel admits 32 at a time per caller: keep within it
            if i >= 16:
                assert raw.replies(1)[0].ok
            raw.send(i, "device.call", device="exchange", op="submit_order", args=_order(i))
        raw.replies(16)
    finally:
        raw.close()
    with k.client() as op:
        status = op.device("exchange").call("status")
    assert status["counters"]["orders"] == n
    commit = status["commit"]
    assert commit["commits"] < commit["records"]  # replies did not each wait for a commit of their own


def test_a_host_killed_mid_pipelined_burst_keeps_every_acknowledged_order(make_kernel: Any, venue: Any) -> None:
    k = make_kernel(EXCHANGE.format(port=venue.port))
    poll_for(lambda: k.call("device.info", device="exchange")["device"]["state"] == "ready", 20, message="exchange ready")
    state = k.state_dir / "devices" / "exchange" / "state"
    raw = Raw(k)
    acked: list[str] = []
    failed: dict[str, int] = {}
    window, sent, answered, killed = 16, 0, 0, False
    with k.client() as op:
        before = op.device("exchange").info()
        while answered < sent or not killed:
            while not killed and sent - answered < window:
                raw.send(sent, "device.call", device="exchange", op="submit_order", args=_order(sent))
                sent += 1
            reply = raw.replies(1)[0]
            answered += 1
            if reply.ok:
                acked.append(reply.result["result"]["client_id"])
            else:
                assert reply.error is not None
                failed[reply.error.code] = failed.get(reply.error.code, 0) + 1
            if not killed and len(acked) >= 100:
                os.kill(before["host_pid"], signal.SIGKILL)  # orders are in flight in the host right now
                killed = True
        raw.close()
        assert answered == sent  # every request got exactly one reply
        assert set(failed) <= {"device.broken", "device.unavailable"}, failed
        poll_for(lambda: (d := op.device("exchange").info())["state"] == "ready" and d["incarnation"] > before["incarnation"], 20, message="the host back")
        records = [json.loads(line) for line in (state / "orders.jsonl").read_text().splitlines()]
        assert [r["n"] for r in records] == list(range(1, len(records) + 1)), "journal records lost or reordered"
        journaled = {r["client_id"] for r in records if r["kind"] == "order"}
        assert set(acked) <= journaled, f"acknowledged but not journaled: {sorted(set(acked) - journaled)}"
        stored = [json.loads(line) for line in (state / "fix-session.json").read_text().splitlines()]
        in_store = {field[3:] for r in stored if "m" in r for field in r["raw"].split("\x01") if field.startswith("11=")}
        assert set(acked) <= in_store, f"acknowledged but not in the FIX store: {sorted(set(acked) - in_store)}"
        ex = op.device("exchange")
        poll_for(lambda: venue.session("CLOVE").next_target_seq == ex.call("status")["next_out_seq"], 10, message="the venue caught up")
        at_venue = {o.cl_ord_id for o in venue.orders("CLOVE")}
        assert set(acked) <= at_venue, f"acknowledged but never reached the venue: {sorted(set(acked) - at_venue)}"
