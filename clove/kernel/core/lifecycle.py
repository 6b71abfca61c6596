"""Supervisor lifecycle records → event-bus events (AGENT_SPAWNED, AGENT_EXITED, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from clove.kernel.core.agents import Agent


def lifecycle_events(event_type: str, agent: Agent, details: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    base = {"agent_id": agent.id, "name": agent.name}
    if event_type == "agent.state" and details.get("previous") == "starting" and agent.state.value == "running":
        yield "AGENT_SPAWNED", {**base, "pid": agent.pid, "incarnation": agent.incarnation, "restarts": agent.restarts}
    elif event_type == "agent.exited":
        yield "AGENT_EXITED", {
            **base,
            "reason": details.get("reason"),
            "exit_code": details.get("exit_code"),
            "signal": details.get("signal"),
            "message": details.get("message"),
            "incarnation": agent.incarnation,
        }
    elif event_type == "agent.state" and agent.state.value == "backoff":
        yield "AGENT_RESTARTING", {**base, "delay": details.get("delay"), "restarts": agent.restarts + 1}
    elif event_type == "agent.escalated":
        yield "AGENT_ESCALATED", {**base, **details}
