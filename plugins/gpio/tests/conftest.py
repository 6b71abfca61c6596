"""Fixtures for the GPIO driver's tests: short socket directories (a UNIX socket path must fit
in 108 bytes, which pytest's tmp_path may not), served simulated chips, and polling helpers."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clove.drivers import Driver


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="gpio-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _poll_for(cond: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def poll_for() -> Callable[..., Any]:
    """``poll_for(cond, timeout)``: wait until ``cond()`` is truthy and return its value."""
    return _poll_for


def _read_items(driver: Driver, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(items) < count and time.monotonic() < deadline:
        items.extend(driver.read(0.05))
    assert len(items) >= count, f"expected {count} items within {timeout} s, got {items!r}"
    return items


@pytest.fixture
def read_items() -> Callable[..., list[dict[str, Any]]]:
    """``read_items(driver, count)``: read until at least ``count`` items arrived."""
    return _read_items


LINES = {"estop": 17, "door": 18, "brake": 27}


@pytest.fixture(params=["inproc", "socket"])
def rig(request: pytest.FixtureRequest, sock_dir: str) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """``rig(**config)``: an open GPIO driver on a simulated chip and the chip's outside world
    (``driver.sim`` in-process, a ``SimChipController`` of a served chip), for every test
    twice. The chip's wiring follows the config (outputs, active_low)."""
    from clove_driver_gpio import GpioDriver
    from clove_driver_gpio.sim import SimChipController, SimChipServer

    cleanups: list[Callable[[], None]] = []

    def make(**overrides: Any) -> tuple[Any, Any]:
        table: dict[str, Any] = {"lines": LINES, "outputs": ["brake"], "simulate": "always", **overrides}
        if request.param == "socket":
            path = f"{sock_dir}/chip{len(cleanups)}.sock"
            server = SimChipServer(
                path, table["lines"], table["outputs"], active_low=table.get("active_low", ())
            ).start()
            cleanups.append(server.stop)
            table["sim_socket"] = path
        driver = GpioDriver(GpioDriver.parse_config(table))
        driver.open()
        cleanups.append(driver.close)
        if request.param == "inproc":
            return driver, driver.sim
        controller = SimChipController(table["sim_socket"])
        cleanups.append(controller.close)
        return driver, controller

    yield make
    for cleanup in reversed(cleanups):
        cleanup()
