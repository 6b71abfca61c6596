"""The fair queue and the gateway's dispatch decisions, with a fake clock and no threads: a
small discrete-event simulation stands in for the providers."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clove.errors import CloveError, OperationTimeout, QuotaExceeded, UpstreamError
from clove.llm.accounts import AgentLimits, ProviderSlot
from clove.llm.errors import LlmQuotaExceeded, LlmUnavailable, ProviderError, RateLimited, ServerError
from clove.llm.gateway import Gateway, GatewaySettings, Job, JobState, is_retryable
from clove.llm.scheduler import FairQueue
from clove.llm.scripted import ScriptedOptions, ScriptedProvider
from clove.llm.types import ChatRequest, ChatResponse
from clove.ratelimit import TokenBucket


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


# ---- the fair queue ------------------------------------------------------------------------------


def test_smallest_counter_first_ties_first_come():
    q: FairQueue[str] = FairQueue()
    q.push(1, "a1")
    q.push(2, "b1")
    q.push(3, "c1")
    assert list(q.order()) == [1, 2, 3]
    q.charge(1, 100)
    q.charge(2, 50)
    assert list(q.order()) == [3, 2, 1]
    assert q.pop(3) == "c1" and list(q.order()) == [2, 1] and len(q) == 2


def test_weights_scale_charges():
    q: FairQueue[str] = FairQueue()
    q.set_weight(1, 4.0)
    q.charge(1, 100)
    q.charge(2, 100)
    assert q.counter(1) == 25 and q.counter(2) == 100
    with pytest.raises(ValueError, match="positive"):
        q.set_weight(1, 0)


def test_a_flow_returning_from_idle_is_lifted_to_the_virtual_time():
    q: FairQueue[str] = FairQueue()
    q.push(1, "a")
    q.push(2, "b")
    q.charge(1, 1000)
    q.charge(2, 900)
    q.push(3, "c")  # nothing in service: V is the smallest backlogged tag; no credit for being away
    assert q.virtual_time() == 900 and q.counter(3) == 900
    q.pop(1), q.pop(2), q.pop(3)
    assert len(q) == 0
    q.push(4, "d")  # nothing in service or queued: everything served is finished, V is the largest tag
    assert q.counter(4) == 1000


def test_a_flow_arriving_behind_a_request_in_service_goes_next():
    """The one-at-a-time case: V is the start tag of the request in service, not the backlogged
    flow's tag, which already counts that request (at its estimate)."""
    q: FairQueue[str] = FairQueue()
    for item in ("g1", "g2", "g3"):
        q.push(1, item)
    ticket = q.dispatch(1, 500)  # estimated 500
    assert ticket.item == "g1" and ticket.start == 0 and q.counter(1) == 500 and q.in_service() == 1
    q.push(2, "m1")
    assert q.virtual_time() == 0 and q.counter(2) == 0 and list(q.order()) == [2, 1]
    q.settle(ticket, 100)  # billed 100: the over-estimate is taken back exactly
    assert q.counter(1) == 100 and q.in_service() == 0 and list(q.order()) == [2, 1]
    modest = q.dispatch(2, 500)
    q.settle(modest, 100)
    assert q.counter(2) == 100 == q.counter(1) and list(q.order()) == [1]
    g2 = q.dispatch(1, 50)
    q.push(2, "m2")  # arrives behind g2 (start 100): starts at max(its 100, V = 100), before g3 (150)
    assert q.counter(2) == 100 and list(q.order()) == [2, 1]
    q.settle(g2, 0)  # a failure refunds the estimate
    assert q.counter(1) == 100 and list(q.order()) == [2, 1]  # a tie: flow 1 was served last, 2 goes first


