"""CanDriver on real python-can ``virtual`` buses: a second bus on the same channel (virtual
buses share frames inside one process) plays the rest of the CAN network."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import can
import pytest

from clove.drivers import Driver
from clove.errors import (
    DeviceBroken,
    DeviceBusy,
    DeviceClosed,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
)
from clove.testing.drivers import check_driver
from clove_driver_can import CanConfig, CanDriver


@pytest.fixture
def channel() -> str:
    return f"clove-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peer(channel: str) -> Iterator[can.BusABC]:
    bus = can.Bus(interface="virtual", channel=channel)
    yield bus
    bus.shutdown()


@pytest.fixture
def driver(channel: str) -> Iterator[CanDriver]:
    with CanDriver(CanConfig(interface="virtual", channel=channel, fd=True)) as drv:
        assert isinstance(drv, CanDriver)
        yield drv


def read_until(driver: Driver, count: int, wait: float = 3.0) -> list[dict[str, Any]]:
    """Read until ``count`` frames arrived (or fail after ``wait`` seconds)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while len(got) < count:
        assert time.monotonic() < deadline, f"got {len(got)} of {count} frames: {got}"
        got.extend(driver.read(0.1))
    return got


def test_conformance(channel: str) -> None:
    def feed(driver: Driver) -> None:
        with can.Bus(interface="virtual", channel=channel) as peer:
            peer.send(can.Message(arbitration_id=0x101, data=b"\x01", is_extended_id=False))

    check_driver(
        lambda: CanDriver(CanConfig(interface="virtual", channel=channel)),
        feed=feed,
        probe=("send", {"id": 0x100, "data": b"\x00"}),
        break_device=lambda driver: driver._bus.shutdown(),  # type: ignore[attr-defined]
    )


def test_received_frame_has_every_field(driver: CanDriver, peer: can.BusABC) -> None:
    before = time.time()
    peer.send(can.Message(arbitration_id=0x1ABCDE, data=b"\x01\x02\x03", is_extended_id=True))
    peer.send(can.Message(arbitration_id=0x7FF, is_extended_id=False, is_remote_frame=True, dlc=4))
    peer.send(
        can.Message(
            arbitration_id=0x200, data=bytes(range(12)), is_extended_id=False, is_fd=True, bitrate_switch=True
        )
    )
    ext, rtr, fd = read_until(driver, 3)
    assert ext == {
        "id": 0x1ABCDE,
        "data": b"\x01\x02\x03",
        "ext": True,
        "rtr": False,
        "err": False,
        "fd": False,
        "brs": False,
        "dlc": 3,
        "ts": ext["ts"],
    }
    assert before <= ext["ts"] <= time.time()
    assert (rtr["id"], rtr["ext"], rtr["rtr"], rtr["dlc"], rtr["data"]) == (0x7FF, False, True, 4, b"")
    assert (fd["fd"], fd["brs"], fd["dlc"], fd["data"]) == (True, True, 12, bytes(range(12)))
    assert driver.counters["items_in"] == 3


def test_error_frames_are_delivered_and_counted(driver: CanDriver, peer: can.BusABC) -> None:
    peer.send(can.Message(arbitration_id=0x20000004, is_error_frame=True, data=b"\x00" * 8))
    (frame,) = read_until(driver, 1)
    assert frame["err"] is True
    assert driver.counters["error_frames"] == 1
    assert driver.status()["error_frames"] == 1


def test_read_drains_a_batch_without_waiting_for_more(driver: CanDriver, peer: can.BusABC) -> None:
    for i in range(300):
        peer.send(
            can.Message(arbitration_id=0x100 + (i % 16), data=i.to_bytes(2, "big"), is_extended_id=False)
        )
    first = driver.read(1.0)
    assert len(first) == CanDriver.BATCH
    started = time.monotonic()
    rest = driver.read(0)
    assert time.monotonic() - started < 0.5
    assert [int.from_bytes(f["data"], "big") for f in first + rest] == list(range(300))


