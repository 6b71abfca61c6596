"""CAN through the kernel: a real driver host on python-can's ``virtual`` interface (the host
echoes its own sends, so what an agent sends shows on the stream), agents with grants."""

from __future__ import annotations

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

BUS = """
[devices.bus]
driver = "can"
interface = "virtual"
channel = "{channel}"
receive_own_messages = true
"""
GRANT = {"ops": ["send", "recv"], "send_ids": ["0x100-0x10F"], "recv_ids": ["0x100-0x10F", "0x180-0x18F"]}


@pytest.fixture
def bus_kernel(make_kernel, request):  # noqa: ANN001, ANN201
    k = make_kernel(BUS.format(channel=f"t{id(request)}"))
    poll_for(lambda: k.call("device.info", device="bus")["device"]["state"] == "ready", 20, message="bus ready")
    return k


def _ready(op, name: str) -> None:  # noqa: ANN001
    poll_for(lambda: b"READY" in op.logs(name=name)["data"], 15, message=f"{name} ready")


def _finish(op) -> None:  # noqa: ANN001
    bus = op.device("bus")
    for can_id in (0x185, 0x200, 0x7FF):  # one inside recv_ids, two outside
        bus.send(id=can_id, data=b"\x00")
    bus.send(id=0x186, data=b"end")


def test_sdk_agent_sends_within_its_ids_and_receives_only_granted_ids(bus_kernel):
    with bus_kernel.client() as op:
        op.subscribe(["SYSCALL_BLOCKED"])
        op.spawn("nav", agent_script("can_user.py"), args=["sdk"], devices={"bus": GRANT})
        _ready(op, "nav")
        poll_for(lambda: op.device("bus").info()["counters"]["calls"] >= 1, message="the agent's send")
        _finish(op)
        report = read_report(bus_kernel, "nav")
        blocked = op.poll_events(max_events=20, timeout=5)["events"]
        denials = [e for e in op.get_audit_log(category="SECURITY", limit=50)["entries"] if e["agent_name"] == "nav"]
    assert report["allowed"] == {"sent": True} or report["allowed"]["sent"] is True
    assert report["denied"] == "perm.denied"
    assert report["ids"] == [0x101, 0x185, 0x186]  # its own echo and the granted ids only
    assert any(e["data"].get("can_id") == 0x200 for e in blocked)
    assert denials and denials[0]["syscall"] == "device.call" and denials[0]["args"]["args"]["id"] == 0x200


def test_existing_python_can_code_runs_through_the_clove_interface(bus_kernel):
    with bus_kernel.client() as op:
        op.spawn("legacy", agent_script("can_user.py"), args=["pycan"], devices={"bus": GRANT})
        _ready(op, "legacy")
        poll_for(lambda: op.device("bus").info()["counters"]["calls"] >= 1, message="the agent's send")
        _finish(op)
        report = read_report(bus_kernel, "legacy")
    assert "0x300" in report["denied"] or "768" in report["denied"]
    assert report["ids"] == [0x102, 0x185, 0x186]


def test_send_rate_limit_and_an_agent_without_a_grant(bus_kernel):
    with bus_kernel.client() as op:
        op.spawn("limited", agent_script("can_user.py"), args=["burst"], devices={"bus": {**GRANT, "max_send_rate_hz": 5}})
        op.spawn("nogrant", agent_script("can_user.py"), args=["nogrant"])
        limited, nogrant = read_report(bus_kernel, "limited"), read_report(bus_kernel, "nogrant")
    assert limited["listed"] == ["bus"] and limited["recv"] == "ok"
    assert 1 <= limited["send"]["ok"] <= 10 and limited["send"]["quota.exceeded"] >= 40
    assert nogrant == {"listed": [], "send": {"perm.denied": 1}, "recv": "perm.denied"}


def _status(op) -> dict:  # noqa: ANN001
    return op.device("bus").call("status")


def test_the_host_receives_only_what_its_listeners_grants_admit(bus_kernel):
    with bus_kernel.client() as op:
        bus = op.device("bus")
        poll_for(lambda: _status(op)["rx_filters"] == 0, message="no filter pairs while nobody listens")
        bus.send(id=0x185, data=b"\x00")  # the host's own echo: nobody listens, so it stops there
        poll_for(lambda: _status(op)["frames_filtered"] == 1, message="the unheard frame filtered")
        op.spawn("nav", agent_script("can_user.py"), args=["sdk"], devices={"bus": GRANT})
        _ready(op, "nav")  # printed once its subscribe was answered: the filter is in place by then
        status = _status(op)
        assert (status["rx_filters"], status["rx_filter_in"]) == (1, "host")  # 0x100-0x10F + 0x180-0x18F: one pair
        poll_for(lambda: _status(op)["frames_out"] >= 2, message="the agent's send")  # after ours of 0x185
        _finish(op)
        report = read_report(bus_kernel, "nav")
        assert report["ids"] == [0x101, 0x185, 0x186]  # what it got without the filter
        poll_for(lambda: _status(op)["rx_filters"] == 0, message="nothing again once the agent exited")
        assert _status(op)["frames_filtered"] == 1 + 2  # 0x200 and 0x7FF never left the host


def test_an_operator_listening_lifts_the_filter(bus_kernel):
    with bus_kernel.client() as op:
        bus = op.device("bus")
        poll_for(lambda: _status(op)["rx_filters"] == 0, message="no filter pairs while nobody listens")
        bus.subscribe()
        assert _status(op)["rx_filters"] is None
        bus.send(id=0x3AB, data=b"\x01")
        got: list = []
        poll_for(lambda: got.extend(bus.recv(timeout=0.5)) or any(f["id"] == 0x3AB for f in got), message="the frame")
        bus.unsubscribe()
        poll_for(lambda: _status(op)["rx_filters"] == 0, message="nothing again once the operator left")