def test_ties_go_to_the_flow_served_least_recently():
    q: FairQueue[str] = FairQueue()
    for key in (1, 2, 3):
        q.push(key, "x")
        q.push(key, "y")
    assert list(q.order()) == [1, 2, 3]  # never served: first backlogged first
    for key in (1, 2, 3):
        q.settle(q.dispatch(key, 10), 10)
    assert list(q.order()) == [1, 2, 3]
    q.settle(q.dispatch(1, 10), 10)
    q.push(1, "z")
    q.charge(2, 10)
    q.charge(3, 10)
    assert [q.counter(k) for k in (1, 2, 3)] == [20, 20, 20] and list(q.order()) == [2, 3, 1]


def test_weights_scale_dispatch_and_settlement():
    q: FairQueue[str] = FairQueue()
    q.set_weight(1, 2.0)
    q.push(1, "a")
    q.push(1, "b")
    t = q.dispatch(1, 300)
    assert q.counter(1) == 150
    q.settle(t, 100)
    assert q.counter(1) == 50


def test_virtual_time_counts_billed_tokens_not_estimates_in_flight():
    """With several slots the backlogged flow's later requests start after the estimates of its
    earlier ones; V takes only what it was billed, so a flow arriving meanwhile is not lifted by
    over-estimates still in flight; and V never goes back when a flow left behind (rate limited)
    is served at last."""
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.push(1, f"g{i}")
    tickets = [q.dispatch(1, 300) for _ in range(3)]
    assert [t.start for t in tickets] == [0, 300, 600] and q.virtual_time() == 0
    q.push(2, "m")
    assert q.counter(2) == 0 and next(q.order()) == 2
    for t in tickets:
        q.settle(t, 30)
    assert q.counter(1) == 90
    q.settle(q.dispatch(2, 30), 30)
    q.settle(q.dispatch(1, 30), 30)  # V: 90
    q.push(3, "late")
    q.charge(3, -50)  # behind everyone, e.g. held by its own rate limit
    t = q.dispatch(3, 10)
    assert t.start == 70 and q.virtual_time() == 90  # lifted to flow 1's 120 when it came, then 50 back
    q.push(4, "new")
    assert q.counter(4) == 90
    q.settle(t, 10)


def test_a_dropped_flows_request_settles_without_touching_its_successor():
    q: FairQueue[str] = FairQueue()
    q.push(1, "a")
    q.push(1, "b")
    t = q.dispatch(1, 100)
    assert q.drop(1) == ["b"] and q.in_service() == 1
    q.push(1, "again")  # the caller came back: a new flow
    before = q.counter(1)
    q.settle(t, 40)
    assert q.counter(1) == before and q.in_service() == 0


def test_remove_drop_and_retry_at_the_front():
    q: FairQueue[str] = FairQueue()
    for item in ("a", "b", "c"):
        q.push(1, item)
    q.push(1, "retry", front=True)
    assert q.head(1) == "retry" and q.queued(1) == 4
    assert q.remove(1, "b") and not q.remove(1, "zzz") and not q.remove(9, "a")
    assert q.drop(1) == ["retry", "a", "c"] and list(q.order()) == [] and q.drop(1) == []


# ---- a simulated provider ------------------------------------------------------------------------


def slot(name: str = "p", *, concurrency: int = 2, rpm: int | None = None, tpm: int | None = None, clock: FakeClock | None = None) -> ProviderSlot:
    now = clock() if clock else 0.0
    provider = ScriptedProvider(ScriptedOptions(), name=name)
    provider.close()  # never called: the simulation answers for it
    return ProviderSlot(
        name=name, kind="scripted", model="m", models=(), concurrency=concurrency, timeout=60.0, provider=provider,
        rpm=TokenBucket.per_minute(rpm, now) if rpm else None, tpm=TokenBucket.per_minute(tpm, now) if tpm else None,
    )  # fmt: skip


