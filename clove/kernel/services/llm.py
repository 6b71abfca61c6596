"""The LLM gateway in the kernel: ``think`` calls queued fairly, limited, performed off the loop
and journaled (docs/llm.md).

Threads: the loop thread owns everything here except :class:`WorkerPool`'s threads, which run
``Provider.complete`` on immutable :class:`~clove.llm.types.ChatRequest` values and share
nothing with the loop but the pool's queues and wake-up pipe (as in
:mod:`clove.kernel.services.http`). The decisions (queues, budgets, limits, retries) are
:class:`clove.llm.gateway.Gateway`'s; this module adds the kernel around them: Deferreds,
deadlines, callers going away, the journal, RESOURCE_WARNING events and the recording file.
Who thinks, the limits the config gives it and the reply are :mod:`.llmrequests`'s.

Without an ``[llm]`` table the service exists but is disabled: ``think`` answers
``llm.unavailable`` and everything else carries on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

from clove.config import LlmSection
from clove.errors import CloveError, OperationTimeout
from clove.kernel.audit.journal import Category
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.workers import WorkerPool
from clove.kernel.services.llmrequests import Thinker, configured_limits, think_reply
from clove.kernel.services.llmrequests import caller_of as caller_of  # the syscalls use llm.caller_of
from clove.llm.accounts import Account, AgentLimits, ProviderSlot, build_slots
from clove.llm.errors import LlmUnavailable
from clove.llm.gateway import Gateway, GatewaySettings, Job, Verdict
from clove.llm.recording import Recording, request_details
from clove.llm.types import ChatRequest

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.loop import Loop, Timer
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import Journaling, ServiceHost, ServiceRegistry

log = logging.getLogger(__name__)

#: The loop answers ``timeout`` this long after a deadline if the provider has not returned.
DEADLINE_GRACE: Final = 0.5
SHUTDOWN_WAIT: Final = 1.0
MAX_WORKERS: Final = 64
NOT_CONFIGURED: Final = "the LLM gateway is not configured: the kernel's config has no [llm] table (docs/llm.md)"

#: ``record(event_type, code, agent_id, duration_us, details)``: journal one record.


@dataclass(eq=False, slots=True)
class _Pending:
    job: Job
    deferred: Deferred
    timer: Timer | None = None


@final
class LlmService:
    """``think`` requests between the syscall and the providers' worker threads."""

    def __init__(
        self,
        *,
        loop: Loop,
        settings: LlmSection | None,
        slots: list[ProviderSlot],
        record: Journaling | None = None,
        warn: Callable[[Account, dict[str, Any]], None] | None = None,
        recording_path: Path | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.enabled = settings is not None
        self._record = record or (lambda *_: None)
        self._warn = warn or (lambda *_: None)
        self.recording = Recording(recording_path)
        gs = GatewaySettings() if settings is None else GatewaySettings(
            max_retries=settings.max_retries, retry_backoff=settings.retry_backoff, retry_backoff_max=settings.retry_backoff_max,
            max_queue=settings.max_queue, period=settings.period, warn_at=settings.warn_at,
        )  # fmt: skip
        self.gateway = Gateway(gs, slots, clock=loop.clock, wall=wall, on_failed=self._failed, on_warning=self._on_warning)
        workers = max(1, min(MAX_WORKERS, sum(slot.concurrency for slot in slots)))
        self.pool = WorkerPool(self._perform, max_workers=workers, name="clove-llm")
        self._pending: dict[int, _Pending] = {}
        self._keys = itertools.count(1)
        self._wakeup: Timer | None = None
        self._wakeup_at = math.inf
        self.overrides: dict[int, dict[str, Any]] = {}
        self.closed = False
        loop.add_reader(self.pool.fileno(), self.on_wake)

    # ---- limits --------------------------------------------------------------------------------

    def limits_for(self, caller: Thinker) -> AgentLimits:
        """The caller's share and limits: config by name, the ``llm_tokens`` grant as lifetime
        budget, then operator overrides (``llm.budget``). Operators have no per-caller limits
        beyond their own grant."""
        if self.settings is None:
            return AgentLimits()
        limits = configured_limits(self.settings, caller)
        override = self.overrides.get(caller.principal)
        return replace(limits, **override) if override else limits

    def refresh(self, caller: Thinker) -> Account | None:
        """Apply the caller's current limits to its account (if it has one); dispatch again."""
        if caller.principal not in self.gateway.accounts:
            return None
        account = self.gateway.account(caller.principal, name=caller.name, agent_id=caller.agent_id, limits=self.limits_for(caller))
        self._pump()
        return account

    # ---- think ---------------------------------------------------------------------------------

    def route(self, model: str | None) -> tuple[ProviderSlot, str]:
        """The provider for ``model`` (``None``: the default provider's model).

        :raises LlmUnavailable: not configured, or no provider offers ``model``.
        """
        if self.settings is None:
            raise LlmUnavailable(NOT_CONFIGURED)
        providers = self.gateway.providers
        default = providers[self.settings.default_provider]
        if model is None:
            return default, default.model
        for slot in (default, *providers.values()):
            if slot.offers(model):
                return slot, model
        offered = sorted({m for slot in providers.values() for m in (slot.model, *slot.models)})
        raise LlmUnavailable(f"no LLM provider offers the model {model!r} (offered: {', '.join(offered)})", details={"model": model, "offered": offered})

    def submit(self, caller: Thinker, request: ChatRequest, slot: ProviderSlot, *, timeout: float, extra: dict[str, Any]) -> Deferred:
        """Queue ``request``; the Deferred settles on the loop thread.

        :raises LlmUnavailable, LlmQuotaExceeded, QuotaExceeded, UpstreamError: see
            :meth:`Gateway.submit`; nothing was queued.
        """

        if self.closed:
            raise LlmUnavailable("the kernel is shutting down")
        if slot.provider is None:
            raise LlmUnavailable(f"LLM provider {slot.name!r} is not available: {slot.error}", details={"provider": slot.name})
        try:
            bound = int(slot.provider.max_prompt_tokens(request))
        except Exception:
            log.exception("LLM provider %s: max_prompt_tokens failed", slot.name)
            raise LlmUnavailable(f"LLM provider {slot.name!r} failed inside its plugin; see the kernel log") from None
        self.gateway.account(caller.principal, name=caller.name, agent_id=caller.agent_id, limits=self.limits_for(caller))
        now = self.loop.clock()
        key = next(self._keys)
        job = Job(key, caller.principal, slot.name, request, bound, now, now + timeout, agent_id=caller.agent_id, name=caller.name, extra=extra)
        self.gateway.submit(job)
        deferred = Deferred()
        pending = _Pending(job, deferred)
        pending.timer = self.loop.call_later(timeout, lambda: self._expire(key))
        self._pending[key] = pending
        self._pump()
        return deferred

    def _perform(self, payload: tuple[Any, ChatRequest, float]) -> Any:
        """On a worker thread."""
        provider, request, deadline = payload
        return provider.complete(request, deadline)

    def _pump(self) -> None:
        for job in self.gateway.pump():
            provider = self.gateway.providers[job.provider].provider
            self.pool.submit(job.key, (provider, job.request, job.attempt_deadline))
        wake = self.gateway.next_wakeup()
        if wake is not None and wake < self._wakeup_at:
            if self._wakeup is not None:
                self._wakeup.cancel()
            self._wakeup_at = wake
            self._wakeup = self.loop.call_later(max(0.0, wake - self.loop.clock()), self._on_wakeup)

    def _on_wakeup(self) -> None:
        self._wakeup, self._wakeup_at = None, math.inf
        self._pump()

    def on_wake(self) -> None:
        """The loop's reader for the pool's pipe: settle every finished call, then dispatch."""
        for key, outcome, failed in self.pool.completed():
            self._complete(key, outcome, failed)
        self._pump()

    def _complete(self, key: int, outcome: Any, failed: bool) -> None:
        pending = self._pending.get(key)
        if pending is None:
            return
        job = pending.job
        if failed and not isinstance(outcome, CloveError):
            log.error("LLM provider %s failed inside its plugin", job.provider, exc_info=outcome)
            outcome = LlmUnavailable(f"LLM provider {job.provider!r} failed inside its plugin ({type(outcome).__name__}); see the kernel log")
        verdict = self.gateway.finished(job, outcome, failed)
        if verdict.kind == "retry":
            return
        account = self.gateway.accounts.get(job.principal)
        if account is not None and account.gone and account.in_flight == 0:
            self.gateway.forget(job.principal)
        self._pending.pop(key, None)
        if pending.timer is not None:
            pending.timer.cancel()
        if verdict.kind == "cancelled":
            self._journal(job, "cancelled", "ok", verdict)
        elif job.answered:
            self._journal(job, "timeout", "timeout", verdict)  # the caller had its timeout already
        elif verdict.kind == "ok":
            self._journal(job, "ok", "ok", verdict)
            pending.deferred.resolve(think_reply(job, verdict, self.loop.clock()))
        else:
            error = verdict.error or LlmUnavailable("the LLM request failed")
            self._journal(job, "failed", error.code, verdict)
            pending.deferred.reject(error)

    def _failed(self, job: Job, error: CloveError) -> None:
        """The gateway failed a queued job on its own (refused at dispatch, provider down)."""
        pending = self._pending.pop(job.key, None)
        self._journal(job, "failed", error.code, Verdict("failed", error=error))
        if pending is not None:
            if pending.timer is not None:
                pending.timer.cancel()
            if not job.cancelled:
                pending.deferred.reject(error)

    def _expire(self, key: int) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.job.answered or pending.job.cancelled:
            return
        error = self.gateway.expire(pending.job)
        if error is not None:  # it was still queued
            self._pending.pop(key, None)
            self._journal(pending.job, "timeout", error.code, Verdict("failed", error=error))
            pending.deferred.reject(error)
            self._pump()
            return
        pending.timer = self.loop.call_later(DEADLINE_GRACE, lambda: self._overdue(key))

    def _overdue(self, key: int) -> None:
        """The provider has not returned half a second past the deadline: answer now; the
        request stays in flight (and is billed) until it does."""
        pending = self._pending.get(key)
        if pending is None or pending.job.answered or pending.job.cancelled:
            return
        job = pending.job
        job.answered = True
        timeout = job.deadline - job.accepted
        pending.deferred.reject(OperationTimeout(f"the LLM request took longer than {timeout:g} s", details={"timeout": round(timeout, 3), "attempts": job.attempts}))

    def _on_warning(self, account: Account, figures: dict[str, Any]) -> None:
        self._warn(account, figures)

    # ---- callers going away --------------------------------------------------------------------

    def cancel(self, principal: int, *, forget: bool = False) -> int:
        """The caller exited, was removed or closed its session: queued requests are dropped
        unbilled and journaled ``cancelled``; running ones get no reply and are billed what
        they cost when their provider returns. Returns how many were cancelled."""
        queued, running = self.gateway.cancel(principal)
        for job in queued:
            pending = self._pending.pop(job.key, None)
            if pending is not None and pending.timer is not None:
                pending.timer.cancel()
            self._journal(job, "cancelled", "ok", Verdict("cancelled"))
        if forget:
            self.overrides.pop(principal, None)
            if not running:
                self.gateway.forget(principal)
            else:
                account = self.gateway.accounts.get(principal)
                if account is not None:
                    account.gone = True
        if queued:
            self._pump()
        return len(queued) + len(running)

    # ---- figures -------------------------------------------------------------------------------

    def figures(self, caller: Thinker) -> dict[str, Any]:
        """One caller's row for ``llm.stats``, whether or not it has thought yet."""
        account = self.gateway.accounts.get(caller.principal)
        period = self.settings.period if self.settings is not None else 86400.0
        if account is None:
            account = Account(caller.principal, caller.name, caller.agent_id)
            account.apply(self.limits_for(caller), self.loop.clock())
            account.budget.roll(self.gateway.period())
        return account.figures(period_seconds=period)

    def held(self) -> dict[str, int]:
        """Per-caller state, for ``kernel.info``'s leak check."""
        return {"llm_accounts": len(self.gateway.accounts), "llm_pending": len(self._pending), "llm_overrides": len(self.overrides)}

    def describe(self) -> dict[str, Any]:
        if self.settings is None:
            return {"enabled": False, "reason": NOT_CONFIGURED, "providers": []}
        return {"enabled": True, "default_provider": self.settings.default_provider, "record": self.settings.record,
                "period": self.settings.period, **self.gateway.figures()}  # fmt: skip

    # ---- journal -------------------------------------------------------------------------------

    def _journal(self, job: Job, outcome: str, code: str, verdict: Verdict) -> None:
        now = self.loop.clock()
        details = request_details(job, outcome, verdict, now)
        if self.settings is not None and self.settings.record:
            self.recording.add(job, verdict, details)
        self._record("llm.request", code, job.agent_id, int((now - job.accepted) * 1e6), details)

    # ---- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """At shutdown: answer nobody, stop the pool without waiting for slow calls."""
        if self.closed:
            return
        self.closed = True
        if self._wakeup is not None:
            self._wakeup.cancel()
        for pending in self._pending.values():
            pending.job.cancelled = True
            if pending.timer is not None:
                pending.timer.cancel()
        self.loop.remove_reader(self.pool.fileno())
        stopped = self.pool.close(SHUTDOWN_WAIT)
        if not stopped:
            log.info("%d LLM calls still running at shutdown; their threads end with the process", self.pool.busy)
        for slot in self.gateway.providers.values():
            if slot.provider is not None and stopped:
                slot.provider.close()
        self.recording.close()


def of(kernel: ServiceHost) -> LlmService:
    """The kernel's LLM service (``kernel.llm``).

    :raises LlmUnavailable: the service was not attached.
    """
    service = getattr(kernel, "llm", None)
    if not isinstance(service, LlmService):
        raise LlmUnavailable("the LLM gateway is not running")
    return service


def attach(kernel: ServiceRegistry) -> None:
    """Build the service (``kernel.llm``): journal requests under NETWORK and budget warnings
    under RESOURCE (plus a RESOURCE_WARNING event); cancel the requests of agents that exit or
    are removed and of closed operator sessions; follow permission changes; stop at shutdown."""
    settings = kernel.config.llm

    def journal(category: str, event: str, code: str, agent_id: int | None, duration_us: int | None, details: dict[str, Any]) -> None:
        if not kernel.audit_config.wants(category, False):
            return
        agent = kernel.supervisor.table.get(agent_id) if agent_id is not None else None
        with contextlib.suppress(RuntimeError):  # the journal is closed (shutdown)
            kernel.journal.append(category, event, agent_id=agent_id, agent_name=agent.name if agent else None, syscall="llm.think",
                                  decision="n/a", code=code, duration_us=duration_us, details=details)  # fmt: skip

    def record(event: str, code: str, agent_id: int | None, duration_us: int, details: dict[str, Any]) -> None:
        journal(Category.NETWORK, event, code, agent_id, duration_us, details)

    def warn(account: Account, figures: dict[str, Any]) -> None:
        budget = figures["budget"]
        data = {"agent_id": account.agent_id, "name": account.name, "kind": "llm_tokens", **figures,
                "percent": round(100 * figures["used"] / budget, 1) if budget else 100.0}  # fmt: skip
        kernel.events.emit("RESOURCE_WARNING", data, source_agent_id=account.agent_id)
        journal(Category.RESOURCE, "resource.warning", "ok", account.agent_id, None, data)

    slots = build_slots(settings, now=kernel.loop.clock()) if settings is not None else []
    service = LlmService(loop=kernel.loop, settings=settings, slots=slots, record=record, warn=warn,
                         recording_path=kernel.state_dir / "llm" / "recording.jsonl")  # fmt: skip
    kernel.llm = service

    def on_lifecycle(event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        if event_type == "agent.exited":
            service.cancel(agent.id)
        elif event_type == "agent.removed":
            service.cancel(agent.id, forget=True)
        elif event_type == "agent.permissions":
            service.refresh(caller_of(agent, agent.id, agent.permissions))

    def on_session_closed(session: OperatorSession) -> None:
        service.cancel(session.id, forget=True)

    kernel.supervisor.listeners.append(on_lifecycle)
    kernel.sessions.on_close.append(on_session_closed)
    kernel.on_shutdown.append(service.close)
