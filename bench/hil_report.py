"""What the HIL report's pictures cost: the time to draw a bench run's HTML report (every plot,
matplotlib's Agg canvas) against the time the bench itself took, both from the same run.

The rover bench (hil/benches/rover.toml, 30 s of schedule) runs once through the harness, as
``clove hil run`` does; its report is then drawn three times into a temporary directory and the
median is the figure. The first drawing includes matplotlib's import and font cache warm-up.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import REPO, Report, main

from hil.bench import load_bench
from hil.harness import run_bench

DRAWINGS = 3


def run(report: Report, say: Callable[[str], None]) -> None:
    bench = load_bench(REPO / "hil" / "benches" / "rover.toml")
    say(f"hil_report: running the rover bench ({bench.duration:g} s of schedule)")
    result = run_bench(bench)
    if result.errors:
        raise RuntimeError(f"the bench did not run: {result.errors}")
    started = time.perf_counter()
    from hil.report.writer import write_report  # matplotlib's import is part of the first drawing

    times, plots = [], 0
    with tempfile.TemporaryDirectory(prefix="clove-hil-report-") as out:
        for i in range(DRAWINGS):
            files = write_report(bench, result, Path(out) / str(i))
            times.append(time.perf_counter() - started if i == 0 else files.render_s)
            plots = len(files.images)
            started = time.perf_counter()
    report.add("first report (import + draw)", times[0], "s", baseline=result.wall_s, baseline_name="bench run")
    report.add(f"report, {plots} plots (median of {DRAWINGS - 1})", statistics.median(times[1:]), "s", baseline=result.wall_s, baseline_name="bench run", target="≤ 0.1")
    report.details.update(bench_wall_s=round(result.wall_s, 2), render_s=[round(t, 3) for t in times], journal_records=result.summary.get("journal_records"))


if __name__ == "__main__":
    sys.exit(main("hil_report", run))
