"""``clove hil run BENCH --report DIR`` for real: the rover and trading benches (their fault plans
compressed in time to keep this short), and a bench without faults, each run by the CLI in a
child process. Every plot the page references exists, decodes and has its declared size; the
plots' data (plots.json) shows what each was drawn from.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hil.report.plots import SIZES

REPO = Path(__file__).resolve().parents[2]
BENCHES = REPO / "hil" / "benches"

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for the kernel's sandbox")]


def _compressed(name: str, dest: Path, duration: float, scale: float) -> Path:
    """The bench file with its duration cut and every fault's `at` and `for` multiplied by
    `scale`; the deployment made absolute (the copy lives elsewhere)."""
    text = (BENCHES / f"{name}.toml").read_text().replace('deployment = "../../configs/', f'deployment = "{REPO}/configs/')
    text = re.sub(r"(?m)^duration = [\d.]+", f"duration = {duration}", text)
    text = re.sub(r"(?m)^(at|for) = ([\d.]+)", lambda m: f"{m.group(1)} = {float(m.group(2)) * scale:g}", text)
    path = dest / f"{name}.toml"
    path.write_text(text)
    return path


def _run(bench: Path, report_dir: Path) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "clove", "hil", "run", str(bench), "--json", "--report", str(report_dir)],
        capture_output=True, text=True, timeout=200, cwd=str(REPO),
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: an assertion failed; the report is still written
    out = json.loads(proc.stdout)
    assert not out["errors"], out["errors"]
    return out, time.monotonic() - started


def _check_plots(report_dir: Path, expected: set[str]) -> tuple[str, dict[str, Any]]:
    html = (report_dir / "report.html").read_text()
    referenced = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(referenced) == sorted(f"{name}.png" for name in expected)
    assert {p.name for p in report_dir.glob("*.png")} == set(referenced)
    for file in referenced:
        path = report_dir / file
        assert path.stat().st_size > 0
        with Image.open(path) as png:
            png.load()  # decodes the whole image, not just its header
            assert png.format == "PNG"
            assert png.size == SIZES[file[:-4]]
            assert len(png.getcolors(1 << 20) or []) > 20, f"{file} is blank"
    return html, json.loads((report_dir / "plots.json").read_text())


@pytest.mark.timeout(240)
def test_the_rover_report_shows_the_path_the_speed_and_the_estop(tmp_path):
    bench = _compressed("rover", tmp_path, duration=8, scale=0.25)  # the e-stop at 5 s, the CAN drop 1.25-2.25 s
    out, wall = _run(bench, tmp_path / "report")
    html, data = _check_plots(tmp_path / "report", {"faults", "path", "speed", "latency"})
    plots = data["plots"]
    assert plots["path"]["samples"]["motor"] >= 40  # 10 Hz over 8 s, allowing for a starved machine
    assert len(plots["path"]["waypoints"]) == 4  # the navigator's square, from its published state
    assert [m["label"] for m in plots["speed"]["interlocks"]] == ["estop engaged"]
    assert 4.5 < plots["speed"]["interlocks"][0]["t"] < 7
    assert {f["name"] for f in plots["faults"]["faults"]} == {"can-drop", "gps-garbage", "gps-corrupt", "estop"}
    assert plots["latency"]["calls"]["motor_bus"] > 0
    assert "estop" in html and out["report"]["html"] == str(tmp_path / "report" / "report.html")
    print(f"\nrover: report drawn in {out['report']['render_s']:.2f} s; bench ran {out['wall_s']:.1f} s; CLI {wall:.1f} s")


@pytest.mark.timeout(240)
def test_the_trading_report_shows_position_open_orders_and_refusals(tmp_path):
    bench = _compressed("trading", tmp_path, duration=7, scale=0.4)  # the kill switch at 4.4 s
    out, wall = _run(bench, tmp_path / "report")
    _, data = _check_plots(tmp_path / "report", {"faults", "trading", "latency"})
    trading = data["plots"]["trading"]
    assert trading["positions"], "fills at the venue"
    assert trading["open_orders_samples"], "open orders sampled"
    refused = {k.split(":")[0]: n for k, n in trading["refused"].items()}
    assert refused.get("runaway", 0) > 0
    assert any(k.endswith(": state_halted") for k in trading["refused"]), "refusals after the kill switch"
    print(f"\ntrading: report drawn in {out['report']['render_s']:.2f} s; bench ran {out['wall_s']:.1f} s; CLI {wall:.1f} s")


@pytest.mark.timeout(120)
def test_a_bench_without_faults_still_gets_a_report(tmp_path):
    deployment = tmp_path / "one.toml"
    deployment.write_text(f'[agents.worker]\nscript = "{REPO}/examples/agents/worker.py"\nmemory = "96M"\n')
    bench = tmp_path / "quiet.toml"
    bench.write_text('[bench]\nname = "quiet"\ndeployment = "one.toml"\nduration = 1.5\n\n[[assertions]]\nkind = "journal_verified"\n')
    out, _ = _run(bench, tmp_path / "report")
    html, data = _check_plots(tmp_path / "report", {"faults"})
    assert out["passed"] and data["plots"]["faults"] == {"faults": [], "interlocks": []}
    assert "no faults in this bench" in html


def test_a_report_path_that_is_a_file_is_refused_before_the_run(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "clove", "hil", "run", str(BENCHES / "rover.toml"), "--report", str(taken)],
        capture_output=True, text=True, timeout=60, cwd=str(REPO),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "exists and is not a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert "bench rover" not in proc.stdout, "refused before the bench ran"
