"""The simulated CAN bus: real hubs (threads and processes), real nodes in other processes, real ipc.

Run: ``.venv/bin/python -m pytest -q hil/tests``. ``-s`` shows the throughput report
(``SIMBUS_BENCH_FRAMES`` sets its frame count).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import can
import pytest
import zmq

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # pytest puts hil/tests on the path, not the repository
    sys.path.insert(0, str(ROOT))

from hil.simbus import (  # noqa: E402
    CAN_ERR_BUSERROR,
    CAN_ERR_BUSOFF,
    CAN_ERR_CRTL,
    CAN_ERR_PROT,
    CAN_ERR_RESTARTED,
    SimBus,
    SimBusControl,
    SimBusError,
    SimBusHub,
    simbus_paths,
)

CHANNEL = "rover"


# ---- helpers ------------------------------------------------------------------------------------


def wait_until(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class Proc:
    """A child process whose stdout lines and stderr are collected by threads."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        threading.Thread(target=self._pump, args=(self.popen.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(stream: object, sink: Callable[[str], None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink(line.rstrip("\n"))

    def line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output from pid {self.popen.pid} in {timeout} s; stderr:\n" + "\n".join(self.stderr)
            ) from None

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        line = self.line(timeout)
        stderr = "\n".join(self.stderr)
        assert line.startswith(prefix), f"expected {prefix!r}, got {line!r}; stderr:\n{stderr}"
        return line

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()  # only ever the pid this test started
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def python(code: str, *args: str) -> Proc:
    return Proc([sys.executable, "-c", code, *args])


@pytest.fixture
def simdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="simbus-")  # short: Unix socket paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hub(simdir: str) -> Iterator[SimBusHub]:
    h = SimBusHub(CHANNEL, simdir, seed=1).start()
    yield h
    h.stop()


@pytest.fixture
def nodes(simdir: str) -> Iterator[Callable[..., SimBus]]:
    opened: list[SimBus] = []

    def node(**kwargs: Any) -> SimBus:
        bus = SimBus(channel=CHANNEL, simbus_dir=simdir, **kwargs)
        opened.append(bus)
        return bus

    yield node
    for bus in opened:
        bus.shutdown()


def frame(i: int, arbitration_id: int = 0x100) -> can.Message:
    return can.Message(arbitration_id=arbitration_id, data=struct.pack("<I", i), is_extended_id=False)


def recv_all(bus: SimBus, until_id: int, timeout: float = 5.0) -> list[can.Message]:
    """Frames received up to and excluding the first with ``until_id``."""
    got: list[can.Message] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = bus.recv(max(0.0, deadline - time.monotonic()))
        assert msg is not None, f"marker {until_id:#x} not received; got {len(got)} frames"
        if msg.arbitration_id == until_id and not msg.is_error_frame:
            return got
        got.append(msg)


ECHO = r"""
import sys, can
from hil.simbus import SimBus
bus = SimBus(channel=sys.argv[1], simbus_dir=sys.argv[2], fd=True)
print("ready", flush=True)
try:
    while True:
        msg = bus.recv(10)
        if msg is None:
            print("timeout", flush=True)
            break
        if msg.arbitration_id == 0x7FF:
            break
        print("rx", msg.arbitration_id, repr(msg.timestamp), bytes(msg.data).hex(), flush=True)
        bus.send(can.Message(arbitration_id=msg.arbitration_id + 1, is_extended_id=msg.is_extended_id,
                             is_remote_frame=msg.is_remote_frame, is_fd=msg.is_fd, dlc=msg.dlc,
                             bitrate_switch=msg.bitrate_switch, data=bytes(msg.data)[::-1]))
finally:
    bus.shutdown()
print("done", flush=True)
"""

RECEIVER = r"""
import json, sys, time
from hil.simbus import SimBus
bus = SimBus(channel=sys.argv[1], simbus_dir=sys.argv[2])
n = int(sys.argv[3])
print("ready", flush=True)
count, in_order, first = 0, True, None
while count < n:
    msg = bus.recv(5)
    if msg is None:
        break
    if int.from_bytes(msg.data[:4], "little") != count:
        in_order = False
    if first is None:
        first = time.time()
    count += 1
print(json.dumps({"count": count, "in_order": in_order, "first": first, "last": time.time()}), flush=True)
bus.shutdown()
"""


# ---- nodes in different processes ---------------------------------------------------------------


