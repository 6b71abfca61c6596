"""Record CAN traffic to a python-can log file and replay it with its original timing.

``python -m hil.replay record OUT --interface simbus --channel rover [--duration S]``,
``python -m hil.replay play IN --interface ... --channel ... [--speed X]`` and
``python -m hil.replay bench`` (the replayer's timing error at 1 and 5 kHz on this machine).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import can

from hil.replay.bench import run_bench
from hil.replay.logs import record
from hil.replay.player import REALTIME_SPIN, SPIN, replay

__all__ = ["main"]


def _bus_args(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg expects KEY=VALUE, got {pair!r}")
        value: object = text
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                pass
        if text in ("true", "false"):
            value = text == "true"
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.replay", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def bus_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--interface", "-i", required=True, help="python-can interface (simbus, virtual, socketcan...)"
        )
        p.add_argument("--channel", "-c", required=True)
        p.add_argument(
            "--arg", action="append", default=[], metavar="KEY=VALUE", help="another bus argument (repeat)"
        )

    rec = sub.add_parser("record", help="log a bus's traffic to a file until --duration or SIGINT/SIGTERM")
    rec.add_argument("path", help="the log file (.asc, .blf, .log, ...)")
    bus_options(rec)
    rec.add_argument("--duration", type=float, default=None, help="seconds (default: until a signal)")

    play = sub.add_parser("play", help="replay a log file onto a bus with its original timing")
    play.add_argument("path")
    bus_options(play)
    play.add_argument("--speed", type=float, default=1.0, help="time factor (2 = twice as fast)")

    bench = sub.add_parser("bench", help="measure the replayer's timing error on this machine")
    bench.add_argument("--rates", default="1000,5000", help="frames per second, comma-separated")
    bench.add_argument("--seconds", type=float, default=2.0)
    bench.add_argument("--formats", default="blf,asc")
    for p in (play, bench):
        p.add_argument(
            "--spin",
            type=float,
            default=None,
            help=f"busy-wait window, seconds (default {SPIN}; {REALTIME_SPIN} with --realtime)",
        )
        p.add_argument(
            "--realtime", action="store_true", help="replay under SCHED_FIFO (root or CAP_SYS_NICE)"
        )

    args = parser.parse_args(argv)
    if args.command == "bench":
        rates = [int(r) for r in args.rates.split(",") if r]
        formats = [f.strip().lstrip(".") for f in args.formats.split(",") if f.strip()]
        print(
            f"replay timing on {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}),"
            f" {args.seconds:g} s per log, spin {'default' if args.spin is None else args.spin}"
            f"{', SCHED_FIFO' if args.realtime else ''}, onto a python-can virtual bus"
        )
        run_bench(rates, args.seconds, formats, spin=args.spin, realtime=args.realtime)
        return 0

    try:
        kwargs = _bus_args(args.arg)
    except ValueError as err:
        parser.error(str(err))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with can.Bus(interface=args.interface, channel=args.channel, **kwargs) as bus:
            if args.command == "record":
                count = record(bus, args.path, args.duration, stop)
                print(f"recorded {count} frames to {args.path}")
            else:
                result = replay(
                    bus, args.path, args.speed, stop=stop, spin=args.spin, realtime=args.realtime
                )
                print(f"replayed {args.path}: {result.summary()}")
    except (can.CanError, OSError, ValueError) as err:
        print(f"hil.replay: {err}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
