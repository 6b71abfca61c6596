"""The ``clove top`` loops: the live screen on a terminal, and plain output for a pipe.

One thread: wait for a key or the next refresh (``select`` on the terminal), act, redraw. A
kernel that stops answering is shown on the status line and asked again at the next refresh;
the view stays up until ``q``.

Watching must not load what it watches: a refresh's cost grows with the number of agents
(``metrics.agents`` reads each one's /proc and cgroup files), so the live view stretches its
interval to keep its refreshes' round trips under :data:`MAX_SHARE` of the time (at most to
:data:`MAX_INTERVAL`). Actions still refresh at once.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Final, TextIO

from rich.console import Console
from rich.live import Live

from clove.cli.top import render
from clove.cli.top.controls import Controls
from clove.cli.top.keys import KeyReader
from clove.cli.top.model import AgentRow, Snapshot
from clove.cli.top.source import Caller, Source
from clove.cli.top.view import ViewState
from clove.errors import CloveError

#: The share of wall time the live view's refreshes may take (their round trips, which cover
#: the kernel's work for them).
MAX_SHARE: Final = 0.02
MAX_INTERVAL: Final = 5.0


def paced(interval: float, refresh_seconds: float) -> float:
    """The interval to wait: the operator's, stretched when a refresh took more than
    :data:`MAX_SHARE` of it (never past :data:`MAX_INTERVAL`, nor below ``interval``)."""
    return max(interval, min(MAX_INTERVAL, refresh_seconds / MAX_SHARE))


def run_live(client: Caller, view: ViewState, interval: float, *, stdin_fd: int, console: Console | None = None,
             clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
    """Show the live view until ``q`` (or the terminal closes)."""
    source = Source(client, clock=clock)
    started = clock()
    snap: Snapshot = source.refresh(everything=True)
    wait = paced(interval, clock() - started)

    def shown() -> list[AgentRow]:
        return view.visible(snap.agents)

    controls = Controls(client, view, shown, source.soon)
    console = console or Console()
    with KeyReader(stdin_fd) as keys, Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        next_at = clock() + wait
        while True:
            live.update(render.screen(snap, view, status=controls.status, prompt=controls.prompt, every=wait), refresh=True)
            try:
                typed = keys.read(next_at - clock())
            except EOFError:
                return
            refresh_now = False
            for key in typed:
                outcome = controls.on_key(key)
                if outcome.quit:
                    return
                refresh_now = refresh_now or outcome.refresh
            if refresh_now or clock() >= next_at:
                started = clock()
                try:
                    snap = source.refresh()
                except CloveError as err:  # the kernel went away or refused: say so, try again
                    controls.status = f"refresh failed: {err.message}"
                wait = paced(interval, clock() - started)
                next_at = clock() + wait


def run_plain(client: Caller, view: ViewState, *, iterations: int, interval: float, as_json: bool,
              out: TextIO = sys.stdout, sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
    """Print ``iterations`` snapshots, ``interval`` seconds apart: every section each time."""
    source = Source(client)
    for i in range(iterations):
        if i:
            sleep(interval)
        snap = source.refresh(everything=True)
        text = render.as_json(snap, view) if as_json else render.plain(snap, view)
        if i and not as_json:
            out.write("\n")
        out.write(text + "\n")
        out.flush()


def save_svg(client: Caller, view: ViewState, path: str, *, width: int = 120, settle: float = 1.0,
             sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
    """Write the interactive screen, as it shows now, to ``path`` as an SVG picture (for a bug
    report, a runbook or the README). Two snapshots ``settle`` seconds apart, so rates show."""
    source = Source(client)
    source.refresh(everything=True)
    sleep(settle)
    snap = source.refresh(everything=True)
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=width, file=sink, force_terminal=True, color_system="truecolor")
        console.print(render.screen(snap, view, every=settle))
    console.save_svg(path, title="clove top")
