"""``clove fleet logs BOARD/AGENT [--lines N] [--follow]``: an agent's log from a remote board.

Each read is a signed ``logs`` command (the operator's key, which the board must allow
``logs``), carried out on the board as ``agent.logs`` and answered with a bounded piece of the
log (:mod:`clove.fleet.logs`). ``--follow`` asks again with the position the last answer gave,
one command every ``--interval`` seconds (at least :data:`MIN_INTERVAL`): each is journaled on
the board like any command, so following is paced, and carries at most
:data:`clove.fleet.logs.MAX_ANSWER_BYTES` a time.

The log text goes to stdout as ``clove logs`` writes it (control characters shown, not obeyed,
on a terminal; as the agent wrote it to a pipe or with ``--raw``: :mod:`clove.cli.terminal`);
notes (the answer was cut, the log rotated) go to stderr, so a pipe gets only the log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Final

from clove.cli import fleet as base
from clove.cli.terminal import LogWriter
from clove.config.fleet import valid_token
from clove.fleet.logs import MAX_LINES
from clove.fleet.subjects import FleetNames

__all__ = ["MIN_INTERVAL", "cmd_fleet_logs"]

#: The fastest ``--follow`` asks a board again.
MIN_INTERVAL: Final = 0.5


def _lines(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_LINES:
        raise argparse.ArgumentTypeError(f"expected a count from 1 to {MAX_LINES}, got {value!r}")
    return count


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not MIN_INTERVAL <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from {MIN_INTERVAL} to 3600, got {value!r}")
    return seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="BOARD/AGENT")
    p.add_argument("--lines", type=_lines, default=None, help="the last N lines (default 100)")
    p.add_argument("-f", "--follow", action="store_true", help="keep asking for what the agent writes next")
    p.add_argument("--interval", type=_interval, default=1.0, help=f"seconds between reads with --follow (default 1, at least {MIN_INTERVAL})")
    p.add_argument("--raw", action="store_true", help="the agent's bytes as they are, escape sequences included, even on a terminal")


async def _known(js: Any, names: FleetNames, board: str) -> bool:
    """Whether the bucket has an entry for ``board`` (an unknown name is a typo, not a lost board)."""
    from nats.js.errors import KeyNotFoundError

    kv = await js.key_value(names.bucket)
    try:
        await kv.get(board)
    except KeyNotFoundError:
        return False
    return True


def _value(args: argparse.Namespace, error: base.Error, board: str, answer: dict[str, Any] | None) -> dict[str, Any]:
    """The log piece of a board's answer, or the CLI's one-line error."""
    where = f"fleet logs {args.target}"
    if answer is None:
        raise error(f"{where}: {board} did not answer within {args.wait:g} s (is it lost? see clove fleet ps)")
    if not answer.get("accepted"):
        raise error(f"{where}: refused {answer.get('code')}: {answer.get('reason')}")
    results = [r for r in answer.get("results") or [] if isinstance(r, dict)]
    if len(results) != 1:
        raise error(f"{where}: the board's answer held {len(results)} results, expected 1")
    result = results[0]
    if not result.get("ok"):
        failure = result.get("error") or {}
        raise error(f"{where}: {failure.get('code')}: {failure.get('message')}")
    value = result.get("value")
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise error(f"{where}: the board's answer held no log (an older board without 'logs'?)")
    return value


def cmd_fleet_logs(args: argparse.Namespace, error: base.Error) -> int:
    board, _, agent = args.target.partition("/")
    if not valid_token(board) or not agent:
        raise error(f"fleet logs: expected BOARD/AGENT, got {args.target!r}")
    from clove.fleet.commands import load_private_key, sign
    from clove.fleet.sender import send

    try:
        private = load_private_key(Path(args.key))
    except ValueError as err:
        raise error(f"fleet logs: {err}") from None

    async def body(nc: Any, names: FleetNames) -> int:
        js = nc.jetstream(timeout=args.timeout)
        if not await _known(js, names, board):
            raise error(f"fleet logs: no board {board!r} in the fleet (clove fleet ps lists them)")
        command_args: dict[str, Any] = {"agent": agent}
        if args.lines is not None:
            command_args["lines"] = args.lines
        out = LogWriter(sys.stdout.buffer, raw=True if args.raw else None)
        while True:
            signed = sign(private, "logs", board=board, args=command_args)
            outcome = await send(nc, js, names, signed, board=board, wait=args.wait)
            value = _value(args, error, board, outcome.answers.get(board))
            if args.json:
                print(json.dumps(value), flush=True)
            else:
                out.write(value["text"])
            if value.get("cut"):
                print(f"fleet logs {args.target}: cut: {value['cut']}", file=sys.stderr, flush=True)
            if not args.follow:
                return 0
            command_args = {"agent": agent, "offset": int(value.get("offset") or 0)}
            await asyncio.sleep(args.interval)

    return base._run(args, error, body, connection=True)
