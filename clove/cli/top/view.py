"""How ``clove top`` orders, filters and selects agents: the operator's view state, pure.

The selection follows an agent by id, so a re-sort or a refresh never moves it to another
agent (an action must hit the agent the operator was looking at). ``clove fleet top`` uses the
same state over its own rows (any row with an ``id``, a ``name`` and a ``state``) and sort keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from clove.cli.top.model import AgentRow

#: Sort keys in the order ``s`` cycles through them, each with the figure it sorts by.
SORT_KEYS: Final[dict[str, Callable[[AgentRow], Any]]] = {
    "id": lambda r: r.id,
    "name": lambda r: r.name,
    "state": lambda r: r.state,
    "cpu": lambda r: r.cpu_percent,
    "memory": lambda r: r.memory,
    "syscalls": lambda r: r.syscalls_per_s or 0.0,
    "kernel": lambda r: r.kernel_time_us,
    "denied": lambda r: r.denied,
    "restarts": lambda r: r.restarts,
}
#: Figures that matter most when large: they sort descending when first chosen.
_BIGGEST_FIRST: Final = frozenset({"cpu", "memory", "syscalls", "kernel", "denied", "restarts"})


class Row(Protocol):
    """What the view needs of a row: a stable id to follow, a name and a state to filter on."""

    @property
    def id(self) -> Any: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...


R = TypeVar("R", bound=Row)


@dataclass(slots=True)
class ViewState:
    """The operator's choices: sort key and direction, a filter, the selected row.

    :param keys: the sort keys ``s`` cycles through (default: the agents' of ``clove top``).
    :param biggest_first: keys that sort descending when first chosen.
    """

    sort: str = "id"
    reverse: bool = False
    filter: str = ""
    selected_id: Any = None
    keys: Mapping[str, Callable[[Any], Any]] = field(default_factory=lambda: SORT_KEYS)
    biggest_first: frozenset[str] = _BIGGEST_FIRST

    def __post_init__(self) -> None:
        if self.sort not in self.keys:
            raise ValueError(f"sort must be one of {', '.join(self.keys)}, got {self.sort!r}")

    def next_sort(self) -> None:
        keys = list(self.keys)
        self.sort = keys[(keys.index(self.sort) + 1) % len(keys)]
        self.reverse = self.sort in self.biggest_first

    def flip(self) -> None:
        self.reverse = not self.reverse

    def visible(self, rows: list[R]) -> list[R]:
        """The rows that pass the filter (a substring of the name or the state, any case),
        sorted; ties keep id order."""
        needle = self.filter.strip().lower()
        shown = [r for r in rows if not needle or needle in r.name.lower() or needle in r.state.lower()]
        shown.sort(key=lambda r: r.id)
        shown.sort(key=self.keys[self.sort], reverse=self.reverse)
        return shown

    def selected(self, shown: list[R]) -> R | None:
        """The selected agent among ``shown``; the first one when the selection is gone."""
        for row in shown:
            if row.id == self.selected_id:
                return row
        if shown:
            self.selected_id = shown[0].id
            return shown[0]
        self.selected_id = None
        return None

    def move(self, shown: list[R], step: int) -> None:
        if not shown:
            return
        current = self.selected(shown)
        index = shown.index(current) if current is not None else 0
        self.selected_id = shown[max(0, min(len(shown) - 1, index + step))].id

    def describe(self) -> str:
        arrow = "↓" if self.reverse else "↑"
        text = f"sort: {self.sort} {arrow}"
        return f"{text}  filter: {self.filter}" if self.filter else text
