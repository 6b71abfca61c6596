"""A GPIO chip in user space, for machines without ``/dev/gpiochip*`` (this kernel has neither
GPIO nor gpio-sim) and for tests and HIL scenarios that press buttons and watch outputs.

:class:`SimChip` models the wires: each line has an offset, a wiring direction, a level and
possibly a stuck-at fault. Two sides use it:

- the outside world (a test, the HIL harness, :class:`~clove_driver_gpio.sim.SimChipServer`'s
  controllers): :meth:`SimChip.press`, :meth:`SimChip.set_input`, :meth:`SimChip.stuck`, and
  reading outputs and their :meth:`SimChip.history`;
- a driver, through :meth:`SimChip.request_lines`, which returns a :class:`SimRequest` that
  behaves like a libgpiod v2 line request: it claims lines exclusively (a second claim is
  "busy"), drives outputs to their initial values, applies ``active_low``, filters edges and
  debounces like the kernel, and queues edges behind a pipe so ``fileno()`` can be polled.

Choices, kept close to the kernel's: only inputs report edges (gpiod refuses edge detection on
outputs), so setting an output never produces a watch event; a debounced edge is reported once
the level has been stable for the debounce period, stamped with the time of the change.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, final

from clove_driver_gpio.lines import Edge, LineSpec

__all__ = ["SimChip", "SimChipError", "SimRequest"]

#: Edges a request queues before the oldest are dropped (counted in ``SimRequest.dropped``).
EDGE_QUEUE: Final = 4096


class SimChipError(Exception):
    """A refusal from the simulated chip.

    :param kind: ``"invalid"`` (a bad name, value or use), ``"busy"`` (the line is held by
        another request), ``"unavailable"`` (no such line, or wired the other way) or
        ``"released"`` (the request was released).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass(slots=True)
class _Line:
    name: str
    offset: int
    output: bool
    active_low: bool
    level: int
    stuck: bool = False
    commanded: int | None = None
    holder: SimRequest | None = None


