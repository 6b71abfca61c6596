"""The GPIO driver's config table, its grant and its operations' arguments.

The kernel imports this module to validate ``[devices.NAME]`` tables and agent grants, so it
imports nothing but Clove and the standard library (no ``gpiod``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from clove.drivers import DeviceGrant, deny, invalid
from clove_driver_gpio.lines import LineSpec

__all__ = ["GetArgs", "GpioConfig", "GpioGrant", "SetArgs"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def check_name(key: str, name: str) -> None:
    """:raises FieldError: ``name`` is not a line name (an ASCII identifier, at most 64 chars)."""
    if not _NAME.match(name):
        raise invalid(key, f"line names are identifiers like 'estop' or 'brake_out', got {name!r}")


def _names(key: str, names: tuple[str, ...], known: dict[str, int] | None = None) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        check_name(f"{key}[{i}]", name)
        if known is not None and name not in known:
            raise invalid(f"{key}[{i}]", f"{name!r} is not in lines (lines: {', '.join(known)})")
        if name in seen:
            raise invalid(f"{key}[{i}]", f"{name!r} is listed twice")
        seen.add(name)


@dataclass(frozen=True, kw_only=True)
class GpioConfig:
    """``[devices.NAME]`` with ``driver = "gpio"``.

    :param chip: the chip's character device.
    :param lines: line name → offset on the chip (required; unique offsets).
    :param outputs: lines that are outputs; every other line is an input.
    :param initial: the logical value (0/1) each output is driven to when the device opens
        (default 0).
    :param edge: which input edges are reported: ``"rising"``, ``"falling"`` or ``"both"``.
    :param debounce_ms: an input must be stable this long before its edge is reported.
    :param active_low: lines whose logical value is the inverse of the wire level.
    :param simulate: ``"never"`` (a real chip or :class:`DeviceUnavailable`), ``"auto"`` (the
        real chip when ``chip`` exists, else a simulated one) or ``"always"``.
    :param sim_socket: when the simulated chip is used, the control socket of a
        ``python -m clove_driver_gpio.sim`` server whose chip it is (so another process can
        press buttons); unset: a private in-process chip.
    """

    chip: str = "/dev/gpiochip0"
    lines: dict[str, int]
    outputs: tuple[str, ...] = ()
    initial: dict[str, int] = field(default_factory=dict)
    edge: Literal["rising", "falling", "both"] = "both"
    debounce_ms: float = 0.0
    active_low: tuple[str, ...] = ()
    simulate: Literal["never", "auto", "always"] = "auto"
    sim_socket: str | None = None

    def __post_init__(self) -> None:
        if not self.chip:
            raise invalid("chip", "must name the chip's device, e.g. '/dev/gpiochip0'")
        if not self.lines:
            raise invalid("lines", "name at least one line, e.g. lines = { estop = 17 }")
        owner: dict[int, str] = {}
        for name, offset in self.lines.items():
            check_name(f"lines.{name}", name)
            if not 0 <= offset < 1 << 16:
                raise invalid(f"lines.{name}", f"an offset is between 0 and 65535, got {offset}")
            if offset in owner:
                raise invalid(f"lines.{name}", f"offset {offset} is already used by line {owner[offset]!r}")
            owner[offset] = name
        _names("outputs", self.outputs, self.lines)
        _names("active_low", self.active_low, self.lines)
        for name, value in self.initial.items():
            if name not in self.outputs:
                raise invalid(
                    f"initial.{name}",
                    f"{name!r} is not an output (outputs: {', '.join(self.outputs) or 'none'})",
                )
            if value not in (0, 1):
                raise invalid(f"initial.{name}", f"an initial value is 0 or 1, got {value!r}")
        if not (math.isfinite(self.debounce_ms) and 0 <= self.debounce_ms <= 60_000):
            raise invalid("debounce_ms", f"must be between 0 and 60000, got {self.debounce_ms!r}")
        if self.sim_socket is not None:
            if not self.sim_socket:
                raise invalid("sim_socket", "must be a socket path")
            if self.simulate == "never":
                raise invalid("sim_socket", "is a simulated chip's socket, but simulate = 'never'")

    def specs(self) -> list[LineSpec]:
        """How each line is requested, in ``lines`` order."""
        return [
            LineSpec(
                offset=offset,
                direction="output" if name in self.outputs else "input",
                active_low=name in self.active_low,
                edge=self.edge,
                debounce_ms=self.debounce_ms,
                initial=self.initial.get(name, 0),
            )
            for name, offset in self.lines.items()
        ]


@dataclass(frozen=True, slots=True)
class GetArgs:
    """``get``: the lines to read (empty: every line of the device)."""

    lines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetArgs:
    """``set``: output name → logical value (0/1)."""

    values: dict[str, int]

    def __post_init__(self) -> None:
        if not self.values:
            raise invalid("values", "name at least one output, e.g. values = {brake = 1}")
        for name, value in self.values.items():
            if value not in (0, 1):
                raise invalid(f"values.{name}", f"a line value is 0 or 1, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GpioGrant(DeviceGrant):
    """``[agents.A.devices.D]`` for a GPIO device. Grants fail closed: no lines, no access.

    :param lines: lines the agent may ``get`` and receive edges of.
    :param write_lines: lines it may ``set``; they are readable too.

    ``info`` shows every line of the device: grant it only to agents that may see them all.
    """

    lines: tuple[str, ...] = ()
    write_lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super(GpioGrant, self).__post_init__()  # noqa: UP008 - zero-argument super() breaks with slots=True
        _names("lines", self.lines)
        _names("write_lines", self.write_lines)

    def readable(self) -> tuple[str, ...]:
        """Every line this grant lets the agent read."""
        return self.lines + tuple(n for n in self.write_lines if n not in self.lines)

    def check(self, op: str, args: Any) -> None:
        if op == "get":
            readable = self.readable()
            if not readable:
                raise deny("this grant covers no GPIO lines for reading")
            for name in args.lines:
                if name not in readable:
                    raise deny(f"line {name!r} is not granted for reading", line=name, granted=list(readable))
        elif op == "set":
            for name in args.values:
                if name not in self.write_lines:
                    raise deny(
                        f"line {name!r} is not granted for writing", line=name, granted=list(self.write_lines)
                    )

    def narrow(self, op: str, args: Any) -> Any:
        """A ``get`` of every line reads only the granted ones (the driver would read all)."""
        if op == "get" and not args.lines:
            return dataclasses.replace(args, lines=self.readable())
        return args

    def admits(self, item: Any) -> bool:
        line = item["line"]
        return line in self.lines or line in self.write_lines