@dataclass
class Sim:
    """Drives a gateway: a job takes ``base + per_token * completion`` seconds, completion is
    its ``max_tokens``, the prompt 10 tokens, unless ``outcomes`` says otherwise."""

    gateway: Gateway
    clock: FakeClock
    base: float = 0.05
    per_token: float = 0.001
    outcomes: Callable[[Job], Any] | None = None
    events: list[tuple[float, int, Job]] = field(default_factory=list)
    seq: itertools.count = field(default_factory=itertools.count)
    keys: itertools.count = field(default_factory=lambda: itertools.count(1))
    done: list[tuple[Job, Any]] = field(default_factory=list)
    failed: list[tuple[Job, CloveError]] = field(default_factory=list)
    dispatches: list[tuple[float, Job]] = field(default_factory=list)
    max_in_flight: int = 0

    def job(self, principal: int, max_tokens: int = 100, *, prompt: str = "p", provider: str = "p", timeout: float = 1e6) -> Job:
        now = self.clock()
        request = ChatRequest(prompt=prompt, model="m", max_tokens=max_tokens)
        return Job(next(self.keys), principal, provider, request, 10, now, now + timeout)

    def submit(self, job: Job) -> Job:
        self.gateway.submit(job)
        self.pump()
        return job

    def pump(self) -> None:
        for job in self.gateway.pump():
            self.dispatches.append((self.clock(), job))
            completion = job.request.max_tokens
            heapq.heappush(self.events, (self.clock() + self.base + self.per_token * completion, next(self.seq), job))
        self.max_in_flight = max(self.max_in_flight, len(self.gateway.running))

    def step(self) -> bool:
        """Advance to the next completion or wake-up; False when nothing is left."""
        wake = self.gateway.next_wakeup()
        when = min(self.events[0][0] if self.events else math.inf, wake if wake is not None else math.inf)
        if when == math.inf:
            return False
        self.clock.now = max(self.clock.now, when)
        while self.events and self.events[0][0] <= self.clock.now:
            _, _, job = heapq.heappop(self.events)
            outcome = self.outcomes(job) if self.outcomes else None
            if outcome is None:
                outcome = ChatResponse(content="x", model="m", prompt_tokens=10, completion_tokens=job.request.max_tokens)
            failed = isinstance(outcome, BaseException)
            verdict = self.gateway.finished(job, outcome, failed)
            self.done.append((job, verdict))
        self.pump()
        return True

    def run(self, until: Callable[[], bool] = lambda: False, limit: int = 100_000) -> None:
        for _ in range(limit):
            if until() or not self.step():
                return


def make(settings: GatewaySettings | None = None, slots: list[ProviderSlot] | None = None, clock: FakeClock | None = None, **sim: Any) -> Sim:
    clock = clock or FakeClock()
    failed: list[tuple[Job, CloveError]] = []
    gateway = Gateway(settings or GatewaySettings(), slots or [slot(clock=clock)], clock=clock, wall=lambda: 1_700_000_000.0,
                      on_failed=lambda job, error: failed.append((job, error)))  # fmt: skip
    s = Sim(gateway, clock, **sim)
    s.failed = failed
    return s


def backlog_window(sim: Sim, names: list[int]) -> dict[int, int]:
    """Tokens served (by dispatch) to each principal while all of them had requests queued."""
    start = max(min(j.accepted for _, j in sim.dispatches if j.principal == p) for p in names)
    end = min(max(t for t, j in sim.dispatches if j.principal == p) for p in names)
    return {p: sum(j.request.max_tokens + 10 for t, j in sim.dispatches if j.principal == p and start <= t <= end) for p in names}


# ---- fairness --------------------------------------------------------------------------------------


def test_greedy_flow_gets_its_share_not_more():
    sim = make()
    for principal in (1, 2, 3, 4):
        sim.gateway.account(principal, name=f"a{principal}", agent_id=principal, limits=AgentLimits())
    for _ in range(50):
        sim.gateway.submit(sim.job(1, max_tokens=400))  # the greedy one asks for long answers too
    for principal in (2, 3, 4):
        for _ in range(30):
            sim.gateway.submit(sim.job(principal, max_tokens=50))
    sim.pump()
    sim.run()
    served = backlog_window(sim, [1, 2, 3, 4])
    assert jain(list(served.values())) >= 0.98, served
    assert sim.max_in_flight <= 2


