"""Trading states: what may be sent, globally and per agent (*States* in
:mod:`clove_driver_exchange.risk`)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from clove.drivers.schema import invalid


class TradingState(Enum):
    """What may be sent: everything, only position-reducing orders, or nothing but cancels."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class TradingStates:
    """The global trading state and the states set for agents (an agent not set is ACTIVE)."""

    def __init__(
        self,
        global_state: TradingState = TradingState.ACTIVE,
        agent_states: dict[str, TradingState] | None = None,
    ) -> None:
        self._global = global_state
        self._agents: dict[str, TradingState] = agent_states if agent_states is not None else {}

    def get(self, agent: str | None = None) -> TradingState:
        """The global state, or the state set for ``agent`` (not combined with the global one)."""
        if agent is None:
            return self._global
        return self._agents.get(agent, TradingState.ACTIVE)

    def effective(self, agent: str) -> TradingState:
        """The more restrictive of the agent's state and the global state."""
        mine = self.get(agent)
        return mine if _SEVERITY[mine] > _SEVERITY[self._global] else self._global

    def set(self, state: TradingState | str, agent: str | None = None) -> TradingState:
        """Set the global state (``agent=None``) or one agent's; returns the state set.

        :raises ValueError: ``state`` is not a trading state.
        """
        new = TradingState(state)
        if agent is None:
            self._global = new
        elif new is TradingState.ACTIVE:
            self._agents.pop(agent, None)
        else:
            self._agents[agent] = new
        return new

    def snapshot(self) -> dict[str, Any]:
        """The snapshot's ``state`` and ``agent_states`` entries."""
        return {
            "state": self._global.value,
            "agent_states": {agent: s.value for agent, s in sorted(self._agents.items())},
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> TradingStates:
        """The states of a snapshot (its ``state`` and ``agent_states``), checked.

        :raises clove.drivers.schema.FieldError: naming what is wrong.
        """
        try:
            state = TradingState(snapshot.get("state"))
        except ValueError:
            raise invalid(
                "state", f"expected one of active, reducing, halted, got {snapshot.get('state')!r}"
            ) from None
        raw_states = snapshot.get("agent_states", {})
        if not isinstance(raw_states, dict):
            raise invalid("agent_states", "expected a table")
        agent_states: dict[str, TradingState] = {}
        for agent, value in raw_states.items():
            try:
                parsed = TradingState(value)
            except ValueError:
                raise invalid(
                    f"agent_states.{agent}", f"expected active, reducing or halted, got {value!r}"
                ) from None
            if parsed is not TradingState.ACTIVE:
                agent_states[str(agent)] = parsed
        return cls(state, agent_states)
