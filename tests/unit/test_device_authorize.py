"""clove.kernel.services.devices.broker: the checks before an operation leaves the kernel (grant ops, the
driver's own check, interlocks, token-bucket rates), the operator bypass, and the call, subscribe
and recv paths up to the host socket, against a fake kernel (no processes, no sockets)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from clove.config.devices import parse_devices
from clove.drivers.grants import DeviceGrant, TokenBucket
from clove.errors import (
    CloveError,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
)
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.devices.broker import DeviceBroker
from clove.kernel.services.devices.runtime import DeviceRuntime
from clove.kernel.services.devices.subscriptions import ReadWant
from clove.testing.loopback import LoopbackGrant, WriteArgs


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in [t for t in self.timers if t.when <= self.now and not t.cancelled]:
            self.timers.remove(timer)
            timer.callback()


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Reply:
    def __init__(self) -> None:
        self.deferred = Deferred()
        self.outcomes: list[tuple[Any, CloveError | None]] = []
        self.deferred.bind(lambda result, error: self.outcomes.append((result, error)))


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeGrant(DeviceGrant):
    """Two buckets: calls (from max_rate_hz) and items written (``count``)."""

    items_per_second: float = 8.0

    def rates(self) -> dict[str, float]:
        return {**DeviceGrant.rates(self), "items": self.items_per_second}

    def cost(self, op: str, args: Any) -> dict[str, float]:
        extra = {"items": float(args.count), "unrated": 5.0, "free": 0.0} if op == "write" else {}
        return {**DeviceGrant.cost(self, op, args), **extra}


@dataclass(frozen=True, slots=True, kw_only=True)
class NarrowGrant(DeviceGrant):
    """Lets any count through the check, then forwards at most one."""

    def narrow(self, op: str, args: Any) -> Any:
        return dataclasses.replace(args, count=1) if op == "write" and args.count > 1 else args


class FakeJournal:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def append(self, *args: Any, **kwargs: Any) -> None:
        self.records.append((args, kwargs))


class FakeEvents:
    def __init__(self) -> None:
        self.emitted: list[tuple[Any, ...]] = []

    def emit(self, *args: Any) -> None:
        self.emitted.append(args)


def make_agent(agent_id: int = 1, **grants: DeviceGrant) -> Any:
    return SimpleNamespace(id=agent_id, name=f"agent{agent_id}", spec=SimpleNamespace(devices=grants))


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


@pytest.fixture
def broker(tmp_path: Path, loop: FakeLoop) -> DeviceBroker:
    specs, _registry = parse_devices(
        "test.toml", {"devices": {"loop": {"driver": "loopback"}, "aux": {"driver": "loopback"}}}
    )
    kernel: Any = SimpleNamespace(
        loop=loop,
        backend=None,
        state_dir=tmp_path,
        config=SimpleNamespace(devices=specs, logs=SimpleNamespace(max_bytes=1 << 20)),
        journal=FakeJournal(),
        events=FakeEvents(),
    )
    return DeviceBroker(kernel)


@pytest.fixture
def runtime(broker: DeviceBroker) -> DeviceRuntime:
    return broker.devices["loop"]


def ready(broker: DeviceBroker, runtime: DeviceRuntime) -> list[dict[str, Any]]:
    """Pretend the host is up; what the broker would send it is collected instead."""
    sent: list[dict[str, Any]] = []
    runtime.state = "ready"
    runtime.host = SimpleNamespace(pid=4242)  # type: ignore[assignment]

    def capture(runtime: DeviceRuntime, message: dict[str, Any], extra: bytes | None = None) -> None:
        sent.append(message if extra is None else {**message, "caller": msgpack.unpackb(extra)})

    broker.send = capture  # type: ignore[method-assign]
    return sent


# -- the broker from a fake kernel ---------------------------------------------------------------


def test_the_broker_holds_one_runtime_per_device_and_starts_nothing(
    broker: DeviceBroker, tmp_path: Path
) -> None:
    assert list(broker.devices) == ["loop", "aux"]
    assert broker.devices["loop"].state == "stopped"
    assert broker.endpoint == f"ipc://{tmp_path / 'devices' / 'hosts.sock'}"
    assert not (tmp_path / "devices").exists()
    assert broker.held() == {"device_subscriptions": 0, "device_calls_in_flight": 0, "device_queue_bytes": 0}


def test_unknown_device_is_not_found(broker: DeviceBroker) -> None:
    with pytest.raises(NotFound) as info:
        broker.runtime("nope")
    assert info.value.details == {"device": "nope", "devices": ["aux", "loop"]}
    with pytest.raises(NotFound):
        broker.grant_of(None, "nope")
    with pytest.raises(NotFound):
        broker.call(make_agent(loop=LoopbackGrant(ops=("write",))), "nope", "write", {"tag": "t"}, Deferred())
    with pytest.raises(NotFound):
        broker.subscribe(None, 1, "nope", None, None)


# -- authorize -----------------------------------------------------------------------------------


def test_a_granted_operation_returns_the_parsed_arguments(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("t",)))
    parsed = broker.authorize(agent, runtime, "write", {"tag": "t", "count": 3})
    assert parsed == WriteArgs(tag="t", count=3)
    assert runtime.counters["denied"] == 0
    assert runtime.buckets == {}  # no max_rate_hz, no buckets


def test_an_operation_not_granted_is_denied_with_details(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("recv",), tags=("*",)))
    with pytest.raises(PermissionDenied) as info:
        broker.authorize(agent, runtime, "write", {"tag": "t"})
    assert info.value.message == "operation 'write' on device 'loop' is not granted"
    assert info.value.details == {"device": "loop", "op": "write", "granted": ["recv"]}
    assert runtime.counters["denied"] == 1


def test_the_driver_grant_check_denies_with_details(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("t",)))
    with pytest.raises(PermissionDenied) as info:
        broker.authorize(agent, runtime, "write", {"tag": "secret"})
    assert info.value.message == "tag 'secret' is not granted"
    assert info.value.details == {"tag": "secret", "granted": ["t"], "device": "loop", "op": "write"}
    assert runtime.counters["denied"] == 1


def test_an_agent_without_a_grant_on_the_device_is_denied(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    agent = make_agent(aux=LoopbackGrant(ops=("write",), tags=("*",)))
    with pytest.raises(PermissionDenied) as info:
        broker.authorize(agent, runtime, "write", {"tag": "t"})
    assert info.value.details == {"device": "loop"}
    assert broker.grant_of(agent, "aux") is agent.spec.devices["aux"]


def test_an_unknown_operation_is_invalid_arguments(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    for agent in (None, make_agent(), make_agent(loop=LoopbackGrant(ops=("write",)))):
        with pytest.raises(InvalidArguments) as info:
            broker.authorize(agent, runtime, "fly", {})
        assert info.value.details == {"op": "fly"}
        assert (
            info.value.message
            == "device loop has no operation 'fly' (it has: write, whoami, crash, hang, leak, break_stream)"
        )
    assert runtime.counters["denied"] == 0


def test_the_stream_op_is_not_callable(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    with pytest.raises(InvalidArguments, match="'recv' is loop's stream: use device.recv"):
        broker.authorize(make_agent(loop=LoopbackGrant(ops=("recv",))), runtime, "recv", {})


def test_bad_arguments_are_invalid_arguments(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("*",)))
    with pytest.raises(InvalidArguments) as info:
        broker.authorize(agent, runtime, "write", {"count": 2})
    assert info.value.details == {"op": "write", "argument": "tag"}
    with pytest.raises(InvalidArguments, match="count: must be 1..100000"):
        broker.authorize(agent, runtime, "write", {"tag": "t", "count": 0})


def test_the_operator_bypasses_grants_and_rates(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    for _ in range(50):
        assert broker.authorize(None, runtime, "write", {"tag": "anything"}) == WriteArgs(tag="anything")
    assert broker.authorize(None, runtime, "hang", {"seconds": 1}).seconds == 1.0
    assert broker.grant_of(None, "loop") is None
    assert runtime.buckets == {}
    assert runtime.counters["denied"] == 0
    with pytest.raises(InvalidArguments):  # but not argument checks
        broker.authorize(None, runtime, "write", {})


def test_an_engaged_interlock_restricts_agents_and_operators(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write", "crash"), tags=("*",)))
    runtime.restrictions["estop"] = frozenset({"crash"})
    with pytest.raises(PermissionDenied) as info:
        broker.authorize(agent, runtime, "write", {"tag": "t"})
    assert info.value.details == {"device": "loop", "op": "write", "interlock": "estop"}
    assert "interlock 'estop' is engaged" in info.value.message
    assert runtime.counters["denied"] == 1
    broker.authorize(agent, runtime, "crash", {})  # allowed by the interlock
    with pytest.raises(PermissionDenied, match="interlock 'estop' is engaged"):
        broker.authorize(None, runtime, "write", {"tag": "t"})  # an operator too: release it first
    runtime.restrictions.clear()
    broker.authorize(None, runtime, "write", {"tag": "t"})
    broker.authorize(agent, runtime, "write", {"tag": "t"})


# -- rates ---------------------------------------------------------------------------------------


def test_max_rate_is_enforced_with_retry_after(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("*",), max_rate_hz=1))
    broker.authorize(agent, runtime, "write", {"tag": "t"})
    with pytest.raises(QuotaExceeded) as info:
        broker.authorize(agent, runtime, "write", {"tag": "t"})
    details = info.value.details
    assert info.value.code == "quota.exceeded"
    assert {k: details[k] for k in ("device", "op", "rate", "limit_per_s")} == {
        "device": "loop",
        "op": "write",
        "rate": "calls",
        "limit_per_s": 1.0,
    }
    assert 0 < details["retry_after_s"] <= 1.0
    assert "rate 'calls' of 1/s is spent" in info.value.message
    assert runtime.counters["denied"] == 1
    assert set(runtime.buckets) == {(1, "calls")}


def test_rates_refill_on_the_bucket_clock(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    clock = FakeClock()
    runtime.buckets[(1, "calls")] = TokenBucket(8.0, clock=clock)  # burst 1
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("*",), max_rate_hz=8))
    broker.authorize(agent, runtime, "write", {"tag": "t"})
    with pytest.raises(QuotaExceeded) as info:
        broker.authorize(agent, runtime, "write", {"tag": "t"})
    assert info.value.details["retry_after_s"] == 0.125
    assert "retry in 125 ms" in info.value.message
    clock.now += 0.125
    broker.authorize(agent, runtime, "write", {"tag": "t"})


def test_buckets_are_per_agent(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    grant = LoopbackGrant(ops=("write",), tags=("*",), max_rate_hz=1)
    one, two = make_agent(1, loop=grant), make_agent(2, loop=grant)
    broker.authorize(one, runtime, "write", {"tag": "t"})
    broker.authorize(two, runtime, "write", {"tag": "t"})
    with pytest.raises(QuotaExceeded):
        broker.authorize(one, runtime, "write", {"tag": "t"})
    assert set(runtime.buckets) == {(1, "calls"), (2, "calls")}


def test_a_denied_call_takes_no_tokens(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    clock = FakeClock()
    runtime.buckets[(1, "calls")] = TokenBucket(8.0, clock=clock)
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("t",), max_rate_hz=8))
    with pytest.raises(PermissionDenied):
        broker.authorize(agent, runtime, "write", {"tag": "nope"})
    assert runtime.buckets[(1, "calls")].available() == 1.0


def test_a_short_bucket_takes_nothing_from_the_others(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    clock = FakeClock()
    calls = runtime.buckets[(1, "calls")] = TokenBucket(80.0, clock=clock)  # burst 8
    items = runtime.buckets[(1, "items")] = TokenBucket(8.0, burst=4.0, clock=clock)
    agent = make_agent(loop=SizeGrant(ops=("write",), max_rate_hz=80))
    broker.authorize(agent, runtime, "write", {"tag": "t", "count": 4})
    assert (calls.available(), items.available()) == (7.0, 0.0)
    with pytest.raises(QuotaExceeded) as info:
        broker.authorize(agent, runtime, "write", {"tag": "t", "count": 1})
    assert info.value.details["rate"] == "items"
    assert info.value.details["retry_after_s"] == 0.125
    assert (calls.available(), items.available()) == (7.0, 0.0)  # the calls bucket was not charged
    assert set(runtime.buckets) == {(1, "calls"), (1, "items")}  # "unrated" and "free" make none


def test_an_oversize_cost_is_admitted_when_full_then_owed(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    clock = FakeClock()
    items = runtime.buckets[(1, "items")] = TokenBucket(8.0, burst=4.0, clock=clock)
    agent = make_agent(loop=SizeGrant(ops=("write",)))
    broker.authorize(agent, runtime, "write", {"tag": "t", "count": 10})
    assert items.available() == -6.0
    with pytest.raises(QuotaExceeded) as info:
        broker.authorize(agent, runtime, "write", {"tag": "t", "count": 1})
    assert info.value.details["retry_after_s"] == 0.875  # (1 - -6) / 8
    clock.now += 0.875
    broker.authorize(agent, runtime, "write", {"tag": "t", "count": 1})


def test_forget_drops_a_principal_s_buckets_and_subscriptions(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    grant = LoopbackGrant(ops=("write", "recv"), tags=("*",), max_rate_hz=1)
    for agent_id in (1, 2):
        broker.authorize(make_agent(agent_id, loop=grant), runtime, "write", {"tag": "t"})
        broker.subscribe(make_agent(agent_id, loop=grant), agent_id, "loop", None, None)
    broker.forget(1)
    assert set(runtime.buckets) == {(2, "calls")}
    assert set(runtime.subs) == {2}
    broker.authorize(make_agent(1, loop=grant), runtime, "write", {"tag": "t"})  # a fresh bucket


# -- the call path -------------------------------------------------------------------------------


def test_a_refused_call_never_reaches_the_host(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    sent = ready(broker, runtime)
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("t",)))
    with pytest.raises(PermissionDenied):
        broker.call(agent, "loop", "write", {"tag": "x"}, Deferred())
    assert sent == []
    assert runtime.counters["calls"] == 0
    assert runtime.held() == 0


def test_a_call_on_a_device_that_is_not_ready_is_unavailable(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("t",)))
    with pytest.raises(DeviceUnavailable) as info:
        broker.call(agent, "loop", "write", {"tag": "t"}, Deferred())
    assert info.value.details == {"device": "loop", "state": "stopped"}


def test_a_granted_call_is_forwarded_and_answered(
    broker: DeviceBroker, runtime: DeviceRuntime, loop: FakeLoop
) -> None:
    sent = ready(broker, runtime)
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("t",)))
    reply = Reply()
    broker.call(agent, "loop", "write", {"tag": "t", "data": [1, 2]}, reply.deferred)
    assert sent == [{"t": "call", "id": 1, "op": "write", "args": {"tag": "t", "data": [1, 2]}}]
    assert broker.held()["device_calls_in_flight"] == 1
    runtime.on_message({"t": "reply", "id": 1, "result": {"written": 1}})
    assert reply.outcomes == [({"success": True, "result": {"written": 1}}, None)]
    assert runtime.held() == 0
    assert all(t.cancelled for t in loop.timers)


def test_a_grant_may_narrow_what_is_forwarded(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    sent = ready(broker, runtime)
    agent = make_agent(loop=NarrowGrant(ops=("write",)))
    broker.call(agent, "loop", "write", {"tag": "t", "count": 50}, Deferred())
    broker.call(agent, "loop", "write", {"tag": "t"}, Deferred())
    assert sent[0]["args"] == {"tag": "t", "data": None, "count": 1, "to": None}
    assert sent[1]["args"] == {"tag": "t"}  # not narrowed: forwarded as sent


def test_an_unanswered_call_times_out(broker: DeviceBroker, runtime: DeviceRuntime, loop: FakeLoop) -> None:
    ready(broker, runtime)
    reply = Reply()
    broker.call(None, "loop", "write", {"tag": "t"}, reply.deferred)
    loop.advance(runtime.spec.call_timeout)
    ((result, error),) = reply.outcomes
    assert result is None
    assert isinstance(error, DeviceTimeout)
    assert error.details == {"device": "loop", "op": "write"}
    runtime.on_message({"t": "reply", "id": 1, "result": "late"})  # too late: ignored
    assert len(reply.outcomes) == 1
    assert runtime.counters["errors"] == 1


def test_a_host_error_reply_is_rejected_with_the_device_named(
    broker: DeviceBroker, runtime: DeviceRuntime
) -> None:
    ready(broker, runtime)
    reply = Reply()
    broker.call(None, "loop", "write", {"tag": "t"}, reply.deferred)
    runtime.on_message(
        {"t": "reply", "id": 1, "error": {"code": "device.busy", "message": "queue full", "details": {}}}
    )
    ((_, error),) = reply.outcomes
    assert error is not None
    assert (error.code, error.message, error.details) == ("device.busy", "queue full", {"device": "loop"})


# -- subscribe and recv --------------------------------------------------------------------------


def test_subscribe_needs_the_stream_op(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("*",)))
    with pytest.raises(PermissionDenied) as info:
        broker.subscribe(agent, 1, "loop", None, None)
    assert info.value.details == {"device": "loop", "op": "recv"}
    assert runtime.counters["denied"] == 1
    assert runtime.subs == {}


@pytest.mark.parametrize("queue", [0, -1, 1_000_001])
def test_subscribe_queue_bounds(broker: DeviceBroker, queue: int) -> None:
    with pytest.raises(InvalidArguments, match=r"queue must be 1..1000000"):
        broker.subscribe(None, 1, "loop", None, queue)


def test_subscribe_filters_the_driver_does_not_understand(broker: DeviceBroker) -> None:
    with pytest.raises(InvalidArguments, match="takes no receive filters"):
        broker.subscribe(None, 1, "loop", [{"tag": "t"}], None)


def test_subscribe_sizes_the_queue(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    assert broker.subscribe(None, 1, "loop", None, None).limit == runtime.spec.queue == 1024
    assert broker.subscribe(None, 2, "loop", None, 10).limit == 10
    assert broker.held()["device_subscriptions"] == 2


def test_resubscribing_keeps_what_is_queued(broker: DeviceBroker, runtime: DeviceRuntime) -> None:
    sub = broker.subscribe(None, 1, "loop", None, 2)
    runtime.on_message({"t": "data", "items": [{"tag": "a"}, {"tag": "b"}, {"tag": "c"}]})
    assert sub.dropped == 1
    again = broker.subscribe(None, 1, "loop", None, 5)
    assert again is not sub
    assert (list(again.items), again.dropped) == ([{"tag": "b"}, {"tag": "c"}], 1)
    assert runtime.unsubscribe(1) is again
    assert runtime.counters["dropped"] == 1


def test_recv_subscribes_and_delivers_only_what_the_grant_admits(
    broker: DeviceBroker, runtime: DeviceRuntime, loop: FakeLoop
) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("recv",), tags=("mine",)))
    reply = Reply()
    broker.recv(agent, 1, "loop", ReadWant(), 5.0, reply.deferred)
    assert 1 in runtime.subs
    assert reply.outcomes == []
    runtime.on_message({"t": "data", "items": [{"tag": "other", "seq": 1}]})
    assert reply.outcomes == []
    runtime.on_message({"t": "data", "items": [{"tag": "mine", "seq": 2}, {"tag": "other", "seq": 3}]})
    assert reply.outcomes == [
        ({"success": True, "items": [{"tag": "mine", "seq": 2}], "count": 1, "dropped": 0}, None)
    ]
    assert runtime.counters["items_in"] == 3


def test_recv_without_the_stream_op_is_denied(broker: DeviceBroker) -> None:
    agent = make_agent(loop=LoopbackGrant(ops=("write",), tags=("*",)))
    with pytest.raises(PermissionDenied):
        broker.recv(agent, 1, "loop", ReadWant(), 1.0, Deferred())


def test_views_show_agents_only_their_devices_and_ops(broker: DeviceBroker) -> None:
    agent = make_agent(aux=LoopbackGrant(ops=("recv",)))
    (view,) = broker.views(agent)
    assert (view["name"], view["ops"], view["state"], view["stream_op"]) == (
        "aux",
        ["recv"],
        "stopped",
        "recv",
    )
    views = broker.views(None)
    assert [v["name"] for v in views] == ["loop", "aux"]
    assert views[0]["ops"] == ["write", "whoami", "crash", "hang", "leak", "break_stream", "recv"]
