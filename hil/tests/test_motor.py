"""The simulated motor controller on python-can virtual buses: odometry cadence, ramps, the
out-of-range and timeout faults, and the DBC codec."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import can
import pytest

from clove.testing.kernel import poll_for
from hil.motor import (
    FAULT_OUT_OF_RANGE,
    FAULT_TIMEOUT,
    ID_COMMAND,
    ID_FAULT,
    ID_ODOMETRY,
    MotorController,
    decode_command,
    decode_fault,
    decode_odometry,
    encode_command,
    encode_fault,
    encode_odometry,
    load_dbc,
)
from hil.world import World


class Collect(can.Listener):
    """Every frame the navigator's side of the bus sees."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: list[can.Message] = []

    def on_message_received(self, msg: can.Message) -> None:
        with self.lock:
            self.frames.append(msg)

    def of(self, can_id: int, since: float = 0.0) -> list[can.Message]:
        with self.lock:
            return [m for m in self.frames if m.arbitration_id == can_id and m.timestamp >= since]


@dataclass
class Rig:
    ctl: MotorController
    nav: can.BusABC
    seen: Collect
    world: World

    def command(self, left: int, right: int) -> float:
        t = time.time()
        self.nav.send(encode_command(left, right))
        return t

    @contextlib.contextmanager
    def feeding(self, left: int, right: int, every: float = 0.1) -> Iterator[float]:
        """Command ``left``/``right`` now and every ``every`` s (so the watchdog stays quiet
        however slow the machine) until the block ends; yields when the first was sent."""
        done = threading.Event()
        first = self.command(left, right)

        def feed() -> None:
            while not done.wait(every):
                self.command(left, right)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            yield first
        finally:
            done.set()
            feeder.join(5)

    def odometry(self, since: float = 0.0) -> list[tuple[float, int, int, int]]:
        decoded = map(decode_odometry, self.seen.of(ID_ODOMETRY, since))
        return [(o.t, o.left, o.right, o.distance) for o in decoded]

    def faults(self, since: float = 0.0) -> list[tuple[int, int]]:
        return [(f.code, f.value) for f in map(decode_fault, self.seen.of(ID_FAULT, since))]


@pytest.fixture
def rig() -> Iterator[Rig]:
    channel = f"motor-{uuid.uuid4().hex}"
    ctl_bus = can.Bus(interface="virtual", channel=channel)
    nav = can.Bus(interface="virtual", channel=channel)
    seen = Collect()
    notifier = can.Notifier(nav, [seen], timeout=0.05)
    world = World()
    ctl = MotorController(ctl_bus, world).start()
    try:
        yield Rig(ctl, nav, seen, world)
    finally:
        ctl.stop()
        notifier.stop()
        nav.shutdown()
        ctl_bus.shutdown()
    assert ctl.error is None
    assert not ctl.running


def test_dbc_round_trip() -> None:
    db = load_dbc()
    assert {m.frame_id: m.name for m in db.messages} == {
        0x101: "MotorCommand",
        0x181: "Odometry",
        0x1F0: "MotorFault",
    }
    assert [m.length for m in db.messages] == [4, 8, 3]
    cmd = encode_command(-5, 2000)
    assert cmd.arbitration_id == ID_COMMAND and not cmd.is_extended_id
    assert bytes(cmd.data) == bytes.fromhex("fbffd007")  # little-endian int16s
    assert decode_command(cmd) == (-5, 2000)
    for left, right in [(0, 0), (1500, -1500), (-32768, 32767)]:
        assert decode_command(encode_command(left, right)) == (left, right)
    odo = encode_odometry(-1234, 1234, 2**32 - 1)
    assert len(odo.data) == 8
    assert bytes(odo.data[4:]) == b"\xff\xff\xff\xff"
    decoded = decode_odometry(odo)
    assert (decoded.left, decoded.right, decoded.distance) == (-1234, 1234, 2**32 - 1)
    fault = encode_fault(FAULT_OUT_OF_RANGE, -2000)
    assert bytes(fault.data) == bytes([1]) + (-2000).to_bytes(2, "little", signed=True)
    assert (decode_fault(fault).code, decode_fault(fault).value) == (1, -2000)
    with pytest.raises(ValueError, match="not a 0x101"):
        decode_command(odo)
    with pytest.raises(ValueError, match="malformed"):
        decode_command(can.Message(arbitration_id=ID_COMMAND, data=b"\x01", is_extended_id=False))


