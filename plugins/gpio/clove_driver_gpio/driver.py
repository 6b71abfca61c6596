"""The GPIO driver: named lines on a chip, read and set by agents, with input edges as its stream.

It holds one line request (see :mod:`clove_driver_gpio.lines`) from one of three backends,
chosen at open by ``simulate``: libgpiod on a real chip, a private in-process
:class:`~clove_driver_gpio.simchip.SimChip` (``driver.sim``), or the chip of a
``python -m clove_driver_gpio.sim`` server (``sim_socket``). ``status()`` and ``info`` say
which, so nobody mistakes a simulation for hardware.
"""

from __future__ import annotations

import glob
import os
import select
import socket
from collections.abc import Callable
from typing import Any, ClassVar, Literal, final

from clove.drivers import DeviceBroken, DeviceBusy, DeviceError, DeviceUnavailable, Driver, NoArgs, operation
from clove.errors import InvalidArguments
from clove_driver_gpio.config import GetArgs, GpioConfig, GpioGrant, SetArgs, check_name
from clove_driver_gpio.gpiod_lines import GpiodLines
from clove_driver_gpio.lines import Lines
from clove_driver_gpio.sim.client import RemoteLines
from clove_driver_gpio.sim.protocol import ServerGone
from clove_driver_gpio.simchip import SimChip, SimChipError, SimRequest

__all__ = ["GpioDriver"]


