"""What the web console costs the kernel: the kernel's CPU (``/proc/<kernel pid>/stat`` utime +
stime, every thread) over equal windows, all in one run:

* no console at all (the baseline: housekeeping and 1 Hz metrics sampling with idle agents);
* ``clove console`` running with nobody watching (it polls nothing then);
* the overview open: one live stream (``/api/events``, what the overview page reads) at the
  default one snapshot a second, plus the page's first ``/api/overview``.

The console's own CPU is reported too (it is a separate process, not the kernel's cost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from common import REPO, Report, agent_script, bench_kernel, main, poll_for

N_AGENTS = 10
WINDOW_S = 6.0
CONFIG = """
[interlocks.halt]
trigger = { event = "HALT" }
actions = [{ pause = ["idle0"] }]
"""
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def window(pids: list[int]) -> list[float]:
    """Each pid's CPU share of one core over :data:`WINDOW_S` seconds, in percent."""
    before, start = [cpu_s(p) for p in pids], time.monotonic()
    time.sleep(WINDOW_S)  # a measurement window, not a wait for a condition
    elapsed = time.monotonic() - start
    return [100.0 * (cpu_s(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]


def run(report: Report, say: Callable[[str], None]) -> None:
    with bench_kernel(CONFIG) as kernel, kernel.client(timeout=60) as client:
        say(f"console_cpu: spawning {N_AGENTS} idle agents")
        for i in range(N_AGENTS):
            client.spawn(f"idle{i}", agent_script("hello_sleep.py"), limits={"memory": "128M"})
        poll_for(lambda: all(a["state"] == "running" for a in client.list_agents()), 60, 0.05, "agents running")
        pid = kernel.pid
        (none,) = window([pid])
        say(f"  no console: kernel {none:.2f}% of a core")

        token_file = Path(kernel.socket).with_name("console-tokens.json")
        console = subprocess.Popen(
            [sys.executable, "-m", "clove", "console", "--socket", kernel.socket, "--listen", "127.0.0.1:0", "--token-file", str(token_file)],
            stdout=subprocess.PIPE, text=True, cwd=str(REPO),
        )  # fmt: skip
        try:
            assert console.stdout is not None
            url = console.stdout.readline().split()[1].rstrip("/")
            headers = {"Authorization": "Bearer " + json.loads(token_file.read_text())["readonly"]}
            idle_kernel, idle_console = window([pid, console.pid])
            say(f"  console, nobody watching: kernel {idle_kernel:.2f}%, console {idle_console:.2f}%")

            stop, snapshots = threading.Event(), [0]

            def watch() -> None:
                with httpx.Client(timeout=30) as http, http.stream("GET", f"{url}/api/events", headers=headers) as stream:
                    for line in stream.iter_lines():
                        snapshots[0] += line.startswith("event: snapshot")
                        if stop.is_set():
                            return

            assert httpx.get(f"{url}/api/overview", headers=headers, timeout=30).status_code == 200
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            poll_for(lambda: snapshots[0] >= 2, 30, 0.05, "live snapshots")
            open_kernel, open_console = window([pid, console.pid])
            say(f"  overview open: kernel {open_kernel:.2f}%, console {open_console:.2f}% ({snapshots[0]} snapshots)")
            stop.set()
            watcher.join(10)
        finally:
            console.terminate()
            console.wait(10)

    report.details.update(agents=N_AGENTS, window_s=WINDOW_S, snapshots_per_s=1.0)
    report.add("kernel CPU, no console (baseline)", none, "% of a core")
    report.add("kernel CPU, console running, nobody watching", idle_kernel, "% of a core", baseline=none, baseline_name="no console")
    report.add("kernel CPU, overview open (live, 1/s)", open_kernel, "% of a core", baseline=none, baseline_name="no console")
    report.add("console's extra kernel CPU, overview open", max(0.0, open_kernel - none), "% of a core", target="< 1%")
    report.add("console process CPU, overview open", open_console, "% of a core")
    report.notes.append(f"kernel CPU from /proc/PID/stat utime+stime over {WINDOW_S:.0f} s windows (10 ms ticks); same kernel, same agents")


if __name__ == "__main__":
    raise SystemExit(main("console_cpu", run))
