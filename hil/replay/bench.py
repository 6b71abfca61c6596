"""The replayer's timing bench (``python -m hil.replay bench``): write a log at each rate, replay
it onto a python-can ``virtual`` bus with a receiver on the same channel, and measure the timing
error.

Measured on the 2-CPU development VM (load average ~1.2 from other work, 2 s logs onto a
python-can virtual bus): send error p50 below 1 us at both rates; p99 up to ~1.5 ms and max
1.6-4.9 ms, the tail being other processes holding both CPUs. ``--realtime`` (SCHED_FIFO) cut
the max to 0.2-1.1 ms (one 5 ms outlier in 12 runs).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import can

from hil.replay.logs import load
from hil.replay.player import replay

__all__ = ["BenchRow", "run_bench"]


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
