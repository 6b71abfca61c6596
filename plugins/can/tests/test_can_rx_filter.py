"""CanDriver's receive filter (``set_stream_filter``): on python-can ``virtual`` buses the driver
filters before frames leave it, letting error frames through; on ``socketcan`` it hands the
filter to python-can (``CAN_RAW_FILTER``), checked here against a stand-in bus because this
machine has no SocketCAN (tests/guest/test_socketcan.py runs the real one)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import can
import pytest

from clove.errors import DeviceClosed, InvalidArguments
from clove_driver_can import CanConfig, CanDriver, CanGrant
from clove_driver_can.driver import _NOTHING

GRANTED = ((0x180, 0x18F), (0x7DF, 0x7DF))


@pytest.fixture
def channel() -> str:
    return f"clove-rx-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peer(channel: str) -> Iterator[can.BusABC]:
    bus = can.Bus(interface="virtual", channel=channel)
    yield bus
    bus.shutdown()


@pytest.fixture
def driver(channel: str) -> Iterator[CanDriver]:
    with CanDriver(CanConfig(interface="virtual", channel=channel)) as drv:
        assert isinstance(drv, CanDriver)
        yield drv


def send(peer: can.BusABC, *ids: int, ext: bool = False) -> None:
    for ident in ids:
        peer.send(can.Message(arbitration_id=ident, data=b"\x01", is_extended_id=ext))


def seen(driver: CanDriver) -> int:
    return driver.counters["items_in"] + driver.counters["frames_filtered"]


def drain(driver: CanDriver, sent: int, wait: float = 3.0) -> list[dict[str, Any]]:
    """Read until each of ``sent`` new frames was either delivered or filtered (or fail after
    ``wait`` seconds); the frames delivered."""
    got: list[dict[str, Any]] = []
    until = seen(driver) + sent
    deadline = time.monotonic() + wait
    while seen(driver) < until:
        assert time.monotonic() < deadline, (got, driver.counters)
        got.extend(driver.read(0.1))
    return got


def test_only_frames_a_scope_admits_leave_the_driver(driver: CanDriver, peer: can.BusABC) -> None:
    driver.set_stream_filter(CanDriver.stream_filter([GRANTED]))
    send(peer, 0x100, 0x180, 0x18F, 0x190, 0x7DF, 0x7DE, 0x000)
    send(peer, 0x185, 0x1234, ext=True)  # the extended frame 0x185 is granted like the standard one
    got = drain(driver, 9)
    assert [(f["id"], f["ext"]) for f in got] == [(0x180, False), (0x18F, False), (0x7DF, False), (0x185, True)]
    assert driver.counters["frames_filtered"] == 5
    assert driver.counters["items_in"] == 4
    status = driver.status()
    assert (status["rx_filters"], status["rx_filter_in"], status["frames_filtered"]) == (2, "host", 5)


def test_error_frames_are_never_id_filtered(driver: CanDriver, peer: can.BusABC) -> None:
    driver.set_stream_filter(CanDriver.stream_filter([]))  # nobody listens: nothing but errors
    peer.send(can.Message(arbitration_id=0x20000004, is_error_frame=True, data=b"\x00" * 8))
    send(peer, 0x180)
    got = drain(driver, 2)
    assert [f["err"] for f in got] == [True]
    assert driver.counters["error_frames"] == 1
    assert driver.status()["rx_filters"] == 0


def test_the_filter_follows_updates_and_none_clears_it(driver: CanDriver, peer: can.BusABC) -> None:
    driver.set_stream_filter(CanDriver.stream_filter([]))
    send(peer, 0x180)
    assert drain(driver, 1) == []
    driver.set_stream_filter(CanDriver.stream_filter([GRANTED]))
    send(peer, 0x180, 0x200)
    assert [f["id"] for f in drain(driver, 2)] == [0x180]
    driver.set_stream_filter(None)
    send(peer, 0x200, 0x300)
    assert [f["id"] for f in drain(driver, 2)] == [0x200, 0x300]
    assert driver.counters["frames_filtered"] == 2
    assert (driver.status()["rx_filters"], driver.status()["rx_filter_in"]) == (None, None)


def test_a_flood_of_filtered_frames_does_not_hide_the_wanted_one(driver: CanDriver, peer: can.BusABC) -> None:
    driver.set_stream_filter(CanDriver.stream_filter([GRANTED]))
    send(peer, *([0x200] * 1000), 0x181)
    got = drain(driver, 1001)
    assert [f["id"] for f in got] == [0x181]
    assert driver.read(0) == []


def test_rx_filter_false_receives_everything(channel: str, peer: can.BusABC) -> None:
    with CanDriver(CanConfig(interface="virtual", channel=channel, rx_filter=False)) as driver:
        driver.set_stream_filter(CanDriver.stream_filter([]))
        send(peer, 0x180, 0x200)
        assert [f["id"] for f in drain(driver, 2)] == [0x180, 0x200]
        assert driver.status()["rx_filters"] is None


def test_bad_specs_and_closed_drivers_are_refused(driver: CanDriver) -> None:
    with pytest.raises(InvalidArguments):
        driver.set_stream_filter([{"can_id": 1}])
    with pytest.raises(InvalidArguments):
        driver.set_stream_filter("everything")
    driver.close()
    with pytest.raises(DeviceClosed):
        driver.set_stream_filter(None)


def test_the_scope_is_the_grants_recv_ids() -> None:
    grant = CanGrant(ops=("recv",), recv_ids=("0x700-0x7FF", "0x180-0x18F", "0x185"))
    assert grant.stream_scope() == ((0x180, 0x18F), (0x700, 0x7FF))
    assert CanGrant(ops=("recv",)).stream_scope() == ()


# ---- socketcan: the filter goes to python-can, which installs CAN_RAW_FILTER ----------------------


class StandInSocketcanBus:
    """What the driver uses of a python-can socketcan bus, recording ``set_filters``."""

    def __init__(self, *, kernel_takes_filters: bool = True) -> None:
        self.kernel_takes_filters = kernel_takes_filters
        self.calls: list[Any] = []
        self._is_filtered = False

    def set_filters(self, filters: Any) -> None:
        self.calls.append(filters)
        self._is_filtered = self.kernel_takes_filters or filters is None

    def shutdown(self) -> None:
        pass


def socketcan_driver(bus: StandInSocketcanBus) -> CanDriver:
    driver = CanDriver(CanConfig(interface="socketcan", channel="vcan0"))
    driver._open = lambda: setattr(driver, "_bus", bus)  # type: ignore[method-assign]
    driver.open()
    driver.counters.setdefault("frames_filtered", 0)
    return driver


def test_socketcan_gets_the_filter_in_the_socket() -> None:
    bus = StandInSocketcanBus()
    with socketcan_driver(bus) as driver:
        driver.set_stream_filter(CanDriver.stream_filter([GRANTED]))
        driver.set_stream_filter(CanDriver.stream_filter([]))
        driver.set_stream_filter(None)
        assert bus.calls == [
            [{"can_id": 0x180, "can_mask": 0x1FFFFFF0}, {"can_id": 0x7DF, "can_mask": 0x1FFFFFFF}],
            [_NOTHING],  # python-can reads [] as "no filter"
            None,
        ]
        driver.set_stream_filter(CanDriver.stream_filter([GRANTED]))
        assert (driver.status()["rx_filters"], driver.status()["rx_filter_in"]) == (2, "socket")
        assert driver._accept is None  # nothing left to do in the host


def test_socketcan_refusing_the_filter_falls_back_to_the_host() -> None:
    # python-can would filter in software then, dropping error frames: the driver does it instead
    bus = StandInSocketcanBus(kernel_takes_filters=False)
    with socketcan_driver(bus) as driver:
        driver.set_stream_filter(CanDriver.stream_filter([GRANTED]))
        assert bus.calls[-1] is None
        assert driver.status()["rx_filter_in"] == "host"
        msg = can.Message(arbitration_id=0x200, is_extended_id=False)
        error = can.Message(arbitration_id=0x200, is_error_frame=True)
        assert not driver._admit(msg)
        assert driver._admit(error)