@pytest.mark.parametrize("greedy_backlog", [10, 50, 200])
def test_modest_flows_thinking_one_at_a_time_wait_boundedly(greedy_backlog):
    sim = make()
    for principal in (1, 2, 3, 4):
        sim.gateway.account(principal, name=f"a{principal}", agent_id=principal, limits=AgentLimits())
    for _ in range(greedy_backlog):
        sim.submit(sim.job(1, max_tokens=200))
    waits: dict[int, list[float]] = {2: [], 3: [], 4: []}
    current = {p: sim.submit(sim.job(p, max_tokens=50)) for p in waits}
    while any(len(w) < 10 for w in waits.values()) and sim.step():
        for p, job in list(current.items()):
            if job.state is JobState.DONE:
                waits[p].append(job.dispatched - job.accepted)  # type: ignore[operator]
                del current[p]
                if len(waits[p]) < 10:
                    current[p] = sim.submit(sim.job(p, max_tokens=50))
    longest_service = 0.05 + 0.001 * 200
    # bounded by the services already under way (two slots), however long the greedy backlog is
    assert max(max(w) for w in waits.values()) <= 2 * longest_service + 1e-9
    greedy = sorted(j.dispatched - j.accepted for _, j in sim.dispatches if j.principal == 1)
    assert greedy[-1] > 5 * longest_service


@pytest.mark.parametrize("weights", [(1, 3), (1, 2, 3), (2, 5)])
def test_weights_set_the_proportions(weights):
    sim = make(slots=[slot(concurrency=3)])
    principals = list(range(1, len(weights) + 1))
    for p, w in zip(principals, weights, strict=True):
        sim.gateway.account(p, name=f"a{p}", agent_id=p, limits=AgentLimits(weight=w))
        for _ in range(200):
            sim.gateway.submit(sim.job(p, max_tokens=90))
    sim.pump()
    sim.run()
    served = backlog_window(sim, principals)
    for p, w in zip(principals, weights, strict=True):
        share = served[p] / sum(served.values())
        assert share == pytest.approx(w / sum(weights), rel=0.06), served


def test_fairness_is_by_tokens_not_requests():
    sim = make(slots=[slot(concurrency=1)])
    for p in (1, 2):
        sim.gateway.account(p, name=f"a{p}", agent_id=p, limits=AgentLimits())
    for _ in range(100):
        sim.gateway.submit(sim.job(1, max_tokens=390))  # 400 tokens a request
        sim.gateway.submit(sim.job(2, max_tokens=90))  # 100
    sim.pump()
    sim.run(until=lambda: len(sim.done) >= 60)
    tokens = {p: sum(j.need for _, j in sim.dispatches if j.principal == p) for p in (1, 2)}
    assert abs(tokens[1] - tokens[2]) <= 400  # one long request apart: four times the short ones
    assert sum(1 for _, j in sim.dispatches if j.principal == 2) > 3.5 * sum(1 for _, j in sim.dispatches if j.principal == 1)


# ---- limits ----------------------------------------------------------------------------------------


def test_concurrency_limit_per_provider():
    sim = make(slots=[slot("a", concurrency=3), slot("b", concurrency=1)])
    sim.gateway.account(1, name="x", agent_id=1, limits=AgentLimits())
    for i in range(20):
        sim.gateway.submit(sim.job(1, provider="a" if i % 2 else "b"))
    sim.pump()
    assert sim.gateway.providers["a"].in_flight == 3 and sim.gateway.providers["b"].in_flight == 1
    sim.run()
    assert len(sim.done) == 20


