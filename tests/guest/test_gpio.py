"""GPIO for real: the ``gpio`` driver on libgpiod against a ``gpio-sim`` chip, a kernel GPIO
chip whose wires the test drives (a simulated pull) and reads (the level an output is driven
to), through a real Clove kernel: grants, edges, and the e-stop interlock that sends a safe
frame on a ``vcan`` bus when a line rises."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from clove_sdk import CloveClient
from hil.vm import cache as vm_cache
from tests.conftest import agent_script
from tests.guest.gpiosim import SimChip, load_module, make_chip
from tests.guest.support import SLOW, guest_only, record_figure

pytestmark = [guest_only]

BUTTON, LAMP, RELAY, DOOR, GUARD = 0, 1, 2, 3, 4
PANEL = """
[devices.panel]
driver = "gpio"
chip = "{chip}"
simulate = "never"
lines = {{ button = 0, lamp = 1, relay = 2, door = 3, guard = 4 }}
outputs = ["lamp", "relay"]
active_low = ["guard"]
"""
SAFE_ID = 0x101
SAFE_DATA = bytes(4)
ESTOP = """
[devices.panel]
driver = "gpio"
chip = "{chip}"
simulate = "never"
lines = {{ estop = 0, brake = 1 }}
outputs = ["brake"]

[devices.safety_bus]
driver = "can"
interface = "socketcan"
channel = "{channel}"

