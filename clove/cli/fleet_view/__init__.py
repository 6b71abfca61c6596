"""``clove fleet top`` and ``clove fleet logs``: watching the fleet (docs/fleet.md, "top and logs").

* ``clove fleet top``: every board from the boards bucket, kept current by a watch on it (the
  boards already write their entry every heartbeat; nothing asks them): up or lost with the
  heartbeat's age, kernel version and uptime, agents by state and restarts, devices, engaged
  interlocks, trading state, the shipped journal and its lag; Enter opens one board's agents.
  Off a terminal, or with ``--once``/``--json``, one snapshot as plain tables or JSON lines.
* ``clove fleet logs BOARD/AGENT``: an agent's log, read through a signed ``logs`` command.

:func:`add_parsers` is the one call ``clove fleet``'s parser makes into this package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from clove.cli import fleet as base
from clove.cli.fleet_view.controls import FleetControls, agents_view, boards_view
from clove.cli.fleet_view.model import BOARD_SORT_KEYS
from clove.config.fleet import valid_token
from clove.fleet.subjects import FleetNames

__all__ = ["add_parsers", "cmd_fleet_top"]


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.2 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0.2 to 3600, got {value!r}")
    return seconds


def cmd_fleet_top(args: argparse.Namespace, error: base.Error) -> int:
    from clove.cli.fleet_view.live import print_plain, run_live, snapshot

    if args.board is not None and not valid_token(args.board):
        raise error(f"fleet top: --board must be a board name, got {args.board!r}")
    interactive = not (args.once or args.json) and sys.stdout.isatty() and sys.stdin.isatty()
    boards, agents = boards_view(args.sort, reverse=args.reverse, filter=args.filter or ""), agents_view()

    async def body(nc: Any, names: FleetNames) -> int:
        js = nc.jetstream(timeout=args.timeout)
        if interactive:
            controls = FleetControls(boards, agents, shown_boards=list, shown_agents=list, board=args.board)
            await run_live(nc, js, names, controls, interval=args.interval, lost_after=args.lost_after, timeout=args.timeout, stdin_fd=sys.stdin.fileno())
            return 0
        entries = await snapshot(js, names, timeout=args.timeout)
        if not print_plain(entries, boards, agents, board=args.board, lost_after=args.lost_after, as_json=args.json):
            raise error(f"fleet top: no board {args.board!r} in the fleet")
        return 0

    return base._run(args, error, body, connection=True)


def add_parsers(
    fsub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    signed: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind: Callable[[Callable[[argparse.Namespace, base.Error], int]], Any],
) -> None:  # fmt: skip
    """``fleet top`` and ``fleet logs``, with ``clove fleet``'s common (and signing) options."""
    from clove.cli.fleet_view.logs import add_arguments, cmd_fleet_logs

    t = common(fsub.add_parser("top", help="live view of every board (the boards bucket, watched); Enter opens a board's agents"))
    t.add_argument("--once", action="store_true", help="print one snapshot as plain tables (or --json lines) and exit")
    t.add_argument("--board", help="open this board's agents (with --once: print them under the list)")
    t.add_argument("--interval", type=_interval, default=1.0, help="seconds between redraws without updates (default 1)")
    t.add_argument("--lost-after", type=float, help="seconds without a heartbeat before a board is lost (default: each board's own)")
    t.add_argument("--sort", choices=list(BOARD_SORT_KEYS), default="name", help="initial sort of the boards (s cycles)")
    t.add_argument("--reverse", action="store_true", help="initial sort descending")
    t.add_argument("--filter", help="initial filter: part of a board name or a state")
    t.set_defaults(func=bind(cmd_fleet_top))
    lg = signed(fsub.add_parser("logs", help="an agent's log from a board (a signed 'logs' command)"))
    add_arguments(lg)
    lg.set_defaults(func=bind(cmd_fleet_logs))