def test_agent_rpm_paces_that_agent_only():
    clock = FakeClock()
    sim = make(slots=[slot(concurrency=100, clock=clock)], clock=clock, base=0.001, per_token=0)
    sim.gateway.account(1, name="limited", agent_id=1, limits=AgentLimits(rpm=6))
    sim.gateway.account(2, name="free", agent_id=2, limits=AgentLimits())
    start = clock()
    for _ in range(9):
        sim.gateway.submit(sim.job(1))
        sim.gateway.submit(sim.job(2))
    sim.pump()
    assert sum(1 for _, j in sim.dispatches if j.principal == 1) == 6  # a minute's burst
    assert sum(1 for _, j in sim.dispatches if j.principal == 2) == 9
    assert sim.gateway.next_wakeup() == pytest.approx(start + 10)
    sim.run()
    times = [t - start for t, j in sim.dispatches if j.principal == 1]
    assert times[6:] == pytest.approx([10, 20, 30], abs=0.01)  # then one every 10 s


def test_provider_tpm_holds_everyone_and_wakes_on_time():
    clock = FakeClock()
    sim = make(slots=[slot(concurrency=10, tpm=600, clock=clock)], clock=clock, base=0.001, per_token=0)
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    for _ in range(4):
        sim.gateway.submit(sim.job(1, max_tokens=190))  # 200 each
    sim.pump()
    assert len(sim.dispatches) == 3
    sim.step()  # the three finish: each used its whole reservation, nothing is given back
    wake = sim.gateway.next_wakeup()
    assert wake == pytest.approx(clock() + 20, abs=0.01)  # 200 tokens at 10 a second
    sim.run()
    assert len(sim.dispatches) == 4


def test_agent_tpm_gives_back_what_was_not_used():
    clock = FakeClock()
    sim = make(slots=[slot(concurrency=10, clock=clock)], clock=clock, base=0.001, per_token=0,
               outcomes=lambda job: ChatResponse(content="x", model="m", prompt_tokens=10, completion_tokens=0))  # fmt: skip
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits(tpm=1000))
    for _ in range(20):
        sim.gateway.submit(sim.job(1, max_tokens=190))
    sim.pump()
    sim.run(until=lambda: len(sim.done) == 20, limit=200)
    assert len(sim.done) == 20 and clock() - 1000.0 < 2  # 10 tokens billed each: no real wait


def test_a_request_larger_than_a_tpm_limit_is_refused_at_once():
    sim = make(slots=[slot(tpm=100)])
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    with pytest.raises(LlmQuotaExceeded, match="PROVIDER TPM") as err:
        sim.gateway.submit(sim.job(1, max_tokens=200))
    assert err.value.details == {"kind": "provider_tpm", "needed": 210, "limit": 100}
    sim.gateway.account(2, name="b", agent_id=2, limits=AgentLimits(tpm=50))
    with pytest.raises(LlmQuotaExceeded) as err2:
        sim.gateway.submit(sim.job(2, max_tokens=60))
    assert err2.value.details["kind"] == "agent_tpm" and sim.gateway.accounts[2].refused == 1


def test_queue_bound_per_caller():
    sim = make(GatewaySettings(max_queue=3), slots=[slot(concurrency=1)])
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    for _ in range(4):
        sim.submit(sim.job(1))  # one runs, three wait
    with pytest.raises(QuotaExceeded, match="at most 3") as err:
        sim.gateway.submit(sim.job(1))
    assert not isinstance(err.value, LlmQuotaExceeded)


# ---- retries, failures, deadlines -----------------------------------------------------------------


def test_429_retry_after_holds_the_provider_and_is_honoured():
    clock = FakeClock()
    calls = itertools.count()

    def outcome(job: Job) -> Any:
        return RateLimited("429", status=429, retry_after=2.0) if next(calls) == 0 else None

    sim = make(slots=[slot(concurrency=2, clock=clock)], clock=clock, outcomes=outcome, base=0.1, per_token=0)
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    job = sim.submit(sim.job(1))
    sim.step()
    assert job.state is JobState.QUEUED and job.not_before == pytest.approx(clock() + 2.0)
    other = sim.submit(sim.job(1))
    assert other.state is JobState.QUEUED  # the whole provider waits out Retry-After
    sim.run()
    assert job.attempts == 2 and [round(t - 1000.0, 3) for t, _ in sim.dispatches] == [0, 2.1, 2.1]
    assert sim.gateway.accounts[1].retries == 1 and sim.gateway.accounts[1].budget.used == 220