def test_read_zero_does_not_block(driver: CanDriver) -> None:
    started = time.monotonic()
    for _ in range(20):
        assert driver.read(0) == []
    # Waiting even one read slice (0.1 s) each would take 2 s.
    assert time.monotonic() - started < 1.0


def test_close_wakes_a_read_without_timeout(driver: CanDriver) -> None:
    outcome: list[BaseException | Any] = []

    def reader() -> None:
        try:
            outcome.append(driver.read(None))
        except BaseException as err:  # noqa: BLE001 - judged below
            outcome.append(err)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.05)  # the point is closing under a blocked read
    started = time.monotonic()
    driver.close()
    thread.join(2.0)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert isinstance(outcome[0], DeviceClosed)


def test_send_reaches_the_bus(driver: CanDriver, peer: can.BusABC) -> None:
    assert driver.call("send", {"id": 0x123, "data": b"\xde\xad"}) == {"sent": True}
    driver.call("send", {"id": 0x800, "data": b"\x01"})  # above 0x7FF: extended by default
    driver.call("send", {"id": 0x10, "ext": True})
    driver.call("send", {"id": 0x321, "rtr": True, "dlc": 6})
    driver.call("send", {"id": 0x55, "data": bytes(64), "fd": True, "brs": True})
    got: list[can.Message] = []
    for _ in range(5):
        msg = peer.recv(2.0)
        assert msg is not None
        got.append(msg)
    std, auto_ext, forced_ext, rtr, fd = got
    assert (std.arbitration_id, std.is_extended_id, bytes(std.data)) == (0x123, False, b"\xde\xad")
    assert (auto_ext.arbitration_id, auto_ext.is_extended_id) == (0x800, True)
    assert (forced_ext.arbitration_id, forced_ext.is_extended_id, forced_ext.dlc) == (0x10, True, 0)
    assert (rtr.is_remote_frame, rtr.dlc) == (True, 6)
    assert (fd.is_fd, fd.bitrate_switch, len(fd.data)) == (True, True, 64)
    assert driver.counters["frames_out"] == 5


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ({"id": -1}, "id"),
        ({"id": 0x20000000}, "id"),
        ({"id": 0x800, "ext": False}, "id"),
        ({"id": 0x100, "data": bytes(9)}, "data"),
        ({"id": 0x100, "data": bytes(65), "fd": True}, "data"),
        ({"id": 0x100, "brs": True}, "brs"),
        ({"id": 0x100, "rtr": True, "fd": True}, "rtr"),
        ({"id": 0x100, "rtr": True, "data": b"\x01"}, "data"),
        ({"id": 0x100, "rtr": True, "dlc": 9}, "dlc"),
        ({"id": 0x100, "data": b"\x01", "dlc": 3}, "dlc"),
        ({"id": "0x100"}, "id"),
        ({"data": b"\x01"}, "id"),
        ({"id": 0x100, "colour": "red"}, "colour"),
    ],
)
def test_send_rejects_bad_frames(
    driver: CanDriver, peer: can.BusABC, args: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        driver.call("send", args)
    assert caught.value.details["argument"] == argument
    assert peer.recv(0.05) is None  # nothing went out


def test_fd_frames_need_an_fd_bus(channel: str, peer: can.BusABC) -> None:
    with CanDriver(CanConfig(interface="virtual", channel=channel)) as driver:
        with pytest.raises(InvalidArguments, match="fd = true") as caught:
            driver.call("send", {"id": 0x100, "data": bytes(12), "fd": True})
        assert caught.value.details["argument"] == "fd"
    assert peer.recv(0.05) is None


def test_receive_own_messages_echoes_sends(channel: str) -> None:
    with CanDriver(CanConfig(interface="virtual", channel=channel, receive_own_messages=True)) as driver:
        driver.call("send", {"id": 0x42, "data": b"hi"})
        (frame,) = read_until(driver, 1)
        assert (frame["id"], frame["data"]) == (0x42, b"hi")


def test_options_reach_the_interface(channel: str) -> None:
    # preserve_timestamps is a virtual-bus keyword: the peer's timestamp survives the trip.
    config = CanConfig(interface="virtual", channel=channel, options={"preserve_timestamps": True})
    with (
        CanDriver(config) as driver,
        can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) as peer,
    ):
        peer.send(can.Message(timestamp=1234.5, arbitration_id=0x1, is_extended_id=False))
        (frame,) = read_until(driver, 1)
        assert frame["ts"] == 1234.5


