"""``python -m clove_driver_gpio.sim``: serve a simulated GPIO chip until SIGTERM or SIGINT.

Prints one line, ``clove-gpio-sim: serving N lines on PATH``, once the socket accepts
connections; exits 0 after a clean stop, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from clove_driver_gpio.sim.server import SimChipServer
from clove_driver_gpio.simchip import SimChipError


def _pair(parser: argparse.ArgumentParser, option: str, text: str) -> tuple[str, int]:
    name, sep, number = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), int(number, 0)
    except ValueError:
        parser.error(f"{option} expects NAME=INT, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clove_driver_gpio.sim", description="Serve a simulated GPIO chip on a UNIX socket."
    )
    parser.add_argument("--socket", required=True, help="path of the control socket")
    parser.add_argument(
        "--line", action="append", required=True, metavar="NAME=OFFSET", help="a line (repeat)"
    )
    parser.add_argument(
        "--output", action="append", default=[], metavar="NAME", help="a line wired as an output (repeat)"
    )
    parser.add_argument(
        "--initial", action="append", default=[], metavar="NAME=LEVEL", help="a power-up wire level (repeat)"
    )
    parser.add_argument(
        "--active-low",
        action="append",
        default=[],
        metavar="NAME",
        help="a line whose active level is 0 (repeat)",
    )
    parser.add_argument("--label", default=None, help="the chip's label (default: the socket's file name)")
    args = parser.parse_args(argv)
    lines = dict(_pair(parser, "--line", text) for text in args.line)
    initial = dict(_pair(parser, "--initial", text) for text in args.initial)
    try:
        server = SimChipServer(args.socket, lines, args.output, initial, args.active_low, label=args.label)
        server.bind()
    except (SimChipError, OSError) as err:
        print(f"clove-gpio-sim: {err}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"clove-gpio-sim: serving {len(lines)} lines on {args.socket}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
