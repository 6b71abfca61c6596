"""The fair share's arithmetic: deficit round robin over measured kernel time."""

from __future__ import annotations

import zmq

from clove.kernel.core.fairshare import MAX_WEIGHT, MIN_WEIGHT, QUANTUM_NS, Flow, Flows, weight_for
from clove.ratelimit import TokenBucket


def serve(flows: dict[str, Flow], cost_ns: dict[str, int], turns: int) -> dict[str, int]:
    """Backlogged flows served round robin the way the dispatcher does; kernel time each got."""
    for _ in range(turns):
        for name, flow in flows.items():
            if not flow.start_turn():
                continue
            while flow.credit_ns > 0:
                flow.charge(cost_ns[name])
    return {name: flow.used_ns for name, flow in flows.items()}


def test_cheap_and_expensive_callers_get_equal_time_not_equal_calls() -> None:
    flows = {"noop": Flow(weight=1.0), "big_writes": Flow(weight=1.0)}
    used = serve(flows, {"noop": 30_000, "big_writes": 5_000_000}, turns=2000)
    assert 0.9 < used["noop"] / used["big_writes"] < 1.1
    assert flows["noop"].calls > 100 * flows["big_writes"].calls


def test_time_is_shared_by_weight() -> None:
    flows = {"half": Flow(weight=0.5), "one": Flow(weight=1.0), "two": Flow(weight=2.0)}
    used = serve(flows, {"half": 40_000, "one": 40_000, "two": 40_000}, turns=5000)
    assert 1.9 < used["one"] / used["half"] < 2.1
    assert 1.9 < used["two"] / used["one"] < 2.1


def test_an_idle_flow_banks_no_credit_but_keeps_its_debt() -> None:
    flow = Flow(weight=1.0)
    flow.start_turn()
    flow.idle()
    assert flow.credit_ns == 0
    flow.start_turn()
    flow.charge(10 * QUANTUM_NS)
    flow.idle()
    assert flow.credit_ns < 0
    assert not flow.start_turn(), "a debt sits out turns until repaid"


def test_credit_is_capped() -> None:
    flow = Flow(weight=1.0)
    for _ in range(100):
        flow.start_turn()
    assert flow.credit_ns <= 2 * QUANTUM_NS


def test_weights_follow_the_cpu_share_unless_configured() -> None:
    assert weight_for(50_000, None) == 0.5
    assert weight_for(None, None) == 1.0  # no quota: one core
    assert weight_for(50_000, 3.0) == 3.0
    assert weight_for(100, None) == MIN_WEIGHT and weight_for(10_000_000, None) == MAX_WEIGHT


def test_the_rate_backstop_says_how_long_to_wait() -> None:
    now = [0.0]
    flow = Flow(weight=1.0, bucket=TokenBucket(100.0, 2, clock=lambda: now[0]))
    flow.start_turn()
    assert flow.rate_wait() == 0.0
    flow.charge(1)
    flow.charge(1)
    assert 0.005 < flow.rate_wait() <= 0.011
    now[0] += 0.02
    assert flow.rate_wait() == 0.0


def test_the_one_token_bucket_serves_both_ways_of_spending() -> None:
    now = [0.0]
    asks = TokenBucket(10.0, 2, clock=lambda: now[0])
    assert asks.take(2) and not asks.take(1)
    assert asks.retry_after(1) == 0.1
    assert asks.take(5) is False  # not full: a large cost waits
    now[0] += 1.0
    assert asks.take(5) and asks.available() == -3.0  # full: admitted, then owed
    plans = TokenBucket.per_minute(60, now=0.0)
    assert plans.wait(61, 0.0) == float("inf") and plans.wait(60, 0.0) == 0.0
    plans.consume(60, 0.0)
    assert plans.wait(1, 0.0) == 1.0
    plans.give_back(100, 0.5)
    assert plans.available(0.5) == 60.0
    never = TokenBucket(0.0, 1, clock=lambda: now[0])
    assert never.take(1) and never.retry_after(1) == float("inf")


def test_a_turn_is_charged_once_for_all_its_calls() -> None:
    now = [0.0]
    flow = Flow(weight=1.0, bucket=TokenBucket(100.0, 5, clock=lambda: now[0]))
    flow.start_turn()
    assert flow.allowance(32) == 5 and flow.allowance(3) == 3 and Flow(weight=1.0).allowance(32) == 32
    flow.charge(150_000, calls=5)
    assert (flow.calls, flow.used_ns, flow.credit_ns) == (5, 150_000, 50_000)
    assert flow.allowance(32) == 0 and flow.rate_wait() > 0, "the rate's tokens went with the calls"


def test_flows_are_built_once_per_socket_and_go_with_it() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    first, second = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    built: list[object] = []
    flows = Flows(lambda sock: built.append(sock) or Flow(weight=1.0, label={"n": len(built)}))
    assert flows.of(first) is flows.of(first) and flows.of(second) is not flows.of(first)
    assert flows.of(first) is flows.of(first) and built == [first, second]
    second.close()
    assert [f["n"] for f in flows.figures()] == [1]
    first.close()
