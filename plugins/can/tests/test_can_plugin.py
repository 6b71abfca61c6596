"""The plugin registers through its ``clove.drivers`` entry point, like a third party's."""

from __future__ import annotations

import importlib.metadata

from clove.drivers import load_drivers
from clove.drivers.registry import ENTRY_POINT_GROUP, installed_drivers
from clove_driver_can import CanDriver


def test_entry_point_is_installed() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "can"]
    assert ep.value == "clove_driver_can"
    assert ep.dist is not None
    assert ep.dist.metadata["Name"] == "clove-driver-can"
    assert "can" in installed_drivers()


def test_load_drivers_registers_can() -> None:
    registry = load_drivers(["can"])
    assert "can" in registry
    assert registry.get("can") is CanDriver
    assert registry.kinds() == ["can"]  # nothing that was not allowlisted


def test_driver_describes_itself() -> None:
    assert CanDriver.stream == "items"
    assert CanDriver.stream_op == "recv"
    assert CanDriver.grant_ops() == ("send", "status", "recv")
    ops = CanDriver.operations()
    assert ops["send"].doc.startswith("Send one frame")
    assert ops["status"].method == "bus_status"