@final
class GpioDriver(Driver):
    """GPIO lines. Items are edges: ``{"line", "offset", "edge": "rising"|"falling", "value",
    "ts"}`` (``value`` is the logical level after the edge; ``ts`` is ``time.time()`` seconds).
    Only inputs report edges."""

    Config: ClassVar[type[Any]] = GpioConfig
    Grant = GpioGrant
    stream: ClassVar[Literal["items", "bytes"] | None] = "items"
    stream_op: ClassVar[str | None] = "watch"

    def __init__(self, config: GpioConfig) -> None:
        self._lines: Lines | None = None
        self._sim: SimChip | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._names = {offset: name for name, offset in config.lines.items()}
        self.edges = 0
        super().__init__(config)

    # ---- description ----------------------------------------------------------------------------

    @staticmethod
    def detect() -> list[dict[str, Any]]:
        """The GPIO chips of this machine, with label and line count when libgpiod can read them."""
        found: list[dict[str, Any]] = []
        for path in sorted(glob.glob("/dev/gpiochip*")):
            entry: dict[str, Any] = {"chip": path}
            try:
                import gpiod

                with gpiod.Chip(path) as chip:
                    info = chip.get_info()
                entry.update(name=info.name, label=info.label, lines=info.num_lines)
            except Exception:  # noqa: BLE001 - detection reports what it can read
                pass
            found.append(entry)
        return found

    @classmethod
    def compile_filter(cls, filters: list[Any]) -> Callable[[Any], bool]:
        """Receive filters are line names: ``["estop", "door"]`` keeps those lines' edges.

        :raises InvalidArguments: a filter that is not a line name.
        """
        names: set[str] = set()
        for i, name in enumerate(filters):
            if not isinstance(name, str):
                raise InvalidArguments(
                    f"GPIO receive filters are line names like 'estop', got {name!r}", details={"filter": i}
                )
            try:
                check_name(f"filters[{i}]", name)
            except ValueError as err:
                raise InvalidArguments(f"GPIO receive filters: {err}", details={"filter": i}) from None
            names.add(name)
        if not names:
            return super().compile_filter([])
        wanted = frozenset(names)
        return lambda item: item["line"] in wanted

    @property
    def sim(self) -> SimChip | None:
        """The in-process simulated chip once open (press its buttons in tests), else ``None``."""
        return self._sim

    @property
    def simulated(self) -> bool:
        """Whether the lines are (or, before open, will be) simulated."""
        return self._lines.simulated if self._lines is not None else self._wants_sim()

    def _wants_sim(self) -> bool:
        mode = self.config.simulate
        return mode == "always" or (mode == "auto" and not os.path.exists(self.config.chip))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chip": self.config.chip,
            "simulated": self.simulated,
            "backend": self._lines.kind if self._lines is not None else None,
            "lines": len(self.config.lines),
            "edges": self.edges,
        }
        if self.simulated and self.config.sim_socket:
            out["sim_socket"] = self.config.sim_socket
        if isinstance(self._lines, SimRequest):
            out["dropped"] = self._lines.dropped
        return out

    # ---- lifecycle ------------------------------------------------------------------------------

    def _open(self) -> None:
        config: GpioConfig = self.config
        specs = config.specs()
        if not self._wants_sim():
            if not os.path.exists(config.chip):
                raise DeviceUnavailable(
                    f"GPIO chip {config.chip} does not exist (simulate = 'never')",
                    details={"chip": config.chip},
                )
            self._lines = GpiodLines(config.chip, specs)
            self._remember_real_chip()
        elif config.simulate == "auto" and self._had_real_chip():
            # A chip that was here and went (unplugged, unbound) must not come back as a
            # simulation: an e-stop on simulated lines never fires.
            raise DeviceUnavailable(
                f"GPIO chip {config.chip} is gone; this device has used it, so it is not replaced "
                "by a simulated chip (simulate = 'auto' simulates only a chip never seen here)",
                details={"chip": config.chip},
            )
        elif config.sim_socket is not None:
            try:
                self._lines = RemoteLines(config.sim_socket, specs)
            except (FileNotFoundError, ConnectionRefusedError) as err:
                raise DeviceUnavailable(
                    f"no simulated GPIO chip server at {config.sim_socket}: {err.strerror}",
                    details={"sim_socket": config.sim_socket},
                ) from None
        else:
            sim = SimChip(
                config.lines, config.outputs, active_low=config.active_low, label=f"sim:{config.chip}"
            )
            self._lines = sim.request_lines(specs)
            self._sim = sim
        self._wake = socket.socketpair()

    # A file in the device's durable state dir (kept across host and kernel restarts) holding
    # the path of the real chip this device has opened.
    _REAL_CHIP = "real-chip"

    def _remember_real_chip(self) -> None:
        if self.state_dir is None or self._had_real_chip():
            return
        try:
            with open(os.path.join(self.state_dir, self._REAL_CHIP), "w") as out:
                out.write(self.config.chip)
        except OSError:
            pass  # the real chip is open; losing this note only weakens a later fallback check

    def _had_real_chip(self) -> bool:
        if self.state_dir is None:
            return False
        try:
            with open(os.path.join(self.state_dir, self._REAL_CHIP)) as note:
                return bool(note.read() == self.config.chip)
        except OSError:
            return False

    def _close(self) -> None:
        wake, lines = self._wake, self._lines
        if wake is not None:
            wake[1].send(b"x")  # first: a reader blocked in select returns
        try:
            if lines is not None:
                lines.close()
        finally:
            if wake is not None:
                wake[0].close()
                wake[1].close()

    def map_error(self, err: BaseException) -> DeviceError | None:
        if isinstance(err, ServerGone):
            return DeviceBroken(f"GpioDriver: {err}", details={"sim_socket": self.config.sim_socket})
        if isinstance(err, SimChipError):
            kinds: dict[str, type[DeviceError]] = {"busy": DeviceBusy, "unavailable": DeviceUnavailable}
            return kinds.get(err.kind, DeviceBroken)(f"GpioDriver: {err.message}")
        return None

    # ---- the stream -----------------------------------------------------------------------------

    def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
        lines, wake = self._backend(), self._wake
        assert wake is not None
        waitables: list[Any] = [lines, wake[0]]
        readable, _, _ = select.select(waitables, [], [], timeout)
        if wake[0] in readable or lines not in readable:
            return []  # closing, or nothing within the timeout
        names = self._names
        items = [
            {
                "line": names[e.offset],
                "offset": e.offset,
                "edge": "rising" if e.rising else "falling",
                "value": int(e.rising),
                "ts": e.ts,
            }
            for e in lines.read_edges()
            if e.offset in names
        ]
        self.edges += len(items)
        return items

    def fileno(self) -> int:
        """The line request's fd (gpiod's request fd, the simulated request's pipe, or the
        served chip's edge socket): readable when :meth:`read` has edges."""
        lines = self._lines
        return lines.fileno() if lines is not None and self.is_open else -1

    # ---- operations -----------------------------------------------------------------------------

    @operation(args=GetArgs)
    def get(self, args: GetArgs) -> dict[str, int]:
        """Read lines' logical values (every line when none are named)."""
        names = args.lines or tuple(self.config.lines)
        offsets = [self._offset("get", name) for name in names]
        return dict(zip(names, self._backend().get(offsets), strict=True))

    @operation(args=SetArgs)
    def set(self, args: SetArgs) -> dict[str, int]:
        """Drive output lines to logical values (0/1)."""
        values: dict[int, int] = {}
        for name, value in args.values.items():
            offset = self._offset("set", name)
            if name not in self.config.outputs:
                raise InvalidArguments(
                    f"set: line {name!r} is an input (outputs: {', '.join(self.config.outputs) or 'none'})",
                    details={"op": "set", "argument": "values", "line": name},
                )
            values[offset] = value
        self._backend().set(values)
        return dict(args.values)

    @operation()
    def info(self, args: NoArgs) -> dict[str, Any]:
        """The chip, whether it is simulated, and each line's offset, direction and value."""
        lines = self._backend()
        config: GpioConfig = self.config
        values = lines.get(list(config.lines.values()))
        return {
            "chip": config.chip,
            "simulated": lines.simulated,
            "lines": {
                name: {
                    "offset": offset,
                    "direction": "output" if name in config.outputs else "input",
                    "value": value,
                    "active_low": name in config.active_low,
                }
                for (name, offset), value in zip(config.lines.items(), values, strict=True)
            },
        }

    def _offset(self, op: str, name: str) -> int:
        offset = self.config.lines.get(name)
        if offset is None:
            raise InvalidArguments(
                f"{op}: no line {name!r} (lines: {', '.join(self.config.lines)})",
                details={"op": op, "argument": "lines" if op == "get" else "values", "line": name},
            )
        return int(offset)

    def _backend(self) -> Lines:
        if self._lines is None:
            raise DeviceBroken("GpioDriver: no line request")
        return self._lines
