"""The driver's side of the simulated GPIO chip: :class:`SimRequest`, what
:meth:`SimChip.request_lines <clove_driver_gpio.simchip.SimChip.request_lines>` returns. It
behaves like a libgpiod v2 line request: it holds its lines exclusively, applies ``active_low``,
filters edges and debounces like the kernel, and queues edges behind a pipe so ``fileno()`` can
be polled.

Only inputs report edges (gpiod refuses edge detection on outputs), so setting an output never
produces a watch event; a debounced edge is reported once the level has been stable for the
debounce period, stamped with the time of the change.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Final, final

from clove_driver_gpio.lines import Edge, LineSpec
from clove_driver_gpio.simlines import SimChipError, SimLine, as_level

if TYPE_CHECKING:
    from clove_driver_gpio.simchip import SimChip

__all__ = ["EDGE_QUEUE", "SimRequest"]

#: Edges a request queues before the oldest are dropped (counted in ``SimRequest.dropped``).
EDGE_QUEUE: Final = 4096


@final
class SimRequest:
    """Lines held on a :class:`SimChip`: the simulated counterpart of ``gpiod.LineRequest``
    (and a :class:`~clove_driver_gpio.lines.Lines` backend). Made by :meth:`SimChip.request_lines`."""

    simulated = True
    kind = "sim"

    def __init__(self, chip: SimChip, specs: list[LineSpec], lines: dict[int, SimLine], consumer: str) -> None:
        self.chip = chip
        self.consumer = consumer
        self.dropped = 0
        self._lock = chip._lock
        self._specs = {spec.offset: spec for spec in specs}
        self._lines = lines
        self._reported = {off: line.level ^ self._specs[off].active_low for off, line in lines.items()}
        self._pending: dict[int, threading.Timer] = {}
        self._edges: deque[Edge] = deque()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False

    @property
    def offsets(self) -> list[int]:
        return list(self._specs)

    def get(self, offsets: list[int]) -> list[int]:
        with self._lock:
            self._check_open()
            return [
                self._lines[self._spec(off).offset].level ^ self._specs[off].active_low for off in offsets
            ]

    def set(self, values: dict[int, int]) -> None:
        with self._lock:
            self._check_open()
            for off, value in values.items():
                if self._spec(off).direction != "output":
                    raise SimChipError(f"offset {off} is an input; only outputs can be set")
                as_level(f"offset {off}", value)
            now = self.chip._clock()
            for off, value in values.items():
                self.chip._command(self._lines[off], value ^ self._specs[off].active_low, now)

    def read_edges(self, max_events: int | None = None) -> list[Edge]:
        """Queued edges (never blocks); ``[]`` when there are none."""
        with self._lock:
            if self._closed:
                raise SimChipError("the line request was released", "released")
            count = len(self._edges) if max_events is None else min(max_events, len(self._edges))
            edges = [self._edges.popleft() for _ in range(count)]
            if not self._edges:
                self._drain()
            return edges

    def fileno(self) -> int:
        return -1 if self._closed else self._rfd

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for timer in self._pending.values():
                timer.cancel()
            self._pending.clear()
            self.chip._release(self)
            os.close(self._wfd)
            os.close(self._rfd)

    # ---- called by the chip, under its lock -------------------------------------------------------

    def _on_level(self, offset: int, level: int, ts: float) -> None:
        spec = self._specs[offset]
        if spec.direction != "input" or self._closed:
            return
        if spec.debounce_ms <= 0:
            self._report(offset, level ^ spec.active_low, ts)
            return
        old = self._pending.pop(offset, None)
        if old is not None:
            old.cancel()
        timer = threading.Timer(spec.debounce_ms / 1000.0, self._settle, (offset, ts))
        timer.daemon = True
        self._pending[offset] = timer
        timer.start()

    def _settle(self, offset: int, ts: float) -> None:
        """A debounce period ended with no further change: report where the line settled."""
        with self._lock:
            if self._closed or self._pending.get(offset) is not threading.current_thread():
                return
            del self._pending[offset]
            self._report(offset, self._lines[offset].level ^ self._specs[offset].active_low, ts)

    def _report(self, offset: int, logical: int, ts: float) -> None:
        if logical == self._reported[offset]:
            return
        self._reported[offset] = logical
        edge = self._specs[offset].edge
        if edge != "both" and (edge == "rising") != bool(logical):
            return
        if len(self._edges) >= EDGE_QUEUE:
            self._edges.popleft()
            self.dropped += 1
        self._edges.append(Edge(offset, bool(logical), ts))
        with contextlib.suppress(BlockingIOError):  # a full pipe is readable already
            os.write(self._wfd, b"\0")

    def _drain(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass

    def _spec(self, offset: int) -> LineSpec:
        spec = self._specs.get(offset)
        if spec is None:
            raise SimChipError(f"offset {offset} is not in this request")
        return spec

    def _check_open(self) -> None:
        if self._closed:
            raise SimChipError("the line request was released", "released")
