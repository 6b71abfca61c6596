"""The stream-filter part of the driver contract: the base defaults (no filter), the
``set_stream_filter`` template's error guarantees, and the host's ``filter`` message (applied,
acknowledged; refused, cleared and acknowledged with the error)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from clove.drivers import DeviceBroken, DeviceClosed, DeviceGrant, Driver
from clove.drivers.host import Host
from clove.errors import InvalidArguments
from clove.testing.loopback import LoopbackConfig, LoopbackDriver


@dataclass(frozen=True, slots=True)
class PickyConfig:
    pass


class Picky(Driver):
    """Takes filters that are lists of names; "boom" fails like a device, "bug" like a bug."""

    Config = PickyConfig
    stream = "items"
    stream_op = "recv"

    def __init__(self) -> None:
        super().__init__(PickyConfig())
        self.applied: list[Any] = []

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
        return []

    def _set_stream_filter(self, spec: Any | None) -> None:
        if spec is not None and not isinstance(spec, list):
            raise InvalidArguments("a list of names, please")
        if spec == ["boom"]:
            raise OSError(5, "I/O error")
        if spec == ["bug"]:
            raise RuntimeError("oops")
        self.applied.append(spec)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, raw: bytes) -> None:
        self.sent.append(msgpack.unpackb(raw, raw=False))


def host_for(driver: Driver) -> tuple[Host, FakeSocket]:
    sock = FakeSocket()
    return Host({"device": "d", "incarnation": 1}, driver, sock, None), sock  # type: ignore[arg-type]


def test_the_defaults_filter_nothing() -> None:
    assert DeviceGrant(ops=("recv",)).stream_scope() is None
    assert LoopbackDriver.stream_filter([]) is None
    assert LoopbackDriver.stream_filter([("a",)]) is None
    with LoopbackDriver(LoopbackConfig()) as driver:
        driver.set_stream_filter(["anything"])  # ignored: the device delivers everything


def test_the_template_maps_failures_and_refuses_a_closed_driver() -> None:
    driver = Picky()
    with pytest.raises(DeviceClosed):
        driver.set_stream_filter(None)  # not open yet
    driver.open()
    driver.set_stream_filter(["a"])
    assert driver.applied == [["a"]]
    with pytest.raises(InvalidArguments):
        driver.set_stream_filter("a")
    with pytest.raises(DeviceBroken):
        driver.set_stream_filter(["boom"])  # an OSError, mapped like any other failure
    with pytest.raises(DeviceBroken, match="RuntimeError: oops"):
        driver.set_stream_filter(["bug"])
    driver.close()
    with pytest.raises(DeviceClosed):
        driver.set_stream_filter(None)


def test_the_host_applies_and_acknowledges_a_filter() -> None:
    driver = Picky()
    driver.open()
    host, sock = host_for(driver)
    host._filter({"t": "filter", "id": 7, "spec": ["a", "b"]})
    assert driver.applied == [["a", "b"]]
    assert sock.sent == [{"t": "filtered", "id": 7}]
    driver.close()


@pytest.mark.parametrize("spec", ["a", ["boom"], ["bug"]])
def test_a_refused_filter_is_cleared_and_acknowledged_with_the_error(spec: Any) -> None:
    driver = Picky()
    driver.open()
    host, sock = host_for(driver)
    host._filter({"t": "filter", "id": 3, "spec": spec})
    assert driver.applied == [None]  # never narrower than asked: everything
    (reply,) = sock.sent
    assert (reply["t"], reply["id"]) == ("filtered", 3)
    assert reply["error"]["code"] in ("proto.invalid_args", "device.broken")
    driver.close()
