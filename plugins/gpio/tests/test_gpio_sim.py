"""The driver on a simulated chip: conformance in-process, and the GPIO semantics (edges, edge
filter, active_low, debounce, get/set, initial outputs, stuck lines), each run on both the
in-process chip and a socket-served one through the ``rig`` fixture."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

import pytest

from clove.drivers import DeviceBroken, DeviceUnavailable
from clove.errors import InvalidArguments
from clove.testing.drivers import check_driver
from clove_driver_gpio import GpioConfig, GpioDriver

Rig = Callable[..., tuple[GpioDriver, Any]]
ReadItems = Callable[..., list[dict[str, Any]]]

CONFIG = GpioConfig(lines={"estop": 17, "door": 18, "brake": 27}, outputs=("brake",), simulate="always")


def test_conformance_on_the_in_process_chip() -> None:
    def break_device(driver: Any) -> None:
        driver.sim.close()  # the chip releases every request under the driver

    check_driver(
        lambda: GpioDriver(CONFIG),
        feed=lambda driver: driver.sim.toggle("estop"),  # type: ignore[attr-defined]
        probe=("get", {}),
        break_device=break_device,
    )


def test_status_and_info_say_the_chip_is_simulated() -> None:
    with GpioDriver(CONFIG) as driver:
        assert driver.status()["simulated"] is True
        assert driver.status()["backend"] == "sim"
        info = driver.call("info")
        assert info["simulated"] is True
        assert info["chip"] == "/dev/gpiochip0"
        assert info["lines"]["brake"] == {
            "offset": 27,
            "direction": "output",
            "value": 0,
            "active_low": False,
        }
        assert info["lines"]["estop"]["direction"] == "input"


def test_auto_simulates_only_when_the_chip_is_missing(tmp_path: Any) -> None:
    assert GpioDriver(GpioConfig(lines={"a": 1}, chip=str(tmp_path / "gpiochip9"))).simulated is True
    assert GpioDriver(GpioConfig(lines={"a": 1}, chip=str(tmp_path))).simulated is False


def test_never_simulate_with_a_missing_chip_is_unavailable(tmp_path: Any) -> None:
    chip = str(tmp_path / "gpiochip7")
    driver = GpioDriver(GpioConfig(lines={"a": 1}, chip=chip, simulate="never"))
    assert driver.status()["simulated"] is False
    with pytest.raises(DeviceUnavailable) as caught:
        driver.open()
    assert chip in caught.value.message
    assert not driver.is_open


def test_edges_report_line_offset_direction_value_and_wall_time(rig: Rig, read_items: ReadItems) -> None:
    driver, world = rig()
    before = time.time()
    world.press("estop")
    world.release("estop")
    items = read_items(driver, 2)
    assert [(i["line"], i["offset"], i["edge"], i["value"]) for i in items] == [
        ("estop", 17, "rising", 1),
        ("estop", 17, "falling", 0),
    ]
    assert before <= items[0]["ts"] <= items[1]["ts"] <= time.time()
    assert driver.status()["edges"] == 2


def test_fileno_becomes_readable_with_an_edge(rig: Rig) -> None:
    driver, world = rig()
    assert driver.read(0) == []
    world.press("door")
    readable, _, _ = select.select([driver.fileno()], [], [], 5.0)
    assert readable
    items = driver.read(0)  # readable means a read that does not wait has the edge
    assert [i["line"] for i in items] == ["door"]


@pytest.mark.parametrize(
    ("edge", "expected"), [("rising", ["rising", "rising"]), ("falling", ["falling", "falling"])]
)
def test_the_edge_setting_filters_edges(
    rig: Rig, read_items: ReadItems, edge: str, expected: list[str]
) -> None:
    driver, world = rig(edge=edge)
    for _ in range(2):
        world.press("estop")
        world.release("estop")
    items = read_items(driver, 2)
    # Events are ordered: had a filtered edge been reported, it would be among the first two.
    assert [i["edge"] for i in items] == expected
    assert get_line(driver, "estop") == 0


def get_line(driver: GpioDriver, name: str) -> int:
    return int(driver.call("get", {"lines": [name]})[name])


def test_outputs_do_not_report_edges(rig: Rig, read_items: ReadItems) -> None:
    driver, world = rig()
    driver.call("set", {"values": {"brake": 1}})
    driver.call("set", {"values": {"brake": 0}})
    world.press("door")  # a sentinel: anything reported for brake would come first
    items = read_items(driver, 1)
    assert [i["line"] for i in items] == ["door"]


def test_active_low_lines_are_logical_values(rig: Rig, read_items: ReadItems) -> None:
    driver, world = rig(active_low=["estop", "brake"], initial={"brake": 1})
    assert world.level("estop") == 1  # at rest the wire is high (pulled up)
    assert get_line(driver, "estop") == 0
    assert world.outputs() == {"brake": 0}  # logical 1 on an active-low output
    world.press("estop")
    assert world.level("estop") == 0
    items = read_items(driver, 1)
    assert (items[0]["edge"], items[0]["value"]) == ("rising", 1)
    assert get_line(driver, "estop") == 1
    driver.call("set", {"values": {"brake": 0}})
    assert world.outputs() == {"brake": 1}


def test_get_and_set(rig: Rig) -> None:
    driver, world = rig()
    assert driver.call("get") == {"estop": 0, "door": 0, "brake": 0}
    world.press("door")
    assert driver.call("get", {"lines": ["door", "estop"]}) == {"door": 1, "estop": 0}
    assert driver.call("set", {"values": {"brake": 1}}) == {"brake": 1}
    assert world.outputs() == {"brake": 1}
    assert get_line(driver, "brake") == 1
    assert [(h["line"], h["value"], h["applied"]) for h in world.history()] == [
        ("brake", 0, True),
        ("brake", 1, True),
    ]


@pytest.mark.parametrize(
    ("op", "args", "line"),
    [
        ("set", {"values": {"estop": 1}}, "estop"),
        ("set", {"values": {"horn": 1}}, "horn"),
        ("get", {"lines": ["estop", "horn"]}, "horn"),
    ],
)
def test_bad_lines_are_invalid_arguments_naming_the_line(
    rig: Rig, op: str, args: dict[str, Any], line: str
) -> None:
    driver, world = rig()
    with pytest.raises(InvalidArguments) as caught:
        driver.call(op, args)
    assert f"'{line}'" in caught.value.message
    assert caught.value.details["line"] == line
    assert world.outputs() == {"brake": 0}  # nothing was driven


def test_set_values_must_be_bits(rig: Rig) -> None:
    driver, world = rig()
    with pytest.raises(InvalidArguments) as caught:
        driver.call("set", {"values": {"brake": 2}})
    assert "brake" in caught.value.message
    assert world.outputs() == {"brake": 0}


def test_initial_output_values_are_driven_at_open(rig: Rig) -> None:
    driver, world = rig(
        lines={"estop": 17, "brake": 27, "horn": 28}, outputs=["brake", "horn"], initial={"brake": 1}
    )
    assert world.outputs() == {"brake": 1, "horn": 0}
    assert driver.call("get", {"lines": ["brake", "horn"]}) == {"brake": 1, "horn": 0}
    assert {(h["line"], h["value"]) for h in world.history()} == {("brake", 1), ("horn", 0)}


def test_debounce_drops_glitches_and_reports_stable_levels(rig: Rig, read_items: ReadItems) -> None:
    driver, world = rig(debounce_ms=200)
    world.set_input("estop", 1)
    world.set_input("estop", 0)  # a glitch much shorter than the debounce period
    pressed = time.monotonic()
    stamp = time.time()
    world.press("door")
    items = read_items(driver, 1)
    waited = time.monotonic() - pressed
    assert [(i["line"], i["edge"]) for i in items] == [("door", "rising")]
    assert waited >= 0.15, f"reported after {waited:.3f} s, before the 200 ms debounce period"
    assert abs(items[0]["ts"] - stamp) < 0.1  # stamped when the line changed, not when it settled


def test_a_stuck_input_ignores_drives_until_freed(rig: Rig, read_items: ReadItems) -> None:
    driver, world = rig()
    world.stuck("estop", 1)
    world.release("estop")
    world.toggle("estop")
    assert get_line(driver, "estop") == 1
    world.stuck("estop", None)
    world.release("estop")
    items = read_items(driver, 2)
    assert [i["edge"] for i in items] == ["rising", "falling"]


def test_a_stuck_output_shows_in_readback_and_history(rig: Rig) -> None:
    driver, world = rig()
    world.stuck("brake", 0)
    driver.call("set", {"values": {"brake": 1}})
    assert world.outputs() == {"brake": 0}
    assert get_line(driver, "brake") == 0  # the driver reads the wire, so the fault is visible
    assert world.history()[-1]["applied"] is False


def test_the_outside_world_cannot_drive_an_output(rig: Rig) -> None:
    from clove_driver_gpio.simchip import SimChipError

    _, world = rig()
    with pytest.raises(SimChipError, match="output"):
        world.press("brake")
    with pytest.raises(SimChipError, match="no line 'horn'"):
        world.press("horn")


def test_a_closed_chip_breaks_reads_and_calls() -> None:
    driver = GpioDriver(CONFIG)
    with driver:
        assert driver.sim is not None
        driver.sim.close()
        with pytest.raises(DeviceBroken):
            driver.call("get")
        with pytest.raises(DeviceBroken):
            driver.read(0)
