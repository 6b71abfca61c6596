"""The report's data: plain series taken from what a bench run left (:class:`hil.assertions.RunRecord`
and the fault timeline), with times in seconds since the bench's clock started. No plotting here:
:mod:`hil.report.plots` draws these.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from clove.kernel.audit.format import AGGREGATED_EVENT
from hil.assertions import RunRecord
from hil.world import World

#: Journal codes of an order the kernel refused (the risk engine or the agent's grant).
REFUSAL_CODES = ("risk.denied", "perm.denied")


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault of the plan as it ran: ``end`` is None for an instant fault (a press, a burst)."""

    name: str
    kind: str
    start: float
    end: float | None


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment worth a line across the plots: an interlock engaged or released."""

    t: float
    label: str
    engaged: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Refused orders of one agent: one record, or a flood the journal counted (``count`` > 1,
    spread from ``t`` to ``until``)."""

    agent: str
    t: float
    until: float
    count: int
    reason: str


def fault_windows(timeline: list[dict[str, Any]]) -> list[FaultWindow]:
    """Each applied fault with its end from the timeline's ``<name> ended``/``reconnected`` entry."""
    ends = [e for e in timeline if e.get("kind") == "ended"]
    out = []
    for entry in timeline:
        if entry.get("kind") == "ended":
            continue
        name = str(entry["fault"])
        end = next((float(e["t"]) for e in ends if str(e["fault"]).startswith(name + " ") and float(e["t"]) >= float(entry["t"])), None)
        out.append(FaultWindow(name, str(entry.get("kind", "")), float(entry["t"]), end))
    return out


def interlock_marks(record: RunRecord) -> list[Mark]:
    """Interlocks engaged (the e-stop) and released, from the journal."""
    out = []
    for rec in record.journal:
        kind = rec.get("event_type")
        if kind in ("interlock.engaged", "interlock.released"):
            name = (rec.get("details") or {}).get("name", "interlock")
            engaged = kind == "interlock.engaged"
            out.append(Mark(float(rec["timestamp"]) - record.t0, f"{name} {'engaged' if engaged else 'released'}", engaged))
    return out


def wheel_speeds(record: RunRecord) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per motor simulator: times, left and right actual wheel speeds (mm/s)."""
    out = {}
    for sim, rows in record.motor.items():
        rows = [r for r in rows if r[0] >= record.t0]
        out[sim] = ([r[0] - record.t0 for r in rows], [float(r[1]) for r in rows], [float(r[2]) for r in rows])
    return out


def paths(record: RunRecord) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per motor simulator: times, x and y (metres east and north of the world's origin)."""
    out = {}
    for sim, tracks in record.tracks.items():
        rows = tracks.get("pose")
        if rows:
            out[sim] = ([r[0] - record.t0 for r in rows], [float(r[1]) for r in rows], [float(r[2]) for r in rows])
    return out


def waypoints(record: RunRecord, world: World | None = None) -> list[tuple[float, float]]:
    """The navigator's route in the world's frame: it publishes the route relative to its first
    fix and that fix's latitude/longitude (:data:`hil.report.sources.REPORT_STATE_KEYS`)."""
    value = record.state_values.get("global:rover/navigator")
    if not isinstance(value, dict) or not isinstance(value.get("route"), list):
        return []
    dx = dy = 0.0
    origin = value.get("origin")
    if isinstance(origin, list) and len(origin) == 2 and all(isinstance(v, (int, float)) for v in origin):
        dx, dy = (world or World()).latlon_to_xy(float(origin[0]), float(origin[1]))
    out = []
    for point in value["route"]:
        if isinstance(point, list) and len(point) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in point):
            out.append((float(point[0]) + dx, float(point[1]) + dy))
    return out


def device_latencies(record: RunRecord) -> dict[str, list[float]]:
    """Per device: the kernel's time for each successful ``device.call`` (ms), from the journal."""
    out: dict[str, list[float]] = defaultdict(list)
    for rec in record.journal:
        if rec.get("syscall") == "device.call" and rec.get("code") == "ok" and rec.get("duration_us") is not None:
            out[str((rec.get("args") or {}).get("device", "?"))].append(int(rec["duration_us"]) / 1000)
    return dict(out)


def positions(record: RunRecord) -> dict[str, tuple[list[float], list[float]]]:
    """Per ``account symbol`` (an agent's account at the venue): times and the net position after
    each fill (buys positive), starting from 0 at the bench's start."""
    running: dict[str, float] = {}
    out: dict[str, tuple[list[float], list[float]]] = {}
    for tracks in record.tracks.values():
        for t, account, symbol, signed in sorted(tracks.get("fills", []), key=lambda row: row[0]):
            key = f"{account} {symbol}"
            ts, qs = out.setdefault(key, ([0.0], [0.0]))
            running[key] = running.get(key, 0.0) + float(signed)
            ts.append(float(t) - record.t0)
            qs.append(running[key])
    return out


def open_orders(record: RunRecord) -> dict[str, tuple[list[float], list[int]]]:
    """Per account: times and the number of its orders open at the venue (sampled)."""
    rows = [row for tracks in record.tracks.values() for row in tracks.get("open_orders", [])]
    accounts = sorted({a for _, counts in rows for a in counts})
    return {a: ([t - record.t0 for t, _ in rows], [int(counts.get(a, 0)) for _, counts in rows]) for a in accounts}


def refusals(record: RunRecord) -> list[Refusal]:
    """Every order the kernel refused, by agent: single records and counted floods."""
    out = []
    for rec in record.journal:
        if rec.get("syscall") != "device.call" or rec.get("code") not in REFUSAL_CODES:
            continue
        agent = str(rec.get("agent_name") or "?")
        details = rec.get("details") or {}
        if rec.get("event_type") == AGGREGATED_EVENT:
            first = float(details.get("first_time", rec["timestamp"]))
            last = float(details.get("last_time", rec["timestamp"]))
            out.append(Refusal(agent, first - record.t0, last - record.t0, int(details.get("count", 1)), str(details.get("reason", rec["code"]))))
        elif (rec.get("args") or {}).get("op") == "submit_order":
            t = float(rec["timestamp"]) - record.t0
            reason = str(details.get("reason") or str(details.get("message", rec["code"])).split(":", 1)[0])
            out.append(Refusal(agent, t, t, 1, reason))
    return out
