"""The ``clove fleet top`` loops: the live screen on a terminal, and one snapshot for a pipe.

One thread, one asyncio loop: the bucket watch (:mod:`clove.cli.fleet_view.watch`) applies
updates as the hub delivers them (each entry parsed once, as it arrives), the terminal's keys
arrive through the loop's reader, and the screen is drawn again at once on a key and every
``interval`` seconds otherwise, whatever the updates: heartbeat ages grow, a silent board turns
``lost``, and a fleet of a thousand boards beating every 5 s (200 updates a second) costs no
more frames than one board. A frame lays out only the rows the terminal shows (rich would take
over a second for a thousand rows; ``bench/fleet_view.py`` measures a frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.live import Live

from clove.cli.fleet_view import render
from clove.cli.fleet_view.controls import FleetControls
from clove.cli.fleet_view.model import BoardAgent, BoardRow
from clove.cli.fleet_view.watch import BoardEntries, open_watch, pump, read_initial
from clove.cli.top.keys import KeyReader, decode
from clove.cli.top.view import ViewState
from clove.fleet.subjects import FleetNames

__all__ = ["print_plain", "rows_of", "run_live", "snapshot"]


def rows_of(boards: BoardEntries, now: float, lost_after: float | None) -> list[BoardRow]:
    return [row.at(now, lost_after) for row in boards.entries.values()]


async def snapshot(js: Any, names: FleetNames, *, timeout: float) -> BoardEntries:
    """Every board's current entry, read once through the same watch."""
    boards = BoardEntries()
    watcher = await open_watch(js, names)
    try:
        await read_initial(watcher, boards, timeout=timeout)
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    return boards


def print_plain(
    boards: BoardEntries, view: ViewState, agents_view: ViewState, *, board: str | None, lost_after: float | None, as_json: bool,
    out: TextIO = sys.stdout, now: float | None = None,
) -> bool:  # fmt: skip
    """Print the snapshot; ``False`` when ``board`` was asked for and the bucket has no such board."""
    rows = rows_of(boards, time.time() if now is None else now, lost_after)
    if as_json:
        if board is not None:
            rows = [r for r in rows if r.name == board]
        if rows:
            out.write(render.json_lines(rows, view) + "\n")
    else:
        chosen = next((r for r in rows if r.name == board), None)
        out.write(render.plain(rows, view, omitted=len(boards.omitted), board=chosen, agents_view=agents_view) + "\n")
    out.flush()
    return board is None or any(r.name == board for r in rows)


async def run_live(
    nc: Any, js: Any, names: FleetNames, controls: FleetControls, *, interval: float, lost_after: float | None, timeout: float,
    stdin_fd: int, console: Console | None = None, clock: Callable[[], float] = time.monotonic,
) -> None:  # fmt: skip
    """Show the live view until ``q`` (or the terminal closes)."""
    boards = BoardEntries()
    watcher = await open_watch(js, names)
    await read_initial(watcher, boards, timeout=timeout)
    typed_now = asyncio.Event()
    typed: list[str] = []
    closed = False
    rows: list[BoardRow] = []

    def on_stdin() -> None:
        nonlocal closed
        try:
            data = os.read(stdin_fd, 1024)
        except BlockingIOError:
            return
        if not data:
            closed = True
        typed.extend(decode(data))
        typed_now.set()

    def shown_boards() -> list[BoardRow]:
        return controls.boards.visible(rows)

    def shown_agents() -> list[BoardAgent]:
        board = next((r for r in rows if r.name == controls.board), None)
        return controls.agents.visible(list(board.agents)) if board is not None else []

    controls.shown_boards, controls.shown_agents = shown_boards, shown_agents
    out = console or Console()
    servers = getattr(nc, "connected_url", None)
    hub = f"hub {servers.hostname}:{servers.port}" if servers is not None else "hub"
    lost_at: str | None = None

    def frame() -> RenderableType:
        nonlocal rows, lost_at
        rows = rows_of(boards, time.time(), lost_after)
        if not nc.is_connected and lost_at is None:
            lost_at = time.strftime("%H:%M:%S")
        where = hub if lost_at is None else f"{hub}: CONNECTION LOST at {lost_at}, figures are stale"
        status = f"{boards.updates} updates" if lost_at is None else "the hub connection is gone: q to quit"
        if controls.board is not None:
            board = next((r for r in rows if r.name == controls.board), None)
            if board is not None:
                return render.board_detail(board, controls.agents, hub=where, status=status, prompt=controls.prompt, height=out.size.height)
            controls.board = None  # deleted from the bucket meanwhile
        return render.board_list(rows, controls.boards, omitted=len(boards.omitted), hub=where, status=status, prompt=controls.prompt, height=out.size.height)

    loop = asyncio.get_running_loop()
    pumping = asyncio.create_task(pump(watcher, boards))
    try:
        with KeyReader(stdin_fd), Live(console=out, screen=True, auto_refresh=False, transient=True) as live:
            loop.add_reader(stdin_fd, on_stdin)
            next_at = clock() + interval
            while True:
                live.update(frame(), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(typed_now.wait(), max(0.0, next_at - clock()))
                typed_now.clear()
                if closed:
                    return
                keys, typed[:] = list(typed), []
                for key in keys:
                    if controls.on_key(key):
                        return
                if clock() >= next_at:
                    next_at = clock() + interval
    finally:
        loop.remove_reader(stdin_fd)
        pumping.cancel()
        with contextlib.suppress(BaseException):
            await pumping
        with contextlib.suppress(Exception):
            await watcher.stop()
