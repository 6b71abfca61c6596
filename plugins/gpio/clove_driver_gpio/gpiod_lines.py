"""Lines on a real chip through libgpiod v2 (the ``gpiod`` package), imported only when a real
chip is opened so the kernel can load this plugin on machines without it.

The kernel does the work here: ``active_low``, edge detection and debouncing are line
settings, and edges arrive on the request's fd. Event timestamps come from the monotonic
clock (libgpiod's default, supported by every kernel with the v2 uAPI) and are converted to
``time.time()`` seconds when read.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, final

from clove_driver_gpio.lines import Edge, LineSpec

__all__ = ["GpiodLines"]


def _explain(gpiod: Any, path: str, offsets: list[int]) -> OSError | None:
    """Why a request of ``offsets`` on the chip at ``path`` fails, as an ``OSError`` naming the
    chip, the offsets out of range and the consumers holding lines; ``None`` if the chip shows
    nothing wrong (then libgpiod's own error stands)."""
    try:
        with gpiod.Chip(path) as chip:
            info = chip.get_info()
            missing = [off for off in offsets if off >= info.num_lines]
            if missing:
                return OSError(
                    errno.EINVAL,
                    f"{path} ({info.label}) has {info.num_lines} lines (offsets 0-{info.num_lines - 1}), "
                    f"so no line at offset {', '.join(map(str, missing))}",
                )
            lines = [chip.get_line_info(off) for off in offsets]
            held = {line.offset: line.consumer for line in lines if line.used}
    except OSError:
        return None
    if not held:
        return None
    users = ", ".join(
        f"offset {off} by {consumer or 'an unnamed consumer'!r}" for off, consumer in held.items()
    )
    return OSError(errno.EBUSY, f"lines of {path} ({info.label}) are in use: {users}")


@final
class GpiodLines:
    """A ``gpiod.LineRequest`` as a :class:`~clove_driver_gpio.lines.Lines` backend.

    :raises OSError: the chip cannot be opened or the lines requested (``EINVAL``: an offset
        past the chip's last line; ``EBUSY``: held, naming the holder).
    :raises OSError: ``ENODEV`` when ``path`` is not a GPIO chip.
    :raises ImportError: the ``gpiod`` package is missing.
    """

    simulated = False
    kind = "gpiod"

    def __init__(self, path: str, specs: list[LineSpec], consumer: str = "clove") -> None:
        import gpiod  # lazily: only a real chip needs libgpiod

        self._gpiod = gpiod
        if not gpiod.is_gpiochip_device(path):
            raise OSError(errno.ENODEV, f"{path} is not a GPIO chip character device", path)
        self.settings: dict[int | Iterable[int | str] | str, Any] = {
            spec.offset: self._settings(spec) for spec in specs
        }
        try:
            self._request: Any = gpiod.request_lines(path, consumer=consumer, config=self.settings)
        except (ValueError, OSError) as err:
            # libgpiod says "line offset of out range" or EBUSY, naming neither line nor holder.
            explained = _explain(gpiod, path, [spec.offset for spec in specs])
            if explained is None:
                raise
            raise explained from err
        self._closed = False

    def _settings(self, spec: LineSpec) -> Any:
        from gpiod.line import Direction, Value
        from gpiod.line import Edge as GEdge

        if spec.direction == "output":
            return self._gpiod.LineSettings(
                direction=Direction.OUTPUT,
                active_low=spec.active_low,
                output_value=Value.ACTIVE if spec.initial else Value.INACTIVE,
            )
        edges = {"rising": GEdge.RISING, "falling": GEdge.FALLING, "both": GEdge.BOTH}
        return self._gpiod.LineSettings(
            direction=Direction.INPUT,
            edge_detection=edges[spec.edge],
            active_low=spec.active_low,
            debounce_period=timedelta(milliseconds=spec.debounce_ms),
        )

    def get(self, offsets: list[int]) -> list[int]:
        from gpiod.line import Value

        return [1 if value == Value.ACTIVE else 0 for value in self._request.get_values(offsets)]

    def set(self, values: dict[int, int]) -> None:
        from gpiod.line import Value

        self._request.set_values({off: Value.ACTIVE if v else Value.INACTIVE for off, v in values.items()})

    def read_edges(self) -> list[Edge]:
        rising = self._gpiod.EdgeEvent.Type.RISING_EDGE
        # Monotonic nanoseconds to wall-clock seconds, with one reading of each clock per batch.
        shift = time.time() - time.monotonic_ns() / 1e9
        return [
            Edge(ev.line_offset, ev.event_type == rising, ev.timestamp_ns / 1e9 + shift)
            for ev in self._request.read_edge_events()
        ]

    def fileno(self) -> int:
        return -1 if self._closed else int(self._request.fd)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._request.release()
