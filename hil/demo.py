"""``make demo``: the rover on simulated hardware, in about a minute, with no hardware, network
or LLM key. Runs hil/benches/rover.toml with a live view and ends with what Clove contained,
denied and restarted, the e-stop interlock's latency and every assertion; exit status 0 only if
all of them hold. Nothing is left running.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hil.bench import load_bench
from hil.harness import run_bench
from hil.view import LiveView, render_report

BENCH = Path(__file__).resolve().parent / "benches" / "rover.toml"

INTRO = """\
Clove rover demo: five agents on a robot whose motors, GPS and e-stop are simulated.

  navigator   drives a square route from GPS and odometry (unchanged python-can and pyserial code)
  telemetry   stores odometry, reports motor faults and e-stop edges as events
  cpu_hog     spins forever: throttled to its 20% quota
  leaker      leaks memory: OOM-killed at 64M, restarted by policy
  rogue       tries a forbidden CAN id, a device it has no grant for, the network, another agent

Fault plan: 30% of CAN frames dropped at 5 s, GPS garbage at 10 s, corrupt sentences at 12 s,
the e-stop pressed at 20 s while the navigator is still driving. The kernel's interlock must put
zero speed on the bus within 50 ms, whatever the agents do.
"""


def main() -> int:
    print(INTRO, flush=True)
    bench = load_bench(BENCH)
    with LiveView("rover demo", bench.duration) as view:
        report = run_bench(bench, live=view)
    print()
    print(render_report(report))
    print()
    print("PASS: every claim above holds." if report.passed else "FAIL: see the assertions above.")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