def test_5xx_backoff_doubles_then_gives_up_with_the_attempts():
    clock = FakeClock()
    settings = GatewaySettings(max_retries=3, retry_backoff=0.5, retry_backoff_max=1.5)
    sim = make(settings, slots=[slot(clock=clock)], clock=clock, outcomes=lambda job: ServerError("500", status=500), base=0.0, per_token=0)
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    job = sim.submit(sim.job(1))
    sim.run()
    starts = [round(t - 1000.0, 3) for t, _ in sim.dispatches]
    assert starts == [0, 0.5, 1.5, 3.0]  # 0.5, 1.0, then capped at 1.5
    verdict = sim.done[-1][1]
    assert verdict.kind == "failed" and isinstance(verdict.error, ServerError) and verdict.error.details["attempts"] == 4
    account = sim.gateway.accounts[1]
    assert account.budget.used == 0 and account.budget.reserved == 0 and job.state is JobState.DONE


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RateLimited("x", status=429), True),
        (ServerError("x", status=503), True),
        (UpstreamError("connection refused"), True),
        (ProviderError("x", status=400), False),
        (ProviderError("x", status=401), False),
        (OperationTimeout("x"), False),
        (LlmUnavailable("x"), False),
    ],
)
def test_what_is_retried(error, retried):
    assert is_retryable(error) is retried


def test_no_retry_past_the_deadline():
    clock = FakeClock()
    sim = make(slots=[slot(clock=clock)], clock=clock, outcomes=lambda job: RateLimited("429", status=429, retry_after=30), base=0.1, per_token=0)
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    sim.submit(sim.job(1, timeout=10))
    sim.run()
    assert sim.done[-1][1].kind == "failed" and sim.done[-1][1].error.status == 429


def test_an_unreachable_provider_goes_down_and_fails_fast():
    clock = FakeClock()
    settings = GatewaySettings(max_retries=5, retry_backoff=0.1, down_after=3, down_for=2.0)
    sim = make(settings, slots=[slot(concurrency=1, clock=clock)], clock=clock, outcomes=lambda job: UpstreamError("refused"), base=0.01, per_token=0)
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    first = sim.submit(sim.job(1))
    waiting = sim.submit(sim.job(1))
    sim.run(until=lambda: first.state is JobState.DONE)
    assert first.attempts <= 3 and sim.done[-1][1].kind == "failed"
    sim.pump()
    assert [j for j, _ in sim.failed] == [waiting] and "is down" in sim.failed[0][1].message  # queued ones too
    with pytest.raises(UpstreamError, match="is down"):
        sim.gateway.submit(sim.job(1))
    clock.now += 2.5  # a probe is allowed again
    sim.outcomes = None
    sim.submit(sim.job(1))
    sim.run()
    assert sim.done[-1][1].kind == "ok" and sim.gateway.providers["p"].failures == 0


def test_a_queued_request_expires_a_running_one_waits_for_its_provider():
    sim = make(slots=[slot(concurrency=1)])
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    running = sim.submit(sim.job(1, timeout=5))
    queued = sim.submit(sim.job(1, timeout=5))
    error = sim.gateway.expire(queued)
    assert isinstance(error, OperationTimeout) and queued.state is JobState.DONE and "waited" in error.message
    assert sim.gateway.expire(running) is None and running.state is JobState.RUNNING
    assert sim.gateway.accounts[1].queued == 0


def test_an_attempt_timeout_names_the_deadline_that_passed():
    clock = FakeClock()
    sim = make(slots=[slot(clock=clock)], clock=clock, outcomes=lambda job: OperationTimeout("HTTP POST took longer"), base=0.1, per_token=0)
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    sim.submit(sim.job(1, timeout=30))
    sim.run()
    assert sim.done[-1][1].error.message == "the LLM request took longer than 30 s"
    sim.submit(sim.job(1, timeout=300))  # the provider's own 60 s per attempt comes first
    sim.run()
    assert sim.done[-1][1].error.message == "LLM provider 'p' did not answer within its timeout of 60 s"


