"""What the gateway knows about each caller and each provider: limits, usage, queues, figures;
and the providers built from the config (:func:`build_slots`)."""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from clove.errors import CloveError
from clove.llm.budget import Budget
from clove.llm.errors import LlmUnavailable
from clove.llm.provider import Provider
from clove.llm.scheduler import FairQueue
from clove.ratelimit import TokenBucket

if TYPE_CHECKING:
    from clove.config import LlmSection

__all__ = ["Account", "AgentLimits", "ProviderSlot", "build_slots", "percentiles"]

log = logging.getLogger(__name__)

#: Queue waits and latencies kept per caller for percentiles.
WINDOW: Final = 2048


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLimits:
    """One caller's share and limits (from ``[llm.defaults]``/``[llm.agents.NAME]``, the
    ``llm_tokens`` grant and operator overrides)."""

    weight: float = 1.0
    budget: int | None = None
    period_budget: int | None = None
    rpm: int | None = None
    tpm: int | None = None


def percentiles(samples: deque[float] | list[float], scale: float = 1000.0) -> dict[str, float | int]:
    """p50/p95/p99/max of ``samples`` (seconds), in milliseconds by default (nearest rank)."""
    data = sorted(samples)
    if not data:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}

    def rank(q: float) -> float:
        return round(data[min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))] * scale, 3)

    return {"n": len(data), "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": round(data[-1] * scale, 3)}


def _bucket(old: TokenBucket | None, per_minute: int | None, now: float) -> TokenBucket | None:
    if per_minute is None:
        return None
    if old is not None and old.capacity == per_minute:
        return old
    bucket = TokenBucket.per_minute(per_minute, now)
    if old is not None:  # a changed limit keeps what was used of the old one
        bucket.consume(bucket.capacity - min(bucket.capacity, old.available(now)), now)
    return bucket


@dataclass(eq=False, slots=True)
class Account:
    """One caller (an agent, for its whole life across restarts, or an operator session)."""

    principal: int
    name: str
    agent_id: int | None
    limits: AgentLimits = field(default_factory=AgentLimits)
    budget: Budget = field(default_factory=Budget)
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    queued: int = 0
    in_flight: int = 0
    requests: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    refused: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_avg: float | None = None
    gone: bool = False
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def apply(self, limits: AgentLimits, now: float) -> None:
        self.limits = limits
        self.budget.lifetime = limits.budget
        self.budget.per_period = limits.period_budget
        self.rpm = _bucket(self.rpm, limits.rpm, now)
        self.tpm = _bucket(self.tpm, limits.tpm, now)

    def expected_completion(self, max_tokens: int) -> float:
        """What the next answer will likely cost: the running mean of this caller's answers."""
        guess = self.completion_avg if self.completion_avg is not None else min(max_tokens, 256)
        return min(float(max_tokens), guess)

    def learn(self, completion: int) -> None:
        self.completion_avg = completion if self.completion_avg is None else 0.8 * self.completion_avg + 0.2 * completion

    def figures(self, *, period_seconds: float) -> dict[str, Any]:
        b = self.budget
        period_end = (b.period + 1) * period_seconds if b.per_period is not None else None
        return {
            "principal_id": self.principal,
            "agent_id": self.agent_id,
            "name": self.name,
            "weight": self.limits.weight,
            "used": b.used,
            "reserved": b.reserved,
            "budget": b.lifetime,
            "budget_left": None if b.lifetime is None else max(0, b.lifetime - b.used),
            "period_budget": b.per_period,
            "period_used": b.period_used if b.per_period is not None else None,
            "period_left": None if b.per_period is None else max(0, b.per_period - b.period_used),
            "period_ends": period_end,
            "rpm": self.limits.rpm,
            "tpm": self.limits.tpm,
            "queued": self.queued,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "refused": self.refused,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "overrun": b.overrun,
            "queue_wait_ms": percentiles(self.waits),
            "latency_ms": percentiles(self.latencies),
        }


@dataclass(eq=False, slots=True)
class ProviderSlot:
    """One configured provider: its instance (``None`` when it failed to start, with
    ``error``), limits, queue and health."""

    name: str
    kind: str
    model: str
    models: tuple[str, ...]
    concurrency: int
    timeout: float
    provider: Provider | None
    error: str | None = None
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    queue: FairQueue[Any] = field(default_factory=FairQueue)
    in_flight: int = 0
    cooldown_until: float = 0.0  # a 429's Retry-After: nobody is sent before then
    failures: int = 0  # consecutive "unreachable"
    down_until: float = 0.0
    last_error: str | None = None
    completed: int = 0
    failed: int = 0
    retries: int = 0
    tokens: int = 0

    def offers(self, model: str) -> bool:
        return model == self.model or model in self.models

    def figures(self, now: float) -> dict[str, Any]:
        state = "unavailable" if self.provider is None else ("down" if now < self.down_until else ("cooling" if now < self.cooldown_until else "up"))
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "models": sorted({self.model, *self.models}),
            "state": state,
            "error": self.error or (self.last_error if state != "up" else None),
            "concurrency": self.concurrency,
            "in_flight": self.in_flight,
            "queued": len(self.queue),
            "completed": self.completed,
            "failed": self.failed,
            "retries": self.retries,
            "tokens": self.tokens,
            "rpm_left": None if self.rpm is None else int(self.rpm.available(now)),
            "tpm_left": None if self.tpm is None else int(self.tpm.available(now)),
            "retry_in": round(max(0.0, max(self.cooldown_until, self.down_until) - now), 3),
            **(self.provider.describe() if self.provider is not None else {}),
        }


def build_slots(settings: LlmSection, *, now: float) -> list[ProviderSlot]:
    """A slot per configured provider, its plugin loaded (allowlisted ones only) and built. A
    provider that fails to start is kept, unavailable, with the reason (the kernel carries on)."""
    from clove.llm.registry import load_registry

    try:
        registry = load_registry(settings.plugins)
    except CloveError as err:
        log.error("LLM plugins: %s", err.message)
        registry = None
        reason = err.message
    slots = []
    for cfg in settings.providers:
        provider, error = None, None
        try:
            if registry is None:
                raise LlmUnavailable(reason)
            provider = registry.get(cfg.kind)(cfg.options, name=cfg.name, concurrency=cfg.concurrency)
        except CloveError as err:
            error = err.message
        except Exception as err:  # noqa: BLE001 - a plugin's bug must not stop the kernel
            log.exception("LLM provider %s failed to start", cfg.name)
            error = f"{type(err).__name__}: {err}"
        if error is not None:
            log.error("LLM provider %s is unavailable: %s", cfg.name, error)
        slots.append(
            ProviderSlot(
                name=cfg.name, kind=cfg.kind, model=cfg.model, models=cfg.models, concurrency=cfg.concurrency, timeout=cfg.timeout,
                provider=provider, error=error,
                rpm=TokenBucket.per_minute(cfg.rpm, now) if cfg.rpm else None, tpm=TokenBucket.per_minute(cfg.tpm, now) if cfg.tpm else None,
            )  # fmt: skip
        )
    return slots
