"""``clove top``'s screen: the same sections as rich tables (a terminal) or plain text (a pipe).

Cells are formatted once, here, for both; :mod:`clove.cli.render` has the units.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from clove.cli import render as units
from clove.cli.top.model import AgentRow, Snapshot
from clove.cli.top.view import ViewState

AGENT_HEADERS = ["ID", "NAME", "STATE", "CPU/QUOTA", "MEM/LIMIT", "RESTARTS", "SYSCALLS/S", "KERNEL TIME", "DENIED"]
DEVICE_HEADERS = ["DEVICE", "DRIVER", "STATE", "RESTARTS", "CALLS", "IN", "DELIVERED", "DROPPED", "ERRORS"]
STATE_STYLES = {"running": "green", "paused": "yellow", "starting": "cyan", "backoff": "magenta", "failed": "red", "exited": "dim"}


# ---- cells -------------------------------------------------------------------------------------


def cpu_cell(row: AgentRow) -> str:
    if row.cpu_quota_percent is None:
        return f"{row.cpu_percent:.1f}%"
    return f"{row.cpu_percent:.1f}/{row.cpu_quota_percent:g}%"


def memory_cell(row: AgentRow) -> str:
    if row.memory_limit is None:
        return units.human_bytes(row.memory)
    return f"{units.human_bytes(row.memory)}/{units.human_bytes(row.memory_limit)} ({row.memory_percent:.0f}%)"


def rate_cell(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"


def kernel_time_cell(us: int) -> str:
    if us < 1000:
        return f"{us}µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1e6:.2f}s"


def agent_cells(row: AgentRow) -> list[str]:
    return [
        str(row.id), row.name, row.state, cpu_cell(row), memory_cell(row), str(row.restarts),
        rate_cell(row.syscalls_per_s), kernel_time_cell(row.kernel_time_us), str(row.denied),
    ]  # fmt: skip


def device_cells(device: dict[str, Any]) -> list[str]:
    c = device.get("counters") or {}
    if not device.get("stream"):
        inbound = "-"
    elif device.get("stream") == "items":
        inbound = f"{c.get('items_in', 0)} items"
    else:
        inbound = units.human_bytes(c.get("bytes_in", 0))
    return [
        str(device["name"]), str(device.get("driver", "")), str(device.get("state", "?")), str(device.get("restarts", 0)),
        str(c.get("calls", 0)), inbound, str(c.get("delivered", 0)), str(c.get("dropped", 0)), str(c.get("errors", 0)),
    ]  # fmt: skip


def printable(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` with anything that could drive a terminal made ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def interlock_line(interlocks: list[dict[str, Any]] | None) -> str:
    if interlocks is None:
        return "interlocks: …"
    if not interlocks:
        return "interlocks: none configured"
    engaged = [i for i in interlocks if i.get("engaged")]
    if not engaged:
        return f"interlocks: {len(interlocks)} armed, none engaged"
    # A cause can quote a device's stream item: never let it drive the operator's terminal.
    parts = [f"{i['name']} ENGAGED ({printable(str((i.get('state') or {}).get('cause', '?')))})" for i in engaged]
    return "interlocks: " + "; ".join(parts)


def llm_line(llm: dict[str, Any] | None) -> str:
    if llm is None:
        return "llm: …"
    if not llm.get("enabled"):
        return "llm: gateway disabled"
    agents = [
        f"{a['name']} {units.human_tokens(a.get('used') or 0)}/{units.human_tokens(a.get('budget'))}"
        for a in llm.get("agents") or []
    ]
    line = f"llm: queued {llm.get('queued', 0)}, running {llm.get('running', 0)}"
    return f"{line}; budgets: {', '.join(agents)}" if agents else line


# ---- a terminal ----------------------------------------------------------------------------------


def screen(snap: Snapshot, view: ViewState, *, status: str = "", prompt: str = "", every: float = 1.0) -> RenderableType:
    """The whole interactive screen: header, agents (the selected one highlighted), devices,
    interlocks, LLM, then the status or prompt line and the keys."""
    shown = view.visible(snap.agents)
    selected = view.selected(shown)
    header = Text(f"clove top — {len(snap.agents)} agents ({len(shown)} shown)   {view.describe()}   every {every:.1f}s", style="bold")
    agents = Table(box=None, header_style="bold reverse", pad_edge=False)
    agents.add_column("", no_wrap=True, width=1)  # the selection mark: visible without colour too
    for name in AGENT_HEADERS:
        agents.add_column(name, no_wrap=True, justify="left" if name in ("NAME", "STATE") else "right")
    for row in shown:
        cells = agent_cells(row)
        chosen = selected is not None and row.id == selected.id
        state = Text(cells[2], style=STATE_STYLES.get(row.state, ""))
        agents.add_row(">" if chosen else "", cells[0], cells[1], state, *cells[3:], style="reverse" if chosen else None)
    parts: list[RenderableType] = [header, agents]
    if snap.devices:
        devices = Table(box=None, header_style="bold reverse", pad_edge=False)
        for name in DEVICE_HEADERS:
            devices.add_column(name, no_wrap=True)
        for device in snap.devices:
            devices.add_row(*device_cells(device))
        parts += [Text(""), devices]
    engaged = bool(snap.engaged())
    parts += [
        Text(""),
        Text(interlock_line(snap.interlocks), style="bold white on red" if engaged else ""),
        Text(llm_line(snap.llm)),
        Text(""),
        Text(prompt or status, style="bold yellow" if prompt else "cyan"),
        Text("keys: ↑↓ select  s sort  S reverse  / filter  p pause  r resume  k kill  E e-stop  q quit", style="dim"),
    ]
    return Group(*parts)


# ---- a pipe --------------------------------------------------------------------------------------


def plain(snap: Snapshot, view: ViewState) -> str:
    """Every section as plain text tables, for a pipe or a log."""
    shown = view.visible(snap.agents)
    out = [units.table(AGENT_HEADERS, [agent_cells(r) for r in shown]) if shown else "no agents"]
    if snap.devices:
        out.append(units.table(DEVICE_HEADERS, [device_cells(d) for d in snap.devices]))
    out.append(interlock_line(snap.interlocks))
    out.append(llm_line(snap.llm))
    return "\n\n".join(out)


def as_json(snap: Snapshot, view: ViewState) -> str:
    """One line of JSON: the shown agents (filtered and sorted) and every other section."""
    return json.dumps(snap.to_dict(view.visible(snap.agents)), default=str)
