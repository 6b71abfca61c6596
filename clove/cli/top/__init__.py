"""``clove top``: a live terminal view of agents, devices, interlocks and the LLM gateway, with
keys to sort, filter, pause, resume, kill and e-stop (docs/top.md).

On a terminal it is interactive; when stdout (or stdin) is not a terminal, or with ``--once``
or ``--iterations N``, it prints plain tables (``--json``: one JSON object per snapshot).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from clove.cli.top.app import run_live, run_plain, save_svg
from clove.cli.top.view import SORT_KEYS, ViewState

__all__ = ["add_parsers", "cmd_top"]


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.1 and 3600, got {value!r}")
    return seconds


def _iterations(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count, got {value!r}")
    return count


def cmd_top(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    view = ViewState(sort=args.sort, reverse=args.reverse, filter=args.filter or "")
    interactive = not (args.once or args.iterations or args.json) and sys.stdout.isatty() and sys.stdin.isatty()
    with client(args) as c:
        if args.svg:
            try:
                save_svg(c, view, args.svg, settle=min(args.interval, 5.0))
            except OSError as err:
                raise error(f"top: cannot write {args.svg}: {err.strerror}") from None
            emit(args, {"success": True, "svg": args.svg}, lambda: f"wrote {args.svg}")
        elif interactive:
            run_live(c, view, args.interval, stdin_fd=sys.stdin.fileno())
        else:
            run_plain(c, view, iterations=args.iterations or 1, interval=args.interval, as_json=args.json)
    return 0


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind: Callable[[Any], Any]) -> None:
    t = common(sub.add_parser("top", help="live view of agents, devices, interlocks and the LLM gateway"))
    t.add_argument("--interval", type=_interval, default=1.0, help="seconds between refreshes (default 1)")
    t.add_argument("--once", action="store_true", help="print one snapshot as plain text and exit")
    t.add_argument("--iterations", type=_iterations, metavar="N", help="print N plain snapshots, --interval apart")
    t.add_argument("--sort", choices=list(SORT_KEYS), default="id", help="initial sort key (s cycles)")
    t.add_argument("--reverse", action="store_true", help="initial sort descending")
    t.add_argument("--filter", help="initial filter: part of a name or a state")
    t.add_argument("--svg", metavar="FILE", help="save the screen as it shows now as an SVG picture, and exit")
    t.set_defaults(func=bind(cmd_top))
