"""What each key does in ``clove top``: a small state machine over three modes.

* ``normal``: ↑/↓ select, ``s`` next sort key, ``S`` reverse, ``/`` filter, ``p`` pause,
  ``r`` resume, ``k`` kill (asks first), ``E`` e-stop (engages every interlock at once, as
  ``clove estop`` does: a stop must not wait for a question), ``q`` quit.
* ``filter``: typed text filters live; Enter keeps it, Esc puts the old one back.
* ``confirm``: ``y`` kills the agent named in the question; any other key cancels.

Actions go through the same syscalls as ``clove pause``/``resume``/``kill``/``estop``; a
refusal is shown on the status line, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clove.cli.top.model import AgentRow
from clove.cli.top.source import Caller
from clove.cli.top.view import ViewState
from clove.errors import CloveError, KernelUnavailable

MAX_FILTER = 64  # characters: a filter is a name or a state, never more


@dataclass(slots=True)
class Outcome:
    """What a key asks of the loop: quit, and/or refresh now (after an action)."""

    quit: bool = False
    refresh: bool = False


class Controls:
    """
    :param client: an operator client.
    :param view: the view state the keys change.
    :param shown: the agents currently on screen, in order (for selection and actions).
    :param soon: ask a slower section at the next refresh (``Source.soon``).
    """

    def __init__(self, client: Caller, view: ViewState, shown: Callable[[], list[AgentRow]], soon: Callable[[str], None]) -> None:
        self.client = client
        self.view = view
        self.shown = shown
        self.soon = soon
        self.mode = "normal"
        self.status = ""
        self._typed = ""
        self._old_filter = ""
        self._target: AgentRow | None = None

    @property
    def prompt(self) -> str:
        if self.mode == "filter":
            return f"filter: {self._typed}▏  (Enter keep, Esc cancel)"
        if self.mode == "confirm" and self._target is not None:
            return f"kill {self._target.name} (id {self._target.id})? y/N"
        return ""

    def on_key(self, key: str) -> Outcome:
        if self.mode == "filter":
            return self._filter_key(key)
        if self.mode == "confirm":
            return self._confirm_key(key)
        return self._normal_key(key)

    # ---- modes ---------------------------------------------------------------------------------

    def _normal_key(self, key: str) -> Outcome:
        shown = self.shown()
        if key == "q":
            return Outcome(quit=True)
        if key in ("up", "down", "pageup", "pagedown"):
            self.view.move(shown, {"up": -1, "down": 1, "pageup": -10, "pagedown": 10}[key])
        elif key == "s":
            self.view.next_sort()
        elif key == "S":
            self.view.flip()
        elif key == "/":
            self.mode, self._typed, self._old_filter = "filter", self.view.filter, self.view.filter
        elif key in ("p", "r", "k"):
            target = self.view.selected(shown)
            if target is None:
                self.status = "no agent selected"
            elif key == "k":
                self.mode, self._target = "confirm", target
            else:
                verb = "pause" if key == "p" else "resume"
                self._act(f"agent.{verb}", {"name": target.name}, f"{verb}d {target.name}", f"{verb} {target.name}")
                return Outcome(refresh=True)
        elif key == "E":
            self._estop()
            return Outcome(refresh=True)
        return Outcome()

    def _filter_key(self, key: str) -> Outcome:
        if key == "enter":
            self.mode = "normal"
        elif key == "esc":
            self.mode, self.view.filter = "normal", self._old_filter
        else:
            if key == "backspace":
                self._typed = self._typed[:-1]
            elif len(key) == 1 and key.isprintable() and len(self._typed) < MAX_FILTER:
                self._typed += key
            self.view.filter = self._typed
        return Outcome()

    def _confirm_key(self, key: str) -> Outcome:
        target, self._target, self.mode = self._target, None, "normal"
        if target is None:
            return Outcome()
        if key not in ("y", "Y"):
            self.status = f"kill {target.name} cancelled"
            return Outcome()
        self._act("agent.kill", {"name": target.name}, f"killed {target.name}", f"kill {target.name}")
        return Outcome(refresh=True)

    # ---- actions -------------------------------------------------------------------------------

    def _act(self, call: str, body: dict[str, Any], done: str, what: str) -> Any:
        try:
            result = self.client.call(call, **body)
        except KernelUnavailable as err:
            self.status = f"{what}: {err.message}"
            return None
        except CloveError as err:
            self.status = f"{what}: {err.message} [{err.code}]"
            return None
        self.status = done
        return result

    def _estop(self) -> None:
        result = self._act("interlock.engage", {"reason": "clove top e-stop"}, "e-stop", "e-stop")
        if result is None:
            return
        names = [e["name"] for e in result.get("engaged", [])]
        self.status = f"e-stop: engaged {', '.join(names)}" if names else "e-stop: no interlocks configured"
        self.soon("interlocks")
