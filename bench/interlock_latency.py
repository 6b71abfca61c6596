"""E-stop interlock latency: from the GPIO edge to the zero-speed frame on the CAN bus, over 20
presses, while an agent keeps commanding speed at 50 Hz.

A simulated GPIO chip (the e-stop) and a hil.simbus CAN bus are wired into a kernel whose
interlock sends zero speed, restricts the bus and sets the brake. The harness's own bus
listener timestamps the zero frame; the press time is taken just before the simulator's line
changes (so the figure can only be too large). Each round: press, measure, operator release,
button release. Also reported: the kernel's own journaled latency of the send action (edge
timestamp → driver host acknowledgement). Baseline: none meaningful; the deadline is 50 ms.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import Report, agent_script, bench_kernel, main, poll_for, summarize

ROUNDS = 20


def run(report: Report, say: Callable[[str], None]) -> None:
    from hil.bench import SimSpec
    from hil.sims import CanBusSim, GpioSim
    from hil.world import World

    run_dir = Path(tempfile.mkdtemp(prefix="clvil"))
    world = World()
    bus = CanBusSim(SimSpec("bus", "can_bus", {"wire": None, "record": False, "log": "bus.asc"}), run_dir, world)
    chip = GpioSim(SimSpec("estop", "gpio_chip", {"wire": None, "lines": {"estop": 17, "brake": 27}, "outputs": ["brake"], "active_low": []}), run_dir, world)
    bus.start()
    chip.start()
    wiring = bus.wiring()
    config = f"""
[devices.motor_bus]
driver = "can"
interface = "simbus"
channel = "{wiring['channel']}"
options = {{ simbus_dir = "{wiring['options']['simbus_dir']}" }}
[devices.estop]
driver = "gpio"
lines = {{ estop = 17, brake = 27 }}
outputs = ["brake"]
sim_socket = "{chip.wiring()['sim_socket']}"
[interlocks.estop]
trigger = {{ device = "estop", match = {{ line = "estop", edge = "rising" }} }}
actions = [
  {{ device = "motor_bus", op = "send", args = {{ id = 0x101, data = "hex:00000000" }} }},
  {{ restrict = "motor_bus", ops = ["recv"] }},
  {{ device = "estop", op = "set", args = {{ values = {{ brake = 1 }} }} }},
]
"""
    frame_ms: list[float] = []
    kernel_ms: list[float] = []
    try:
        with bench_kernel(config) as kernel, kernel.client() as client:
            for name in ("motor_bus", "estop"):
                poll_for(lambda n=name: client.device(n).info()["state"] == "ready", timeout=30, message=name)
            client.spawn("driver", agent_script("can_drive.py"), devices={"motor_bus": {"ops": ["send"], "send_ids": ["0x101"]}})
            poll_for(lambda: b"READY" in client.logs("driver")["data"], timeout=20, message="driver")
            say(f"interlock_latency: {ROUNDS} presses while an agent commands 600 mm/s at 50 Hz")
            for _ in range(ROUNDS):
                poll_for(lambda: any(f.id == 0x101 and f.data != b"\x00" * 4 and f.ts > time.time() - 0.1 for f in bus.frames[-5:]), timeout=10, message="driving")
                pressed = time.time()
                chip.controller.press("estop")
                zero = poll_for(
                    lambda: next((f for f in bus.frames[-50:] if f.ts >= pressed and f.id == 0x101 and f.data == b"\x00" * 4), None),  # noqa: B023 - polled within this iteration
                    timeout=5,
                    interval=0.001,
                    message="the zero-speed frame",
                )
                frame_ms.append((zero.ts - pressed) * 1000)
                state = poll_for(
                    lambda: next((i["state"] for i in client.call("interlock.list")["interlocks"] if i["engaged"] and all(a["status"] == "done" for a in i["state"]["actions"])), None),
                    timeout=5,
                    message="the interlock done",
                )
                kernel_ms.append(state["actions"][0]["latency_ms"])
                client.call("interlock.release", name="estop")
                chip.controller.release("estop")
                bus.frames.clear()
    finally:
        chip.stop()
        bus.stop()
    f, k = summarize([x * 1e6 for x in frame_ms]), summarize([x * 1e6 for x in kernel_ms])
    report.add("edge → zero frame on the bus p50", f.p50 / 1000, "ms", target="≤ 50 ms (the bench deadline)")
    report.add("edge → zero frame on the bus max", max(frame_ms), "ms", target="≤ 50 ms")
    report.add("kernel-journaled send action p50", k.p50 / 1000, "ms")
    report.add("kernel-journaled send action max", max(kernel_ms), "ms")
    report.details["frame_ms"] = [round(x, 3) for x in frame_ms]
    report.details["kernel_ms"] = [round(x, 3) for x in kernel_ms]
    say(f"  frame: p50 {f.p50 / 1000:.2f} ms max {max(frame_ms):.2f} ms; kernel: p50 {k.p50 / 1000:.2f} ms max {max(kernel_ms):.2f} ms")


if __name__ == "__main__":
    raise SystemExit(main("interlock_latency", run))