def test_odometry_every_period(rig: Rig) -> None:
    since = time.time()
    poll_for(lambda: len(rig.odometry(since)) >= 40, 5.0, message="40 odometry frames")
    stamps = [t for t, *_ in rig.odometry(since)]
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    median = gaps[len(gaps) // 2]
    mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert 0.015 < median < 0.025, gaps
    assert 0.015 < mean < 0.03, gaps  # a fixed schedule: no cumulative drift
    # At rest: zero speeds, nothing travelled, no faults (the watchdog is not armed yet).
    assert {(left, right, dist) for _, left, right, dist in rig.odometry(since)} == {(0, 0, 0)}
    assert rig.faults() == []


def test_command_ramps_the_speeds(rig: Rig) -> None:
    with rig.feeding(900, 450) as since:
        poll_for(lambda: rig.ctl.speeds == (900, 450), 3.0, message="the wheels at the commanded speed")
        assert rig.ctl.first_command_after(since) is not None
        cmd = rig.ctl.wait_for_command(lambda c: c.left == 900, 1.0, after=since)
        assert (cmd.right, cmd.valid) == (450, True)
        poll_for(lambda: any(o[1] == 900 for o in rig.odometry(since)), 2.0, message="odometry at 900 mm/s")
        poll_for(lambda: rig.odometry(since)[-1][3] > 50, 2.0, message="distance travelled")
        assert rig.faults() == []  # kept commanded: no fault
        odo = rig.odometry(since)
    lefts = [left for _, left, _, _ in odo]
    # A ramp, not a step: several intermediate values, never more than the acceleration allows.
    intermediate = [v for v in lefts if 0 < v < 900]
    assert len(intermediate) >= 5, lefts
    assert lefts == sorted(lefts)
    for (t0, l0, _, _), (t1, l1, _, _) in zip(odo, odo[1:], strict=False):
        assert l1 - l0 <= 3000 * (t1 - t0) + 80, (l0, l1, t1 - t0)
    # Distance grew; the world moved forward and turned right (left wheel faster).
    pose = rig.world.pose()
    assert pose.x > 0.02 and pose.heading < 0 and pose.odometer > 0
    lat, lon = rig.world.to_latlon()
    assert lon > rig.world.origin_lon


def test_out_of_range_faults_and_stops(rig: Rig) -> None:
    with rig.feeding(300, 300):
        poll_for(lambda: rig.ctl.speeds == (300, 300), 3.0, message="the wheels at 300 mm/s")
    since = rig.command(300, 1501)
    poll_for(lambda: rig.faults(since), 2.0, message="a fault frame")
    assert rig.faults(since)[0] == (FAULT_OUT_OF_RANGE, 1501)  # (a timeout may follow 0.5 s later)
    assert rig.ctl.target == (0, 0)
    poll_for(lambda: rig.ctl.stopped, 2.0, message="the motors stopped")
    stopped_at = rig.ctl.first_stopped_after(since)
    assert stopped_at is not None and stopped_at - since < 0.5  # 300 mm/s at 3000 mm/s²: 0.1 s
    bad = rig.ctl.first_command_after(since, lambda c: not c.valid)
    assert bad is not None and (bad.left, bad.right) == (300, 1501)
    # A negative one reports the negative speed; a valid command resumes.
    since = rig.command(-1600, 0)
    poll_for(lambda: rig.faults(since), 2.0, message="a second fault frame")
    assert rig.faults(since)[0] == (FAULT_OUT_OF_RANGE, -1600)
    with rig.feeding(-1500, 1500):
        poll_for(lambda: rig.ctl.speeds == (-1500, 1500), 3.0, message="the wheels at the limit")
    assert [f for f in rig.faults() if f[0] == FAULT_OUT_OF_RANGE] == [(1, 1501), (1, -1600)]


def test_timeout_stops_once(rig: Rig) -> None:
    sent = rig.command(400, 400)
    poll_for(lambda: rig.faults(sent), 3.0, message="the timeout fault")
    fault_frames = rig.seen.of(ID_FAULT, sent)
    assert rig.faults(sent) == [(FAULT_TIMEOUT, 0)]
    elapsed = fault_frames[0].timestamp - sent
    assert 0.5 <= elapsed < 1.0, elapsed  # 0.5 s, detected on the next 20 ms tick
    poll_for(lambda: rig.ctl.stopped, 2.0, message="the motors stopped")
    # Once per episode: 40 more ticks (0.8 s) without a command raise nothing more.
    ticks = rig.ctl.ticks
    poll_for(lambda: rig.ctl.ticks >= ticks + 40, 5.0, message="40 more ticks")
    assert rig.faults(sent) == [(FAULT_TIMEOUT, 0)]
    assert len(rig.ctl.faults_since(sent)) == 1
    # A new command re-arms the watchdog: a second episode, a second fault.
    again = rig.command(100, 100)
    poll_for(lambda: rig.faults(again), 3.0, message="the second timeout fault")
    assert rig.faults(sent) == [(FAULT_TIMEOUT, 0), (FAULT_TIMEOUT, 0)]


def test_commands_keep_the_watchdog_quiet(rig: Rig) -> None:
    # Commands every 100 ms for 50 ticks (1 s, twice the timeout): no timeout fault.
    ticks = rig.ctl.ticks
    with rig.feeding(200, 200) as since:
        poll_for(lambda: rig.ctl.ticks >= ticks + 50, 5.0, message="50 ticks")
        assert rig.faults(since) == []
        assert rig.ctl.speeds == (200, 200)
    assert len(rig.ctl.commands_since(since)) >= 8
    assert all(c.valid and (c.left, c.right) == (200, 200) for c in rig.ctl.commands_since(since))
    assert all(f.message.arbitration_id == ID_COMMAND for f in rig.ctl.frames_since(since))


def test_start_stop_idempotent() -> None:
    bus = can.Bus(interface="virtual", channel=f"motor-{uuid.uuid4().hex}")
    try:
        ctl = MotorController(bus, period=0.01)
        ctl.stop()  # never started
        ctl.start()
        ctl.start()
        poll_for(lambda: ctl.ticks >= 3, 2.0, message="ticks")
        threads = [t for t in threading.enumerate() if t.name == "hil-motor-controller"]
        assert len(threads) == 1
        ctl.stop()
        ctl.stop()
        assert not ctl.running and not threads[0].is_alive()
        ticks = ctl.ticks
        with ctl:  # restartable
            poll_for(lambda: ctl.ticks > ticks, 2.0, message="ticks after a restart")
        assert not ctl.running and ctl.error is None
        assert len(ctl.speed_history()) == ctl.ticks
    finally:
        bus.shutdown()


def test_over_simbus_with_bus_off(tmp_path: Path) -> None:
    """The same controller on the HIL bench's cross-process bus; bus-off is survived."""
    simbus = pytest.importorskip("hil.simbus")
    with simbus.SimBusHub("rover", simbus_dir=tmp_path).start() as hub:
        ctl_bus = simbus.SimBus(channel="rover", simbus_dir=tmp_path)
        nav = simbus.SimBus(channel="rover", simbus_dir=tmp_path)
        ctl = MotorController(ctl_bus).start()
        try:
            nav.send(encode_command(250, -250))
            poll_for(lambda: ctl.speeds == (250, -250), 3.0, message="the commanded speeds")

            def odometry_at_speed() -> bool:
                msg = nav.recv(timeout=0.05)
                if msg is None or msg.arbitration_id != ID_ODOMETRY:
                    return False
                return decode_odometry(msg).left == 250

            poll_for(odometry_at_speed, 3.0, interval=0, message="odometry over simbus")
            hub.set_faults(bus_off=True)
            poll_for(lambda: ctl.send_errors > 0, 3.0, message="sends failing while bus-off")
            assert ctl.running
            hub.clear_faults()
            cleared = time.time()

            def fresh_odometry() -> bool:
                msg = nav.recv(timeout=0.05)
                return msg is not None and msg.arbitration_id == ID_ODOMETRY and msg.timestamp > cleared + 0.1

            poll_for(fresh_odometry, 3.0, interval=0, message="odometry after the bus recovered")
            errors, ticks = ctl.send_errors, ctl.ticks
            poll_for(lambda: ctl.ticks >= ticks + 10, 3.0, message="10 more ticks")
            assert ctl.send_errors == errors
        finally:
            ctl.stop()
            nav.shutdown()
            ctl_bus.shutdown()
    assert ctl.error is None
