"""The Linux simulators' parts that need no Linux device: a lossy node on python-can's virtual
bus. The devices themselves run in the test guest (tests/guest/test_rover_linux.py)."""

from __future__ import annotations

import random

import can

from hil.linuxsims import LossyNode


def test_a_lossy_node_loses_its_share_both_ways_and_none_when_the_fault_ends():
    share = [1.0]
    with can.Bus(interface="virtual", channel="lossy-test") as peer:
        node = LossyNode(
            can.Bus(interface="virtual", channel="lossy-test"), lambda: share[0], random.Random(1)
        )
        try:
            node.send(can.Message(arbitration_id=0x181, data=b"\x01"))
            peer.send(can.Message(arbitration_id=0x101, data=b"\x02"))
            assert peer.recv(timeout=0.05) is None and node.recv(timeout=0.05) is None
            assert node.dropped == 2
            share[0] = 0.0
            node.send(can.Message(arbitration_id=0x181, data=b"\x03"))
            peer.send(can.Message(arbitration_id=0x101, data=b"\x04"))
            got, sent = peer.recv(timeout=1), node.recv(timeout=1)
            assert got is not None and bytes(got.data) == b"\x03"
            assert sent is not None and bytes(sent.data) == b"\x04"
        finally:
            node.shutdown()


def test_a_lossy_node_loses_about_its_share():
    with can.Bus(interface="virtual", channel="lossy-share") as peer:
        node = LossyNode(can.Bus(interface="virtual", channel="lossy-share"), lambda: 0.3, random.Random(7))
        try:
            for i in range(1000):
                node.send(can.Message(arbitration_id=0x181, data=bytes([i % 256])))
            arrived = 0
            while peer.recv(timeout=0.01) is not None:
                arrived += 1
        finally:
            node.shutdown()
    assert 620 <= arrived <= 780, arrived
    assert node.dropped == 1000 - arrived


def test_device_restarts_count_from_the_benchs_start_not_a_slow_start_up():
    from hil.assertions import RunRecord, check
    from hil.bench import AssertionSpec

    spec = AssertionSpec(0, "device_restarts", "rode out", {"device": "gps", "min": 0, "max": 0})
    record = RunRecord(devices=[{"name": "gps", "state": "ready", "restarts": 3}], device_restarts_at_start={"gps": 3})
    outcome = check(spec, record)
    assert outcome.passed and outcome.measured == 0 and "3 restart(s) while starting" in outcome.detail
    record.devices[0]["restarts"] = 4  # one during the run
    assert not check(spec, record).passed