def test_two_processes_exchange_frames_both_ways(
    hub: SimBusHub, simdir: str, nodes: Callable[..., SimBus]
) -> None:
    peer = python(ECHO, CHANNEL, simdir)
    try:
        peer.expect("ready")
        bus = nodes(fd=True)
        sent = [
            can.Message(arbitration_id=0x10, data=b"\x01\x02\x03", is_extended_id=False),
            can.Message(arbitration_id=0x1ABCDE0, data=b"ext", is_extended_id=True),
            can.Message(arbitration_id=0x20, is_remote_frame=True, dlc=4, is_extended_id=False),
            can.Message(arbitration_id=0x30, data=bytes(range(64)), is_fd=True, bitrate_switch=True,
                        is_extended_id=False),
        ]
        for msg in sent:
            before = time.time()
            bus.send(msg)
            after = time.time()
            _, arb, ts, data = peer.expect("rx").split(" ")
            assert int(arb) == msg.arbitration_id
            assert bytes.fromhex(data) == bytes(msg.data)
            assert before <= float(ts) <= after  # stamped by send, carried unchanged
            echo = bus.recv(5)
            assert echo is not None
            assert echo.arbitration_id == msg.arbitration_id + 1
            assert echo.is_extended_id == msg.is_extended_id
            assert echo.is_remote_frame == msg.is_remote_frame
            assert echo.dlc == msg.dlc
            assert echo.is_fd == msg.is_fd
            assert echo.bitrate_switch == msg.bitrate_switch
            assert bytes(echo.data) == bytes(msg.data)[::-1]
            assert echo.channel == CHANNEL
            assert echo.is_rx
            assert float(ts) <= echo.timestamp <= time.time()  # stamped by the peer's send
        bus.send(can.Message(arbitration_id=0x7FF, is_extended_id=False))
        peer.expect("done")
        assert peer.popen.wait(5) == 0
    finally:
        peer.stop()


def test_own_frames_only_with_receive_own_messages(hub: SimBusHub, nodes: Callable[..., SimBus]) -> None:
    a, b, c = nodes(), nodes(receive_own_messages=True), nodes()
    a.send(frame(1, 0x101))
    for other in (b, c):
        msg = other.recv(5)
        assert msg is not None
        assert msg.arbitration_id == 0x101
    c.send(frame(2, 0x102))  # the hub keeps order: a sees 0x102 first iff it never got its own 0x101
    msg = a.recv(5)
    assert msg is not None
    assert msg.arbitration_id == 0x102
    b.recv(5)  # 0x102

    b.send(frame(3, 0x103))
    own = b.recv(5)
    assert own is not None
    assert own.arbitration_id == 0x103
    assert not own.is_rx
    msg = a.recv(5)
    assert msg is not None
    assert msg.arbitration_id == 0x103
    assert msg.is_rx


def test_can_filters_through_can_bus(hub: SimBusHub, simdir: str, monkeypatch: pytest.MonkeyPatch,
                                     nodes: Callable[..., SimBus]) -> None:
    monkeypatch.setitem(can.interfaces.BACKENDS, "simbus", ("hil.simbus", "SimBus"))
    rx = can.Bus(interface="simbus", channel=CHANNEL, simbus_dir=simdir, bitrate=500_000,
                 can_filters=[{"can_id": 0x200, "can_mask": 0x7F0, "extended": False}])
    try:
        assert isinstance(rx, SimBus)
        tx = nodes()
        for arb in (0x100, 0x201, 0x2F0, 0x20F, 0x205):
            tx.send(can.Message(arbitration_id=arb, is_extended_id=False))
        tx.send(can.Message(arbitration_id=0x201, is_extended_id=True))  # extended: filtered out
        tx.send(can.Message(arbitration_id=0x20E, is_extended_id=False, data=b"end"))
        got = recv_all(rx, 0x20E)
        assert [m.arbitration_id for m in got] == [0x201, 0x20F, 0x205]
    finally:
        rx.shutdown()


def test_notifier_reads_with_a_thread(hub: SimBusHub, nodes: Callable[..., SimBus]) -> None:
    rx, tx = nodes(), nodes()
    assert rx.fileno() == -1
    reader = can.BufferedReader()
    notifier = can.Notifier(rx, [reader], timeout=0.1)
    try:
        tx.send(frame(7))
        msg = reader.get_message(5)
        assert msg is not None
        assert bytes(msg.data) == struct.pack("<I", 7)
    finally:
        notifier.stop()


def test_burst_of_10000_arrives_complete_and_in_order(hub: SimBusHub, simdir: str,
                                                     nodes: Callable[..., SimBus]) -> None:
    n = 10_000
    receiver = python(RECEIVER, CHANNEL, simdir, str(n))
    try:
        receiver.expect("ready")
        tx = nodes()
        for i in range(n):
            tx.send(frame(i))
        result = json.loads(receiver.line(20))
        assert (result["count"], result["in_order"]) == (n, True), result
    finally:
        receiver.stop()


