"""The vocabulary every GPIO backend shares, so the driver has one code path for a real chip
(libgpiod), an in-process simulated chip and a simulated chip served over a socket.

A backend is a *line request*, as in libgpiod v2: the lines are claimed with their settings
when it is made, values are logical (``active_low`` already applied), and edges are reported
after the chip's own edge filtering and debouncing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

__all__ = ["Direction", "Edge", "EdgeKind", "LineSpec", "Lines"]

Direction = Literal["input", "output"]
EdgeKind = Literal["rising", "falling", "both"]


class Edge(NamedTuple):
    """One edge on an input line: ``rising`` means the logical value went 0 → 1; ``ts`` is
    ``time.time()``-based seconds."""

    offset: int
    rising: bool
    ts: float


@dataclass(frozen=True, slots=True)
class LineSpec:
    """How one line is requested (the subset of libgpiod's ``LineSettings`` Clove uses).

    :param edge: which edges an input reports (ignored for outputs: gpiod refuses edge
        detection on outputs, and the simulator follows it).
    :param debounce_ms: an input's level must be stable this long before its edge is reported.
    :param initial: the logical value an output is driven to when the request is made.
    """

    offset: int
    direction: Direction
    active_low: bool = False
    edge: EdgeKind = "both"
    debounce_ms: float = 0.0
    initial: int = 0


class Lines(Protocol):
    """A held line request. One reader thread (``read_edges``) and one caller may use it at
    the same time; ``close`` may come from either.

    Every method may raise ``OSError`` or the backend's own errors; the driver maps them.
    """

    #: Whether the lines are simulated (shown to operators in the driver's status).
    simulated: bool
    #: ``"gpiod"``, ``"sim"`` or ``"sim-socket"``.
    kind: str

    def get(self, offsets: list[int]) -> list[int]:
        """Logical values (0/1) of ``offsets``, in order."""
        ...

    def set(self, values: dict[int, int]) -> None:
        """Drive outputs to logical values."""
        ...

    def read_edges(self) -> list[Edge]:
        """The edges ready now; call only when :meth:`fileno` is readable (a real request
        blocks otherwise)."""
        ...

    def fileno(self) -> int:
        """An fd readable when edges are ready; ``-1`` once closed."""
        ...

    def close(self) -> None:
        """Release the lines. Safe twice."""
        ...
