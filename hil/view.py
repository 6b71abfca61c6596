"""How a bench run looks: a live view while it runs (rich, on a terminal) and the final report.

rich renders the live tables because redrawing a multi-table screen in place, in colour, with
correct widths, is what it does well; without a terminal the view prints a one-line status
every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from hil.harness import BenchReport


class LiveView:
    """Callable as the harness's ``live`` hook. Use as a context manager."""

    def __init__(self, title: str, duration: float, out: TextIO | None = None) -> None:
        self.title = title
        self.duration = duration
        self.out = out or sys.stdout
        self._live: Any = None
        self._last_line = 0.0

    def __enter__(self) -> LiveView:
        if self.out.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self.out), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def __call__(self, elapsed: float, views: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(self._render(elapsed, views))
            return
        if time.monotonic() - self._last_line >= 5:
            self._last_line = time.monotonic()
            agents = ", ".join(f"{a['name']}:{a['state']}" + (f"(r{a['restarts']})" if a.get("restarts") else "") for a in views["agents"])
            engaged = [i["name"] for i in views["interlocks"] if i["engaged"]]
            print(f"[{elapsed:5.1f}s] {agents}; interlocks engaged: {engaged or 'none'}", file=self.out, flush=True)

    def _render(self, elapsed: float, views: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.table import Table

        head = Table.grid()
        head.add_row(f"[bold]{self.title}[/]  {elapsed:5.1f} / {self.duration:.0f} s")
        agents = Table(title="agents", expand=True)
        for col in ("name", "state", "restarts", "exit", "throttled", "memory"):
            agents.add_column(col)
        for a in views["agents"]:
            stats = a.get("stats") or {}
            colour = {"running": "green", "paused": "yellow", "failed": "red"}.get(a["state"], "white")
            agents.add_row(a["name"], f"[{colour}]{a['state']}[/]", str(a.get("restarts", 0)), a.get("exit_reason") or "", str(stats.get("nr_throttled", "")), _mib(stats.get("memory_current")))
        devices = Table(title="devices", expand=True)
        for col in ("name", "driver", "state", "restarts", "calls", "in", "delivered", "dropped", "denied"):
            devices.add_column(col)
        for d in views["devices"]:
            c = d["counters"]
            colour = "green" if d["state"] == "ready" else "red"
            devices.add_row(d["name"], d["driver"], f"[{colour}]{d['state']}[/]", str(d["restarts"]), str(c["calls"]), str(c["items_in"] or c["bytes_in"]), str(c["delivered"]), str(c["dropped"]), str(c["denied"]))
        faults = Table(title="faults and interlocks", expand=True)
        faults.add_column("t")
        faults.add_column("what")
        for entry in views["timeline"][-8:]:
            faults.add_row(f"{entry['t']:.1f}", f"{entry['fault']} ({entry['kind']})")
        for i in views["interlocks"]:
            if i["engaged"]:
                faults.add_row("", f"[bold red]interlock {i['name']} ENGAGED[/]: {i['state']['cause']}")
        return Group(head, agents, devices, faults)


def _mib(value: Any) -> str:
    return f"{value / (1 << 20):.0f}M" if isinstance(value, int) else ""


def render_report(report: BenchReport) -> str:
    scale = f" (time scale x{report.time_scale:g}: the schedule and the limits below)" if report.time_scale != 1 else ""
    lines = [f"bench {report.bench}: {'PASS' if report.passed else 'FAIL'} in {report.wall_s:.1f} s{scale}", ""]
    if report.errors:
        lines += ["errors:", *[f"  {e}" for e in report.errors], ""]
    lines.append("assertions:")
    for o in report.outcomes:
        lines.append(f"  [{'pass' if o.passed else 'FAIL'}] {o.name}: {o.expected}; measured {o.measured}" + (f" ({o.detail})" if o.detail else ""))
    lines += ["", "fault timeline:"]
    lines += [f"  {e['t']:7.3f} s  {e['fault']} ({e['kind']})" for e in report.timeline] or ["  (none)"]
    lat = report.latency
    calls = lat.get("device_call_ms", {})
    lines += ["", "latency:", f"  device calls: {calls.get('count')} answered, p50 {calls.get('p50')} ms, p99 {calls.get('p99')} ms, max {calls.get('max')} ms"]
    for interlock in lat.get("interlocks", []):
        lines.append(f"  interlock {interlock['name']}: " + ", ".join(f"{k} {v} ms" for k, v in interlock["actions"].items()))
    s = report.summary
    lines += [
        "",
        "contained and denied:",
        f"  denied requests: {s.get('denied')} {s.get('denied_by_agent')}",
        f"  agent restarts: {s.get('restarts')}; OOM kills: {s.get('oom_kills')}; CPU-throttled periods: {s.get('throttled_periods')}",
        f"  device host restarts: {s.get('device_restarts')}",
        f"  journal: {s.get('journal_records')} records, hash chain {'verified' if s.get('journal_verified') else 'NOT verified'}",
    ]
    return "\n".join(lines)