# ---- faults -------------------------------------------------------------------------------------


def test_drop_half(hub: SimBusHub, nodes: Callable[..., SimBus]) -> None:
    rx, tx = nodes(), nodes()
    ctl = hub.control()
    assert ctl.set_faults(drop=0.5).drop == 0.5
    n = 2000
    for i in range(n):
        tx.send(frame(i))
    wait_until(lambda: ctl.stats().received >= n, what="the hub to take every frame")
    ctl.clear_faults()
    tx.send(frame(0, 0x7FF))
    got = recv_all(rx, 0x7FF)
    assert 0.35 * n < len(got) < 0.65 * n
    indices = [struct.unpack("<I", m.data)[0] for m in got]
    assert indices == sorted(indices)  # losses keep the order of what is left
    stats = ctl.stats()
    assert stats.dropped == n - len(got)
    assert stats.forwarded == len(got) + 1


def test_delay_holds_frames_and_keeps_order_and_timestamps(
    hub: SimBusHub, nodes: Callable[..., SimBus]
) -> None:
    rx, tx = nodes(), nodes()
    hub.set_faults(delay=0.2)
    sent_at = time.time()
    for i in range(5):
        tx.send(frame(i))
    got = [rx.recv(5) for _ in range(5)]
    arrived = time.time()
    assert all(m is not None for m in got)
    assert [struct.unpack("<I", m.data)[0] for m in got if m] == list(range(5))
    assert arrived - sent_at >= 0.2
    assert all(m is not None and sent_at <= m.timestamp < sent_at + 0.2 for m in got)  # the send time


def test_error_frames(hub: SimBusHub, nodes: Callable[..., SimBus]) -> None:
    rx, tx = nodes(), nodes()
    hub.inject_error(count=3, error_class=CAN_ERR_CRTL, data=bytes([0, 0x04, 0, 0, 0, 0, 0, 0]))
    for _ in range(3):
        msg = rx.recv(5)
        assert msg is not None
        assert msg.is_error_frame
        assert msg.arbitration_id == CAN_ERR_CRTL
        assert msg.data[1] == 0x04

    hub.set_faults(error_rate=1.0)  # every frame corrupted
    tx.send(frame(1))
    msg = rx.recv(5)
    assert msg is not None
    assert msg.is_error_frame
    assert msg.arbitration_id == CAN_ERR_PROT | CAN_ERR_BUSERROR
    hub.set_faults(error_rate=0.0)
    tx.send(frame(2))
    msg = rx.recv(5)
    assert msg is not None
    assert not msg.is_error_frame
    assert bytes(msg.data) == struct.pack("<I", 2)
    assert hub.get_stats().corrupted == 1

    with pytest.raises(ValueError, match="error frames"):
        tx.send(can.Message(is_error_frame=True, arbitration_id=CAN_ERR_PROT))


def test_bus_off_and_recovery(hub: SimBusHub, nodes: Callable[..., SimBus]) -> None:
    rx, tx = nodes(), nodes()
    assert tx.state == can.BusState.ACTIVE
    assert not tx.bus_off
    assert hub.set_faults(bus_off=True).bus_off
    wait_until(lambda: tx.state == can.BusState.ERROR, what="bus off")
    with pytest.raises(can.CanOperationError, match="bus off"):
        tx.send(frame(1))
    msg = rx.recv(5)
    assert msg is not None
    assert msg.is_error_frame
    assert msg.arbitration_id == CAN_ERR_BUSOFF

    assert not hub.clear_faults().bus_off
    wait_until(lambda: tx.state == can.BusState.ACTIVE, what="bus on")
    msg = rx.recv(5)
    assert msg is not None
    assert msg.is_error_frame
    assert msg.arbitration_id == CAN_ERR_RESTARTED
    tx.send(frame(2))
    msg = rx.recv(5)
    assert msg is not None
    assert bytes(msg.data) == struct.pack("<I", 2)


def test_faults_changed_directly_on_an_in_process_hub(hub: SimBusHub, nodes: Callable[..., SimBus]) -> None:
    rx, tx = nodes(), nodes()
    hub.faults.bus_off = True
    wait_until(lambda: tx.state == can.BusState.ERROR, what="bus off")
    hub.faults.bus_off = False
    wait_until(lambda: tx.state == can.BusState.ACTIVE, what="bus on")
    assert [m.arbitration_id for m in (rx.recv(5), rx.recv(5)) if m] == [CAN_ERR_BUSOFF, CAN_ERR_RESTARTED]
    faults = hub.faults
    hub.set_faults(drop=1.0)  # applied in place: references stay current
    assert faults.drop == 1.0


