"""What a ``think`` request is made of and answered with: who thinks (:class:`Thinker`), the
limits the config gives it, and the reply built from the gateway's verdict. The LLM service
(:mod:`clove.kernel.services.llm`) queues the requests and settles them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clove.llm.accounts import AgentLimits

if TYPE_CHECKING:
    from clove.config import LlmSection
    from clove.kernel.core.agents import Agent
    from clove.llm.gateway import Job, Verdict
    from clove.policy import Permissions


@dataclass(frozen=True, slots=True)
class Thinker:
    """Who thinks: the principal, and for agents their id, name and permissions."""

    principal: int
    name: str
    agent_id: int | None
    perms: Permissions
    is_operator: bool


def caller_of(agent: Agent | None, principal: int, perms: Permissions) -> Thinker:
    """The :class:`Thinker` for an agent, or for an operator's session (``agent`` is ``None``)."""
    if agent is not None:
        return Thinker(principal, agent.name, agent.id, perms, False)
    return Thinker(principal, f"operator-{principal}", None, perms, True)


def configured_limits(settings: LlmSection, caller: Thinker) -> AgentLimits:
    """The caller's share and limits from the config: by name, with the ``llm_tokens`` grant as
    lifetime budget. Operators have no per-caller limits beyond their own grant."""
    if caller.is_operator:
        return AgentLimits(weight=settings.defaults.weight, budget=caller.perms.llm_tokens)
    own = settings.agent(caller.name)
    budget = caller.perms.llm_tokens if caller.perms.llm_tokens is not None else own.budget
    return AgentLimits(weight=own.weight, budget=budget, period_budget=own.period_budget, rpm=own.rpm, tpm=own.tpm)


def think_reply(job: Job, verdict: Verdict, now: float) -> dict[str, Any]:
    """The reply to a request the gateway answered ``ok``; ``now`` on the loop's clock."""
    response = verdict.response
    assert response is not None  # noqa: S101 - an "ok" verdict has one
    reply: dict[str, Any] = {
        "success": True,
        "content": response.content,
        "tokens": verdict.billed,
        "prompt_tokens": verdict.prompt_tokens,
        "completion_tokens": verdict.completion_tokens,
        "model": response.model,
        "provider": job.provider,
        "finish_reason": response.finish_reason,
        "attempts": job.attempts,
        "queue_wait_ms": round(((job.dispatched or job.accepted) - job.accepted) * 1000, 3),
        "latency_ms": round((now - job.attempt_started) * 1000, 3),
    }
    if response.reasoning is not None:
        reply["reasoning"] = response.reasoning
    if response.tool_calls:  # only a request that offered tools (the OpenAI-compatible endpoint)
        reply["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls]
    return reply
