"""Messaging through the SDK on a real kernel: agents and operators, by id and by name."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from clove import wire
from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def _ready(c, name: str) -> None:  # noqa: ANN001
    poll_for(lambda: b"READY" in c.logs(name=name)["data"], message=f"{name} ready")


def test_agent_to_agent_by_name_then_by_id(kernel):
    with kernel.client() as op:
        echo = op.spawn("echo-agent", agent_script("msg_echo.py"), args=["echo"])
        _ready(op, "echo-agent")
        op.spawn("pinger", agent_script("msg_ping.py"), args=["echo"])
        report = read_report(kernel, "pinger")
    assert report["by_name"] == {"success": True, "delivered_to": echo["id"]}
    assert report["by_id"] == {"success": True, "delivered_to": echo["id"]}
    (r1,), (r2,) = report["reply1"], report["reply2"]
    assert (r1["from_id"], r1["from_name"], r1["message"]) == (echo["id"], "echo", {"echo": {"n": 1}, "by": "echo"})
    assert r2["message"] == {"echo": {"n": 2}, "by": "echo"} and r2["age_ms"] >= 0


def test_operator_and_agent_message_each_other(kernel):
    with kernel.client() as op:
        session = op.hello()["session_id"]
        echo = op.spawn("echo-agent", agent_script("msg_echo.py"), args=["echo"])
        _ready(op, "echo-agent")
        assert op.send_message({"q": "by id"}, to=echo["id"]) == {"success": True, "delivered_to": echo["id"]}
        assert op.send_message({"q": "by spawn name"}, to_name="echo-agent")["delivered_to"] == echo["id"]
        got: list = []
        poll_for(lambda: got.extend(op.recv_messages(timeout=2)["messages"]) or len(got) >= 2, message="two replies")
        assert [m["message"]["echo"]["q"] for m in got] == ["by id", "by spawn name"]
        assert {(m["from_id"], m["from_name"]) for m in got} == {(echo["id"], "echo")}
        # The echo agent answered to our from_id: the operator's session id.
        entries = op.get_audit_log(category="IPC", agent_id=echo["id"], limit=100)["entries"]
        sends = [e for e in entries if e["event_type"] == "ipc.send"]
        assert sends and all(e["args"]["to"] == session for e in sends)


def test_blocking_receive_wakes_on_arrival_and_times_out(kernel):
    with kernel.client() as op, kernel.client() as other:
        t = time.monotonic()
        assert op.recv_messages(timeout=0.5) == {"success": True, "messages": [], "count": 0}
        assert 0.4 < time.monotonic() - t < 3
        me = op.hello()["session_id"]
        timer = threading.Timer(0.3, lambda: other.send_message({"wake": True}, to=me))
        timer.start()
        t = time.monotonic()
        r = op.recv_messages(timeout=20)
        timer.join()
        assert r["count"] == 1 and r["messages"][0]["message"] == {"wake": True}
        assert time.monotonic() - t < 5
        # An agent blocked in recv wakes on arrival too.
        waiter = op.spawn("waiter", agent_script("msg_wait.py"), args=["20"])
        _ready(op, "waiter")
        time.sleep(0.2)  # let its receive reach the kernel (the assertion below is on its wake-up)
        assert op.send_message({"hello": "agent"}, to=waiter["id"])["success"]
        report = read_report(kernel, "waiter")
        assert report["count"] == 1 and report["messages"][0]["from_id"] == me
        assert report["elapsed"] < 10


def test_mail_sent_while_an_agent_waits_to_restart_is_kept_for_it(kernel):
    with kernel.client() as op:
        flaky = op.spawn("flaky", agent_script("msg_restart.py"), restart_policy="on-failure", max_restarts=20)
        poll_for(lambda: agent_row(kernel, "flaky")["state"] == "backoff", timeout=15, message="backoff")
        assert op.send_message({"while": "down"}, to=flaky["id"]) == {"success": True, "delivered_to": flaky["id"]}
        (message,) = read_report(kernel, "flaky")
        assert message["message"] == {"while": "down"} and agent_row(kernel, "flaky")["restarts"] >= 1


def test_unknown_and_dead_recipients_are_notfound(kernel):
    with kernel.client() as op:
        assert op.send_message({"x": 1}, to=99_999)["code"] == "notfound"
        assert op.send_message({"x": 1}, to_name="nobody")["code"] == "notfound"
        assert op.send_message({"x": 1})["code"] == "proto.invalid_args"
        dead = op.spawn("short", agent_script("exit_code.py"), args=["0"])
        poll_for(lambda: agent_row(kernel, "short")["state"] == "exited", message="exit")
        assert op.send_message({"x": 1}, to=dead["id"])["code"] == "notfound"
        assert op.send_message({"x": 1}, to_name="short")["code"] == "notfound"
        assert op.send_message({"x": "x" * (300 * 1024)}, to=op.hello()["session_id"])["code"] == "quota.exceeded"


def test_names_conflict_and_are_released_when_the_agent_exits(kernel):
    with kernel.client() as op:
        op.spawn("holder", agent_script("msg_register.py"), args=["svc", "1.5"])
        assert read_report(kernel, "holder") == {"success": True, "agent_id": agent_row(kernel, "holder")["id"], "name": "svc"}
        taken = op.register_name("svc")
        assert taken["code"] == "conflict" and taken["details"]["name"] == "svc"
        assert op.register_name("holder")["code"] == "conflict"  # a live agent's spawn name
        poll_for(lambda: agent_row(kernel, "holder")["state"] == "exited", message="holder exit")
        op.spawn("taker", agent_script("msg_register.py"), args=["svc"])
        assert read_report(kernel, "taker")["success"] is True


def test_operator_names_are_released_when_its_client_closes(kernel):
    first = kernel.client()
    with kernel.client() as second:
        assert first.register_name("console")["success"]
        assert second.register_name("console")["code"] == "conflict"
        assert second.send_message({"to": "first"}, to_name="console")["success"]
        first.close()
        assert second.register_name("console") == {"success": True, "agent_id": second.hello()["session_id"], "name": "console"}


def test_full_mailbox_refuses_and_delivers_nothing(kernel):
    with kernel.client() as op:
        idle = op.spawn("idle", agent_script("exit_code.py"), args=["0", "60"])
        for i in range(1000):
            assert op.call("ipc.send", message={"i": i}, to=idle["id"]) == {"success": True, "delivered_to": idle["id"]}
        full = op.send_message({"i": 1000}, to=idle["id"])
        assert full["code"] == "ipc.mailbox_full" and full["details"]["messages"] == 1000
        assert op.broadcast({"b": 1}) == {"success": True, "delivered_count": 0, "full": [idle["id"]]}


def test_message_received_event_goes_to_the_recipient_only(kernel):
    with kernel.client() as op, kernel.client() as bystander:
        op.subscribe(["MESSAGE_RECEIVED"])
        bystander.subscribe(["MESSAGE_RECEIVED"])
        echo = op.spawn("echo-agent", agent_script("msg_echo.py"), args=["echo"])
        _ready(op, "echo-agent")
        op.send_message({"ping": 1}, to_name="echo")
        events = op.poll_events(timeout=5)["events"]
        assert [(e["type"], e["data"], e["source_agent_id"]) for e in events] == [
            ("MESSAGE_RECEIVED", {"from_id": echo["id"], "from_name": "echo"}, echo["id"])
        ]
        assert bystander.poll_events()["events"] == []


def test_broadcast_reaches_every_live_agent(kernel):
    with kernel.client() as op:
        ids = [op.spawn(f"idle{i}", agent_script("exit_code.py"), args=["0", "60"])["id"] for i in range(3)]
        op.spawn("gone", agent_script("exit_code.py"), args=["0"])
        poll_for(lambda: agent_row(kernel, "gone")["state"] == "exited", message="exit")
        assert op.broadcast({"all": 1}) == {"success": True, "delivered_count": 3, "full": []}
        assert op.broadcast({"all": 2}, include_self=True)["delivered_count"] == 4
        assert [m["message"] for m in op.recv_messages()["messages"]] == [{"all": 2}]
        with kernel.client() as listener:  # an operator that receives gets later broadcasts
            listener.recv_messages()
            assert op.broadcast({"all": 3})["delivered_count"] == 4
            assert listener.recv_messages()["messages"][0]["message"] == {"all": 3}
        for agent_id in ids:
            assert op.kill(agent_id=agent_id)


def test_a_large_message_arrives_byte_for_byte_and_bounds_still_apply(kernel):
    """Large messages are passed on as the sender encoded them (docs/protocol.md, "Large
    values"): the receiver gets them whole, the mailbox's byte bound counts them, and one that
    does not decode is refused before anything is kept."""
    big = {"blob": "z" * 200_000, "mixed": [1, 2.5, None, b"\x00\xff", {"k": "v"}]}
    with kernel.client() as sender, kernel.client() as receiver:
        to = receiver.hello()["session_id"]
        assert sender.send_message(big, to=to) == {"success": True, "delivered_to": to}
        assert [m["message"] for m in receiver.recv_messages(timeout=5)["messages"]] == [big]
        n = 200_000  # a str32 whose last bytes are not UTF-8, laid out as the SDK lays a message out
        bad = b"\x81" + wire.pack("blob") + b"\xdb" + n.to_bytes(4, "big") + b"z" * (n - 3) + b"\xff\xfe\xfd"
        payload = wire.request_payload(5, "ipc.send", {"to": to, "message": {}})[:-1] + bad
        raw = zmq.Context.instance().socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.RCVTIMEO, 10_000)
        raw.connect(f"ipc://{kernel.socket}")
        try:
            raw.send_multipart([wire.PROTOCOL, wire.KIND_REQUEST, payload])
            refused = wire.decode_reply(raw.recv_multipart())
        finally:
            raw.close()
        assert not refused.ok and refused.error is not None and refused.error.code == "proto.malformed"
        assert receiver.recv_messages()["messages"] == [], "nothing of it was kept"
        sent = 0
        while (reply := sender.send_message(big, to=to))["success"]:
            sent += 1
        size = len(wire.pack(big))
        assert reply["code"] == "ipc.mailbox_full" and reply["details"]["limit"] == "mailbox_bytes"
        assert sent * size <= reply["details"]["max_bytes"] < (sent + 1) * size
