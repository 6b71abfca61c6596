"""``clove hil run BENCH``: run a hardware-in-the-loop bench and report (docs/hil.md)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from clove.errors import ConfigError


def cmd_hil_run(args: argparse.Namespace, error: type[Exception]) -> int:
    from hil.bench import load_bench
    from hil.harness import run_bench
    from hil.view import LiveView, render_report

    try:
        bench = load_bench(args.bench, time_scale=args.time_scale)
    except ConfigError as err:
        raise error(err.message) from None
    if args.report is not None:
        _check_report_dir(args.report, error)  # before the run, not after it
    if args.json:
        report = run_bench(bench, keep_dir=args.keep, kernel_cgroup=args.kernel_cgroup)
        out = report.to_dict()
        if args.report is not None:
            files = _write_report(bench, report, args.report, error)
            out["report"] = {"html": str(files.html), "plots": [i.file for i in files.images], "render_s": round(files.render_s, 3)}
        print(json.dumps(out, indent=2, default=str))
    else:
        with LiveView(f"bench {bench.name}", bench.duration) as view:
            report = run_bench(bench, live=None if args.no_live else view, keep_dir=args.keep, kernel_cgroup=args.kernel_cgroup)
        print(render_report(report))
        if report.run_dir:
            print(f"run dir kept: {report.run_dir}")
        if args.report is not None:
            files = _write_report(bench, report, args.report, error)
            print(f"report: {files.html} ({len(files.images)} plots drawn in {files.render_s:.2f} s; the bench ran {report.wall_s:.1f} s)")
    return 0 if report.passed else 1


def _check_report_dir(directory: str, error: type[Exception]) -> None:
    try:
        import hil.report.writer  # noqa: F401 - matplotlib comes with it
    except ImportError as err:
        raise error(f"--report needs matplotlib ({err.name} is missing): pip install 'clove[report]'") from None
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise error(f"--report {directory}: exists and is not a directory")


def _write_report(bench: Any, report: Any, directory: str, error: type[Exception]) -> Any:
    from hil.report.writer import write_report

    try:
        return write_report(bench, report, directory)
    except ConfigError as err:
        raise error(err.message) from None


def add_parsers(sub: Any, bind: Callable[[Callable[[argparse.Namespace, type[Exception]], int]], Any]) -> None:
    h = sub.add_parser("hil", help="hardware-in-the-loop benches: simulated devices, fault plans, assertions")
    hsub = h.add_subparsers(dest="hil_command", required=True, metavar="HIL_COMMAND")
    r = hsub.add_parser("run", help="run a bench file and report; exit 0 only if every assertion passes")
    r.add_argument("bench", help="bench TOML, e.g. hil/benches/rover.toml")
    r.add_argument("--json", action="store_true", help="the report as JSON, no live view")
    r.add_argument("--no-live", action="store_true", help="no live view")
    r.add_argument("--keep", action="store_true", help="keep the run directory (patched config, bus log, kernel state)")
    r.add_argument("--report", metavar="DIR", help="also write an HTML report with plots to DIR/report.html (needs matplotlib: the 'report' extra)")
    r.add_argument("--time-scale", type=float, metavar="N", help="multiply the bench's schedule and time limits by N (a machine N times slower); overrides [bench].time_scale")
    r.add_argument("--kernel-cgroup", metavar="DIR", help="start the kernel in this cgroup v2 directory, one of its own (as systemd's Delegate=yes gives a service)")
    r.set_defaults(func=bind(cmd_hil_run))



