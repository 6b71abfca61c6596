"""The doctor's report for people: a status, a label and the finding per line, then what it
means for Clove and the fix, indented beneath; the isolation verdict last."""

from __future__ import annotations

import textwrap

from clove.cli.doctor.schema import Check, Report

__all__ = ["report_text"]

_WIDTH = 100
_LABEL = 22
_INDENT = " " * (9 + _LABEL)


def _wrap(text: str, first: str) -> str:
    return textwrap.fill(text, _WIDTH, initial_indent=first, subsequent_indent=_INDENT, break_on_hyphens=False)


def _check(c: Check) -> str:
    lines = [_wrap(c.summary, f"{c.status:<9}{c.title:<{_LABEL}}"), _wrap(c.meaning, _INDENT)]
    if c.fix:
        lines.append(_wrap(f"fix: {c.fix}", _INDENT))
    return "\n".join(lines)


def report_text(report: Report) -> str:
    host = report.host
    who = "root" if host["euid"] == 0 else f"uid {host['euid']}"
    head = [
        f"clove doctor: {host['hostname']}, Linux {host['kernel']} {host['machine']}, as {who}",
        f"config: {report.config or 'none (the defaults)'}; state dir: {report.state_dir}",
        "",
    ]
    iso = report.isolation
    limits = ", ".join(f"{k} {'enforced' if v['enforced'] else 'NOT enforced'}" for k, v in iso.limits.items())
    verdict = "would be honoured" if iso.honoured else "would NOT be honoured"
    how = "the kernel would not start" if iso.backend == "none" else f"backend {iso.backend}: {limits}"
    tail = [
        "",
        f"isolation: require_isolation is {'on' if iso.required else 'off'}; it {verdict} here ({how})",
        *(textwrap.fill(reason, _WIDTH, initial_indent="  - ", subsequent_indent="    ") for reason in iso.reasons),
    ]
    return "\n".join([*head, "\n\n".join(_check(c) for c in report.checks), *tail])
