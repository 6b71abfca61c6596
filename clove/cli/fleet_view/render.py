"""``clove fleet top``'s screens: the board list and one board's detail, as rich tables (a
terminal) or plain text (a pipe), and the ``--json`` lines.

Cells are formatted once, here, for both. Every string a board wrote (names, states, causes,
errors) goes through :func:`clove.cli.top.render.printable`: an entry is the board's word, and
must never drive the operator's terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from clove.cli import render as units
from clove.cli.fleet_view.model import AGENT_SORT_KEYS, BoardAgent, BoardRow
from clove.cli.top.render import STATE_STYLES, printable
from clove.cli.top.view import R, ViewState

BOARD_HEADERS = ["BOARD", "STATE", "BEAT", "VERSION", "UPTIME", "AGENTS", "RESTARTS", "DEVICES", "ENGAGED", "TRADING", "SHIPPED", "LAG"]
AGENT_HEADERS = ["ID", "NAME", "STATE", "RESTARTS", "UPTIME"]
DEVICE_HEADERS = ["DEVICE", "DRIVER", "STATE", "RESTARTS", "LAST ERROR"]
BOARD_KEYS = "keys: ↑↓ select  Enter open  s sort  S reverse  / filter  q quit"
DETAIL_KEYS = "keys: ↑↓ select  s sort  S reverse  / filter  Esc back  q quit"
_BOARD_STYLES = {"up": "green", "lost": "bold red", "invalid": "red"}


def _p(value: Any, limit: int = 40) -> str:
    return printable(str(value), limit)


def _counts(by_state: dict[str, int], first: str, total: int) -> str:
    """``running/total`` and the other states' counts: ``2/4 (1 paused, 1 backoff)``."""
    others = ", ".join(f"{n} {_p(state, 12)}" for state, n in sorted(by_state.items()) if state != first)
    return f"{by_state.get(first, 0)}/{total}" + (f" ({others})" if others else "")


def age_cell(age: float | None) -> str:
    return "-" if age is None else f"{age:.1f}s"


def board_cells(row: BoardRow) -> list[str]:
    if row.state == "invalid":
        return [_p(row.name), row.state, *["-"] * (len(BOARD_HEADERS) - 2)]
    engaged = ",".join(_p(name, 24) for name in sorted(row.engaged)) or "-"
    trading = ",".join(f"{_p(d, 24)}:{_p(s, 12)}" for d, s in sorted(row.trading.items())) or "-"
    return [
        _p(row.name, 63), row.state.upper() if row.state == "lost" else row.state, age_cell(row.heartbeat_age),
        _p(row.version or "-", 16), units.human_duration(row.uptime or 0),
        _counts(row.agents_by_state, "running", row.agents_total), str(row.restarts),
        _counts(row.devices_by_state, "ready", len(row.devices)) if row.devices else "-",
        engaged, trading, f"{row.shipped if row.shipped is not None else '-'}/{row.journal if row.journal is not None else '-'}",
        str(row.lag) if row.lag is not None else "-",
    ]  # fmt: skip


def agent_cells(agent: BoardAgent) -> list[str]:
    return [str(agent.id), _p(agent.name), _p(agent.state, 16), str(agent.restarts), units.human_duration(agent.uptime or 0)]


def device_cells(device: dict[str, Any]) -> list[str]:
    return [_p(device.get("name")), _p(device.get("driver", "-"), 20), _p(device.get("state", "?"), 16), _p(device.get("restarts", 0), 8), _p(device.get("last_error") or "-", 60)]


def summary(rows: Sequence[BoardRow], omitted: int) -> str:
    up = sum(1 for r in rows if r.state == "up")
    text = f"{len(rows)} boards ({up} up, {len(rows) - up} lost)"
    return text + (f", {omitted} more not shown" if omitted else "")


def detail_lines(row: BoardRow) -> list[str]:
    """One board's facts beyond its agents: kernel, isolation, interlocks, trading, journal."""
    iso = row.isolation
    lines = [
        f"{_p(row.name, 63)}: {row.state}, heartbeat {age_cell(row.heartbeat_age)} ago (lost after {row.lost_after if row.lost_after is not None else '-'}s), "
        f"clove {_p(row.version or '?', 16)}, up {units.human_duration(row.uptime or 0)}",
        f"isolation: {_p(iso.get('backend', '?'), 20)}, require_isolation {iso.get('require_isolation')}, landlock {_p(iso.get('landlock'), 12)}, seccomp {_p(iso.get('seccomp'), 12)}",
    ]  # fmt: skip
    if row.engaged:
        lines.append("interlocks: " + "; ".join(f"{_p(n, 24)} ENGAGED ({_p(c, 120)})" for n, c in sorted(row.engaged.items())))
    else:
        lines.append("interlocks: none engaged")
    if row.trading:
        lines.append("trading: " + ", ".join(f"{_p(d, 24)} {_p(s, 12)}" for d, s in sorted(row.trading.items())))
    lines.append(f"journal: shipped {row.shipped if row.shipped is not None else '-'} of {row.journal if row.journal is not None else '-'}"
                 f" (lag {row.lag if row.lag is not None else '-'}), link {_p(row.link_state or '?', 16)}")  # fmt: skip
    if row.agents_total > len(row.agents):
        lines.append(f"agents: {len(row.agents)} of {row.agents_total} listed by the board")
    return lines


