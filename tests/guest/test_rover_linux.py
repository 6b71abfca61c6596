"""The rover on a Linux board: configs/rover-linux.toml's agents, unchanged, with the motor
controller a node on SocketCAN (vcan0), the e-stop a line of a gpio-sim chip read through
libgpiod, and the GPS on a pty. ``clove hil run hil/benches/rover-linux.toml`` runs the rover
bench's fault plan there, and every one of its assertions must pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.bench import load_bench
from hil.linuxdevices import CONFIGFS, NET
from hil.vm import cache as vm_cache
from tests.guest.support import CGROUP_ROOT, SLOW, guest_only, record_figure, remove_service

CHECKOUT = Path(__file__).resolve().parents[2]
BENCH = CHECKOUT / "hil" / "benches" / "rover-linux.toml"
# Python runs SLOW times slower here, but the rover's load is real time (50 Hz odometry, 20 Hz
# commands, 5 Hz fixes), so the guest also queues: measured, the interlock's slowest action took
# 100 to 520 ms at a time scale of SLOW. Twice SLOW keeps the limits clear of that queueing.
TIME_SCALE = 2 * SLOW
# The bench's 30 s stretched like its limits, plus the kernel's start and stop (within the guest
# tier's 900 s boot).
RUN_TIMEOUT = 30 * TIME_SCALE + 240

pytestmark = [guest_only, pytest.mark.timeout(RUN_TIMEOUT + 60)]


@pytest.fixture
def kernel_service() -> Iterator[Path]:
    """A cgroup of the kernel's own, as systemd gives a service with Delegate=yes: under cgroup v2
    a kernel cannot enable controllers in a cgroup it shares with its caller."""
    path = CGROUP_ROOT / f"clove-rover-{os.getpid()}.service"
    path.mkdir()
    yield path
    assert not remove_service(path)


def chips() -> set[str]:
    return {p.name for p in CONFIGFS.iterdir()} if CONFIGFS.is_dir() else set()


def test_rover_bench_passes_on_vcan_a_gpio_sim_chip_and_a_pty(kernel_service: Path) -> None:
    cache = vm_cache.load()
    if isinstance(cache, str):
        pytest.skip(cache)
    if cache.gpio_sim is None:
        pytest.skip(cache.gpio_sim_reason or "gpio-sim did not build")
    had_vcan0, chips_before = (NET / "vcan0").exists(), chips()
    command = [sys.executable, "-m", "clove", "hil", "run", str(BENCH), "--json",
               "--time-scale", str(TIME_SCALE), "--kernel-cgroup", str(kernel_service)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=CHECKOUT)
    assert proc.stdout.startswith("{"), f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    assert not report["errors"], "\n".join(report["errors"])
    outcomes = {a["name"]: a for a in report["assertions"]}
    for a in outcomes.values():
        print(f"[{'pass' if a['passed'] else 'FAIL'}] {a['name']}: {a['expected']}; measured {a['measured']}")
    record_figure("rover-linux bench wall time (s)", report["wall_s"])
    record_figure("rover-linux e-stop to zero-speed frame on vcan0 (ms)", outcomes["zero speed on the bus within 50 ms of the e-stop"]["measured"])
    record_figure("rover-linux interlock's slowest action (ms)", outcomes["the interlock's every action done within 50 ms"]["measured"])
    failed = [f"{a['name']}: expected {a['expected']}, measured {a['measured']} ({a['detail']})" for a in outcomes.values() if not a["passed"]]
    assert report["passed"] and proc.returncode == 0, "\n".join(failed + report["errors"] + [proc.stderr[-3000:]])
    assert len(outcomes) == len(load_bench(BENCH).assertions) and report["time_scale"] == TIME_SCALE
    # The bench removed what it made and left what it found.
    assert (NET / "vcan0").exists() == had_vcan0
    assert chips() == chips_before