def test_status_reports_state_and_counters(driver: CanDriver, channel: str) -> None:
    driver.call("send", {"id": 0x1})
    status = driver.call("status", {})
    assert status["state"] == "active"  # python-can's virtual bus reports BusState.ACTIVE
    assert (status["interface"], status["channel"], status["fd"]) == ("virtual", channel, True)
    assert status["frames_out"] == 1
    assert status["calls"] == 2
    assert driver.fileno() == -1  # virtual has no fd: the host uses a reader thread


def test_status_maps_bus_states(driver: CanDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    bus_class = type(driver._bus)
    for state, name in [
        (can.BusState.PASSIVE, "passive"),
        (can.BusState.ERROR, "off"),
        (can.BusState.ACTIVE, "active"),
    ]:
        monkeypatch.setattr(bus_class, "state", property(lambda self, s=state: s))  # type: ignore[misc]
        assert driver.status()["state"] == name

    def unsupported(self: object) -> object:
        raise NotImplementedError

    monkeypatch.setattr(bus_class, "state", property(unsupported))
    assert driver.status()["state"] == "unknown"


def test_send_to_a_full_peer_fails_as_a_device_error(channel: str) -> None:
    # A peer whose receive queue holds one frame: the second send waits send_timeout, then fails.
    config = CanConfig(interface="virtual", channel=channel, send_timeout=0.05)
    with CanDriver(config) as driver, can.Bus(interface="virtual", channel=channel, rx_queue_size=1):
        driver.call("send", {"id": 0x1})
        started = time.monotonic()
        with pytest.raises(DeviceBroken, match="virtual:"):
            driver.call("send", {"id": 0x2})
        assert time.monotonic() - started < 1.0
        assert driver.counters["errors"] == 1


def test_unknown_interface_is_unavailable_at_open(channel: str) -> None:
    driver = CanDriver(CanConfig(interface="no_such_adapter", channel=channel))
    with pytest.raises(DeviceUnavailable, match="no_such_adapter") as caught:
        driver.open()
    assert caught.value.details["interface"] == "no_such_adapter"
    assert not driver.is_open


def test_an_interface_that_cannot_open_is_unavailable() -> None:
    # No AF_CAN in this kernel (and no can0 elsewhere in CI): socketcan cannot open.
    driver = CanDriver(CanConfig(interface="socketcan", channel="clove-no-such-can"))
    with pytest.raises(DeviceUnavailable, match="socketcan") as caught:
        driver.open()
    assert caught.value.details == {"interface": "socketcan", "channel": "clove-no-such-can"}


def test_map_error_translates_python_can_errors(driver: CanDriver) -> None:
    import errno

    cases = [
        (can.CanInitializationError("no adapter"), DeviceUnavailable),
        (can.CanInterfaceNotImplementedError("no lib"), DeviceUnavailable),
        (can.CanOperationError("bus off"), DeviceBroken),
        (can.CanOperationError("tx full", error_code=errno.ENOBUFS), DeviceBusy),
        (can.CanTimeoutError("no ack"), DeviceTimeout),
        (can.CanError("other"), DeviceBroken),
    ]
    for err, kind in cases:
        mapped = driver.map_error(err)
        assert type(mapped) is kind, (err, mapped)
        assert mapped is not None
        assert str(err) in mapped.message
    assert driver.map_error(RuntimeError("not ours")) is None


def test_detect_returns_configs() -> None:
    found = CanDriver.detect()
    assert isinstance(found, list)
    assert all(set(c) == {"interface", "channel"} and c["interface"] == "socketcan" for c in found)
