"""Recording a CAN bus to a python-can log file, and reading one back.

Any format python-can reads and writes by suffix works (``.asc``, ``.blf``, ``.log``, ``.csv``,
``.trc``; optionally gzipped).
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from collections.abc import Callable

import can
from can.util import channel2int

__all__ = ["PathLike", "load", "record"]

PathLike = str | os.PathLike[str]


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
