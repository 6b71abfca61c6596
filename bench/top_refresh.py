"""What watching costs: the kernel CPU time one ``clove top`` refresh takes, read from
``/proc/<kernel pid>/stat`` (user + system, every thread of the kernel process).

A kernel with idle agents, a device and an interlock; measured in the same run:

* the kernel's idle CPU (housekeeping, 1 Hz metrics sampling), subtracted from every window;
* ``noop`` round trips: the baseline, the cheapest call through the whole kernel path;
* ``metrics.agents`` alone; a steady ``clove top`` refresh (``metrics.agents`` plus one slower
  section in turn: two syscalls); the first refresh and each ``--once`` (every section: four).

Refreshes are driven through :class:`clove.cli.top.source.Source`, the code ``clove top``
runs, back to back; the figure that matters is the kernel CPU share at the default one
refresh a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from common import Report, agent_script, bench_kernel, main, poll_for

from clove.cli.top.source import Source

N_AGENTS = 20
REFRESHES = 300
NOOPS = 3000
IDLE_S = 3.0
CONFIG = """
[devices.bus]
driver = "loopback"
[interlocks.halt]
trigger = { event = "HALT" }
actions = [{ pause = ["idle0"] }]
"""
TICK = os.sysconf("SC_CLK_TCK")


def kernel_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def measure(pid: int, idle_rate: float, work: Callable[[], None], n: int) -> float:
    """Kernel CPU µs per unit of ``work`` (``n`` units), idle CPU over the window taken off."""
    start_cpu, start = kernel_cpu_s(pid), time.monotonic()
    work()
    cpu, elapsed = kernel_cpu_s(pid) - start_cpu, time.monotonic() - start
    return max(0.0, cpu - idle_rate * elapsed) / n * 1e6


def run(report: Report, say: Callable[[str], None]) -> None:
    with bench_kernel(CONFIG) as kernel, kernel.client(timeout=60) as client:
        say(f"top_refresh: spawning {N_AGENTS} idle agents")
        for i in range(N_AGENTS):
            reply = client.spawn(f"idle{i}", agent_script("hello_sleep.py"), limits={"memory": "128M"})
            if not reply.get("success"):
                raise RuntimeError(f"spawn failed: {reply}")
        poll_for(lambda: all(a["state"] == "running" for a in client.list_agents()), 60, 0.05, "agents running")
        poll_for(lambda: client.call("device.info", device="bus")["device"]["state"] == "ready", 30, 0.05, "device ready")
        for _ in range(200):  # warm the request path
            client.noop("x")
        pid = kernel.pid
        start_cpu = kernel_cpu_s(pid)
        time.sleep(IDLE_S)  # the idle baseline: nothing asked of the kernel
        idle_rate = (kernel_cpu_s(pid) - start_cpu) / IDLE_S
        say(f"  idle kernel: {idle_rate * 100:.2f}% of a core")

        noop = measure(pid, idle_rate, lambda: [client.noop("x") for _ in range(NOOPS)], NOOPS)
        metrics = measure(pid, idle_rate, lambda: [client.call("metrics.agents") for _ in range(REFRESHES)], REFRESHES)
        source = Source(client)
        source.refresh(everything=True)
        calls_before = source.calls
        steady = measure(pid, idle_rate, lambda: [source.refresh() for _ in range(REFRESHES)], REFRESHES)
        steady_calls = (source.calls - calls_before) / REFRESHES
        full = measure(pid, idle_rate, lambda: [source.refresh(everything=True) for _ in range(REFRESHES // 3)], REFRESHES // 3)
        shown = len(source.last.agents) if source.last is not None else 0

    report.details.update(agents=N_AGENTS, refreshes=REFRESHES, noops=NOOPS, idle_core_percent=round(idle_rate * 100, 3),
                          steady_syscalls_per_refresh=steady_calls, agents_shown=shown)  # fmt: skip
    report.add("noop (baseline)", noop, "µs CPU")
    report.add(f"metrics.agents, {N_AGENTS} agents", metrics, "µs CPU", baseline=noop, baseline_name="noop")
    report.add("top refresh, steady (2 calls)", steady, "µs CPU", baseline=noop, baseline_name="noop")
    report.add("top refresh, every section (4 calls)", full, "µs CPU", baseline=noop, baseline_name="noop")
    report.add("top at 1 refresh/s", steady / 1e4, "% of a core", target="< 1%")
    report.notes.append("kernel CPU from /proc/PID/stat utime+stime (10 ms ticks, summed over many refreshes); idle CPU subtracted")


if __name__ == "__main__":
    raise SystemExit(main("top_refresh", run))