[interlocks.estop]
trigger = {{ device = "panel", match = {{ line = "estop", edge = "rising" }} }}
actions = [
  {{ device = "safety_bus", op = "send", args = {{ id = 0x101, data = "hex:00000000" }} }},
  {{ device = "panel", op = "set", args = {{ values = {{ brake = 1 }} }} }},
]
"""
PRESSES = 20

_vcans = itertools.count()


@pytest.fixture
def gpio_chips() -> Iterator[Callable[[dict[int, str]], SimChip]]:
    """Make live gpio-sim chips; removed at teardown. Request it before ``service_kernel`` so
    the kernel (and the driver holding the lines) stops before its chip goes away."""
    cache = vm_cache.load()
    if isinstance(cache, str):
        pytest.skip(cache)
    if cache.gpio_sim is None:
        pytest.skip(cache.gpio_sim_reason or "gpio-sim did not build")
    load_module(cache.gpio_sim)
    made: list[SimChip] = []

    def make(names: dict[int, str]) -> SimChip:
        made.append(make_chip(names))
        return made[-1]

    yield make
    for chip in reversed(made):
        chip.remove()


@pytest.fixture
def vcan() -> Iterator[str]:
    name = f"vcgpio{next(_vcans)}"
    subprocess.run(["modprobe", "-a", "vcan", "can_raw"], check=True)
    subprocess.run(["ip", "link", "add", name, "type", "vcan"], check=True)
    subprocess.run(["ip", "link", "set", "up", name], check=True)
    yield name
    subprocess.run(["ip", "link", "del", name], check=False)


def panel_chip(gpio_chips: Callable[[dict[int, str]], SimChip]) -> SimChip:
    return gpio_chips({BUTTON: "button", LAMP: "lamp", RELAY: "relay", DOOR: "door", GUARD: "guard"})


# Every call goes through one operator client with a long reply timeout: a guest on a busy
# host can be far slower than SLOW allows for, and a short default timeout would flake.
def device_view(op: CloveClient, name: str) -> dict[str, Any]:
    return op.device(name).info()


def ready(op: CloveClient, *devices: str) -> None:
    for device in devices:
        poll_for(
            lambda d=device: device_view(op, d)["state"] == "ready", 30 * SLOW, message=f"{device} ready"
        )


def report_of(op: CloveClient, agent: str) -> dict[str, Any]:
    """The JSON an agent printed after ``REPORT ``, once it has."""

    def find() -> dict[str, Any] | None:
        lines = op.logs(name=agent, offset=0, max_bytes=1 << 20)["data"].decode().splitlines()
        return next((json.loads(x[len("REPORT ") :]) for x in lines if x.startswith("REPORT ")), None)

    return poll_for(find, 60 * SLOW, message=f"{agent}'s report")


def operator(k: KernelProcess) -> CloveClient:
    return k.client(timeout=30 * SLOW)


def test_agent_reads_and_writes_granted_lines_and_is_refused_the_others(gpio_chips, service_kernel):
    chip = panel_chip(gpio_chips)
    k = service_kernel(PANEL.format(chip=chip.path))
    grant = {"ops": ["get", "set", "watch"], "lines": ["button"], "write_lines": ["lamp"]}
    with operator(k) as op:
        ready(op, "panel")
        status = device_view(op, "panel")["status"]
        assert status["simulated"] is False and status["backend"] == "gpiod", status
        op.spawn("user", agent_script("gpio_chip_user.py"), args=[str(60 * SLOW)], devices={"panel": grant})
        poll_for(lambda: b"READY" in op.logs(name="user")["data"], 60 * SLOW, message="the agent ready")
        chip.pull(DOOR, 1)  # not granted: its edge never reaches the agent
        chip.pull(BUTTON, 1)
        report = report_of(op, "user")
        assert op.device("panel").get(lines=["door"]) == {"door": 1}  # the door did rise
    assert report["before"] == {"button": 0} and report["after"] == {"button": 1}, report
    assert report["edges"] == [["button", "rising", 1]], report
    assert report["lamp"] == {"lamp": 1} and chip.value(LAMP) == 1
    assert report["relay"] == "perm.denied" and report["door"] == "perm.denied", report
    assert chip.value(RELAY) == 0, "a refused set reached the chip"


def test_operator_sees_pulled_edges_with_their_kernel_timestamps(gpio_chips, service_kernel):
    chip = panel_chip(gpio_chips)
    k = service_kernel(PANEL.format(chip=chip.path))
    with operator(k) as op:
        ready(op, "panel")
        panel = op.device("panel")
        panel.subscribe(["button", "guard"])
        # Pulled down at the start: guard is active-low, so it reads as 1 until pulled up.
        assert panel.get(lines=["button", "guard"]) == {"button": 0, "guard": 1}

        def edge_after(offset: int, level: int) -> tuple[dict[str, Any], float, float]:
            before = time.time()
            chip.pull(offset, level)
            items = panel.recv(max_items=10, timeout=30 * SLOW)
            after = time.time()
            assert len(items) == 1, items
            return items[0], before, after

        rise, t0, t1 = edge_after(BUTTON, 1)
        assert (rise["line"], rise["offset"], rise["edge"], rise["value"]) == ("button", BUTTON, "rising", 1)
        # The kernel's edge time, moved to the wall clock (a few ms of slack for that move).
        assert t0 - 0.005 <= rise["ts"] <= t1, (t0, rise["ts"], t1)
        fall, _, _ = edge_after(BUTTON, 0)
        assert (fall["line"], fall["edge"], fall["value"]) == ("button", "falling", 0)
        guard, _, _ = edge_after(GUARD, 1)  # the wire rises; the active-low line falls
        assert (guard["line"], guard["edge"], guard["value"]) == ("guard", "falling", 0)
        chip.pull(DOOR, 1)  # filtered out of this subscription
        chip.pull(BUTTON, 1)
        items = panel.recv(max_items=10, timeout=30 * SLOW)
        assert [(i["line"], i["edge"]) for i in items] == [("button", "rising")], items
        # The driver saw the door's edge too (its status comes with the host's heartbeat).
        poll_for(lambda: panel.info()["status"]["edges"] >= 5, 30 * SLOW, message="the driver's edge count")


def interlock_state(op: CloveClient, name: str) -> dict[str, Any] | None:
    view = next(v for v in op.call("interlock.list")["interlocks"] if v["name"] == name)
    return view["state"] if view["engaged"] else None


def acknowledged(op: CloveClient, name: str) -> dict[str, Any] | None:
    """The interlock's engagement once every action has its driver host's answer."""
    state = interlock_state(op, name)
    return state if state and all(a["status"] == "done" for a in state["actions"]) else None


def test_estop_edge_sends_the_safe_frame_on_vcan_every_press(gpio_chips, service_kernel, vcan):
    import can

    chip = gpio_chips({0: "estop", 1: "brake"})
    k = service_kernel(ESTOP.format(chip=chip.path, channel=vcan))
    filters = [{"can_id": SAFE_ID, "can_mask": 0x7FF, "extended": False}]
    latencies, journaled = [], []
    with can.Bus(interface="socketcan", channel=vcan, can_filters=filters) as bus, operator(k) as op:
        ready(op, "panel", "safety_bus")
        for press in range(PRESSES):
            while bus.recv(timeout=0) is not None:
                pass  # nothing stale counts for this press
            pressed = time.time()
            chip.pull(0, 1)
            frame = bus.recv(timeout=30 * SLOW)
            assert frame is not None, f"press {press}: no safe frame on {vcan}"
            assert frame.arbitration_id == SAFE_ID and bytes(frame.data) == SAFE_DATA, frame
            latencies.append(frame.timestamp - pressed)
            poll_for(lambda: chip.value(1) == 1, 30 * SLOW, message="the interlock's brake")
            state = poll_for(
                lambda: acknowledged(op, "estop"), 30 * SLOW, message="the interlock's acknowledgements"
            )
            journaled.append(state["actions"][0]["latency_ms"])
            # Reset as an operator would: the button out, the interlock released, the brake off.
            chip.pull(0, 0)
            op.call("interlock.release", name="estop")
            op.device("panel").set(values={"brake": 0})
            assert chip.value(1) == 0
    p50, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
    record_figure("gpio-sim e-stop pull to safe frame on vcan p50 (ms)", round(p50, 2))
    record_figure("gpio-sim e-stop pull to safe frame on vcan max (ms)", round(worst, 2))
    edge_to_ack = round(statistics.median(journaled), 2)
    record_figure("gpio-sim e-stop journaled latency, edge to CAN ack, p50 (ms)", edge_to_ack)
    assert len(latencies) == PRESSES
    assert all(0 < t < SLOW for t in latencies), latencies  # a generous bound: seconds, not a deadline


UNPLUGGABLE = """
[devices.panel]
driver = "gpio"
chip = "{chip}"
lines = {{ estop = 0, brake = 1 }}
outputs = ["brake"]

