"""The real-chip backend. This kernel has no GPIO, so ``gpiod.request_lines`` is replaced by a
fake line request with a real pipe as its fd; everything else (``LineSettings``, the enums,
``EdgeEvent``) is the installed libgpiod binding, so the mapping is checked against its API."""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import gpiod
import pytest
from gpiod.line import Direction, Edge, Value

from clove.drivers import DeviceUnavailable
from clove.testing.drivers import check_driver
from clove_driver_gpio import GpioConfig, GpioDriver


class FakeRequest:
    """Stands in for ``gpiod.LineRequest``: values by offset, queued events behind a pipe."""

    def __init__(self, path: str, consumer: str | None, config: dict[Any, Any]) -> None:
        self.path, self.consumer, self.config = path, consumer, config
        self.values = {off: s.output_value for off, s in config.items()}
        self.events: list[gpiod.EdgeEvent] = []
        self.read_fd, self.write_fd = os.pipe()
        self.released = False

    @property
    def fd(self) -> int:
        return self.read_fd

    def get_values(self, lines: list[int]) -> list[Value]:
        return [self.values[off] for off in lines]

    def set_values(self, values: dict[int, Value]) -> None:
        assert all(self.config[off].direction == Direction.OUTPUT for off in values)
        self.values.update(values)

    def read_edge_events(self, max_events: int | None = None) -> list[gpiod.EdgeEvent]:
        os.read(self.read_fd, 4096)  # would block with nothing queued, as the real one does
        events, self.events = self.events, []
        return events

    def release(self) -> None:
        self.released = True
        os.close(self.read_fd)
        os.close(self.write_fd)

    def push(self, kind: gpiod.EdgeEvent.Type, offset: int, timestamp_ns: int) -> None:
        self.events.append(gpiod.EdgeEvent(kind.value, timestamp_ns, offset, len(self.events) + 1, 1))
        os.write(self.write_fd, b"e")


@pytest.fixture
def fake_chip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[FakeRequest]]]:
    chip = tmp_path / "gpiochip0"
    chip.touch()
    made: list[FakeRequest] = []

    def request_lines(
        path: str, config: dict[Any, Any], consumer: str | None = None, **_: Any
    ) -> FakeRequest:
        made.append(FakeRequest(path, consumer, config))
        return made[-1]

    monkeypatch.setattr(gpiod, "request_lines", request_lines)
    monkeypatch.setattr(gpiod, "is_gpiochip_device", lambda path: path == str(chip))
    yield str(chip), made
    for request in made:
        if not request.released:  # a failing test left a driver open
            request.release()


def config(chip: str, **overrides: Any) -> GpioConfig:
    table = {
        "chip": chip,
        "lines": {"estop": 17, "door": 18, "brake": 27},
        "outputs": ["brake"],
        "simulate": "never",
        **overrides,
    }
    return GpioDriver.parse_config(table)  # type: ignore[no-any-return]


def test_line_settings_follow_the_config(fake_chip: tuple[str, list[FakeRequest]]) -> None:
    chip, made = fake_chip
    cfg = config(chip, initial={"brake": 1}, active_low=["door"], edge="rising", debounce_ms=5)
    with GpioDriver(cfg) as driver:
        (request,) = made
        assert (request.path, request.consumer, set(request.config)) == (chip, "clove", {17, 18, 27})
        estop, door, brake = request.config[17], request.config[18], request.config[27]
        assert (estop.direction, estop.edge_detection, estop.active_low) == (
            Direction.INPUT,
            Edge.RISING,
            False,
        )
        assert estop.debounce_period == timedelta(milliseconds=5)
        assert (door.direction, door.active_low) == (Direction.INPUT, True)
        assert (brake.direction, brake.edge_detection, brake.output_value) == (
            Direction.OUTPUT,
            Edge.NONE,
            Value.ACTIVE,
        )
        assert driver.status()["simulated"] is False
        assert driver.status()["backend"] == "gpiod"
        assert driver.fileno() == request.fd
    assert request.released


