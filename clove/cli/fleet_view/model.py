"""What ``clove fleet top`` shows, computed from the boards' entries in the key-value bucket:
pure, no I/O.

An entry is what a board wrote about itself (docs/fleet.md, "Inventory and heartbeat"), so
nothing in it is trusted: every field is checked for its type here, and one that is not what it
should be shows as unknown rather than breaking the view. Whether a board is ``up`` or ``lost``
is decided here, from the heartbeat time in its entry and the reader's clock (a board that died
says nothing), as ``clove fleet ps`` does.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["AGENT_BIGGEST_FIRST", "AGENT_SORT_KEYS", "BOARD_BIGGEST_FIRST", "BOARD_SORT_KEYS", "BoardAgent", "BoardRow", "board_row", "parse_board"]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class BoardAgent:
    """One agent of a board, as its inventory lists it."""

    id: int
    name: str
    state: str
    restarts: int
    uptime: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "restarts": self.restarts, "uptime": self.uptime}


@dataclass(frozen=True, slots=True)
class BoardRow:
    """One board: ``id`` and ``name`` are its name (what the selection follows)."""

    id: str
    name: str
    #: ``up``, ``lost`` (no heartbeat for longer than ``lost_after``) or ``invalid`` (no entry
    #: the reader can use).
    state: str
    heartbeat_age: float | None = None
    lost_after: float | None = None
    version: str | None = None
    uptime: float | None = None
    agents: tuple[BoardAgent, ...] = ()
    agents_total: int = 0
    devices: tuple[dict[str, Any], ...] = ()
    engaged: dict[str, str] = field(default_factory=dict)  # interlock → cause
    trading: dict[str, str] = field(default_factory=dict)  # exchange device → trading state
    isolation: dict[str, Any] = field(default_factory=dict)
    link_state: str | None = None
    shipped: int | None = None
    journal: int | None = None
    #: The entry's heartbeat time and ``lost_after`` (the board's clock and word).
    heartbeat_at: float | None = None
    board_lost_after: float | None = None

    def at(self, now: float, lost_after: float | None = None) -> BoardRow:
        """This row as of ``now``: the heartbeat's age, and ``up`` or ``lost`` against
        ``lost_after`` (default: the board's own)."""
        if self.state == "invalid":
            return self
        age = now - self.heartbeat_at if self.heartbeat_at is not None else None
        limit = lost_after if lost_after is not None else self.board_lost_after
        lost = age is None or (limit is not None and age > limit)
        return dataclasses.replace(self, state="lost" if lost else "up", heartbeat_age=age, lost_after=limit)

    @property
    def agents_by_state(self) -> dict[str, int]:
        return dict(Counter(a.state for a in self.agents))

    @property
    def devices_by_state(self) -> dict[str, int]:
        return dict(Counter(_text(d.get("state")) or "?" for d in self.devices))

    @property
    def restarts(self) -> int:
        return sum(a.restarts for a in self.agents)

    @property
    def lag(self) -> int | None:
        """Journal records written but not yet acknowledged by the hub (as of the entry)."""
        if self.shipped is None or self.journal is None:
            return None
        return max(0, self.journal - self.shipped)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` line of this board."""
        return {
            "board": self.name, "state": self.state, "heartbeat_age": None if self.heartbeat_age is None else round(self.heartbeat_age, 3), "lost_after": self.lost_after,
            "version": self.version, "uptime": self.uptime, "agents_total": self.agents_total,
            "agents_by_state": self.agents_by_state, "restarts": self.restarts, "devices_by_state": self.devices_by_state,
            "engaged": self.engaged, "trading": self.trading, "isolation": self.isolation, "link_state": self.link_state,
            "shipped_seq": self.shipped, "journal_last_id": self.journal, "lag": self.lag,
            "agents": [a.to_dict() for a in self.agents], "devices": list(self.devices),
        }  # fmt: skip


def _agent(raw: dict[str, Any]) -> BoardAgent:
    return BoardAgent(
        id=_int(raw.get("id")) or 0,
        name=_text(raw.get("name")) or "?",
        state=_text(raw.get("state")) or "?",
        restarts=_int(raw.get("restarts")) or 0,
        uptime=_num(raw.get("uptime")),
    )


def board_row(name: str, entry: Any, now: float, lost_after: float | None = None) -> BoardRow:
    """The row of board ``name`` from its entry as of ``now`` (``lost_after`` overrides the
    board's own)."""
    return parse_board(name, entry).at(now, lost_after)


def parse_board(name: str, entry: Any) -> BoardRow:
    """The row of board ``name`` from its entry (``None`` or anything not a JSON object:
    ``invalid``), not yet aged (:meth:`BoardRow.at`): parsed once per update, aged per frame."""
    if not isinstance(entry, dict):
        return BoardRow(id=name, name=name, state="invalid")
    kernel = _dict(entry.get("kernel"))
    agents = tuple(_agent(a) for a in _dicts(entry.get("agents")))
    engaged_raw = _dict(entry.get("interlocks_engaged"))
    trading_raw = _dict(entry.get("trading"))
    link = _dict(entry.get("link"))
    return BoardRow(
        id=name,
        name=name,
        state="up",
        version=_text(kernel.get("version")),
        uptime=_num(entry.get("uptime")),
        agents=agents,
        agents_total=_int(entry.get("agents_total")) or len(agents),
        devices=tuple(_dicts(entry.get("devices"))),
        engaged={str(k): str((v or {}).get("cause") if isinstance(v, dict) else v) for k, v in engaged_raw.items()},
        trading={str(k): str((v or {}).get("state") if isinstance(v, dict) else v) for k, v in trading_raw.items()},
        isolation=_dict(entry.get("isolation")),
        link_state=_text(link.get("state")),
        shipped=_int(entry.get("shipped_seq")),
        journal=_int(entry.get("journal_last_id")),
        heartbeat_at=_num(entry.get("heartbeat_at")),
        board_lost_after=_num(entry.get("lost_after")),
    )


#: ``s`` cycles through these on the board list (figures sort biggest first).
BOARD_SORT_KEYS: Final[dict[str, Callable[[BoardRow], Any]]] = {
    "name": lambda r: r.name,
    "state": lambda r: r.state,
    "heartbeat": lambda r: r.heartbeat_age if r.heartbeat_age is not None else float("inf"),
    "agents": lambda r: r.agents_total,
    "restarts": lambda r: r.restarts,
    "lag": lambda r: r.lag or 0,
}
BOARD_BIGGEST_FIRST: Final = frozenset({"heartbeat", "agents", "restarts", "lag"})
#: ... and on one board's agents.
AGENT_SORT_KEYS: Final[dict[str, Callable[[BoardAgent], Any]]] = {
    "id": lambda r: r.id,
    "name": lambda r: r.name,
    "state": lambda r: r.state,
    "restarts": lambda r: r.restarts,
    "uptime": lambda r: r.uptime or 0.0,
}
AGENT_BIGGEST_FIRST: Final = frozenset({"restarts", "uptime"})
