"""Bench assertions, checked after a run from what it left: the kernel's journal, the bus trace
the harness captured, the simulators' histories and the kernel's final views.

Each check returns an :class:`Outcome` with the measured value, so a report says not just "fail"
but by how much (``zero-speed frame 61.3 ms after estop, limit 50 ms``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clove.drivers.grants import IdRanges
from clove.kernel.audit.format import AGGREGATED_EVENT
from hil.bench import AssertionSpec


@dataclass(slots=True)
class Frame:
    ts: float
    id: int
    data: bytes


@dataclass(slots=True)
class RunRecord:
    """Everything a run leaves for the assertions (and the HTML report)."""

    journal: list[dict[str, Any]] = field(default_factory=list)
    journal_ok: bool = False
    journal_problem: str = ""
    bus: dict[str, list[Frame]] = field(default_factory=dict)
    faults: dict[str, float] = field(default_factory=dict)  # fault name → when it took effect (time.time())
    agents: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    interlocks: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # "scope:key" → exists
    motor: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)  # sim → (ts, left, right) actual speeds
    logs: dict[str, str] = field(default_factory=dict)  # agent name → its log
    venue_open: dict[str, int] = field(default_factory=dict)  # fix_venue sim → open orders at the end
    device_restarts_at_start: dict[str, int] = field(default_factory=dict)  # device → host restarts before the bench's clock started
    # For the report's plots (hil/report), not the assertions: when the bench's clock started,
    # each simulator's sampled series (sim → series → rows) and state values the report reads.
    t0: float = 0.0
    tracks: dict[str, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)
    state_values: dict[str, Any] = field(default_factory=dict)  # "scope:key" → value


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    kind: str
    passed: bool
    measured: Any
    expected: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "passed": self.passed, "measured": self.measured, "expected": self.expected, "detail": self.detail}


def _agent(record: RunRecord, name: str) -> dict[str, Any] | None:
    return next((a for a in record.agents if a.get("name") == name), None)


def _frame_after(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    t0 = r.faults.get(o["after"])
    limit = o.get("within_ms")
    expected = f"id {o['id']:#x}" + (f" data {o['data'].hex()}" if o.get("data") is not None else "") + (f" within {limit} ms of {o['after']}" if limit is not None else f" after {o['after']}")
    if t0 is None:
        return Outcome(spec.name, spec.kind, False, None, expected, f"fault {o['after']!r} never happened")
    for frame in r.bus.get(o["bus"], []):
        if frame.ts >= t0 and frame.id == o["id"] and (o.get("data") is None or frame.data == o["data"]):
            ms = round((frame.ts - t0) * 1000, 3)
            return Outcome(spec.name, spec.kind, limit is None or ms <= limit, ms, expected, f"first matching frame {ms} ms after")
    return Outcome(spec.name, spec.kind, False, None, expected, "no matching frame on the bus")


def _frames_within(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    ranges = IdRanges(tuple(o["ids"]), key="ids")
    sent, outside = 0, []
    for rec in r.journal:
        args = rec.get("args") or {}
        if rec.get("agent_name") == o["agent"] and rec.get("syscall") == "device.call" and args.get("device") == o["device"] and rec.get("decision") == "allowed" and rec.get("code") == "ok":
            can_id = (args.get("args") or {}).get("id")
            sent += 1
            if can_id not in ranges:
                outside.append(can_id)
    expected = f"every frame {o['agent']} sent on {o['device']} within {', '.join(o['ids'])}"
    return Outcome(spec.name, spec.kind, not outside, {"sent": sent, "outside": len(outside)}, expected, f"outside: {[hex(i) if isinstance(i, int) else i for i in outside[:5]]}" if outside else f"{sent} frames checked")


def _restarts(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    row = _agent(r, o["agent"])
    expected = f"{o['min']} <= restarts <= {o['max']}"
    if row is None:
        return Outcome(spec.name, spec.kind, False, None, expected, f"no agent {o['agent']!r}")
    n = int(row.get("restarts", 0))
    return Outcome(spec.name, spec.kind, o["min"] <= n <= o["max"], n, expected)


def _exit_reason(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    n = sum(1 for rec in r.journal if rec.get("event_type") == "agent.exited" and rec.get("agent_name") == o["agent"] and (rec.get("details") or {}).get("reason") == o["reason"])
    return Outcome(spec.name, spec.kind, n >= o["min"], n, f"at least {o['min']} exit(s) of {o['agent']} with reason {o['reason']}")


def _denied(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    hits = [
        rec
        for rec in r.journal
        if rec.get("agent_name") == o["agent"]
        and rec.get("decision") == "denied"
        and (o.get("syscall") is None or rec.get("syscall") == o["syscall"])
        and (o.get("device") is None or (rec.get("args") or {}).get("device") == o["device"])
    ]
    what = " ".join(x for x in (o.get("syscall"), o.get("device") and f"on {o['device']}") if x)
    return Outcome(spec.name, spec.kind, len(hits) >= o["min"], len(hits), f"at least {o['min']} denied {what or 'request'}(s) journaled for {o['agent']}")


def _interlock(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    engaged = [rec for rec in r.journal if rec.get("event_type") == "interlock.engaged" and (rec.get("details") or {}).get("name") == o["interlock"]]
    completed = [rec for rec in r.journal if rec.get("event_type") == "interlock.completed" and (rec.get("details") or {}).get("name") == o["interlock"]]
    limit = o.get("max_latency_ms")
    expected = f"{o['interlock']} {'engaged' if o['engaged'] else 'never engaged'}" + (f", every action within {limit} ms" if limit is not None else "")
    if not o["engaged"]:
        return Outcome(spec.name, spec.kind, not engaged, len(engaged), expected)
    if not engaged:
        return Outcome(spec.name, spec.kind, False, None, expected, "never engaged")
    source = (completed or engaged)[0]["details"]
    latencies = [a.get("latency_ms") for a in source.get("actions", []) if a.get("latency_ms") is not None]
    worst = max(latencies) if latencies else None
    failed = [a["action"] for a in source.get("actions", []) if a.get("status") == "failed"]
    ok = not failed and (limit is None or (worst is not None and worst <= limit))
    return Outcome(spec.name, spec.kind, ok, worst, expected, f"cause: {source.get('cause')}" + (f"; failed: {failed}" if failed else ""))


def _throttled(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    row = _agent(r, o["agent"])
    n = int(((row or {}).get("stats") or {}).get("nr_throttled", 0))
    return Outcome(spec.name, spec.kind, n >= o["min_periods"], n, f"{o['agent']} CPU-throttled in at least {o['min_periods']} period(s)")


def _event(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    n = sum(1 for rec in r.journal if rec.get("syscall") == "events.emit" and rec.get("code") == "ok" and (rec.get("args") or {}).get("event_type") == o["type"])
    return Outcome(spec.name, spec.kind, n >= o["min"], n, f"at least {o['min']} {o['type']} event(s) emitted")


def _device_restarts(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    row = next((d for d in r.devices if d.get("name") == o["device"]), None)
    before = r.device_restarts_at_start.get(o["device"], 0)  # a slow start's retries are not the run's
    n = int((row or {}).get("restarts", 0)) - before
    detail = f"state {(row or {}).get('state')}" + (f"; {before} restart(s) while starting, before the run" if before else "")
    return Outcome(spec.name, spec.kind, row is not None and o["min"] <= n <= o["max"] and row.get("state") == "ready", n, f"{o['min']} <= host restarts during the run <= {o['max']}, ready at the end", detail)


def _state_key(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    exists = bool(r.state.get(f"{o['scope']}:{o['key']}"))
    return Outcome(spec.name, spec.kind, exists, exists, f"state key {o['key']!r} stored")


def _journal_verified(spec: AssertionSpec, r: RunRecord) -> Outcome:
    return Outcome(spec.name, spec.kind, r.journal_ok, len(r.journal), "the journal's hash chain verifies", r.journal_problem)


def _motor_stopped(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    t0 = r.faults.get(o["after"])
    limit = o.get("within_ms")
    expected = f"the motors at 0 mm/s within {limit} ms of {o['after']}"
    if t0 is None:
        return Outcome(spec.name, spec.kind, False, None, expected, f"fault {o['after']!r} never happened")
    for ts, left, right in r.motor.get(o["sim"], []):
        if ts >= t0 and left == 0 and right == 0:
            ms = round((ts - t0) * 1000, 3)
            return Outcome(spec.name, spec.kind, limit is None or ms <= limit, ms, expected)
    return Outcome(spec.name, spec.kind, False, None, expected, "the motors never stopped")


def _log_contains(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    lines = [line for line in r.logs.get(o["agent"], "").splitlines() if o["text"] in line]
    return Outcome(spec.name, spec.kind, bool(lines), len(lines), f"{o['agent']}'s log has {o['text']!r}", lines[0][:160] if lines else "")


def _trading(spec: AssertionSpec, r: RunRecord) -> Outcome:
    """Orders at the venue: how many an agent got filled or had refused, from the journal."""
    o = spec.options
    sent = [rec for rec in r.journal if rec.get("agent_name") == o["agent"] and rec.get("syscall") == "device.call" and (rec.get("args") or {}).get("op") == "submit_order"]
    accepted = sum(1 for rec in sent if rec.get("code") == "ok")
    refused = sum(1 for rec in sent if rec.get("code") in ("risk.denied", "perm.denied"))
    ok = accepted >= o["min_accepted"] and refused >= o["min_refused"] and (o.get("max_accepted") is None or accepted <= o["max_accepted"])
    return Outcome(spec.name, spec.kind, ok, {"accepted": accepted, "refused": refused}, f"{o['agent']}: at least {o['min_accepted']} orders accepted and {o['min_refused']} refused" + (f", at most {o['max_accepted']} accepted" if o.get("max_accepted") is not None else ""))


def _venue_open_orders(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    n = r.venue_open.get(o["sim"])
    return Outcome(spec.name, spec.kind, n is not None and n <= o["max"], n, f"at most {o['max']} open orders at the venue at the end")


def _agent_report(spec: AssertionSpec, r: RunRecord) -> Outcome:
    import json

    o = spec.options
    expected = f"every entry of {o['agent']}'s REPORT has {o['field']} = {o['equals']!r}"
    lines = [line[len("REPORT ") :] for line in r.logs.get(o["agent"], "").splitlines() if line.startswith("REPORT ")]
    if not lines:
        return Outcome(spec.name, spec.kind, False, None, expected, "no REPORT line in its log")
    try:
        report = json.loads(lines[-1])
    except ValueError:
        return Outcome(spec.name, spec.kind, False, None, expected, "its REPORT is not JSON")
    entries = report.values() if isinstance(report, dict) else report
    wrong = {k: v.get(o["field"]) for k, v in (report.items() if isinstance(report, dict) else enumerate(entries)) if not isinstance(v, dict) or v.get(o["field"]) != o["equals"]}
    return Outcome(spec.name, spec.kind, bool(report) and not wrong, {"entries": len(report), "other": len(wrong)}, expected, f"not {o['equals']}: {wrong}" if wrong else ", ".join(map(str, report)))


def _refusal_reasons(spec: AssertionSpec, r: RunRecord) -> Outcome:
    o = spec.options
    denials = [rec for rec in r.journal if rec.get("agent_name") == o["agent"] and rec.get("decision") == "denied"]
    messages = [str((rec.get("details") or {}).get("message", "")) for rec in denials if rec.get("event_type") != AGGREGATED_EVENT]
    seen = {reason: sum(1 for m in messages if m.startswith(f"{reason}:") or f"{reason!r}" in m or f" {reason} " in m) for reason in o["reasons"]}
    for rec in denials:  # a denial flood is journaled as counts per reason (docs/audit.md)
        details = rec.get("details") or {}
        if rec.get("event_type") == AGGREGATED_EVENT and details.get("reason") in seen:
            seen[details["reason"]] += int(details.get("count", 0))
    missing = [reason for reason, n in seen.items() if not n]
    return Outcome(spec.name, spec.kind, not missing, seen, f"{o['agent']} refused for each of {', '.join(o['reasons'])}", f"never: {missing}" if missing else "")


CHECKS: dict[str, Callable[[AssertionSpec, RunRecord], Outcome]] = {
    "frame_after": _frame_after,
    "frames_within": _frames_within,
    "restarts": _restarts,
    "exit_reason": _exit_reason,
    "denied": _denied,
    "interlock": _interlock,
    "throttled": _throttled,
    "event": _event,
    "device_restarts": _device_restarts,
    "state_key": _state_key,
    "journal_verified": _journal_verified,
    "motor_stopped": _motor_stopped,
    "log_contains": _log_contains,
    "trading": _trading,
    "venue_open_orders": _venue_open_orders,
    "agent_report": _agent_report,
    "refusal_reasons": _refusal_reasons,
}


def check(spec: AssertionSpec, record: RunRecord) -> Outcome:
    return CHECKS[spec.kind](spec, record)
