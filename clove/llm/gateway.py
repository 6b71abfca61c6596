"""The gateway's decisions, with no threads, sockets or kernel: which request goes next, to
which provider, and what happens when it comes back. Time comes from injected clocks, so unit
tests drive it with a fake clock.

The kernel's service (:mod:`clove.kernel.services.llm`) owns the I/O around it: it builds
:class:`Job`\\ s from ``llm.think`` calls, :meth:`Gateway.submit`\\ s them, runs what
:meth:`Gateway.pump` returns on worker threads, hands each outcome to :meth:`Gateway.finished`
and sets a timer for :meth:`Gateway.next_wakeup`.

A request's life::

    submit ──▶ queued (its caller's flow, per provider) ──pump──▶ running ──finished──▶ done
                 ▲   │ refused at dispatch: budget can never fit → failed      │
                 │   └ deadline → failed (timeout); caller gone → cancelled     │
                 └────────── retry: 429 / 5xx / unreachable, after a delay ─────┘

Dispatch order: per provider, the eligible flow with the smallest start tag (start-time fair
queuing by tokens, :mod:`clove.llm.scheduler`). Eligible means: the head request's
``not_before`` has passed, the caller's budget admits its maximum (:mod:`clove.llm.budget`:
reserve, or wait for in-flight reservations to settle, or refuse), the caller's RPM/TPM buckets
admit it; and for the provider as a whole: a free concurrency slot, its RPM/TPM buckets, no
``Retry-After`` cooldown, not down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, final

from clove.errors import CloveError, OperationTimeout, QuotaExceeded, UpstreamError
from clove.llm.accounts import Account, AgentLimits, ProviderSlot
from clove.llm.budget import Check, Reservation
from clove.llm.errors import LlmQuotaExceeded, LlmUnavailable, ProviderError
from clove.llm.jobs import GatewaySettings, Job, JobState, Verdict
from clove.llm.types import ChatResponse
from clove.ratelimit import TokenBucket

__all__ = ["Gateway", "GatewaySettings", "Job", "JobState", "Verdict", "is_retryable"]


def is_retryable(error: BaseException) -> bool:
    """429 and 5xx answers, and a provider that could not be reached."""
    if isinstance(error, ProviderError):
        return error.retryable
    return isinstance(error, UpstreamError)


def _wait(rpm: TokenBucket | None, tpm: TokenBucket | None, tokens: int, now: float) -> float:
    """Seconds until one request of ``tokens`` fits both buckets."""
    return max(rpm.wait(1, now) if rpm is not None else 0.0, tpm.wait(tokens, now) if tpm is not None else 0.0)


def _unreachable(error: BaseException) -> bool:
    return isinstance(error, UpstreamError) and not isinstance(error, ProviderError)


@final
class Gateway:
    """Queues, accounts and providers. Loop-thread only.

    :param on_failed: called with a job the gateway failed on its own (refused at dispatch,
        its provider went down); the job is done.
    :param on_warning: called with an account and the figures of a budget that reached
        ``warn_at`` of its limit.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        providers: Iterable[ProviderSlot],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_failed: Callable[[Job, CloveError], None] = lambda job, error: None,
        on_warning: Callable[[Account, dict[str, Any]], None] = lambda account, figures: None,
    ) -> None:
        self.settings = settings
        self.providers = {slot.name: slot for slot in providers}
        self.clock, self.wall = clock, wall
        self.on_failed, self.on_warning = on_failed, on_warning
        self.accounts: dict[int, Account] = {}
        self.running: dict[int, Job] = {}
        self._wake: float = math.inf

    # ---- callers ----------------------------------------------------------------------------

    def account(self, principal: int, *, name: str, agent_id: int | None, limits: AgentLimits) -> Account:
        """The caller's account, created on first use, with its current limits applied."""
        account = self.accounts.get(principal)
        if account is None:
            account = self.accounts[principal] = Account(principal, name, agent_id)
        account.name = name
        account.apply(limits, self.clock())
        for slot in self.providers.values():
            slot.queue.set_weight(principal, limits.weight)
        return account

    def period(self) -> int:
        return int(self.wall() // self.settings.period)

    # ---- submission -------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job`` (its account must exist).

        :raises LlmUnavailable: the provider failed to start.
        :raises UpstreamError: the provider is down (unreachable, recently).
        :raises QuotaExceeded: the caller has ``max_queue`` requests queued.
        :raises LlmQuotaExceeded: the request can never fit the caller's budget or a TPM limit.
        """
        slot = self.providers[job.provider]
        account = self.accounts[job.principal]
        now = self.clock()
        if slot.provider is None:
            raise LlmUnavailable(f"LLM provider {slot.name!r} is not available: {slot.error}", details={"provider": slot.name})
        if now < slot.down_until:
            raise self._down_error(slot, now)
        try:
            if account.queued >= self.settings.max_queue:
                raise QuotaExceeded(
                    f"at most {self.settings.max_queue} LLM requests may be queued per caller",
                    details={"queued": account.queued, "max_queue": self.settings.max_queue},
                )
            self._refusal(job, account, slot)
            decision, figures = account.budget.check(job.need, self.period())
            if decision is Check.REFUSE:
                raise self._quota_error(figures)
        except QuotaExceeded:
            account.refused += 1
            raise
        account.requests += 1
        account.queued += 1
        slot.queue.push(job.principal, job)

    def _refusal(self, job: Job, account: Account, slot: ProviderSlot) -> None:
        for kind, bucket in (("agent_tpm", account.tpm), ("provider_tpm", slot.tpm)):
            if bucket is not None and job.need > bucket.capacity:
                raise LlmQuotaExceeded(
                    f"the request may take {job.need} tokens, more than the {kind.replace('_', ' ').upper()} limit of {int(bucket.capacity)}",
                    details={"kind": kind, "needed": job.need, "limit": int(bucket.capacity)},
                )

    @staticmethod
    def _quota_error(figures: dict[str, Any]) -> LlmQuotaExceeded:
        kind = figures["kind"]
        return LlmQuotaExceeded(
            f"the request may take {figures['needed']} tokens; {figures['remaining']} of the {kind} budget of "
            f"{figures['budget']} are left (ask for fewer max_tokens, or for a larger budget)",
            details=figures,
        )

    def _down_error(self, slot: ProviderSlot, now: float) -> UpstreamError:
        return UpstreamError(
            f"LLM provider {slot.name!r} is down ({slot.failures} failures in a row: {slot.last_error}); "
            f"next attempt in {slot.down_until - now:.1f} s",
            details={"provider": slot.name, "failures": slot.failures, "retry_in": round(slot.down_until - now, 3)},
        )

    # ---- dispatch ---------------------------------------------------------------------------

    def pump(self) -> list[Job]:
        """Every job that may start now, reserved and counted in flight (the caller sends each
        to its provider)."""
        now = self.clock()
        self._wake = math.inf
        started: list[Job] = []
        for slot in self.providers.values():
            if now < slot.down_until:
                self._fail_queued(slot, self._down_error(slot, now))
                continue
            while slot.in_flight < slot.concurrency and len(slot.queue):
                if now < slot.cooldown_until:
                    self._wake = min(self._wake, slot.cooldown_until)
                    break
                job = self._pick(slot, now)
                if job is None:
                    break
                self._start(slot, job, now)
                started.append(job)
        return started

    def _pick(self, slot: ProviderSlot, now: float) -> Job | None:
        period = self.period()
        for principal in slot.queue.order():
            account = self.accounts[principal]
            while True:
                job: Job | None = slot.queue.head(principal)
                if job is None:
                    break
                if job.not_before > now:
                    self._wake = min(self._wake, job.not_before)
                    break
                decision, figures = account.budget.check(job.need, period)
                if decision is Check.REFUSE:
                    slot.queue.pop(principal)
                    account.queued -= 1
                    self._finish_failed(job, account, self._quota_error(figures))
                    continue
                if decision is Check.WAIT:
                    break  # a settlement of its own in-flight requests wakes it
                wait = _wait(account.rpm, account.tpm, job.need, now)
                if wait > 0:
                    self._wake = min(self._wake, now + wait)
                    break
                wait = _wait(slot.rpm, slot.tpm, job.need, now)
                if wait > 0:  # the provider's own limit: nobody may go, the fairest waits
                    self._wake = min(self._wake, now + wait)
                    return None
                return job
        return None

    def _start(self, slot: ProviderSlot, job: Job, now: float) -> None:
        account = self.accounts[job.principal]
        job.estimate = job.prompt_estimate() + account.expected_completion(job.request.max_tokens)
        job.ticket = slot.queue.dispatch(job.principal, job.estimate)
        account.queued -= 1
        job.reservation = account.budget.reserve(job.need, self.period())
        for bucket in (account.rpm, slot.rpm):
            if bucket is not None:
                bucket.consume(1, now)
        for bucket in (account.tpm, slot.tpm):
            if bucket is not None:
                bucket.consume(job.need, now)
        job.state = JobState.RUNNING
        job.attempts += 1
        if job.dispatched is None:
            job.dispatched = now
            account.waits.append(now - job.accepted)
        job.attempt_started = now
        job.attempt_deadline = min(job.deadline, now + slot.timeout)
        slot.in_flight += 1
        account.in_flight += 1
        self.running[job.key] = job

    def _fail_queued(self, slot: ProviderSlot, error: CloveError) -> None:
        for job in list(slot.queue.items()):
            slot.queue.remove(job.principal, job)
            account = self.accounts[job.principal]
            account.queued -= 1
            self._finish_failed(job, account, error)

    def _finish_failed(self, job: Job, account: Account, error: CloveError) -> None:
        job.state = JobState.DONE
        account.failed += 1
        self.on_failed(job, error)

    # ---- completion -------------------------------------------------------------------------

    def finished(self, job: Job, outcome: Any, failed: bool) -> Verdict:
        """Settle a job its provider came back from; the budget, buckets, fair-share tag
        and provider health are updated, and the verdict says what to tell the caller."""
        now = self.clock()
        self.running.pop(job.key, None)
        slot = self.providers[job.provider]
        account = self.accounts[job.principal]
        slot.in_flight -= 1
        account.in_flight -= 1
        reservation = job.reservation
        job.reservation = None
        if not failed and isinstance(outcome, ChatResponse):
            prompt = outcome.prompt_tokens if outcome.prompt_tokens is not None else job.prompt_bound
            completion = outcome.completion_tokens if outcome.completion_tokens is not None else job.request.max_tokens
            billed = prompt + completion
            self._settle(slot, account, job, reservation, billed, now)
            slot.failures, slot.down_until = 0, 0.0
            slot.completed += 1
            slot.tokens += billed
            account.prompt_tokens += prompt
            account.completion_tokens += completion
            account.learn(completion)
            account.latencies.append(now - job.attempt_started)
            job.state = JobState.DONE
            if job.cancelled:
                account.cancelled += 1
                return Verdict("cancelled", billed, prompt, completion, response=outcome)
            account.completed += 1
            return Verdict("ok", billed, prompt, completion, response=outcome)
        error = outcome if isinstance(outcome, CloveError) else UpstreamError(f"LLM provider {slot.name!r} failed: {type(outcome).__name__}")
        if isinstance(error, OperationTimeout):  # say which deadline it was
            total = job.deadline - job.accepted
            if job.attempt_deadline < job.deadline:
                message = f"LLM provider {slot.name!r} did not answer within its timeout of {slot.timeout:g} s"
            else:
                message = f"the LLM request took longer than {total:g} s"
            error = OperationTimeout(message, details={"timeout": round(total, 3), "provider": slot.name})
        self._settle(slot, account, job, reservation, 0, now)
        job.errors.append(error.message)
        slot.last_error = error.message
        if isinstance(error, ProviderError) and error.status == 429 and error.retry_after is not None:
            slot.cooldown_until = max(slot.cooldown_until, now + error.retry_after)
        if _unreachable(error):
            slot.failures += 1
            if slot.failures >= self.settings.down_after:
                slot.down_until = now + min(60.0, self.settings.down_for * 2 ** (slot.failures - self.settings.down_after))
        if job.cancelled:
            job.state = JobState.DONE
            account.cancelled += 1
            return Verdict("cancelled", error=error)
        delay = self._retry_delay(job, error)
        if delay is not None and now + delay < job.deadline and not job.answered and now >= slot.down_until:
            job.state = JobState.QUEUED
            job.not_before = now + delay
            account.queued += 1
            account.retries += 1
            slot.retries += 1
            slot.queue.push(job.principal, job, front=True)
            return Verdict("retry", delay=delay, error=error)
        job.state = JobState.DONE
        account.failed += 1
        slot.failed += 1
        if isinstance(error, UpstreamError) and job.attempts > 1:
            error.details.setdefault("attempts", job.attempts)
        return Verdict("failed", error=error)

    def _settle(self, slot: ProviderSlot, account: Account, job: Job, reservation: Reservation | None, billed: int, now: float) -> None:
        if reservation is not None:
            account.budget.settle(reservation, billed)
        for bucket in (account.tpm, slot.tpm):
            if bucket is not None:
                bucket.give_back(job.need - billed, now)
        if job.ticket is not None:  # the estimate charged at dispatch becomes what was billed
            slot.queue.settle(job.ticket, billed)
            job.ticket = None
        job.estimate = 0.0
        for crossing in account.budget.crossings(self.settings.warn_at):
            self.on_warning(account, crossing)

    def _retry_delay(self, job: Job, error: CloveError) -> float | None:
        if not is_retryable(error) or job.attempts > self.settings.max_retries:
            return None
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        if retry_after is not None:
            return retry_after
        backoff: float = min(self.settings.retry_backoff_max, self.settings.retry_backoff * 2 ** (job.attempts - 1))
        return backoff

    # ---- deadlines and departures -------------------------------------------------------------

    def expire(self, job: Job) -> CloveError | None:
        """The job's deadline passed. A queued job is taken out and the timeout returned (the
        caller fails it); a running one stays until its provider returns (``None``)."""
        if job.state is not JobState.QUEUED:
            return None
        slot = self.providers[job.provider]
        account = self.accounts[job.principal]
        if slot.queue.remove(job.principal, job):
            account.queued -= 1
        job.state = JobState.DONE
        account.failed += 1
        waited = self.clock() - job.accepted
        tail = f"; last error: {job.errors[-1]}" if job.errors else ""
        return OperationTimeout(
            f"the LLM request waited {waited:.1f} s without an answer ({job.attempts} attempts){tail}",
            details={"timeout": round(job.deadline - job.accepted, 3), "attempts": job.attempts},
        )

    def cancel(self, principal: int) -> tuple[list[Job], list[Job]]:
        """The caller went away: its queued jobs are taken out (never billed) and its running
        ones marked (billed what they cost when they return, never retried). Returns both."""
        queued: list[Job] = []
        for slot in self.providers.values():
            queued.extend(slot.queue.drop(principal))
        account = self.accounts.get(principal)
        for job in queued:
            job.state = JobState.DONE
            job.cancelled = True
        if account is not None:
            account.queued = 0
            account.cancelled += len(queued)
        running = [job for job in self.running.values() if job.principal == principal]
        for job in running:
            job.cancelled = True
        return queued, running

    def forget(self, principal: int) -> None:
        """Drop a removed caller's account (after :meth:`cancel`)."""
        self.accounts.pop(principal, None)

    def next_wakeup(self) -> float | None:
        """When :meth:`pump` may have something new to start without any event (a retry delay,
        a rate limit or cooldown ending); ``None``: only an event will."""
        return self._wake if self._wake != math.inf else None

    def figures(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "providers": [slot.figures(now) for slot in self.providers.values()],
            "running": len(self.running),
            "queued": sum(len(slot.queue) for slot in self.providers.values()),
        }
