"""Write a bench run's HTML report: ``report.html`` and its PNG plots in one directory.

Which plots a run gets follows from what it recorded, not from the bench's name: every run gets
the fault timeline (a bench without faults says so in it); a run with a motor controller gets the
path driven with the waypoints and the speed over time; a run with a FIX venue gets position,
open orders and refusals; any run with device calls gets their latency histogram.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clove.errors import ConfigError
from hil.assertions import RunRecord
from hil.bench import Bench
from hil.harness import BenchReport
from hil.report import plots, series
from hil.report.page import Image, render_page

REPORT_FILE = "report.html"
#: What each plot was drawn from, in counts and a few values: for scripts and tests, which
#: cannot read a picture.
DATA_FILE = "plots.json"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """What :func:`write_report` wrote, and how long drawing it took."""

    html: Path
    images: list[Image] = field(default_factory=list)
    render_s: float = 0.0


def write_report(bench: Bench, report: BenchReport, out_dir: str | Path) -> ReportFiles:
    """Render the report of ``report`` (a run of ``bench``) into ``out_dir`` (created if missing).

    :raises ConfigError: ``out_dir`` exists and is not a directory, or cannot be written.
    """
    started = time.perf_counter()
    directory = Path(out_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"--report {directory}: exists and is not a directory") from None
    except OSError as err:
        raise ConfigError(f"--report {directory}: cannot create it: {err.strerror}") from None
    record = report.record if report.record is not None and report.record.t0 else RunRecord()  # no clock: nothing to time
    planned = _plots(bench, report, record)
    images = [_draw(directory, plot) for plot in planned]
    render_s = time.perf_counter() - started
    html = directory / REPORT_FILE
    data = {"bench": report.bench, "passed": report.passed, "wall_s": round(report.wall_s, 3), "render_s": round(render_s, 3), "plots": {p.name: p.data for p in planned}}
    try:
        html.write_text(render_page(bench, report, images, render_s))
        (directory / DATA_FILE).write_text(json.dumps(data, indent=1, default=str))
    except OSError as err:
        raise ConfigError(f"--report {directory}: cannot write the page: {err.strerror}") from None
    return ReportFiles(html, images, render_s)


@dataclass(frozen=True, slots=True)
class _Plot:
    name: str  #: the PNG's stem, a key of plots.SIZES
    title: str
    draw: Callable[[Path], Path]
    data: dict[str, Any]  #: what it shows, in numbers (plots.json)


def _draw(directory: Path, plot: _Plot) -> Image:
    path = directory / f"{plot.name}.png"
    try:
        plot.draw(path)
    except OSError as err:
        raise ConfigError(f"--report {directory}: cannot write {path.name}: {err.strerror}") from None
    width, height = plots.SIZES[plot.name]
    return Image(path.name, plot.title, width, height)


def _plots(bench: Bench, report: BenchReport, record: RunRecord) -> list[_Plot]:
    faults = series.fault_windows(report.timeline)
    marks = series.interlock_marks(record)
    interlocks = [{"t": round(m.t, 3), "label": m.label} for m in marks]
    out = [
        _Plot("faults", "Fault timeline", lambda p: plots.fault_timeline(p, faults, marks, bench.duration),
              {"faults": [{"name": f.name, "kind": f.kind, "start": f.start, "end": f.end} for f in faults], "interlocks": interlocks}),
    ]  # fmt: skip
    tracks = series.paths(record)
    if tracks or record.motor:
        route = series.waypoints(record)
        speeds = series.wheel_speeds(record)
        out.append(_Plot("path", "Path driven, with the waypoints", lambda p: plots.rover_path(p, tracks, route, marks),
                         {"samples": {sim: len(ts) for sim, (ts, _, _) in tracks.items()}, "waypoints": route, "interlocks": interlocks}))  # fmt: skip
        out.append(_Plot("speed", "Speed over time, with the fault windows and the e-stop", lambda p: plots.speed_over_time(p, speeds, faults, marks),
                         {"samples": {sim: len(ts) for sim, (ts, _, _) in speeds.items()}, "fault_windows": len(faults), "interlocks": interlocks}))  # fmt: skip
    if any("fills" in t or "open_orders" in t for t in record.tracks.values()):
        positions, orders, refused = series.positions(record), series.open_orders(record), series.refusals(record)
        out.append(_Plot("trading", "Position and open orders over time, with refusals", lambda p: plots.trading_over_time(p, positions, orders, refused, faults, marks, bench.duration),
                         {"positions": {k: qs[-1] for k, (_, qs) in positions.items()}, "open_orders_samples": {a: len(ts) for a, (ts, _) in orders.items()},
                          "refused": _count(refused)}))  # fmt: skip
    latencies = series.device_latencies(record)
    if latencies:
        out.append(_Plot("latency", "Device call latency", lambda p: plots.latency_histogram(p, latencies), {"calls": {d: len(v) for d, v in latencies.items()}}))
    return out


def _count(refused: list[series.Refusal]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in refused:
        counts[f"{r.agent}: {r.reason}"] = counts.get(f"{r.agent}: {r.reason}", 0) + r.count
    return counts