def _bit(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    raise SimChipError(f"{key}: a level is 0 or 1, got {value!r}")


@final
class SimChip:
    """The simulated chip.

    :param lines: line name → offset (unique).
    :param outputs: lines wired as outputs (driven by the driver, never by the outside world).
    :param initial: wire levels at power-up; a line not named rests at its inactive level
        (0, or 1 when it is in ``active_low``).
    :param active_low: lines whose active level is 0 on the wire: :meth:`press` drives them
        to 0 (a button to ground with a pull-up).
    :param history_size: output changes kept for :meth:`history`.
    :raises SimChipError: a bad line table.
    """

    def __init__(
        self,
        lines: Mapping[str, int],
        outputs: Iterable[str] = (),
        initial: Mapping[str, int] | None = None,
        active_low: Iterable[str] = (),
        *,
        label: str = "clove-sim",
        history_size: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not lines:
            raise SimChipError("a simulated chip needs at least one line")
        outputs, active_low, initial = set(outputs), set(active_low), dict(initial or {})
        for key, names in (("outputs", outputs), ("active_low", active_low), ("initial", set(initial))):
            unknown = sorted(names - set(lines))
            if unknown:
                raise SimChipError(f"{key}: no line named {unknown[0]!r}")
        self.label = label
        self._clock = clock
        self._lock = threading.Lock()
        self._by_name: dict[str, _Line] = {}
        self._by_offset: dict[int, _Line] = {}
        for name, offset in lines.items():
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise SimChipError(f"line {name!r}: an offset is an int >= 0, got {offset!r}")
            if offset in self._by_offset:
                raise SimChipError(
                    f"offset {offset} is used by both {self._by_offset[offset].name!r} and {name!r}"
                )
            low = name in active_low
            level = _bit(f"initial.{name}", initial[name]) if name in initial else int(low)
            self._by_offset[offset] = self._by_name[name] = _Line(name, offset, name in outputs, low, level)
        self._history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._requests: set[SimRequest] = set()

    def __repr__(self) -> str:
        return f"SimChip({self.label!r}, lines={ {n: ln.offset for n, ln in self._by_name.items()} })"

    # ---- the outside world ----------------------------------------------------------------------

    def set_input(self, name: str, level: int) -> None:
        """Drive an input's wire to ``level`` (ignored while the line is stuck).

        :raises SimChipError: an unknown line, a bad level, or an output.
        """
        level = _bit(name, level)
        with self._lock:
            line = self._input(name)
            if not line.stuck:
                self._change(line, level)

    def press(self, name: str) -> None:
        """Drive an input to its active level (1, or 0 for an active-low line)."""
        self.set_input(name, int(not self._line(name).active_low))

    def release(self, name: str) -> None:
        """Drive an input to its inactive level."""
        self.set_input(name, int(self._line(name).active_low))

    def toggle(self, name: str) -> int:
        """Invert an input's wire level; returns the level now on the wire."""
        with self._lock:
            line = self._input(name)
            if not line.stuck:
                self._change(line, 1 - line.level)
            return line.level

    def stuck(self, name: str, level: int | None) -> None:
        """Freeze a line (input or output) at ``level``: further drives from either side are
        ignored until ``stuck(name, None)``. Freezing an input at a new level is an edge."""
        with self._lock:
            line = self._line(name)
            if level is None:
                line.stuck = False
                return
            level = _bit(name, level)
            line.stuck = False
            self._change(line, level)
            line.stuck = True

    def level(self, name: str) -> int:
        """A line's wire level."""
        with self._lock:
            return self._line(name).level

    def levels(self) -> dict[str, int]:
        """Every line's wire level."""
        with self._lock:
            return {name: line.level for name, line in self._by_name.items()}

    def outputs(self) -> dict[str, int]:
        """The output lines' wire levels (e.g. to see that the brake was applied)."""
        with self._lock:
            return {name: line.level for name, line in self._by_name.items() if line.output}

    def history(self, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Output changes a driver commanded, oldest first: ``{"line", "offset", "value"
        (wire level), "ts", "applied"}`` (``applied`` is false when the line was stuck).

        :param since: only changes at or after this ``time.time()`` stamp.
        :param limit: only the newest ``limit`` entries.
        """
        with self._lock:
            entries = [dict(e) for e in self._history if since is None or e["ts"] >= since]
        return entries[-limit:] if limit else entries

    def info(self) -> dict[str, Any]:
        """The chip as a msgpack/JSON-able table: label and each line's wiring and state."""
        with self._lock:
            return {
                "label": self.label,
                "lines": {
                    name: {
                        "offset": line.offset,
                        "direction": "output" if line.output else "input",
                        "level": line.level,
                        "active_low": line.active_low,
                        "stuck": line.stuck,
                        "held": line.holder is not None,
                    }
                    for name, line in self._by_name.items()
                },
            }

    def close(self) -> None:
        """Release every request (their readers see the request gone)."""
        with self._lock:
            requests = list(self._requests)
        for request in requests:
            request.close()

    # ---- the driver side ------------------------------------------------------------------------

    def request_lines(self, specs: Iterable[LineSpec], consumer: str = "clove") -> SimRequest:
        """Claim lines, as ``gpiod.request_lines`` does; outputs are driven to their initial
        values at once.

        :raises SimChipError: ``unavailable`` for an unknown offset or a line wired the other
            way, ``busy`` for a line another request holds.
        """
        specs = list(specs)
        if not specs:
            raise SimChipError("a request needs at least one line")
        with self._lock:
            held: dict[int, _Line] = {}
            for spec in specs:
                line = self._by_offset.get(spec.offset)
                if line is None:
                    raise SimChipError(
                        f"simulated chip {self.label!r} has no line at offset {spec.offset}", "unavailable"
                    )
                if spec.offset in held:
                    raise SimChipError(f"offset {spec.offset} is requested twice")
                if line.output != (spec.direction == "output"):
                    wired = "an output" if line.output else "an input"
                    raise SimChipError(
                        f"line {line.name!r} (offset {line.offset}) is wired as {wired} on simulated chip "
                        f"{self.label!r} but requested as {spec.direction}",
                        "unavailable",
                    )
                if line.holder is not None:
                    raise SimChipError(
                        f"line {line.name!r} (offset {line.offset}) is held by {line.holder.consumer!r}",
                        "busy",
                    )
                held[spec.offset] = line
            request = SimRequest(self, specs, held, consumer)
            self._requests.add(request)
            now = self._clock()
            for spec in specs:
                line = held[spec.offset]
                line.holder = request
                if spec.direction == "output":
                    self._command(
                        line, _bit(f"initial of offset {spec.offset}", spec.initial) ^ spec.active_low, now
                    )
            return request

    # ---- internals (callers hold self._lock) ------------------------------------------------------

    def _line(self, name: str) -> _Line:
        line = self._by_name.get(name)
        if line is None:
            raise SimChipError(
                f"simulated chip {self.label!r} has no line {name!r} (lines: {', '.join(self._by_name)})"
            )
        return line

    def _input(self, name: str) -> _Line:
        line = self._line(name)
        if line.output:
            raise SimChipError(f"line {name!r} is an output: the driver drives it (stuck() can force it)")
        return line

    def _change(self, line: _Line, level: int) -> None:
        if level == line.level:
            return
        line.level = level
        if line.holder is not None:
            line.holder._on_level(line.offset, level, self._clock())

    def _command(self, line: _Line, level: int, ts: float) -> None:
        """A driver drives an output; a change of command goes into the history."""
        if line.commanded != level:
            self._history.append(
                {
                    "line": line.name,
                    "offset": line.offset,
                    "value": level,
                    "ts": ts,
                    "applied": not line.stuck,
                }
            )
        line.commanded = level
        if not line.stuck:
            line.level = level

    def _release(self, request: SimRequest) -> None:
        self._requests.discard(request)
        for line in self._by_offset.values():
            if line.holder is request:
                line.holder = None


@final
class SimRequest:
    """Lines held on a :class:`SimChip`: the simulated counterpart of ``gpiod.LineRequest``
    (and a :class:`~clove_driver_gpio.lines.Lines` backend). Made by :meth:`SimChip.request_lines`."""

    simulated = True
    kind = "sim"

    def __init__(self, chip: SimChip, specs: list[LineSpec], lines: dict[int, _Line], consumer: str) -> None:
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
                _bit(f"offset {off}", value)
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
