"""What each key does in ``clove fleet top``: the board list, one board's agents, and a filter.

* the board list: ↑/↓ (PgUp/PgDn) select, Enter (or →) opens the selected board, ``s`` next
  sort key, ``S`` reverse, ``/`` filter, ``q`` quit;
* one board: the same keys over its agents, and Esc (or ←, Backspace) back to the list;
* filter: typed text filters live (a part of a name or a state); Enter keeps it, Esc puts the
  old one back.

The view only reads: acting on a board is a signed command (``clove fleet kill``, ...), which
needs the operator's key, so it is left to those commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clove.cli.fleet_view.model import (
    AGENT_BIGGEST_FIRST,
    AGENT_SORT_KEYS,
    BOARD_BIGGEST_FIRST,
    BOARD_SORT_KEYS,
    BoardAgent,
    BoardRow,
)
from clove.cli.top.controls import MAX_FILTER
from clove.cli.top.view import ViewState

__all__ = ["FleetControls", "agents_view", "boards_view"]

_STEPS = {"up": -1, "down": 1, "pageup": -10, "pagedown": 10}


def boards_view(sort: str = "name", *, reverse: bool = False, filter: str = "") -> ViewState:  # noqa: A002 - the option's name
    return ViewState(sort=sort, reverse=reverse, filter=filter, keys=BOARD_SORT_KEYS, biggest_first=BOARD_BIGGEST_FIRST)


def agents_view(sort: str = "id") -> ViewState:
    return ViewState(sort=sort, keys=AGENT_SORT_KEYS, biggest_first=AGENT_BIGGEST_FIRST)


@dataclass(slots=True)
class FleetControls:
    """
    :param boards: the board list's view state; :param agents: the open board's.
    :param shown_boards: the boards on screen, in order (to open the selected one).
    :param shown_agents: the open board's agents on screen, in order.
    """

    boards: ViewState
    agents: ViewState
    shown_boards: Callable[[], list[BoardRow]]
    shown_agents: Callable[[], list[BoardAgent]]
    #: The board open in the detail screen (``None``: the list).
    board: str | None = None
    filtering: bool = False
    _typed: str = ""
    _old_filter: str = ""

    @property
    def view(self) -> ViewState:
        """The view state the keys act on now."""
        return self.agents if self.board is not None else self.boards

    @property
    def prompt(self) -> str:
        return f"filter: {self._typed}▏  (Enter keep, Esc cancel)" if self.filtering else ""

    def on_key(self, key: str) -> bool:
        """Act on ``key``; ``True`` means quit."""
        if self.filtering:
            self._filter_key(key)
            return False
        view = self.view
        if key == "q":
            return True
        if key in _STEPS:
            if self.board is None:
                view.move(self.shown_boards(), _STEPS[key])
            else:
                view.move(self.shown_agents(), _STEPS[key])
        elif key == "s":
            view.next_sort()
        elif key == "S":
            view.flip()
        elif key == "/":
            self.filtering, self._typed, self._old_filter = True, view.filter, view.filter
        elif key in ("enter", "right") and self.board is None:
            selected = self.boards.selected(self.shown_boards())
            if selected is not None:
                self.board, self.agents.filter, self.agents.selected_id = selected.name, "", None
        elif key in ("esc", "left", "backspace") and self.board is not None:
            self.board = None
        return False

    def _filter_key(self, key: str) -> None:
        view = self.view
        if key == "enter":
            self.filtering = False
        elif key == "esc":
            self.filtering, view.filter = False, self._old_filter
        else:
            if key == "backspace":
                self._typed = self._typed[:-1]
            elif len(key) == 1 and key.isprintable() and len(self._typed) < MAX_FILTER:
                self._typed += key
            view.filter = self._typed
