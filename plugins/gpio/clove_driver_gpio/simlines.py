"""The pieces of the simulated GPIO chip (:mod:`clove_driver_gpio.simchip`) that both its sides
share: :class:`SimChipError`, the chip's refusal; :class:`SimLine`, one wire's wiring and state;
and :func:`as_level`, the check that a value is a level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clove_driver_gpio.simrequest import SimRequest

__all__ = ["SimChipError", "SimLine", "as_level"]


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
class SimLine:
    """One line of the chip: its wiring (offset, direction, polarity), the level on the wire, a
    stuck-at fault, what a driver last commanded (outputs), and the request holding it."""

    name: str
    offset: int
    output: bool
    active_low: bool
    level: int
    stuck: bool = False
    commanded: int | None = None
    holder: SimRequest | None = None


def as_level(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    raise SimChipError(f"{key}: a level is 0 or 1, got {value!r}")
