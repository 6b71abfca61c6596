"""The report's pictures, drawn with matplotlib's Agg canvas (no display, no pyplot and its
global figure registry): one function per plot, each writing one PNG of a fixed pixel size
(:data:`SIZES`) so a report's page can lay them out before they load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hil.report.series import FaultWindow, Mark, Refusal

DPI: Final = 100
#: Each plot's size in pixels (width, height): figsize × DPI, never trimmed.
SIZES: Final[dict[str, tuple[int, int]]] = {
    "faults": (1000, 360),
    "path": (700, 700),
    "speed": (1000, 420),
    "latency": (900, 420),
    "trading": (1000, 760),
}
_SHADES: Final = ("#f4a261", "#90be6d", "#4d908e", "#f9c74f", "#577590", "#f94144", "#43aa8b", "#9d4edd")


def _figure(name: str) -> Figure:
    width, height = SIZES[name]
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")  # no bbox_inches="tight": the size stays as declared
    return path


def _shade_faults(ax: Axes, faults: Sequence[FaultWindow], marks: Sequence[Mark], *, labels: bool) -> None:
    """Fault windows as shaded spans (instant faults as dashed lines), interlocks as red lines."""
    for i, f in enumerate(faults):
        colour = _SHADES[i % len(_SHADES)]
        if f.end is not None:
            ax.axvspan(f.start, f.end, color=colour, alpha=0.25, label=f.name if labels else None)
        else:
            ax.axvline(f.start, color=colour, linestyle="--", linewidth=1.2, label=f.name if labels else None)
    for m in marks:
        ax.axvline(m.t, color="#d00000" if m.engaged else "#2a9d8f", linewidth=2, label=m.label if labels else None)


def fault_timeline(path: Path, faults: Sequence[FaultWindow], marks: Sequence[Mark], duration: float) -> Path:
    """One lane per fault (a bar for its window, a diamond for an instant), interlocks across."""
    fig = _figure("faults")
    ax = fig.add_subplot()
    ax.set_title("fault timeline")
    ax.set_xlabel("seconds since the bench started")
    ax.set_xlim(0, max(duration, *(f.end or f.start for f in faults), *(m.t for m in marks), 1.0))
    if not faults and not marks:
        ax.text(0.5, 0.5, "no faults in this bench's plan", transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#555555")
        ax.set_yticks([])
    names = list(dict.fromkeys(f.name for f in faults))
    for f in faults:
        lane = names.index(f.name)
        colour = _SHADES[lane % len(_SHADES)]
        if f.end is not None:
            ax.broken_barh([(f.start, max(f.end - f.start, 0.01))], (lane - 0.35, 0.7), facecolors=colour)
        else:
            ax.plot([f.start], [lane], marker="D", markersize=9, color=colour)
        ax.annotate(f.kind, (f.start, lane), xytext=(4, 8), textcoords="offset points", fontsize=8)
    if names:
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.8, len(names) - 0.2)
        ax.invert_yaxis()
    for m in marks:
        ax.axvline(m.t, color="#d00000" if m.engaged else "#2a9d8f", linewidth=2, label=m.label)
    if marks:
        ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def rover_path(path: Path, tracks: dict[str, tuple[list[float], list[float], list[float]]], waypoints: Sequence[tuple[float, float]], marks: Sequence[Mark]) -> Path:
    """The path driven (x east, y north, metres) with the waypoints numbered and where the
    rover was when each interlock engaged."""
    fig = _figure("path")
    ax = fig.add_subplot()
    ax.set_title("path driven")
    ax.set_xlabel("metres east")
    ax.set_ylabel("metres north")
    for sim, (ts, xs, ys) in tracks.items():
        ax.plot(xs, ys, color="#277da1", linewidth=2, label=f"{sim}: path")
        if xs:
            ax.plot(xs[:1], ys[:1], marker="o", color="#43aa8b", markersize=9, linestyle="none", label="start")
            ax.plot(xs[-1:], ys[-1:], marker="s", color="#277da1", markersize=8, linestyle="none", label="end")
        for m in marks:
            if m.engaged and ts:
                i = min(range(len(ts)), key=lambda k: abs(ts[k] - m.t))
                ax.plot([xs[i]], [ys[i]], marker="X", color="#d00000", markersize=14, linestyle="none", label=m.label)
    if waypoints:
        wx, wy = zip(*waypoints, strict=True)
        ax.plot(wx, wy, marker="*", color="#f3722c", markersize=16, linestyle="none", label="waypoints")
        for n, (x, y) in enumerate(waypoints, 1):
            ax.annotate(str(n), (x, y), xytext=(7, 7), textcoords="offset points", fontsize=10, color="#f3722c")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no position samples", transform=ax.transAxes, ha="center", va="center")
    return _save(fig, path)


def speed_over_time(path: Path, speeds: dict[str, tuple[list[float], list[float], list[float]]], faults: Sequence[FaultWindow], marks: Sequence[Mark]) -> Path:
    """Forward speed (the wheels' mean) and each wheel, with the fault windows and interlocks."""
    fig = _figure("speed")
    ax = fig.add_subplot()
    ax.set_title("speed over time (motor controller's actual wheel speeds)")
    ax.set_xlabel("seconds since the bench started")
    ax.set_ylabel("mm/s")
    for sim, (ts, left, right) in speeds.items():
        ax.plot(ts, [(a + b) / 2 for a, b in zip(left, right, strict=True)], color="#277da1", linewidth=2, label=f"{sim}: forward")
        ax.plot(ts, left, color="#90be6d", linewidth=0.8, alpha=0.8, label="left wheel")
        ax.plot(ts, right, color="#f8961e", linewidth=0.8, alpha=0.8, label="right wheel")
    _shade_faults(ax, faults, marks, labels=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    return _save(fig, path)


def latency_histogram(path: Path, latencies: dict[str, list[float]]) -> Path:
    """How long the kernel took over each successful device call (ms, log scale), per device."""
    import numpy as np

    fig = _figure("latency")
    ax = fig.add_subplot()
    ax.set_title("device call latency (journal duration of each device.call)")
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("calls")
    values = [v for vs in latencies.values() for v in vs if v > 0]
    if not values:
        ax.text(0.5, 0.5, "no device calls", transform=ax.transAxes, ha="center", va="center")
        return _save(fig, path)
    low, high = max(min(values), 1e-3), max(values)
    bins = [float(b) for b in np.logspace(np.log10(low * 0.9), np.log10(high * 1.1 if high > low else low * 10), 40)]
    names = sorted(latencies)
    ax.hist([[v for v in latencies[n] if v > 0] for n in names], bins=bins, stacked=True, label=[f"{n} ({len(latencies[n])})" for n in names], color=[_SHADES[i % len(_SHADES)] for i in range(len(names))])
    ax.set_xscale("log")
    p50, p99 = np.percentile(values, [50, 99])
    for value, label in ((p50, "p50"), (p99, "p99")):
        ax.axvline(value, color="#333333", linestyle=":", linewidth=1)
        ax.annotate(f"{label} {value:.2f} ms", (value, 1), xycoords=("data", "axes fraction"), xytext=(3, -14), textcoords="offset points", fontsize=8)
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def trading_over_time(
    path: Path,
    positions: dict[str, tuple[list[float], list[float]]],
    open_orders: dict[str, tuple[list[float], list[int]]],
    refusals: Sequence[Refusal],
    faults: Sequence[FaultWindow],
    marks: Sequence[Mark],
    duration: float,
) -> Path:
    """Net position per agent and symbol, open orders per agent and refused orders per agent,
    over the same time axis, with the fault windows shaded."""
    fig = _figure("trading")
    top, middle, bottom = fig.subplots(3, 1, sharex=True, height_ratios=(3, 2, 2))
    top.set_title("position, open orders and refused orders (by agent and the check that refused)")
    end = max(duration, 1.0)
    for key, (ts, qs) in sorted(positions.items()):
        top.step([*ts, end], [*qs, qs[-1]], where="post", linewidth=1.6, label=key)  # held to the end
    top.set_ylabel("net position")
    for account, (ts, ns) in sorted(open_orders.items()):
        middle.step(ts, ns, where="post", linewidth=1.4, label=account)
    middle.set_ylabel("open orders")
    lanes = sorted({f"{r.agent}: {r.reason}" for r in refusals})
    for r in refusals:
        lane = lanes.index(f"{r.agent}: {r.reason}")
        if r.count > 1:
            bottom.plot([r.t, r.until], [lane, lane], color="#d00000", linewidth=5, alpha=0.6, solid_capstyle="butt")
            bottom.annotate(f"×{r.count}", (r.t, lane), xytext=(0, 6), textcoords="offset points", fontsize=7)
        else:
            bottom.plot([r.t], [lane], marker="|", color="#d00000", markersize=12, linestyle="none")
    bottom.set_yticks(range(len(lanes)), lanes, fontsize=8)
    bottom.set_ylim(-0.8, max(len(lanes), 1) - 0.2)
    bottom.invert_yaxis()
    bottom.set_xlabel("seconds since the bench started")
    bottom.set_xlim(0, end)
    if not refusals:
        bottom.text(0.5, 0.5, "no order refused", transform=bottom.transAxes, ha="center", va="center", fontsize=9)
    for ax, labels in ((top, False), (middle, False), (bottom, True)):
        _shade_faults(ax, faults, marks, labels=labels)
        ax.grid(alpha=0.3)
    _legend(top, "upper left")
    _legend(middle, "upper left")
    _legend(bottom, "upper right")
    return _save(fig, path)


def _legend(ax: Axes, loc: Literal["upper left", "upper right"]) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize=7, ncols=2)
