"""The simulated chip across processes: a driver using a served chip (conformance, outages,
busy lines, wiring mismatches, flow control), the controller API, and the
``python -m clove_driver_gpio.sim`` server in a real subprocess."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clove.drivers import DeviceBroken, DeviceBusy, DeviceUnavailable
from clove.testing.drivers import check_driver
from clove_driver_gpio import GpioDriver
from clove_driver_gpio.sim import SimChipController, SimChipServer, wait_for_server

ReadItems = Callable[..., list[dict[str, Any]]]
LINES = {"estop": 17, "door": 18, "brake": 27}


def make_driver(path: str, **overrides: Any) -> GpioDriver:
    table = {"lines": LINES, "outputs": ["brake"], "simulate": "always", "sim_socket": path, **overrides}
    return GpioDriver(GpioDriver.parse_config(table))


@pytest.fixture
def served(sock_dir: str) -> Iterator[tuple[SimChipServer, SimChipController]]:
    server = SimChipServer(f"{sock_dir}/chip.sock", LINES, outputs=["brake"]).start()
    controller = SimChipController(server.socket_path)
    yield server, controller
    controller.close()
    server.stop()


def test_conformance_on_a_served_chip(served: tuple[SimChipServer, SimChipController]) -> None:
    server, controller = served

    def feed(driver: object) -> None:
        controller.toggle("estop")

    check_driver(
        lambda: make_driver(server.socket_path),
        feed=feed,
        probe=("get", {}),
        break_device=lambda driver: server.stop(),
    )


def test_status_names_the_socket(served: tuple[SimChipServer, SimChipController]) -> None:
    server, _ = served
    driver = make_driver(server.socket_path)
    with driver:
        status = driver.status()
        assert (status["simulated"], status["backend"], status["sim_socket"]) == (
            True,
            "sim-socket",
            server.socket_path,
        )
        assert driver.sim is None  # the chip lives in the server


def test_a_missing_server_is_unavailable(sock_dir: str) -> None:
    path = f"{sock_dir}/nobody.sock"
    with pytest.raises(DeviceUnavailable) as caught:
        make_driver(path).open()
    assert path in caught.value.message
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a server that died
    with pytest.raises(DeviceUnavailable):
        make_driver(path).open()
    with SimChipServer(path, LINES) as server:  # a new server replaces the stale socket
        assert server.chip.levels()["estop"] == 0
        with pytest.raises(OSError, match="already answers") as busy:
            SimChipServer(path, LINES).bind()
        assert busy.value.errno == errno.EADDRINUSE
    assert not os.path.exists(path)


def test_a_stopped_server_breaks_the_driver(served: tuple[SimChipServer, SimChipController]) -> None:
    server, _ = served
    with make_driver(server.socket_path) as driver:
        server.stop()
        with pytest.raises(DeviceBroken) as caught:
            driver.read(5.0)
        assert server.socket_path in caught.value.message
        with pytest.raises(DeviceBroken):
            driver.call("set", {"values": {"brake": 1}})
        assert driver.status()["simulated"] is True


def test_lines_held_by_one_driver_are_busy_for_another(
    served: tuple[SimChipServer, SimChipController], poll_for: Callable[..., Any]
) -> None:
    server, _ = served
    first = make_driver(server.socket_path, lines={"estop": 17, "brake": 27})
    first.open()
    try:
        with pytest.raises(DeviceBusy, match="held by"):
            make_driver(server.socket_path).open()
        other_lines = make_driver(server.socket_path, lines={"door": 18}, outputs=[])
        with other_lines:  # a disjoint set of lines is free
            assert other_lines.call("get") == {"door": 0}
    finally:
        first.close()
    # The server releases the lines when it sees the connection close.
    poll_for(lambda: not server.chip.info()["lines"]["estop"]["held"])
    with make_driver(server.socket_path) as again:
        assert again.call("get", {"lines": ["estop"]}) == {"estop": 0}


def test_a_config_that_contradicts_the_wiring_is_unavailable(
    served: tuple[SimChipServer, SimChipController],
) -> None:
    server, _ = served
    with pytest.raises(DeviceUnavailable, match="wired as an output"):
        make_driver(server.socket_path, outputs=[]).open()
    with pytest.raises(DeviceUnavailable, match="no line at offset 99"):
        make_driver(server.socket_path, lines={"estop": 17, "brake": 27, "ghost": 99}).open()


def test_controller_history_levels_and_info(served: tuple[SimChipServer, SimChipController]) -> None:
    server, controller = served
    with make_driver(server.socket_path, initial={"brake": 1}) as driver:
        assert controller.wait_level("brake", 1, timeout=5)
        mark = time.time()
        driver.call("set", {"values": {"brake": 0}})
        driver.call("set", {"values": {"brake": 0}})  # no change: not history
        assert controller.toggle("door") == 1
        assert controller.levels() == {"estop": 0, "door": 1, "brake": 0}
        assert [(h["line"], h["value"]) for h in controller.history()] == [("brake", 1), ("brake", 0)]
        recent = controller.history(since=mark)
        assert [h["value"] for h in recent] == [0]
        assert recent[0]["ts"] >= mark
        assert controller.history(limit=1) == recent
        info = controller.info()
        assert info["lines"]["brake"]["held"] is True
        assert info["lines"]["brake"]["direction"] == "output"
        assert info["label"] == "chip.sock"


def test_a_watcher_that_does_not_read_does_not_stall_the_server(
    served: tuple[SimChipServer, SimChipController], read_items: ReadItems
) -> None:
    server, controller = served
    with make_driver(server.socket_path) as driver:
        started = time.monotonic()
        for _ in range(2000):  # far more messages than the edge socket's buffer holds
            controller.toggle("estop")
        assert time.monotonic() - started < 20
        items = read_items(driver, 2000, timeout=20)
        assert len(items) == 2000
        assert [i["edge"] for i in items] == ["rising", "falling"] * 1000
        assert [i["ts"] for i in items] == sorted(i["ts"] for i in items)


def test_the_sim_cli_serves_until_sigterm(sock_dir: str, read_items: ReadItems) -> None:
    path = f"{sock_dir}/cli.sock"
    command = [
        sys.executable,
        "-m",
        "clove_driver_gpio.sim",
        "--socket",
        path,
        "--line",
        "estop=17",
        "--line",
        "brake=27",
        "--output",
        "brake",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_server(path, timeout=30)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"clove-gpio-sim: serving 2 lines on {path}"
        driver = GpioDriver(
            GpioDriver.parse_config(
                {"lines": {"estop": 17, "brake": 27}, "outputs": ["brake"], "sim_socket": path}
            )
        )
        with driver, SimChipController(path) as controller:
            assert driver.simulated
            controller.press("estop")
            items = read_items(driver, 1)
            assert [(i["line"], i["edge"], i["value"]) for i in items] == [("estop", "rising", 1)]
            driver.call("set", {"values": {"brake": 1}})
            assert controller.outputs() == {"brake": 1}
            proc.terminate()  # SIGTERM, to the pid started here only
            assert proc.wait(timeout=10) == 0
            with pytest.raises(DeviceBroken):
                driver.read(5.0)
        assert not os.path.exists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--line", "estop"], "NAME=INT"), (["--line", "estop=17", "--output", "horn"], "no line named 'horn'")],
)
def test_the_sim_cli_refuses_bad_arguments(sock_dir: str, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clove_driver_gpio.sim", "--socket", f"{sock_dir}/bad.sock", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not os.path.exists(f"{sock_dir}/bad.sock")
