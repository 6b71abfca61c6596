"""Run every Clove benchmark and print one summary table (``--json``: one JSON document).

Each benchmark runs as its own subprocess (``bench/<name>.py --json-out FILE``) with a time
limit; a failing one is reported and the others still run (the exit status is then 1).

    .venv/bin/python bench/run_all.py                 # progress + per-bench tables + summary
    .venv/bin/python bench/run_all.py --json          # JSON on stdout, progress on stderr
    .venv/bin/python bench/run_all.py --only noop_latency throughput
    .venv/bin/python bench/run_all.py --group fast-paths   # one issue's figures (see GROUPS)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from common import METRIC_HEADERS, Metric, fmt_num, print_table  # noqa: E402

BENCHES = (
    "noop_latency", "noop_breakdown", "throughput", "spawn_latency", "neighbour", "kernel_rss", "state_ops",
    "messaging", "llm_gateway", "device_can", "device_fanout", "device_can_filter", "device_serial", "interlock_latency", "trading", "recording_overhead",
    "containment", "compiled_core", "top_refresh", "relay", "egress", "llm_endpoint", "prometheus_scrape", "console_cpu",
    "fleet_ship", "fleet_estop", "kernel_soak",
)  # fmt: skip
#: Arguments a bench gets here: the soak's figure is ten minutes of churn; one fits a run.
ARGS = {"kernel_soak": ["--minutes", "1"]}
#: Named selections: the figures one piece of work is judged by, run together so that each
#: baseline and ratio comes from the same run.
GROUPS = {
    # The syscall, message, device, order, spawn and memory fast paths (bench/README.md).
    "fast-paths": (
        "noop_latency", "throughput", "messaging", "device_fanout", "device_can", "device_serial", "trading",
        "spawn_latency", "kernel_rss", "kernel_soak", "compiled_core", "containment",
    ),
    "containment": ("containment", "neighbour", "kernel_rss"),
    "fleet": ("fleet_estop", "fleet_ship", "prometheus_scrape"),
}  # fmt: skip
TIME_LIMIT_S = 170


def run_one(name: str, out: Any) -> dict[str, Any]:
    """Run ``bench/<name>.py``; its report as a dict, or ``{"bench", "error"}``."""
    with tempfile.NamedTemporaryFile(prefix=f"clove-{name}-", suffix=".json", delete=False) as tmp:
        result_path = Path(tmp.name)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(BENCH_DIR / f"{name}.py"), *ARGS.get(name, []), "--json-out", str(result_path)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            timeout=TIME_LIMIT_S,
            check=False,
        )
        if proc.returncode != 0:
            return {"bench": name, "error": f"exit status {proc.returncode}"}
        report: dict[str, Any] = json.loads(result_path.read_text())
        return report
    except subprocess.TimeoutExpired:
        return {"bench": name, "error": f"timed out after {TIME_LIMIT_S} s"}
    except (OSError, ValueError) as err:
        return {"bench": name, "error": f"no report: {err}"}
    finally:
        result_path.unlink(missing_ok=True)
        print(f"[{name}: {time.monotonic() - started:.1f} s]", file=out, flush=True)


def summary_rows(reports: list[dict[str, Any]]) -> list[list[str]]:
    rows: list[list[str]] = []
    for report in reports:
        if "error" in report:
            rows.append([report["bench"], f"FAILED: {report['error']}", "", "", "", "", "", ""])
            continue
        for m in report["metrics"]:
            metric = Metric(
                m["name"], m["value"], m["unit"], m["baseline"], m["baseline_name"], m["target"], m["note"]
            )
            ratio = metric.ratio
            rows.append(
                [
                    report["bench"],
                    metric.name,
                    fmt_num(metric.value),
                    metric.unit,
                    metric.baseline_name or "-",
                    fmt_num(metric.baseline),
                    "-" if ratio is None else f"{ratio:.2f}",
                    metric.target or "-",
                ]
            )
    return rows


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout (progress goes to stderr)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=BENCHES, metavar="BENCH", help=f"run only these ({', '.join(BENCHES)})"
    )
    parser.add_argument("--group", choices=sorted(GROUPS), help="run one named selection (added to --only)")
    args = parser.parse_args()
    selected = list(args.only or [])
    if args.group:
        selected += [name for name in GROUPS[args.group] if name not in selected]
    out = sys.stderr if args.json else sys.stdout
    info = machine()
    started = time.monotonic()
    reports = []
    for name in selected or BENCHES:
        print(f"\n##### {name}", file=out, flush=True)
        reports.append(run_one(name, out))
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    info["loadavg_at_end"] = os.getloadavg()
    failed = [r["bench"] for r in reports if "error" in r]
    if args.json:
        print(json.dumps({"machine": info, "reports": reports, "failed": failed}, indent=2))
    else:
        load = f"load {info['loadavg_at_start'][0]:.2f} at start, {info['loadavg_at_end'][0]:.2f} at end"
        print(f"\n===== summary ({info['elapsed_s']} s; {info['cpus']} CPUs; {load}) =====")
        print("ratio = value / baseline, both measured in the same run")
        print_table(["bench", *METRIC_HEADERS], summary_rows(reports), left=2)
        if failed:
            print(f"\nFAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
