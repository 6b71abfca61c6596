"""Human-readable tables for the CLI (``--json`` bypasses all of this)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clove.kernel.audit.verify import VerifyResult


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def human_duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    seconds = round(seconds)  # else 59.7 s prints as "60s" and 3599.7 s as "59m60s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"


def limits_cell(isolation: dict[str, Any]) -> str:
    parts = []
    limits = isolation.get("limits", {})
    for key, fmt in (("memory", human_bytes), ("cpu", lambda q: f"{q / 1000:g}%"), ("pids", str)):
        report = limits.get(key) or {}
        if report.get("requested") is not None:
            mark = "" if report.get("enforced") else "!"
            parts.append(f"{key}={fmt(report['requested'])}{mark}")
    return ",".join(parts) or "-"


def exit_cell(agent: dict[str, Any]) -> str:
    reason = agent.get("exit_reason")
    if reason is None:
        return "-"
    if reason == "exited":
        return f"exited({agent.get('exit_code')})"
    if reason == "signaled":
        return f"signaled({agent.get('exit_signal')})"
    return str(reason)


def agents_table(agents: list[dict[str, Any]]) -> str:
    rows = []
    for a in agents:
        iso = a.get("isolation") or {}
        rows.append(
            [
                a["id"],
                a["name"],
                a.get("pid"),
                a["state"],
                human_duration(a.get("uptime", 0)),
                a.get("restarts", 0),
                exit_cell(a),
                iso.get("backend", "-") if a.get("sandboxed", True) else "none",
                limits_cell(iso),
            ]
        )
    return table(["ID", "NAME", "PID", "STATE", "UPTIME", "RESTARTS", "EXIT", "SANDBOX", "LIMITS"], rows)


def audit_table(entries: list[dict[str, Any]]) -> str:
    rows = [
        [
            e["id"],
            time.strftime("%H:%M:%S", time.localtime(e["timestamp"])),
            e["category"],
            e["event_type"],
            e.get("agent_name") or e.get("agent_id") or ("operator" if (e.get("details") or {}).get("caller") == "operator" else "-"),
            e.get("decision"),
            e.get("code"),
            e.get("duration_us"),
        ]
        for e in entries
    ]
    return table(["ID", "TIME", "CATEGORY", "EVENT", "AGENT", "DECISION", "CODE", "µS"], rows)


def verify_report(result: VerifyResult) -> str:
    """``clove audit --verify``: the verdict line, then truncation, recorded gaps and breaks."""
    span = f"ids {result.first_id}..{result.last_id}" if result.first_id is not None else "no records"
    where = f"{len(result.files)} files, {span}" if len(result.files) > 1 else span
    if not result.ok:
        first = result.problems[0] if result.problems else None
        at = f"{first.file} line {first.line}" if first is not None and len(result.files) > 1 else f"line {result.first_bad_line}"
        lines = [f"journal BROKEN at record {result.first_bad_id} ({at}): {result.reason.split(': ', 1)[-1]}"]
        lines += [f"  also: {p.file} line {p.line}: {p.reason}" for p in result.problems[1:]]
        if result.problems_omitted:
            lines.append(f"  ... and {result.problems_omitted} more problems")
    elif result.gaps:
        lines = [f"journal INCOMPLETE: {result.records} records ({where}), chain intact, but {result.lost_records} records were lost"]
    else:
        lines = [f"journal OK: {result.records} records ({where}), chain intact"]
    if result.truncated_before is not None:
        how = "deleted by retention (journal.retention record)" if result.truncation_recorded else "that are gone"
        lines.append(f"  records 1..{result.truncated_before - 1} were in rotated files {how}")
    lines += [f"  GAP: records {g.first_id}..{g.last_id} ({g.count}) lost: {g.reason} (journal.gap record {g.recorded_id} in {g.file})" for g in result.gaps]
    lines += [f"  warning: {warning}" for warning in result.warnings]
    return "\n".join(lines)


def human_tokens(n: int | None) -> str:
    """``None`` is unlimited: ``∞``; thousands as ``12.3k``, millions as ``4.5M``."""
    if n is None:
        return "∞"
    if abs(n) < 10_000:
        return str(n)
    if abs(n) < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def _used_of(used: int | None, budget: int | None) -> str:
    if budget is None:
        return human_tokens(used or 0)
    percent = f" ({100 * (used or 0) / budget:.0f}%)" if budget else ""
    return f"{human_tokens(used or 0)}/{human_tokens(budget)}{percent}"


def _waits(w: dict[str, Any] | None) -> str:
    if not w or not w.get("n"):
        return "-"
    return "/".join(f"{w[k]:.0f}" if w[k] >= 10 else f"{w[k]:.1f}" for k in ("p50", "p95", "p99"))


def llm_table(stats: dict[str, Any]) -> str:
    """``clove llm``: providers, then one row per agent (usage against budgets, queue waits in
    ms as p50/p95/p99)."""
    if not stats.get("enabled"):
        return f"LLM gateway disabled: {stats.get('reason', 'not configured')}"
    out = []
    providers = stats.get("providers") or []
    if providers:
        out.append(table(
            ["PROVIDER", "KIND", "MODEL", "STATE", "IN-FLIGHT", "QUEUED", "DONE", "FAILED", "RETRIES", "TOKENS"],
            [[p["name"] + (" *" if p["name"] == stats.get("default_provider") else ""), p["kind"], p["model"],
              p["state"] + (f" ({p['error']})" if p.get("error") else ""), f"{p['in_flight']}/{p['concurrency']}",
              p["queued"], p["completed"], p["failed"], p["retries"], human_tokens(p["tokens"])] for p in providers],
        ))  # fmt: skip
    rows = []
    for a in stats.get("agents") or []:
        rows.append([
            a.get("agent_id") if a.get("agent_id") is not None else "-", a["name"], f"{a['weight']:g}",
            _used_of(a["used"], a["budget"]),
            "-" if a.get("period_budget") is None else _used_of(a.get("period_used"), a["period_budget"]),
            a["reserved"] or "-", a["queued"], a["in_flight"], a["requests"], a["failed"], a["cancelled"],
            _waits(a.get("queue_wait_ms")),
        ])  # fmt: skip
    out.append(table(["ID", "NAME", "WEIGHT", "USED/BUDGET", "PERIOD", "RESERVED", "QUEUED", "IN-FLIGHT", "REQS", "FAILED", "CANCELLED", "WAIT MS p50/95/99"], rows) if rows else "no agents")
    return "\n\n".join(out)
