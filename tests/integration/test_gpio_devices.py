"""GPIO through the kernel on a simulated chip served from this process (the machine has no
/dev/gpiochip*): edges reach agents through their grants; reads are narrowed to granted lines."""

from __future__ import annotations

import pytest

from clove.testing.kernel import poll_for
from clove_driver_gpio.sim.client import SimChipController
from clove_driver_gpio.sim.server import SimChipServer
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def test_estop_edge_reaches_a_watching_agent_and_grants_narrow_reads(make_kernel, tmp_path):
    sock = tmp_path / "chip.sock"
    with SimChipServer(sock, {"estop": 17, "brake": 27, "door": 5}, outputs=["brake"]).start():
        k = make_kernel(f'[devices.estop]\ndriver = "gpio"\nchip = "/dev/gpiochip-sim"\nlines = {{ estop = 17, brake = 27, door = 5 }}\noutputs = ["brake"]\nsim_socket = "{sock}"\n')
        poll_for(lambda: k.call("device.info", device="estop")["device"]["state"] == "ready", 20, message="estop ready")
        assert k.call("device.info", device="estop")["device"]["status"]["simulated"] is True
        with k.client() as op:
            op.spawn("watcher", agent_script("gpio_user.py"), devices={"estop": {"ops": ["get", "set", "watch"], "lines": ["estop"]}})
            poll_for(lambda: b"READY" in op.logs(name="watcher")["data"], 15, message="watcher ready")
            chip = SimChipController(str(sock))
            chip.set_input("door", 1)  # not granted: never reaches the agent
            chip.press("estop")
            report = read_report(k, "watcher")
            assert chip.outputs()["brake"] == 0  # the refused set never reached the chip
    assert report["get"] == {"estop": 0}  # "every line" narrowed to the granted one
    assert report["set"] == "perm.denied"
    assert report["edges"] == [["estop", "rising", 1]]
