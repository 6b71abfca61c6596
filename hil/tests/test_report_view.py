"""The bench report and the live view's plain-text fallback (no terminal)."""

from __future__ import annotations

import io

from hil.assertions import Outcome
from hil.harness import BenchReport
from hil.view import LiveView, render_report


def report(passed: bool) -> BenchReport:
    outcomes = [
        Outcome("zero speed", "frame_after", True, 2.4, "id 0x101 within 50 ms of estop", "first matching frame 2.4 ms after"),
        Outcome("journal", "journal_verified", passed, 10, "the journal's hash chain verifies", "" if passed else "line 3: edited"),
    ]
    return BenchReport(
        bench="rover",
        passed=passed,
        outcomes=outcomes,
        timeline=[{"t": 20.0, "fault": "estop", "kind": "gpio_press"}],
        latency={"device_call_ms": {"count": 3, "p50": 0.8, "p99": 1.2, "max": 1.3}, "interlocks": [{"name": "estop", "actions": {"motor_bus.send": 1.6}}]},
        summary={"denied": 2, "denied_by_agent": {"rogue": 2}, "restarts": {"leaker": 1}, "oom_kills": 1, "throttled_periods": {}, "device_restarts": {}, "journal_records": 10, "journal_verified": passed},
        wall_s=31.0,
    )


def test_the_report_names_each_assertion_with_its_measurement():
    text = render_report(report(False))
    assert text.splitlines()[0] == "bench rover: FAIL in 31.0 s"
    assert "  [pass] zero speed: id 0x101 within 50 ms of estop; measured 2.4 (first matching frame 2.4 ms after)" in text
    assert "  [FAIL] journal: the journal's hash chain verifies; measured 10 (line 3: edited)" in text
    assert "   20.000 s  estop (gpio_press)" in text
    assert "interlock estop: motor_bus.send 1.6 ms" in text and "hash chain NOT verified" in text
    assert render_report(report(True)).startswith("bench rover: PASS")
    assert report(True).to_dict()["assertions"][0]["measured"] == 2.4


def test_without_a_terminal_the_live_view_prints_a_status_line():
    out = io.StringIO()
    views = {"agents": [{"name": "nav", "state": "running", "restarts": 0}, {"name": "leaker", "state": "backoff", "restarts": 2}], "interlocks": [{"name": "estop", "engaged": True}], "devices": [], "timeline": []}
    with LiveView("rover", 30, out=out) as view:
        view(1.0, views)
        view(1.5, views)  # within 5 s of the last line: nothing more
    lines = out.getvalue().splitlines()
    assert lines == ["[  1.0s] nav:running, leaker:backoff(r2); interlocks engaged: ['estop']"]


def test_on_a_terminal_the_live_view_draws_its_tables(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "160")  # rich sizes its tables to the terminal
    out = Tty()
    views = {
        "agents": [{"name": "nav", "state": "running", "restarts": 0, "exit_reason": None, "stats": {"nr_throttled": 3, "memory_current": 50 << 20}}],
        "devices": [{"name": "motor_bus", "driver": "can", "state": "ready", "restarts": 0, "counters": {"calls": 7, "items_in": 9, "bytes_in": 0, "delivered": 9, "dropped": 0, "denied": 1}}],
        "interlocks": [{"name": "estop", "engaged": True, "state": {"cause": "estop: pressed"}}],
        "timeline": [{"t": 20.0, "fault": "estop", "kind": "gpio_press"}],
    }
    with LiveView("rover", 30, out=out) as view:
        view(20.5, views)
    text = out.getvalue()
    for needle in ("rover", "nav", "running", "motor_bus", "ready", "estop (gpio_press)", "interlock estop ENGAGED", "50M"):
        assert needle in text, needle
