"""Record CAN traffic to a python-can log file and replay it with its original timing.

Any format python-can reads and writes by suffix works (``.asc``, ``.blf``, ``.log``, ``.csv``,
``.trc``; optionally gzipped). :func:`replay` sends each frame at its recorded time relative to
the first one (divided by ``speed``) on one absolute ``time.perf_counter`` schedule, so lateness
never accumulates: it sleeps until ``spin`` seconds before a frame is due, then busy-waits
(yielding the GIL) to the due time. It returns every frame's timing error (actual − scheduled).

``python -m hil.replay record OUT --interface simbus --channel rover [--duration S]``,
``python -m hil.replay play IN --interface ... --channel ... [--speed X]`` and
``python -m hil.replay bench`` (the replayer's timing error at 1 and 5 kHz on this machine).

Measured on the 2-CPU development VM (load average ~1.2 from other work, 2 s logs onto a
python-can virtual bus): send error p50 below 1 us at both rates; p99 up to ~1.5 ms and max
1.6-4.9 ms, the tail being other processes holding both CPUs. ``--realtime`` (SCHED_FIFO) cut
the max to 0.2-1.1 ms (one 5 ms outlier in 12 runs).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import can
from can.util import channel2int

__all__ = ["ReplayResult", "load", "record", "replay", "run_bench"]

PathLike = str | os.PathLike[str]

#: Seconds before a frame is due at which :func:`replay` stops sleeping and starts spinning.
SPIN: Final = 0.0005
#: Seconds between the call and the first frame, so the first one is not late by setup alone.
LEAD: Final = 0.005
#: The spin window under SCHED_FIFO: a real-time thread wakes on time (no timer slack, no
#: waiting for a CPU), and one that never sleeps is throttled by the kernel (50 ms a second).
REALTIME_SPIN: Final = 0.0001
#: The SCHED_FIFO priority of ``replay(realtime=True)`` (low: above every normal thread only).
REALTIME_PRIORITY: Final = 10


@dataclass(slots=True)
class ReplayResult:
    """What a replay did. ``errors[i]`` is the i-th sent frame's actual send time minus its
    scheduled time, in seconds (taken just before ``bus.send``)."""

    errors: list[float] = field(default_factory=list)
    sent: int = 0
    skipped: int = 0  #: error frames, and frames ``only`` refused
    send_errors: int = 0  #: frames the bus refused (their errors are still listed)
    duration: float = 0.0  #: seconds from the first frame's scheduled time to the last send
    stopped: bool = False  #: the stop event ended the replay early
    realtime: bool = False  #: it ran under SCHED_FIFO

    @property
    def p50(self) -> float:
        return statistics.median(self.errors) if self.errors else math.nan

    @property
    def p99(self) -> float:
        return _percentile(self.errors, 0.99)

    @property
    def max(self) -> float:
        return max(self.errors) if self.errors else math.nan

    def summary(self) -> str:
        return (
            f"{self.sent} frames in {self.duration:.3f} s; timing error p50 {self.p50 * 1e6:.0f} us, "
            f"p99 {self.p99 * 1e6:.0f} us, max {self.max * 1e6:.0f} us"
            + (f"; {self.send_errors} send errors" if self.send_errors else "")
            + (f"; {self.skipped} skipped" if self.skipped else "")
            + ("; stopped early" if self.stopped else "")
        )


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def record(
    bus: can.BusABC,
    path: PathLike,
    duration: float | None = None,
    stop: threading.Event | None = None,
    *,
    ready: threading.Event | None = None,
    on_message: Callable[[can.Message], None] | None = None,
) -> int:
    """Log every frame ``bus`` receives to ``path`` (the format by its suffix) until
    ``duration`` seconds passed or ``stop`` is set (at least one of them is required). ``ready``
    is set once the log file is open; ``on_message`` runs after each frame is written (it may
    set ``stop``). Returns the number of frames written.

    The frames keep the timestamps the bus gave them (python-can writes ASC ones relative to
    the first frame, BLF and .log ones absolute).
    """
    if duration is None and stop is None:
        raise ValueError("record needs a duration or a stop event")
    deadline = math.inf if duration is None else time.monotonic() + duration
    count = 0
    with can.Logger(path) as writer:
        if ready is not None:
            ready.set()
        while not (stop is not None and stop.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msg = bus.recv(timeout=min(0.05, remaining))
            if msg is not None:
                writer.on_message_received(_loggable(msg))
                count += 1
                if on_message is not None:
                    on_message(msg)
    return count


def _loggable(msg: can.Message) -> can.Message:
    """``msg``, or a copy without a channel the log formats cannot hold: BLF and ASC store a
    channel number taken from the name's trailing digits (``bus-7f3a12345678`` would overflow
    BLF's 16 bits and fail the write), and .log lines are split on whitespace."""
    channel = msg.channel
    if channel is None:
        return msg
    number = channel2int(channel)
    spaced = isinstance(channel, str) and (not channel or any(c.isspace() for c in channel))
    if not spaced and (number is None or 0 <= number < 0xFFFF):
        return msg
    clean = copy.copy(msg)
    clean.channel = None
    return clean


