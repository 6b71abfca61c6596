"""Token budgets: reserve the maximum, settle the actual, never overrun; periods; 80 % warnings;
and the same through the gateway under random concurrent bursts (hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clove.llm.accounts import AgentLimits, ProviderSlot
from clove.llm.budget import Budget, Check
from clove.llm.errors import LlmQuotaExceeded
from clove.llm.gateway import Gateway, GatewaySettings, Job, JobState
from clove.llm.scripted import ScriptedOptions, ScriptedProvider
from clove.llm.types import ChatRequest, ChatResponse
from clove.ratelimit import TokenBucket

# ---- the budget alone -----------------------------------------------------------------------------


def test_reserve_wait_refuse():
    b = Budget(lifetime=1000)
    assert b.check(400, 0) == (Check.OK, {})
    r1 = b.reserve(400, 0)
    r2 = b.reserve(400, 0)
    decision, figures = b.check(400, 0)
    assert decision is Check.WAIT and figures == {"kind": "lifetime", "budget": 1000, "used": 0, "reserved": 800, "remaining": 1000, "needed": 400}
    b.settle(r1, 350)
    b.settle(r2, 0)  # a failure releases it
    assert (b.used, b.reserved) == (350, 0)
    assert b.check(650, 0)[0] is Check.OK
    decision, figures = b.check(651, 0)
    assert decision is Check.REFUSE and figures["remaining"] == 650
    assert b.remaining() == 650


def test_unlimited_and_zero_budgets():
    assert Budget().check(10**9, 0)[0] is Check.OK and Budget().remaining() is None
    assert Budget(lifetime=0).check(1, 0)[0] is Check.REFUSE


def test_period_budget_resets_each_period_and_old_reservations_settle_in_their_own():
    b = Budget(lifetime=10_000, per_period=500)
    r = b.reserve(400, period=7)
    assert b.check(200, 7)[0] is Check.WAIT
    assert b.check(200, 8)[0] is Check.OK  # a new period: its own allowance
    b.reserve(200, period=8)
    b.settle(r, 390)  # dispatched in period 7: counts there, and for the lifetime
    assert (b.period, b.period_used, b.period_reserved, b.used, b.reserved) == (8, 0, 200, 390, 200)
    decision, figures = b.check(400, 8)
    assert decision is Check.WAIT and figures["kind"] == "period"
    assert b.check(501, 8)[0] is Check.REFUSE


def test_the_tighter_budget_refuses():
    b = Budget(lifetime=100, per_period=1000)
    decision, figures = b.check(101, 0)
    assert decision is Check.REFUSE and figures["kind"] == "lifetime"


def test_warnings_once_per_crossing_and_per_period():
    b = Budget(lifetime=1000, per_period=100)
    b.settle(b.reserve(79, 0), 79)
    assert b.crossings(0.8) == []
    b.settle(b.reserve(5, 0), 5)
    assert b.crossings(0.8) == [{"budget_kind": "period", "used": 84, "budget": 100, "period": 0}]
    assert b.crossings(0.8) == []
    b.roll(1)
    b.settle(b.reserve(90, 1), 90)
    assert [c["budget_kind"] for c in b.crossings(0.8)] == ["period"]
    b.settle(b.reserve(700, 1), 700)  # lifetime 874 / 1000
    assert [c["budget_kind"] for c in b.crossings(0.8)] == ["lifetime"]
    assert b.crossings(0.8) == []
    b.lifetime = 2000  # raised: below 80 % again, re-armed
    assert b.crossings(0.8) == []
    b.lifetime = 1000
    assert [c["budget_kind"] for c in b.crossings(0.8)] == ["lifetime"]
    assert Budget(lifetime=0).crossings(0.8) == []


def test_billing_beyond_a_reservation_is_counted_as_overrun():
    b = Budget(lifetime=100)
    b.settle(b.reserve(50, 0), 60)
    assert b.used == 60 and b.overrun == 10 and b.reserved == 0


def test_token_bucket():
    bucket = TokenBucket.per_minute(60, now=0.0)
    assert bucket.wait(60, 0.0) == 0 and bucket.wait(61, 0.0) == float("inf")
    bucket.consume(60, 0.0)
    assert bucket.wait(1, 0.0) == pytest.approx(1.0)
    assert bucket.wait(1, 0.5) == pytest.approx(0.5)
    bucket.give_back(30, 0.5)
    assert bucket.available(0.5) == pytest.approx(30.5)
    bucket.give_back(100, 1.0)
    assert bucket.available(1.0) == 60
    with pytest.raises(ValueError, match="positive"):
        TokenBucket.per_minute(0, 0.0)


# ---- through the gateway ----------------------------------------------------------------------------


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def gateway(concurrency: int, warnings: list | None = None) -> tuple[Gateway, Clock]:
    clock = Clock()
    provider = ScriptedProvider(ScriptedOptions(), name="p")
    provider.close()
    slot = ProviderSlot(name="p", kind="scripted", model="m", models=(), concurrency=concurrency, timeout=60.0, provider=provider)
    g = Gateway(GatewaySettings(), [slot], clock=clock, wall=lambda: 0.0,
                on_warning=lambda account, figures: (warnings if warnings is not None else []).append((account.name, figures)))  # fmt: skip
    return g, clock


def job(key: int, principal: int, max_tokens: int, bound: int = 20) -> Job:
    return Job(key, principal, "p", ChatRequest(prompt="x", model="m", max_tokens=max_tokens), bound, 0.0, 1e9)


@settings(max_examples=150, deadline=None)
@given(
    budget=st.integers(0, 3000),
    period_budget=st.one_of(st.none(), st.integers(0, 2000)),
    concurrency=st.integers(1, 16),
    sizes=st.lists(st.integers(1, 400), min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_concurrent_bursts_never_overrun(budget, period_budget, concurrency, sizes, seed):
    """Whatever the sizes, the concurrency and the order results come back in, usage plus
    reservations never exceed the budget, and every request ends (answered or refused)."""
    rng = random.Random(seed)
    g, clock = gateway(concurrency)
    account = g.account(1, name="a", agent_id=1, limits=AgentLimits(budget=budget, period_budget=period_budget))
    refused, answered, running = 0, 0, []
    g.on_failed = lambda j, e: None
    for key, size in enumerate(sizes, 1):
        try:
            g.submit(job(key, 1, size))
        except LlmQuotaExceeded:
            refused += 1
    running.extend(g.pump())
    while running:
        done = running.pop(rng.randrange(len(running)))
        actual = rng.randint(0, done.request.max_tokens)  # at most what it asked for
        prompt = rng.randint(0, done.prompt_bound)
        verdict = g.finished(done, ChatResponse(content="", model="m", prompt_tokens=prompt, completion_tokens=actual), False)
        answered += verdict.kind == "ok"
        b = account.budget
        assert b.used + b.reserved <= budget
        if period_budget is not None:
            assert b.period_used + b.period_reserved <= period_budget
        clock.now += 0.01
        running.extend(g.pump())
    assert account.budget.used <= budget and account.budget.reserved == 0 and account.budget.overrun == 0
    assert account.queued == 0 and account.in_flight == 0
    assert answered + refused + account.failed == len(sizes)  # account.failed: refused at dispatch


def test_a_request_that_cannot_fit_is_refused_before_queueing_with_the_figures():
    g, _ = gateway(4)
    g.account(1, name="a", agent_id=1, limits=AgentLimits(budget=100))
    with pytest.raises(LlmQuotaExceeded) as err:
        g.submit(job(1, 1, 200))
    assert err.value.code == "llm.quota_exceeded"
    assert err.value.details == {"kind": "lifetime", "budget": 100, "used": 0, "reserved": 0, "remaining": 100, "needed": 220}
    assert "ask for fewer max_tokens" in err.value.message


def test_waiting_requests_go_or_are_refused_once_reservations_settle():
    failures = []
    g, _ = gateway(8)
    g.on_failed = lambda j, e: failures.append((j.key, e.code))
    g.account(1, name="a", agent_id=1, limits=AgentLimits(budget=250))
    for key in (1, 2, 3):
        g.submit(job(key, 1, 100))  # 120 each: two fit at once
    first = g.pump()
    assert [j.key for j in first] == [1, 2]
    g.finished(first[0], ChatResponse(content="", model="m", prompt_tokens=5, completion_tokens=5), False)  # 10 billed
    assert [j.key for j in g.pump()] == [3]  # 10 used + 120 + 120 reserved = 250: fits
    g2, _ = gateway(8)
    g2.on_failed = lambda j, e: failures.append((j.key, e.code))
    g2.account(1, name="a", agent_id=1, limits=AgentLimits(budget=250))
    for key in (1, 2, 3):
        g2.submit(job(key, 1, 100))
    a, b = g2.pump()
    g2.finished(a, ChatResponse(content="", model="m", prompt_tokens=20, completion_tokens=100), False)  # 120 billed
    assert g2.pump() == [] and failures == []  # 120 used + 120 reserved + 120 > 250: it waits (b may fail)
    assert b.state is JobState.RUNNING
    g2.finished(b, ChatResponse(content="", model="m", prompt_tokens=20, completion_tokens=100), False)
    assert g2.pump() == [] and failures == [(3, "llm.quota_exceeded")]  # 240 used + 120 > 250: never


def test_a_lowered_budget_applies_to_queued_requests():
    failures = []
    g, _ = gateway(1)
    g.on_failed = lambda j, e: failures.append(j.key)
    g.account(1, name="a", agent_id=1, limits=AgentLimits(budget=10_000))
    for key in (1, 2):
        g.submit(job(key, 1, 100))
    (running,) = g.pump()
    g.account(1, name="a", agent_id=1, limits=AgentLimits(budget=150))
    g.finished(running, ChatResponse(content="", model="m", prompt_tokens=10, completion_tokens=100), False)
    assert g.pump() == [] and failures == [2]


def test_warning_callback_at_80_percent():
    warnings: list = []
    g, _ = gateway(1, warnings)
    g.account(1, name="a", agent_id=1, limits=AgentLimits(budget=1000))
    for key in range(1, 5):
        g.submit(job(key, 1, 200))
        (running,) = g.pump()
        g.finished(running, ChatResponse(content="", model="m", prompt_tokens=10, completion_tokens=190), False)
    assert warnings == [("a", {"budget_kind": "lifetime", "used": 800, "budget": 1000})]


def test_missing_usage_bills_the_reservation():
    g, _ = gateway(1)
    account = g.account(1, name="a", agent_id=1, limits=AgentLimits(budget=1000))
    g.submit(job(1, 1, 100, bound=30))
    (running,) = g.pump()
    verdict = g.finished(running, ChatResponse(content="", model="m"), False)
    assert verdict.billed == 130 and account.budget.used == 130
