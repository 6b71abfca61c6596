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

The request lives in :mod:`clove_driver_gpio.simrequest` (with the choices it makes, kept close
to the kernel's), the line record and :class:`SimChipError` in :mod:`clove_driver_gpio.simlines`;
both names are importable from here as before.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, final

from clove_driver_gpio.lines import LineSpec
from clove_driver_gpio.simlines import SimChipError, SimLine, as_level
from clove_driver_gpio.simrequest import EDGE_QUEUE as EDGE_QUEUE  # public, not in __all__ (as before)
from clove_driver_gpio.simrequest import SimRequest

__all__ = ["SimChip", "SimChipError", "SimRequest"]


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
        self._by_name: dict[str, SimLine] = {}
        self._by_offset: dict[int, SimLine] = {}
        for name, offset in lines.items():
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise SimChipError(f"line {name!r}: an offset is an int >= 0, got {offset!r}")
            if offset in self._by_offset:
                raise SimChipError(
                    f"offset {offset} is used by both {self._by_offset[offset].name!r} and {name!r}"
                )
            low = name in active_low
            level = as_level(f"initial.{name}", initial[name]) if name in initial else int(low)
            self._by_offset[offset] = self._by_name[name] = SimLine(name, offset, name in outputs, low, level)
        self._history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._requests: set[SimRequest] = set()

    def __repr__(self) -> str:
        return f"SimChip({self.label!r}, lines={ {n: ln.offset for n, ln in self._by_name.items()} })"

    # ---- the outside world ----------------------------------------------------------------------

    def set_input(self, name: str, level: int) -> None:
        """Drive an input's wire to ``level`` (ignored while the line is stuck).

        :raises SimChipError: an unknown line, a bad level, or an output.
        """
        level = as_level(name, level)
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
            level = as_level(name, level)
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
            held: dict[int, SimLine] = {}
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
                        line, as_level(f"initial of offset {spec.offset}", spec.initial) ^ spec.active_low, now
                    )
            return request

    # ---- internals (callers hold self._lock) ------------------------------------------------------

    def _line(self, name: str) -> SimLine:
        line = self._by_name.get(name)
        if line is None:
            raise SimChipError(
                f"simulated chip {self.label!r} has no line {name!r} (lines: {', '.join(self._by_name)})"
            )
        return line

    def _input(self, name: str) -> SimLine:
        line = self._line(name)
        if line.output:
            raise SimChipError(f"line {name!r} is an output: the driver drives it (stuck() can force it)")
        return line

    def _change(self, line: SimLine, level: int) -> None:
        if level == line.level:
            return
        line.level = level
        if line.holder is not None:
            line.holder._on_level(line.offset, level, self._clock())

    def _command(self, line: SimLine, level: int, ts: float) -> None:
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