@pytest.mark.parametrize(("edge", "expected"), [("both", Edge.BOTH), ("falling", Edge.FALLING)])
def test_edge_setting(fake_chip: tuple[str, list[FakeRequest]], edge: str, expected: Edge) -> None:
    chip, made = fake_chip
    with GpioDriver(config(chip, edge=edge)):
        assert made[0].config[17].edge_detection == expected


def test_get_set_and_info_map_values(fake_chip: tuple[str, list[FakeRequest]]) -> None:
    chip, made = fake_chip
    with GpioDriver(config(chip)) as driver:
        request = made[0]
        assert request.values[27] == Value.INACTIVE  # outputs default to 0
        request.values[17] = Value.ACTIVE
        assert driver.call("get") == {"estop": 1, "door": 0, "brake": 0}
        assert driver.call("set", {"values": {"brake": 1}}) == {"brake": 1}
        assert request.values[27] == Value.ACTIVE
        info = driver.call("info")
        assert info["simulated"] is False
        assert info["chip"] == chip
        assert info["lines"]["brake"] == {
            "offset": 27,
            "direction": "output",
            "value": 1,
            "active_low": False,
        }


def test_edge_events_become_items_with_wall_clock_stamps(fake_chip: tuple[str, list[FakeRequest]]) -> None:
    chip, made = fake_chip
    with GpioDriver(config(chip)) as driver:
        request = made[0]
        assert driver.read(0) == []
        two_seconds_ago = time.monotonic_ns() - 2_000_000_000
        request.push(gpiod.EdgeEvent.Type.RISING_EDGE, 17, two_seconds_ago)
        request.push(gpiod.EdgeEvent.Type.FALLING_EDGE, 18, two_seconds_ago + 1_000_000)
        assert select.select([driver.fileno()], [], [], 5.0)[0]
        items = driver.read(0)
        assert [(i["line"], i["offset"], i["edge"], i["value"]) for i in items] == [
            ("estop", 17, "rising", 1),
            ("door", 18, "falling", 0),
        ]
        assert abs(items[0]["ts"] - (time.time() - 2.0)) < 0.5
        assert abs(items[1]["ts"] - items[0]["ts"] - 0.001) < 1e-6


def test_conformance_with_the_fake_request(fake_chip: tuple[str, list[FakeRequest]]) -> None:
    chip, made = fake_chip
    check_driver(
        lambda: GpioDriver(config(chip)),
        feed=lambda driver: made[-1].push(gpiod.EdgeEvent.Type.RISING_EDGE, 17, time.monotonic_ns()),
        probe=("get", {"lines": ["estop"]}),
    )


def test_auto_uses_the_real_chip_when_it_exists(fake_chip: tuple[str, list[FakeRequest]]) -> None:
    chip, made = fake_chip
    driver = GpioDriver(config(chip, simulate="auto"))
    with driver:
        assert driver.simulated is False
        assert driver.sim is None
        assert len(made) == 1


@pytest.mark.parametrize("chip", ["/dev/null", "regular-file"])
def test_a_path_that_is_not_a_gpio_chip_is_unavailable(tmp_path: Path, chip: str) -> None:
    # The real libgpiod, no fake: it inspects the path.
    if chip == "regular-file":
        chip = str(tmp_path / "gpiochip0")
        Path(chip).write_text("")
    with pytest.raises(DeviceUnavailable, match="not a GPIO chip"):
        GpioDriver(config(chip)).open()


def test_a_missing_gpiod_library_is_unavailable_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chip = tmp_path / "gpiochip0"
    chip.touch()
    monkeypatch.setitem(sys.modules, "gpiod", None)  # import gpiod now raises ImportError
    with pytest.raises(DeviceUnavailable) as caught:
        GpioDriver(config(str(chip))).open()
    assert caught.value.details["module"] == "gpiod"