def load(path: PathLike) -> list[can.Message]:
    """Every frame of a python-can log file, in file order."""
    with can.LogReader(path) as reader:
        return list(reader)


def _outgoing(msg: can.Message) -> can.Message:
    return can.Message(
        arbitration_id=msg.arbitration_id,
        is_extended_id=msg.is_extended_id,
        is_remote_frame=msg.is_remote_frame,
        is_fd=msg.is_fd,
        bitrate_switch=msg.bitrate_switch,
        error_state_indicator=msg.error_state_indicator,
        dlc=msg.dlc,
        data=bytes(msg.data) if not msg.is_remote_frame else None,
        check=False,
    )


def replay(
    bus: can.BusABC,
    source: PathLike | Iterable[can.Message],
    speed: float = 1.0,
    *,
    stop: threading.Event | None = None,
    spin: float | None = None,
    only: Callable[[can.Message], bool] | None = None,
    on_send: Callable[[int, can.Message], None] | None = None,
    realtime: bool = False,
) -> ReplayResult:
    """Send the frames of ``source`` (a log file or messages) on ``bus`` at their recorded
    times relative to the first frame, ``speed`` times as fast. Error frames and frames
    ``only`` refuses are skipped (the schedule still follows the original timestamps).

    Frames are sent in file order; a timestamp that goes backwards is sent at once. A frame the
    bus refuses (:class:`can.CanError`, or ``ValueError`` for one it cannot carry) is counted in
    ``send_errors`` and the replay goes on. ``stop`` ends the replay early. ``on_send(index,
    message)`` runs after each send.

    ``realtime`` runs the calling thread under ``SCHED_FIFO`` for the replay (if the process may:
    root or ``CAP_SYS_NICE``; otherwise it is ignored and ``result.realtime`` stays False), which
    keeps other processes from delaying frames on a busy machine. The thread's policy is restored
    afterwards. Python's garbage collector is paused during the replay (process-wide).
    ``spin`` defaults to :data:`SPIN`, or :data:`REALTIME_SPIN` under SCHED_FIFO.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    messages = load(source) if isinstance(source, (str, os.PathLike)) else list(source)
    result = ReplayResult()
    plan: list[tuple[float, can.Message]] = []
    first: float | None = None
    for msg in messages:
        if first is None:
            first = msg.timestamp
        if msg.is_error_frame or (only is not None and not only(msg)):
            result.skipped += 1
            continue
        plan.append(((msg.timestamp - first) / speed, _outgoing(msg)))
    if not plan:
        return result
    clock = time.perf_counter
    errors = result.errors
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside the loop is a millisecond late frame
    restore = _enter_realtime() if realtime else None
    result.realtime = restore is not None
    if spin is None:
        spin = REALTIME_SPIN if result.realtime else SPIN
    try:
        start = clock() + LEAD
        due = start
        for index, (offset, out) in enumerate(plan):
            due = start + offset
            if not _wait_until(due, clock, stop, spin):
                result.stopped = True
                break
            now = clock()
            try:
                bus.send(out)
            except (can.CanError, ValueError):  # bus off; a frame this bus cannot carry (FD)
                result.send_errors += 1
            errors.append(now - due)
            if on_send is not None:
                on_send(index, out)
        result.sent = len(errors) - result.send_errors
        result.duration = clock() - start
    finally:
        if restore is not None:
            restore()
        if gc_was_enabled:
            gc.enable()
    return result


def _enter_realtime() -> Callable[[], None] | None:
    """Put the calling thread under SCHED_FIFO; returns how to undo it, or None if not allowed."""
    if not hasattr(os, "sched_setscheduler"):
        return None
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except OSError:
        return None

    def restore() -> None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)

    return restore


def _wait_until(due: float, clock: Callable[[], float], stop: threading.Event | None, spin: float) -> bool:
    """Sleep until ``spin`` before ``due``, then spin; False when ``stop`` was set."""
    while True:
        remaining = due - clock()
        if stop is not None and stop.is_set():
            return False
        if remaining <= 0:
            return True
        if remaining > spin:
            nap = min(remaining - spin, 0.1)  # re-check the stop event at least every 100 ms
            if stop is not None:
                stop.wait(nap)
            else:
                time.sleep(nap)
        elif remaining > 0.0002:
            time.sleep(0)  # spin, letting other threads have the GIL
        # else: a pure spin for the last 200 us


# --- the timing bench ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchRow:
    rate: int
    fmt: str
    frames: int
    p50: float
    p99: float
    max: float
    late_over_1ms: int
    arrival_p50: float  #: |receiver timestamp − recorded timestamp − median offset|, median
    arrival_max: float


def _bench_log(path: Path, rate: int, seconds: float) -> int:
    """A log of ``seconds`` at ``rate`` frames/s with exact timestamps; frame i carries i."""
    n = int(rate * seconds)
    t0 = time.time()
    with can.Logger(path) as writer:
        for i in range(n):
            writer.on_message_received(
                can.Message(
                    timestamp=t0 + i / rate,
                    arbitration_id=0x100 + i % 64,
                    is_extended_id=False,
                    data=i.to_bytes(4, "little") + b"\xaa\xbb\xcc\xdd",
                )
            )
    return n


def run_bench(
    rates: Sequence[int] = (1000, 5000),
    seconds: float = 2.0,
    formats: Sequence[str] = ("blf", "asc"),
    out: Callable[[str], None] | None = print,
    spin: float | None = None,
    realtime: bool = False,
) -> list[BenchRow]:
    """Write a log at each rate, replay it onto a python-can ``virtual`` bus with a receiver
    on the same channel, and measure the replayer's timing error."""
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="hil-replay-bench-") as tmp:
        for rate in rates:
            for fmt in formats:
                path = Path(tmp) / f"bench-{rate}.{fmt}"
                _bench_log(path, rate, seconds)
                recorded = load(path)
                channel = f"replay-bench-{uuid.uuid4().hex}"
                with can.Bus(interface="virtual", channel=channel) as tx, can.Bus(
                    interface="virtual", channel=channel
                ) as rx:
                    result = replay(tx, recorded, spin=spin, realtime=realtime)
                    got = []
                    while (msg := rx.recv(timeout=0)) is not None:
                        got.append(msg)
                if [bytes(m.data) for m in got] != [bytes(m.data) for m in recorded]:
                    raise AssertionError(f"{fmt} at {rate} Hz: frames lost or out of order")
                # The receiver's timestamps (time.time() at send) against the recorded ones, aligned
                # on the median offset so one late first frame does not shift every other one.
                offsets = [g.timestamp - r.timestamp for g, r in zip(got, recorded, strict=False)]
                base = statistics.median(offsets)
                arrival = [abs(o - base) for o in offsets]
                row = BenchRow(
                    rate,
                    fmt,
                    result.sent,
                    result.p50,
                    result.p99,
                    result.max,
                    sum(1 for e in result.errors if e > 0.001),
                    statistics.median(arrival),
                    max(arrival),
                )
                rows.append(row)
                if out is not None:
                    out(
                        f"{rate:5d} Hz {fmt:4s} {row.frames:6d} frames:"
                        f" send error p50 {row.p50 * 1e6:6.1f} us"
                        f"  p99 {row.p99 * 1e6:7.1f} us  max {row.max * 1e6:8.1f} us"
                        f"  (>1 ms late: {row.late_over_1ms});"
                        f" receiver timestamps p50 {row.arrival_p50 * 1e6:6.1f} us"
                        f" max {row.arrival_max * 1e6:8.1f} us"
                    )
    return rows


# --- the command line ----------------------------------------------------------------------


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


if __name__ == "__main__":
    sys.exit(main())