[interlocks.lost]
trigger = {{ device_lost = "panel" }}
actions = [{{ restrict = "panel", ops = ["get"] }}]
"""


def test_an_unplugged_chip_is_lost_and_never_comes_back_simulated(gpio_chips, service_kernel):
    chip = gpio_chips({0: "estop", 1: "brake"})
    path = chip.path
    k = service_kernel(UNPLUGGABLE.format(chip=path))  # simulate = "auto", the default
    with operator(k) as op:
        ready(op, "panel")
        assert device_view(op, "panel")["status"]["simulated"] is False
        chip.set_live(False)
        poll_for(lambda: interlock_state(op, "lost"), 30 * SLOW, message="the device_lost interlock")

        def refused_a_simulation() -> bool:
            view = device_view(op, "panel")
            assert not (view["state"] == "ready" and view["status"]["simulated"]), view
            return "is gone" in (view["last_error"] or "")

        poll_for(refused_a_simulation, 60 * SLOW, message="a reopen refused for the gone chip")
        chip.set_live(True)
        assert chip.path == path, "the chip came back under another number"
        poll_for(lambda: (v := device_view(op, "panel"))["state"] == "ready" and v["status"]["simulated"] is False,
                 60 * SLOW, message="the real chip reopened")  # fmt: skip
        chip.pull(0, 1)
        assert op.device("panel").get(lines=["estop"]) == {"estop": 1}


def last_error_with(op: CloveClient, device: str, text: str) -> str | None:
    error = device_view(op, device)["last_error"] or ""
    return error if text in error else None


def test_a_failed_open_names_the_chip_size_and_the_line_holder(gpio_chips, service_kernel):
    import gpiod

    chip = gpio_chips({2: "door"})
    devices = (
        f'[devices.held]\ndriver = "gpio"\nchip = "{chip.path}"\nsimulate = "never"\nlines = {{ door = 2 }}\n'
        f'[devices.beyond]\ndriver = "gpio"\nchip = "{chip.path}"\nsimulate = "never"\nlines = {{ x = 9 }}\n'
    )
    holder = gpiod.request_lines(chip.path, consumer="bench-holder", config={2: gpiod.LineSettings()})
    try:
        k = service_kernel(devices)
        with operator(k) as op:
            busy = poll_for(
                lambda: last_error_with(op, "held", "bench-holder"), 60 * SLOW, message="held's error"
            )
            assert "offset 2" in busy, busy
            beyond = poll_for(
                lambda: last_error_with(op, "beyond", "has 8 lines"), 60 * SLOW, message="beyond's"
            )
            assert "offset 9" in beyond, beyond
    finally:
        holder.release()
    with operator(k) as op:
        ready(op, "held")  # the holder gone, a retry opens it