# ---- a terminal ----------------------------------------------------------------------------------


def _table(headers: list[str]) -> Table:
    table = Table(box=None, header_style="bold reverse", pad_edge=False)
    table.add_column("", no_wrap=True, width=1)  # the selection mark: visible without colour too
    for name in headers:
        table.add_column(name, no_wrap=True)
    return table


def window(shown: list[R], selected: R | None, height: int) -> tuple[list[R], str]:
    """At most ``height`` of ``shown`` with ``selected`` among them, and a note of which (a
    table of a thousand rows costs rich about a second to lay out; a screen shows forty)."""
    height = max(1, height)
    if len(shown) <= height:
        return shown, ""
    index = next((i for i, row in enumerate(shown) if selected is not None and row.id == selected.id), 0)
    first = min(max(0, index - height // 2), len(shown) - height)
    return shown[first : first + height], f"   rows {first + 1}-{first + height} of {len(shown)}"


def board_list(rows: list[BoardRow], view: ViewState, *, omitted: int, hub: str, status: str, prompt: str, height: int = 1000) -> RenderableType:
    """The fleet: one line per board (the selected one highlighted), as many as fit in
    ``height`` lines."""
    shown = view.visible(rows)
    selected = view.selected(shown)
    table = _table(BOARD_HEADERS)
    fits, where = window(shown, selected, height - 6)  # the header, the table's, the footer
    for row in fits:
        cells = board_cells(row)
        chosen = selected is not None and row.id == selected.id
        state = Text(cells[1], style=_BOARD_STYLES.get(row.state, ""))
        engaged = Text(cells[8], style="bold white on red" if row.engaged else "")
        table.add_row(">" if chosen else "", cells[0], state, *cells[2:8], engaged, *cells[9:], style="reverse" if chosen else None)
    header = Text(f"clove fleet top — {summary(rows, omitted)} ({len(shown)} shown)   {view.describe()}{where}   {hub}", style="bold")
    return Group(header, table if shown else Text("no boards" if not rows else "no board matches the filter"), *_footer(status, prompt, BOARD_KEYS))


def board_detail(row: BoardRow, view: ViewState, *, hub: str, status: str, prompt: str, height: int = 1000) -> RenderableType:
    """One board: its facts, its agents (sorted, filtered, selectable, as many as fit in
    ``height`` lines) and its devices."""
    shown = view.visible(list(row.agents))
    selected = view.selected(shown)
    facts = detail_lines(row)
    devices_height = len(row.devices) + 2 if row.devices else 0
    fits, where = window(shown, selected, height - len(facts) - devices_height - 6)
    parts: list[RenderableType] = [Text(f"clove fleet top — board {facts[0]}   {hub}", style="bold" if row.state == "up" else "bold red")]
    parts += [Text(line, style="bold white on red" if line.startswith("interlocks:") and row.engaged else "") for line in facts[1:]]
    agents = _table(AGENT_HEADERS)
    for agent in fits:
        cells = agent_cells(agent)
        chosen = selected is not None and agent.id == selected.id
        agents.add_row(">" if chosen else "", cells[0], cells[1], Text(cells[2], style=STATE_STYLES.get(agent.state, "")), *cells[3:], style="reverse" if chosen else None)
    parts += [Text(f"agents: {len(row.agents)} ({len(shown)} shown)   {view.describe()}{where}"), agents if shown else Text("no agents")]
    if row.devices:
        devices = Table(box=None, header_style="bold reverse", pad_edge=False)
        for name in DEVICE_HEADERS:
            devices.add_column(name, no_wrap=True)
        for device in row.devices:
            devices.add_row(*device_cells(device))
        parts += [Text(""), devices]
    return Group(*parts, *_footer(status, prompt, DETAIL_KEYS))


def _footer(status: str, prompt: str, keys: str) -> list[RenderableType]:
    return [Text(""), Text(prompt or status, style="bold yellow" if prompt else "cyan"), Text(keys, style="dim")]


# ---- a pipe --------------------------------------------------------------------------------------


def plain(rows: list[BoardRow], view: ViewState, *, omitted: int, board: BoardRow | None = None, agents_view: ViewState | None = None) -> str:
    """The board list as a plain table and, with ``board``, that board's detail."""
    shown = view.visible(rows)
    out = [summary(rows, omitted), units.table(BOARD_HEADERS, [board_cells(r) for r in shown]) if shown else "no boards"]
    if board is not None:
        agents = (agents_view or ViewState(sort="id", keys=AGENT_SORT_KEYS)).visible(list(board.agents))
        out.append("\n".join(detail_lines(board)))
        out.append(units.table(AGENT_HEADERS, [agent_cells(a) for a in agents]) if agents else "no agents")
        if board.devices:
            out.append(units.table(DEVICE_HEADERS, [device_cells(d) for d in board.devices]))
    return "\n\n".join(out)


def json_lines(rows: list[BoardRow], view: ViewState) -> str:
    """One JSON object per board (filtered and sorted as on screen), one a line."""
    return "\n".join(json.dumps(r.to_dict(), default=str) for r in view.visible(rows))
