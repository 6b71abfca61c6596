"""SocketCAN for real: the ``can`` driver on python-can's ``socketcan`` interface over a ``vcan``
interface, checked against can-utils' ``cansend`` and ``candump``, peers nobody here wrote."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import time
from collections.abc import Iterator

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report
from tests.guest.support import SLOW, guest_only, record_figure

pytestmark = [guest_only]

_names = itertools.count()
BUS = """
[devices.bus]
driver = "can"
interface = "socketcan"
channel = "{channel}"
receive_own_messages = true
"""
GRANT = {"ops": ["send", "recv"], "send_ids": ["0x100-0x10F"], "recv_ids": ["0x100-0x10F", "0x180-0x18F"]}
NARROW = {"ops": ["send", "recv"], "send_ids": ["0x100-0x10F"], "recv_ids": ["0x180-0x18F"]}


@pytest.fixture
def vcan() -> Iterator[str]:
    name = f"vcan{next(_names)}"
    subprocess.run(["modprobe", "-a", "vcan", "can_raw"], check=True)
    subprocess.run(["ip", "link", "add", name, "type", "vcan"], check=True)
    subprocess.run(["ip", "link", "set", "up", name], check=True)
    yield name
    subprocess.run(["ip", "link", "del", name], check=False)


@pytest.fixture
def candump(vcan: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(["candump", "-L", vcan], stdout=subprocess.PIPE, text=True)
    yield proc
    proc.kill()
    proc.wait()


def dumped_ids(proc: subprocess.Popen[str]) -> list[int]:
    """The ids candump saw (it is stopped to read them all): lines ``(t) vcanN 101#0102``."""
    proc.terminate()
    out, _ = proc.communicate(timeout=10 * SLOW)
    return [int(line.split()[2].split("#")[0], 16) for line in out.splitlines() if "#" in line]


def cansend(channel: str, frame: str) -> None:
    subprocess.run(["cansend", channel, frame], check=True)


def test_cansend_frames_reach_exactly_the_granted_agents_and_candump_sees_theirs(service_kernel, vcan, candump):
    k = service_kernel(BUS.format(channel=vcan))
    poll_for(lambda: k.call("device.info", device="bus")["device"]["state"] == "ready", 30 * SLOW, message="bus ready")
    with k.client(timeout=30 * SLOW) as op:
        op.spawn("wide", agent_script("can_user.py"), args=["sdk"], devices={"bus": GRANT})
        op.spawn("narrow", agent_script("can_user.py"), args=["sdk"], devices={"bus": NARROW})
        for name in ("wide", "narrow"):
            poll_for(lambda n=name: b"READY" in op.logs(name=n)["data"], 30 * SLOW, message=f"{name} ready")
        poll_for(lambda: op.device("bus").info()["counters"]["calls"] >= 2, 30 * SLOW, message="both agents' sends")
        for frame in ("185#00", "200#00", "7FF#00", "186#656E64"):  # 0x186 carries b"end"
            cansend(vcan, frame)
        wide, narrow = read_report(k, "wide", 60 * SLOW), read_report(k, "narrow", 60 * SLOW)
    on_the_wire = dumped_ids(candump)
    assert wide["denied"] == narrow["denied"] == "perm.denied"
    assert sorted(wide["ids"]) == [0x101, 0x101, 0x185, 0x186]  # both agents' sends, then the granted peers' frames
    assert narrow["ids"] == [0x185, 0x186]
    assert on_the_wire.count(0x101) == 2, on_the_wire  # each agent's frame, sent on the real interface
    assert 0x200 in on_the_wire and on_the_wire.count(0x200) == 1, "only cansend's 0x200; the agents' were refused"


def test_frames_no_grant_admits_never_reach_the_driver_host(service_kernel, vcan, candump):
    k = service_kernel(BUS.format(channel=vcan))
    poll_for(lambda: k.call("device.info", device="bus")["device"]["state"] == "ready", 30 * SLOW, message="bus ready")
    with k.client(timeout=30 * SLOW) as op:
        bus = op.device("bus")
        op.spawn("narrow", agent_script("can_user.py"), args=["sdk"], devices={"bus": NARROW})
        poll_for(lambda: b"READY" in op.logs(name="narrow")["data"], 30 * SLOW, message="narrow ready")
        status = bus.call("status")  # READY comes after the subscribe's answer: the filter is in the socket
        assert (status["rx_filters"], status["rx_filter_in"]) == (1, "socket")
        poll_for(lambda: bus.call("status")["frames_out"] >= 1, 30 * SLOW, message="the agent's send")
        before = bus.call("status")
        for frame in ("200#00", "7FF#00", "12345678#00", "185#00", "186#656E64"):
            cansend(vcan, frame)
        narrow = read_report(k, "narrow", 60 * SLOW)
        after = bus.call("status")
    on_the_wire = dumped_ids(candump)
    assert narrow["ids"] == [0x185, 0x186]
    assert {0x200, 0x7FF, 0x12345678} <= set(on_the_wire), on_the_wire
    # The host read the two granted frames and nothing else: Linux dropped the rest (its own
    # echo of the agent's 0x101 too), so the host had nothing to filter itself.
    assert after["items_in"] - before["items_in"] == 2, (before, after)
    assert after["frames_filtered"] == 0


def test_mediated_send_round_trip_against_bare_python_can(service_kernel, vcan):
    import can

    k = service_kernel(BUS.format(channel=vcan))
    poll_for(lambda: k.call("device.info", device="bus")["device"]["state"] == "ready", 30 * SLOW, message="bus ready")
    rounds = 200
    with can.Bus(interface="socketcan", channel=vcan) as bare:
        msg = can.Message(arbitration_id=0x101, data=b"\x01", is_extended_id=False)
        bare_times = []
        for _ in range(rounds):
            t = time.perf_counter()
            bare.send(msg)
            bare_times.append(time.perf_counter() - t)
    with k.client(timeout=30 * SLOW) as op:
        bus = op.device("bus")
        mediated = []
        for _ in range(rounds):
            t = time.perf_counter()
            bus.send(id=0x101, data=b"\x01")
            mediated.append(time.perf_counter() - t)
    p50_bare, p50_med = statistics.median(bare_times), statistics.median(mediated)
    record_figure("socketcan send p50 bare python-can (us)", round(p50_bare * 1e6, 1))
    record_figure("socketcan send p50 mediated (us)", round(p50_med * 1e6, 1))
    record_figure("socketcan send p99 mediated (us)", round(sorted(mediated)[int(rounds * 0.99)] * 1e6, 1))
    assert p50_med > 0 and p50_bare > 0