def test_fault_control_validates(hub: SimBusHub) -> None:
    ctl = hub.control()
    with pytest.raises(SimBusError, match="unknown fault"):
        ctl.set_faults(jitter=1)
    with pytest.raises(SimBusError, match="0..1"):
        ctl.set_faults(drop=1.5)
    with pytest.raises(SimBusError, match="unknown op"):
        ctl.call("explode")
    assert ctl.faults().drop == 0.0


def test_frame_hook(simdir: str, nodes: Callable[..., SimBus]) -> None:
    def hook(msg: can.Message) -> can.Message | None:
        if msg.arbitration_id == 0x200:
            return None
        if msg.arbitration_id == 0x202:
            raise RuntimeError("a broken hook")
        msg.data = bytearray(b"hooked")
        return msg

    with SimBusHub(CHANNEL, simdir, frame_hook=hook):
        rx, tx = nodes(), nodes()
        tx.send(frame(1, 0x200))
        tx.send(frame(3, 0x202))  # the hook raises: dropped, the hub goes on
        tx.send(frame(2, 0x201))
        msg = rx.recv(5)
        assert msg is not None
        assert msg.arbitration_id == 0x201
        assert bytes(msg.data) == b"hooked"


# ---- connecting ---------------------------------------------------------------------------------


def test_hub_makes_a_shared_directory(simdir: str) -> None:
    made = os.path.join(simdir, "made")
    with SimBusHub(CHANNEL, made) as hub:
        assert os.stat(made).st_mode & 0o7777 == 0o1777
        assert os.stat(hub.paths.pub).st_mode & 0o777 == 0o666
        assert os.stat(hub.paths.ctl).st_mode & 0o777 == 0o600


def test_no_hub_fails_fast(simdir: str) -> None:
    start = time.monotonic()
    with pytest.raises(can.CanInitializationError, match=r"rover\.pub"):
        SimBus(channel=CHANNEL, simbus_dir=simdir)
    # stale socket files left by a hub that died: nothing listens
    for path in simbus_paths(CHANNEL, simdir)[:2]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
    with pytest.raises(can.CanInitializationError, match="stale"):
        SimBus(channel=CHANNEL, simbus_dir=simdir)
    assert time.monotonic() - start < 1.0
    with SimBusHub(CHANNEL, simdir):  # a new hub replaces stale files
        SimBus(channel=CHANNEL, simbus_dir=simdir).shutdown()


def test_hub_that_does_not_forward_times_out(simdir: str) -> None:
    paths = simbus_paths(CHANNEL, simdir)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        fakes = [ctx.socket(zmq.PULL) for _ in range(2)]  # listen, never answer
        for sock, path in zip(fakes, (paths.pub, paths.sub), strict=True):
            sock.bind("ipc://" + path)
        start = time.monotonic()
        with pytest.raises(can.CanInitializationError, match=r"did not answer.*ipc://.*rover\.sub"):
            SimBus(channel=CHANNEL, simbus_dir=simdir, connect_timeout=0.3)
        assert time.monotonic() - start < 1.5
    finally:
        ctx.destroy(linger=0)


def test_one_hub_per_channel_and_bad_names(hub: SimBusHub, simdir: str) -> None:
    with pytest.raises(SimBusError, match="already serves"):
        SimBusHub(CHANNEL, simdir).start()
    with pytest.raises(ValueError, match="unknown"):
        SimBusHub("other", simdir, log_path=os.path.join(simdir, "capture.nope")).start()
    assert not os.path.exists(os.path.join(simdir, "other.pub"))
    for bad in ("", "../x", "a/b", ".hidden", "x" * 65, None):
        with pytest.raises(ValueError, match="channel"):
            SimBus(channel=bad, simbus_dir=simdir)


def test_frames_this_bus_cannot_carry(hub: SimBusHub, nodes: Callable[..., SimBus]) -> None:
    bus = nodes()
    with pytest.raises(ValueError, match="fd=True"):
        bus.send(can.Message(arbitration_id=1, is_fd=True, data=bytes(12)))
    with pytest.raises(ValueError, match="11-bit"):
        bus.send(can.Message(arbitration_id=0x800, is_extended_id=False))
    with pytest.raises(ValueError, match="at most 8"):
        bus.send(can.Message(arbitration_id=1, data=bytes(9), check=False))


# ---- the hub process, capture -------------------------------------------------------------------


