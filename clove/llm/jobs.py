"""A ``think`` as the gateway tracks it (:class:`Job`), what the gateway decides when it returns
(:class:`Verdict`), and the gateway's settings."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final

from clove.errors import CloveError
from clove.llm.budget import Reservation
from clove.llm.scheduler import Ticket
from clove.llm.types import ChatRequest, ChatResponse

__all__ = ["CHARS_PER_TOKEN", "GatewaySettings", "Job", "JobState", "Verdict"]

#: Characters per token when estimating a prompt for the fair-share charge (not for budgets,
#: which use the provider's upper bound).
CHARS_PER_TOKEN: Final = 4


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(eq=False, slots=True)
class Job:
    """One ``think``: what to ask, for whom, and where it stands."""

    key: int
    principal: int
    provider: str
    request: ChatRequest
    prompt_bound: int
    accepted: float
    deadline: float
    agent_id: int | None = None
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    state: JobState = JobState.QUEUED
    attempts: int = 0
    not_before: float = 0.0
    estimate: float = 0.0
    ticket: Ticket[Any] | None = None  # its place in the fair queue while it is in flight
    reservation: Reservation | None = None
    dispatched: float | None = None  # the first dispatch: queue wait = dispatched - accepted
    attempt_started: float = 0.0
    attempt_deadline: float = 0.0
    cancelled: bool = False  # the caller went away: no reply, no retry
    answered: bool = False  # the caller had its reply (e.g. a timeout) before the worker returned
    errors: list[str] = field(default_factory=list)

    @property
    def need(self) -> int:
        """The most tokens this request can be billed: what is reserved before dispatch."""
        return self.prompt_bound + self.request.max_tokens

    def prompt_estimate(self) -> float:
        return min(float(self.prompt_bound), self.request.text_bytes() / CHARS_PER_TOKEN + 16)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`Gateway.finished` decided: ``kind`` is ``"ok"`` (``response``),
    ``"retry"`` (after ``delay`` s), ``"failed"`` (``error``) or ``"cancelled"``; ``billed``
    is the tokens charged for this attempt."""

    kind: str
    billed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    response: ChatResponse | None = None
    error: CloveError | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    max_retries: int = 3
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0
    max_queue: int = 256
    period: float = 86400.0
    warn_at: float = 0.8
    #: consecutive "unreachable" failures after which a provider is down (fail fast) ...
    down_after: int = 3
    #: ... for this long at first, doubling while it stays unreachable (at most a minute).
    down_for: float = 2.0
