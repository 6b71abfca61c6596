"""The HTML report drawn from a hand-made run record (no kernel): which plots a run gets, their
sizes, the page escaping what agents chose, a failed run still reported, and the bounded
sample series behind the plots. Real runs through ``clove hil run --report`` are in
tests/integration/test_hil_report.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from hil.assertions import Outcome, RunRecord
from hil.bench import load_bench
from hil.harness import BenchReport
from hil.report.plots import SIZES
from hil.report.track import Track
from hil.report.writer import write_report
from hil.world import World

BENCHES = Path(__file__).resolve().parent.parent / "benches"
T0 = 1_800_000_000.0


def _record() -> RunRecord:
    world = World()
    lat, lon = world.xy_to_latlon(0.5, -0.25)  # the navigator's first fix, a little off the origin
    journal = [
        {"timestamp": T0 + 0.5 + i * 0.01, "syscall": "device.call", "code": "ok", "duration_us": 300 + 40 * i, "args": {"device": "motor_bus", "op": "send"}} for i in range(50)
    ] + [
        {"timestamp": T0 + 5.0, "event_type": "interlock.engaged", "details": {"name": "estop"}},
        {"timestamp": T0 + 2.0, "syscall": "device.call", "code": "risk.denied", "agent_name": "<script>alert(1)</script>", "args": {"op": "submit_order"}, "details": {"reason": "max_position"}},
        {"timestamp": T0 + 3.0, "syscall": "device.call", "code": "risk.denied", "event_type": "denials.aggregated", "agent_name": "runaway", "details": {"count": 40, "first_time": T0 + 3, "last_time": T0 + 6, "reason": "order_rate"}},
    ]
    return RunRecord(
        journal=journal,
        t0=T0,
        motor={"motor": [(T0 + i * 0.02, min(i * 8, 600), min(i * 8, 600)) for i in range(400)]},
        tracks={
            "motor": {"pose": [(T0 + i * 0.1, i * 0.06, 0.0, 0.0) for i in range(80)]},
            "venue": {"open_orders": [(T0 + i * 0.1, {"runaway": i % 7}) for i in range(80)], "fills": [(T0 + 1.0, "runaway", "ACME", 5.0), (T0 + 2.0, "runaway", "ACME", -2.0)]},
        },
        state_values={"global:rover/navigator": {"route": [[10, 0], [10, 10], [0, 10], [0, 0]], "origin": [lat, lon]}},
    )


def _report(record: RunRecord | None, *, errors: list[str] | None = None) -> BenchReport:
    return BenchReport(
        bench="rover",
        passed=not errors,
        outcomes=[Outcome("zero speed <b>", "frame_after", True, 2.4, "id 0x101 within 50 ms of estop")],
        timeline=[{"t": 1.0, "fault": "can-drop", "kind": "can_drop", "share": 0.3}, {"t": 2.0, "fault": "can-drop ended", "kind": "ended"}, {"t": 5.0, "fault": "estop", "kind": "gpio_press"}],
        latency={},
        summary={"denied": 1},
        wall_s=9.0,
        errors=errors or [],
        record=record,
    )


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_every_plot_is_drawn_at_its_size_and_the_page_references_each(tmp_path):
    files = write_report(load_bench(BENCHES / "rover.toml"), _report(_record()), tmp_path / "out")
    html = files.html.read_text()
    assert sorted(_images(html)) == sorted(i.file for i in files.images) == ["faults.png", "latency.png", "path.png", "speed.png", "trading.png"]
    for image in files.images:
        with Image.open(tmp_path / "out" / image.file) as png:
            png.load()
            assert png.size == SIZES[image.file[:-4]] == (image.width, image.height)
            assert len(png.getcolors(1 << 20) or []) > 20, f"{image.file} is blank"


def test_the_waypoints_are_moved_into_the_worlds_frame_and_the_refusals_counted(tmp_path):
    import json

    write_report(load_bench(BENCHES / "rover.toml"), _report(_record()), tmp_path)
    data = json.loads((tmp_path / "plots.json").read_text())["plots"]
    first = data["path"]["waypoints"][0]
    assert first == pytest.approx([10.5, -0.25], abs=1e-3)
    assert data["path"]["interlocks"] == [{"t": 5.0, "label": "estop engaged"}]
    assert data["trading"]["refused"] == {"<script>alert(1)</script>: max_position": 1, "runaway: order_rate": 40}
    assert data["trading"]["positions"] == {"runaway ACME": 3.0}
    assert data["faults"]["faults"][0] == {"name": "can-drop", "kind": "can_drop", "start": 1.0, "end": 2.0}


def test_what_agents_chose_is_escaped_on_the_page(tmp_path):
    files = write_report(load_bench(BENCHES / "rover.toml"), _report(_record(), errors=["kernel log: <script>x()</script>"]), tmp_path)
    html = files.html.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "zero speed &lt;b&gt;" in html


def test_a_run_that_never_started_still_gets_a_report(tmp_path):
    never = _record()
    never.t0 = 0.0  # the bench's clock never started: the journal's times have nothing to count from
    for record in (None, never):
        report = _report(record, errors=["TimeoutError: every device ready"])
        report.timeline = []
        files = write_report(load_bench(BENCHES / "rover.toml"), report, tmp_path)
        assert [i.file for i in files.images] == ["faults.png"]
    html = files.html.read_text()
    assert "FAIL" in html and "TimeoutError" in html and "no faults" in html


def test_a_report_dir_that_is_a_file_is_a_clear_error(tmp_path):
    from clove.errors import ConfigError

    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        write_report(load_bench(BENCHES / "rover.toml"), _report(_record()), target)


def test_a_track_stays_bounded_and_spans_the_whole_run():
    track = Track(max_rows=1000)
    for i in range(100_000):
        track.add(float(i))
    assert len(track.rows) < 1000
    assert track.rows[0] == (0.0,) and track.rows[-1][0] > 99_000
    gaps = {b[0] - a[0] for a, b in zip(track.rows, track.rows[1:], strict=False)}
    assert len(gaps) <= 2, "evenly spaced (one stride, or two across the last halving)"
