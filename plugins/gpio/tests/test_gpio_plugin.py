"""The plugin as the kernel and a driver host see it: found through the ``clove.drivers`` entry
point, registered through pluggy, and importable without libgpiod."""

from __future__ import annotations

import subprocess
import sys

from clove.drivers import load_drivers
from clove.drivers.registry import installed_drivers
from clove_driver_gpio import GpioDriver


def test_the_entry_point_is_installed() -> None:
    assert "gpio" in installed_drivers()


def test_load_drivers_registers_the_gpio_kind() -> None:
    registry = load_drivers(["gpio"])
    assert registry.kinds() == ["gpio"]
    assert registry.get("gpio") is GpioDriver


def test_the_kernel_side_never_imports_gpiod() -> None:
    # A fresh interpreter: load the plugin, validate a config and a grant, compile a filter.
    code = """
import sys
from clove.drivers import load_drivers
from clove.drivers.schema import build
cls = load_drivers(["gpio"]).get("gpio")
cls.parse_config({"lines": {"estop": 17}})
build(cls.Grant, {"ops": ["get"], "lines": ["estop"]})
cls.compile_filter(["estop"])
assert "gpiod" not in sys.modules, "gpiod was imported"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
