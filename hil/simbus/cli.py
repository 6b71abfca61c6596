"""``python -m hil.simbus``: run one channel's hub until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from hil.simbus.channel import DEFAULT_DIR, DIR_ENV, SimBusError
from hil.simbus.control import Faults
from hil.simbus.hub import SimBusHub


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hil.simbus --channel NAME``: run a hub until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m hil.simbus",
        description="Run the hub of a simulated CAN bus (python-can interface 'simbus').",
    )
    parser.add_argument("--channel", required=True, help="the bus name, e.g. rover")
    parser.add_argument("--dir", default=None, help=f"socket directory (default ${DIR_ENV} or {DEFAULT_DIR})")
    parser.add_argument(
        "--log", default=None, metavar="PATH", help="capture every frame to a python-can log file"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random faults")
    parser.add_argument("--drop", type=float, default=0.0, help="initial share of frames dropped")
    parser.add_argument("--delay", type=float, default=0.0, help="initial delay of every frame, seconds")
    parser.add_argument("--error-rate", type=float, default=0.0, help="initial share of frames corrupted")
    args = parser.parse_args(argv)
    try:
        faults = Faults().updated({"drop": args.drop, "delay": args.delay, "error_rate": args.error_rate})
        hub = SimBusHub(args.channel, args.dir, log_path=args.log, faults=faults, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        hub.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready() -> None:
        print(f"simbus hub ready: channel={hub.channel} pub={hub.paths.pub} sub={hub.paths.sub} "
              f"ctl={hub.paths.ctl}", flush=True)

    try:
        hub.run(ready=ready)
    except (SimBusError, ValueError) as exc:
        print(f"simbus: {exc}", file=sys.stderr)
        return 1
    return 0
