"""The clove_hil plugin's fixtures, used the way a user's own HIL test would: a kernel on
private paths with a device wired to a simulated chip, a button press, the journal."""

from __future__ import annotations

import os

import pytest

from clove.testing.kernel import poll_for

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for the kernel's sandbox")]


def test_a_pressed_button_engages_an_interlock_that_the_journal_records(clove_kernel, sim_gpio_chip, sim_can_bus, clove_journal):
    chip = sim_gpio_chip({"estop": 17, "brake": 27}, outputs=["brake"])
    bus = sim_can_bus()
    can = bus.wiring()
    kernel = clove_kernel(
        f"""
[devices.estop]
driver = "gpio"
lines = {{ estop = 17, brake = 27 }}
outputs = ["brake"]
sim_socket = "{chip.wiring()['sim_socket']}"
[devices.motors]
driver = "can"
interface = "simbus"
channel = "{can['channel']}"
options = {{ simbus_dir = "{can['options']['simbus_dir']}" }}
[interlocks.estop]
trigger = {{ device = "estop", match = {{ line = "estop", edge = "rising" }} }}
actions = [{{ device = "motors", op = "send", args = {{ id = 0x101, data = "hex:0000" }} }}, {{ device = "estop", op = "set", args = {{ values = {{ brake = 1 }} }} }}]
"""
    )
    for name in ("estop", "motors"):
        poll_for(lambda n=name: kernel.call("device.info", device=n)["device"]["state"] == "ready", 20, message=f"{name} ready")
    chip.controller.press("estop")
    poll_for(lambda: any(f.id == 0x101 and f.data == b"\x00\x00" for f in bus.frames), 10, message="the safe frame on the bus")
    poll_for(lambda: chip.controller.outputs()["brake"] == 1, 10, message="the brake set")
    engaged = poll_for(lambda: [r for r in clove_journal(kernel, category="SECURITY") if r["event_type"] == "interlock.completed"], 10, message="the journal record")
    assert engaged[0]["details"]["name"] == "estop"
    assert all(a["status"] == "done" for a in engaged[0]["details"]["actions"])
