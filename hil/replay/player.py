"""Replaying CAN frames with their recorded timing.

:func:`replay` sends each frame at its recorded time relative to the first one (divided by
``speed``) on one absolute ``time.perf_counter`` schedule, so lateness never accumulates: it
sleeps until ``spin`` seconds before a frame is due, then busy-waits (yielding the GIL) to the
due time. It returns every frame's timing error (actual − scheduled) in a :class:`ReplayResult`.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import can

from hil.replay.logs import PathLike, load

__all__ = ["LEAD", "REALTIME_PRIORITY", "REALTIME_SPIN", "SPIN", "ReplayResult", "replay"]

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