def test_hub_process_captures_and_exits_on_sigterm(simdir: str) -> None:
    log = os.path.join(simdir, "capture.blf")
    hub = Proc([sys.executable, "-m", "hil.simbus", "--channel", CHANNEL, "--dir", simdir, "--log", log])
    try:
        hub.expect("simbus hub ready")
        paths = simbus_paths(CHANNEL, simdir)
        assert all(os.path.exists(p) for p in paths)
        assert os.stat(paths.ctl).st_mode & 0o777 == 0o600
        tx = SimBus(channel=CHANNEL, simbus_dir=simdir, fd=True)
        rx = SimBus(channel=CHANNEL, simbus_dir=simdir)
        try:
            for i in range(20):
                tx.send(can.Message(arbitration_id=0x100 + i, data=bytes([i] * (i % 9)),
                                    is_extended_id=i % 2 == 1))
            tx.send(can.Message(arbitration_id=0x300, is_fd=True, bitrate_switch=True, data=bytes(range(24)),
                                is_extended_id=False))
            tx.send(can.Message(arbitration_id=0x301, is_remote_frame=True, dlc=3, is_extended_id=False))
            with SimBusControl(CHANNEL, simdir) as ctl:
                ctl.inject_error()
            received = [rx.recv(5) for _ in range(23)]
            assert all(m is not None for m in received)
        finally:
            tx.shutdown()
            rx.shutdown()
        hub.popen.send_signal(signal.SIGTERM)
        assert hub.popen.wait(5) == 0, hub.stderr
        assert not any(os.path.exists(p) for p in paths)
    finally:
        hub.stop()
    logged = list(can.LogReader(log))
    assert len(logged) == len(received)
    for want, got in zip(received, logged, strict=True):
        assert want is not None
        assert want.equals(got, timestamp_delta=1e-5, check_channel=False), (want, got)


@pytest.mark.parametrize("ext", ["log", "asc"])
def test_capture_text_formats(simdir: str, nodes: Callable[..., SimBus], ext: str) -> None:
    log = os.path.join(simdir, f"capture.{ext}")
    with SimBusHub(CHANNEL, simdir, log_path=log) as hub:
        rx, tx = nodes(), nodes()
        sent = [frame(i, 0x100 + i) for i in range(10)]
        for msg in sent:
            tx.send(msg)
        received = [rx.recv(5) for _ in sent]
    assert not any(os.path.exists(p) for p in hub.paths)
    logged = list(can.LogReader(log))
    def key(m: can.Message) -> tuple[int, bytes]:
        return m.arbitration_id, bytes(m.data)

    assert [key(m) for m in logged] == [key(m) for m in sent]
    times = [m.timestamp for m in received if m is not None]
    if ext == "log":  # absolute timestamps
        assert [m.timestamp for m in logged] == pytest.approx(times, abs=1e-5)
    else:  # .asc: relative to the first frame
        assert [m.timestamp for m in logged] == pytest.approx([t - times[0] for t in times], abs=1e-5)


# ---- throughput (a report, not an assertion on speed) -------------------------------------------


def _throughput(simdir: str, receivers: int, n: int) -> tuple[float, list[dict[str, object]]]:
    procs = [python(RECEIVER, CHANNEL, simdir, str(n)) for _ in range(receivers)]
    try:
        for p in procs:
            p.expect("ready", 20)
        tx = SimBus(channel=CHANNEL, simbus_dir=simdir)
        try:
            msg = can.Message(arbitration_id=0x100, is_extended_id=False, data=bytes(8))
            start = time.time()
            for i in range(n):
                msg.data[:4] = struct.pack("<I", i)
                tx.send(msg)
            results = [json.loads(p.line(60)) for p in procs]
        finally:
            tx.shutdown()
    finally:
        for p in procs:
            p.stop()
    last = max(float(str(r["last"])) for r in results)
    return n / (last - start), results


def test_throughput_report(simdir: str) -> None:
    n = int(os.environ.get("SIMBUS_BENCH_FRAMES", "20000"))
    hub = Proc([sys.executable, "-m", "hil.simbus", "--channel", CHANNEL, "--dir", simdir])
    try:
        hub.expect("simbus hub ready")
        report = []
        for receivers in (1, 4):
            rate, results = _throughput(simdir, receivers, n)
            assert all(r["count"] == n and r["in_order"] for r in results), results
            report.append(f"{receivers} receiver(s): {rate:,.0f} frames/s")
    finally:
        hub.stop()
    print(f"\nsimbus throughput, one sender, {n} frames of 8 bytes, hub in its own process, "
          f"{os.cpu_count()} CPUs: " + "; ".join(report))
