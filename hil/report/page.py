"""The report's HTML page: one self-contained file (inline CSS, no script) beside its PNGs.

Everything that comes from the run (assertion names, measurements, agent names, error text) is
HTML-escaped: an agent chooses its own log lines and names, and the page must not run them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from html import escape
from typing import Any

from hil.bench import Bench
from hil.harness import BenchReport


@dataclass(frozen=True, slots=True)
class Image:
    """One plot: its file name (relative to the page), caption and pixel size."""

    file: str
    title: str
    width: int
    height: int


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1060px; color: #222; }
h1 { margin-bottom: .2em; } .pass { color: #2b9348; } .fail { color: #d00000; }
table { border-collapse: collapse; margin: .5em 0 1.5em; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .5em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figcaption { font-weight: 600; margin-bottom: .3em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
.meta { color: #555; }
"""


def render_page(bench: Bench, report: BenchReport, images: list[Image], render_s: float) -> str:
    verdict = '<span class="pass">PASS</span>' if report.passed else '<span class="fail">FAIL</span>'
    passed = sum(1 for o in report.outcomes if o.passed)
    scale = f"; time scale ×{report.time_scale:g}" if report.time_scale != 1 else ""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>bench {escape(report.bench)}: {'PASS' if report.passed else 'FAIL'}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>bench {escape(report.bench)}: {verdict}</h1>",
        f'<p class="meta">{escape(str(bench.path))}; ran {report.wall_s:.1f} s (duration {bench.duration:g} s{scale}); '
        f"{passed}/{len(report.outcomes)} assertions passed; report drawn in {render_s:.2f} s; "
        f"{escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>",
    ]
    if report.errors:
        parts.append("<h2>Errors</h2>" + "".join(f"<pre>{escape(e)}</pre>" for e in report.errors))
    parts.append(_assertions(report))
    parts.append("<h2>Plots</h2>")
    for image in images:
        parts.append(
            f'<figure id="{escape(image.file)}"><figcaption>{escape(image.title)}</figcaption>'
            f'<img src="{escape(image.file)}" alt="{escape(image.title)}" width="{image.width}" height="{image.height}"></figure>'
        )
    parts.append(_timeline(report))
    parts.append(_summary(report))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _assertions(report: BenchReport) -> str:
    rows = []
    for o in report.outcomes:
        mark = '<span class="pass">pass</span>' if o.passed else '<span class="fail">FAIL</span>'
        rows.append(f"<tr><td>{mark}</td><td>{escape(o.name)}</td><td>{escape(o.expected)}</td><td>{escape(_text(o.measured))}</td><td>{escape(o.detail)}</td></tr>")
    if not rows:
        return "<h2>Assertions</h2><p>none checked</p>"
    return "<h2>Assertions</h2><table><tr><th></th><th>assertion</th><th>expected</th><th>measured</th><th>detail</th></tr>" + "".join(rows) + "</table>"


def _timeline(report: BenchReport) -> str:
    if not report.timeline:
        return "<h2>Fault timeline</h2><p>no faults in this bench's plan</p>"
    rows = []
    for entry in report.timeline:
        extra = {k: v for k, v in entry.items() if k not in ("t", "fault", "kind")}
        rows.append(f'<tr><td class="num">{float(entry["t"]):.3f}</td><td>{escape(str(entry["fault"]))}</td><td>{escape(str(entry.get("kind", "")))}</td><td>{escape(_text(extra) if extra else "")}</td></tr>')
    return "<h2>Fault timeline</h2><table><tr><th>s</th><th>fault</th><th>kind</th><th>options</th></tr>" + "".join(rows) + "</table>"


def _summary(report: BenchReport) -> str:
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(_text(v))}</td></tr>" for k, v in {**report.summary, **report.latency}.items())
    return f"<h2>Summary</h2><table>{rows}</table>"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