# ---- callers going away ----------------------------------------------------------------------------


def test_cancel_drops_queued_unbilled_and_bills_running_when_they_return():
    sim = make(slots=[slot(concurrency=1)])
    sim.gateway.account(1, name="doomed", agent_id=1, limits=AgentLimits(budget=10_000))
    sim.gateway.account(2, name="other", agent_id=2, limits=AgentLimits())
    jobs = [sim.submit(sim.job(1)) for _ in range(5)]
    later = sim.submit(sim.job(2))
    queued, running = sim.gateway.cancel(1)
    assert queued == jobs[1:] and running == [jobs[0]] and all(j.cancelled for j in jobs)
    account = sim.gateway.accounts[1]
    assert account.queued == 0 and account.budget.reserved == jobs[0].need
    sim.run()
    verdicts = {j.key: v for j, v in sim.done}
    assert verdicts[jobs[0].key].kind == "cancelled" and verdicts[jobs[0].key].billed == 110
    assert account.budget.used == 110 and account.budget.reserved == 0  # only what really ran
    assert verdicts[later.key].kind == "ok"
    assert sum(1 for _, j in sim.dispatches if j.principal == 1) == 1


def test_a_cancelled_failure_is_not_retried():
    sim = make(outcomes=lambda job: ServerError("500", status=500))
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    job = sim.submit(sim.job(1))
    sim.gateway.cancel(1)
    sim.run()
    assert sim.done[-1][1].kind == "cancelled" and job.attempts == 1


def test_an_unavailable_provider_refuses_at_submit():
    broken = slot()
    broken.provider, broken.error = None, "the environment variable KEY (api_key_env) is not set"
    sim = make(slots=[broken])
    sim.gateway.account(1, name="a", agent_id=1, limits=AgentLimits())
    with pytest.raises(LlmUnavailable, match="api_key_env"):
        sim.gateway.submit(sim.job(1))


# ---- the queue's bookkeeping under any sequence of operations -------------------------------------

_OPS = st.lists(
    st.tuples(st.sampled_from(["push", "front", "pop", "remove", "drop", "charge", "dispatch", "settle"]), st.integers(0, 4), st.integers(0, 50)),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS)
def test_fair_queue_bookkeeping_holds_under_any_operations(ops):
    q: FairQueue[int] = FairQueue()
    model: dict[int, list[int]] = {}
    tickets: list = []
    for op, key, value in ops:
        if op in ("push", "front"):
            idle, vtime = not model.get(key), q.virtual_time()
            q.push(key, value, front=op == "front")
            if idle:  # it became backlogged: it starts no earlier than V
                assert q.counter(key) >= vtime
            model.setdefault(key, [])
            if op == "front":
                model[key].insert(0, value)
            else:
                model[key].append(value)
        elif op == "pop" and model.get(key):
            assert q.pop(key) == model[key].pop(0)
        elif op == "remove":
            present = value in model.get(key, [])
            assert q.remove(key, value) is present
            if present:
                model[key].remove(value)
        elif op == "drop":
            assert q.drop(key) == model.pop(key, [])
        elif op == "charge":
            q.charge(key, value)
        elif op == "dispatch" and model.get(key):
            vtime = q.virtual_time()
            ticket = q.dispatch(key, value)
            assert ticket.item == model[key].pop(0) and q.virtual_time() >= vtime  # V never goes back
            tickets.append(ticket)
        elif op == "settle" and tickets:
            q.settle(tickets.pop(value % len(tickets)), value)
        assert q.in_service() == len(tickets)
        assert len(q) == sum(len(items) for items in model.values())
        assert sorted(q.order()) == sorted(k for k, items in model.items() if items)
        assert sorted(q.items()) == sorted(v for items in model.values() for v in items)
        counters = [q.counter(k) for k in q.order()]
        assert counters == sorted(counters)
