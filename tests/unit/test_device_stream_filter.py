"""clove.kernel.services.devices.runtime: the stream filter the kernel sends a device's host (the
union of what its current listeners' grants admit), when it changes, and how a subscription waits
for the host to acknowledge a filter that admits it; against a fake kernel (no processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clove.config.devices import parse_devices
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.devices.broker import DeviceBroker
from clove.kernel.services.devices.runtime import DeviceRuntime
from clove.kernel.services.devices.subscriptions import ReadWant, Subscription
from clove.testing.loopback import LoopbackGrant
from clove_driver_can import CanGrant

EXT = 0x1FFFFFFF
NAV = CanGrant(ops=("recv",), recv_ids=("0x180-0x18F",))
DIAG = CanGrant(ops=("recv",), recv_ids=("0x7DF", "0x100-0x10F"))
SENDER = CanGrant(ops=("send", "recv"), send_ids=("0x100",))  # may receive, but no recv_ids


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


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def append(self, *args: Any, **kwargs: Any) -> None:
        self.records.append((args, kwargs))

    def emit(self, *args: Any) -> None:
        self.records.append(args)


def make_agent(agent_id: int, **grants: Any) -> Any:
    return SimpleNamespace(id=agent_id, name=f"agent{agent_id}", spec=SimpleNamespace(devices=grants))


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


@pytest.fixture
def broker(tmp_path: Path, loop: FakeLoop) -> DeviceBroker:
    specs, _registry = parse_devices(
        "test.toml",
        {"devices": {"bus": {"driver": "can", "interface": "virtual", "channel": "c"}, "loop": {"driver": "loopback"}}},
    )
    kernel: Any = SimpleNamespace(
        loop=loop,
        backend=None,
        state_dir=tmp_path,
        config=SimpleNamespace(devices=specs, logs=SimpleNamespace(max_bytes=1 << 20)),
        journal=Recorder(),
        events=Recorder(),
    )
    return DeviceBroker(kernel)


@pytest.fixture
def bus(broker: DeviceBroker) -> DeviceRuntime:
    return broker.devices["bus"]


def host_up(broker: DeviceBroker, runtime: DeviceRuntime) -> list[dict[str, Any]]:
    """Bring the runtime's (pretend) host up; what the broker sends it is collected."""
    sent: list[dict[str, Any]] = []
    runtime.host = SimpleNamespace(pid=4242)  # type: ignore[assignment]
    broker.send = lambda _runtime, message: sent.append(message)  # type: ignore[method-assign]
    runtime.on_message({"t": "opened", "status": {}})
    return sent


def filters(sent: list[dict[str, Any]]) -> list[Any]:
    return [m["spec"] for m in sent if m["t"] == "filter"]


def ack(runtime: DeviceRuntime, sent: list[dict[str, Any]], **extra: Any) -> None:
    runtime.on_message({"t": "filtered", "id": [m for m in sent if m["t"] == "filter"][-1]["id"], **extra})


def subscribe(broker: DeviceBroker, agent_id: int, grant: CanGrant | None, answered: list[Subscription]) -> Subscription:
    agent = make_agent(agent_id, bus=grant) if grant is not None else None
    return broker.subscribe(agent, agent_id, "bus", None, None, applied=answered.append)


def table(can_id: int, can_mask: int) -> dict[str, int]:
    return {"can_id": can_id, "can_mask": can_mask}


def test_a_host_that_comes_up_with_nobody_listening_is_told_to_take_nothing(
    broker: DeviceBroker, bus: DeviceRuntime
) -> None:
    sent = host_up(broker, bus)
    assert sent == [{"t": "filter", "id": 1, "spec": []}]


def test_subscribers_widen_the_filter_and_are_answered_once_the_host_acknowledges(
    broker: DeviceBroker, bus: DeviceRuntime
) -> None:
    sent = host_up(broker, bus)
    ack(bus, sent)
    answered: list[Subscription] = []
    nav = subscribe(broker, 1, NAV, answered)
    assert filters(sent)[-1] == [table(0x180, 0x1FFFFFF0)]
    assert answered == []  # the host may still drop the agent's frames
    ack(bus, sent)
    assert answered == [nav]
    diag = subscribe(broker, 2, DIAG, answered)
    assert filters(sent)[-1] == [table(0x100, 0x1FFFFF70), table(0x7DF, EXT)]  # 0x100-0x10F joins 0x180-0x18F
    ack(bus, sent)
    assert answered == [nav, diag]
    again = subscribe(broker, 1, NAV, answered)  # new own filters, same grant: nothing to wait for
    assert answered == [nav, diag, again]
    assert len(filters(sent)) == 3


def test_a_subscriber_covered_by_a_filter_in_flight_waits_for_it_too(
    broker: DeviceBroker, bus: DeviceRuntime
) -> None:
    sent = host_up(broker, bus)
    answered: list[Subscription] = []
    one = subscribe(broker, 1, NAV, answered)
    two = subscribe(broker, 2, NAV, answered)  # the same filter, not yet acknowledged
    assert answered == []
    ack(bus, sent)
    assert answered == [one, two]


def test_unsubscribe_and_exit_narrow_without_waiting(broker: DeviceBroker, bus: DeviceRuntime) -> None:
    sent = host_up(broker, bus)
    answered: list[Subscription] = []
    subscribe(broker, 1, NAV, answered)
    subscribe(broker, 2, DIAG, answered)
    ack(bus, sent)
    bus.unsubscribe(2)
    assert filters(sent)[-1] == [table(0x180, 0x1FFFFFF0)]
    broker.forget(1)  # the agent exited
    assert filters(sent)[-1] == []
    assert bus.subs == {}


def test_an_operator_or_a_watcher_gets_every_frame(broker: DeviceBroker, bus: DeviceRuntime) -> None:
    sent = host_up(broker, bus)
    answered: list[Subscription] = []
    subscribe(broker, 1, NAV, answered)
    op = subscribe(broker, 99, None, answered)
    assert filters(sent)[-1] is None
    ack(bus, sent)
    assert op in answered
    bus.unsubscribe(99)
    assert filters(sent)[-1] == [table(0x180, 0x1FFFFFF0)]
    bus.watchers.append(lambda items: None)  # an interlock trigger sees every item
    bus.refilter()
    assert filters(sent)[-1] is None


def test_a_grant_without_recv_ids_adds_nothing(broker: DeviceBroker, bus: DeviceRuntime) -> None:
    sent = host_up(broker, bus)
    ack(bus, sent)
    answered: list[Subscription] = []
    subscribe(broker, 1, SENDER, answered)
    assert filters(sent) == [[]]  # still nothing: error frames are never id-filtered
    assert len(answered) == 1


def test_nothing_waits_while_no_host_is_up(broker: DeviceBroker, bus: DeviceRuntime) -> None:
    sent: list[dict[str, Any]] = []
    broker.send = lambda _runtime, message: sent.append(message)  # type: ignore[method-assign]
    answered: list[Subscription] = []
    nav = subscribe(broker, 1, NAV, answered)  # the device is stopped: the next host opens unfiltered
    assert answered == [nav]
    assert sent == []
    sent = host_up(broker, bus)
    assert filters(sent) == [[table(0x180, 0x1FFFFFF0)]]  # sent once the host is up


def test_a_host_going_down_releases_the_waiters_and_its_successor_starts_over(
    broker: DeviceBroker, bus: DeviceRuntime, loop: FakeLoop
) -> None:
    sent = host_up(broker, bus)
    ack(bus, sent)
    answered: list[Subscription] = []
    subscribe(broker, 1, NAV, answered)
    bus._went_down("signal 9")
    assert len(answered) == 1
    bus.host = None
    sent = host_up(broker, bus)
    assert filters(sent) == [[table(0x180, 0x1FFFFFF0)]]


def test_a_host_that_never_acknowledges_releases_the_waiters_at_call_timeout(
    broker: DeviceBroker, bus: DeviceRuntime, loop: FakeLoop
) -> None:
    sent = host_up(broker, bus)
    answered: list[Subscription] = []
    subscribe(broker, 1, NAV, answered)
    loop.advance(bus.spec.call_timeout - 0.1)
    assert answered == []
    loop.advance(0.2)
    assert len(answered) == 1
    ack(bus, sent)  # late: harmless


def test_a_refused_filter_is_journaled_and_sent_again_on_the_next_change(
    broker: DeviceBroker, bus: DeviceRuntime
) -> None:
    sent = host_up(broker, bus)
    answered: list[Subscription] = []
    subscribe(broker, 1, NAV, answered)
    ack(bus, sent, error={"code": "proto.invalid_args", "message": "no", "details": {}})
    assert len(answered) == 1  # the host went back to everything: the subscriber gets its frames
    journal = broker.kernel.journal.records
    assert any(args[1] == "device.filter_refused" for args, _kw in journal)
    subscribe(broker, 1, NAV, answered)
    assert filters(sent)[-1] == [table(0x180, 0x1FFFFFF0)]


def test_a_fresh_recv_reads_after_the_filter_is_in_place(broker: DeviceBroker, bus: DeviceRuntime) -> None:
    sent = host_up(broker, bus)
    ack(bus, sent)
    agent = make_agent(1, bus=NAV)
    outcomes: list[Any] = []
    deferred = Deferred()
    deferred.bind(lambda result, error: outcomes.append((result, error)))
    broker.recv(agent, 1, "bus", ReadWant(), 0, deferred)
    assert outcomes == []
    ack(bus, sent)
    assert outcomes == [({"success": True, "items": [], "count": 0, "dropped": 0}, None)]


def test_devices_without_a_stream_filter_are_never_sent_one(broker: DeviceBroker) -> None:
    runtime = broker.devices["loop"]
    sent = host_up(broker, runtime)
    answered: list[Subscription] = []
    broker.subscribe(make_agent(1, loop=LoopbackGrant(ops=("recv",), tags=("*",))), 1, "loop", None, None, applied=answered.append)
    broker.forget(1)
    assert filters(sent) == []
    assert len(answered) == 1


def test_a_failing_scope_leaves_the_host_unfiltered(
    broker: DeviceBroker, bus: DeviceRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = host_up(broker, bus)

    def broken(*_args: Any) -> Any:
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(bus.spec.driver_class, "stream_filter", classmethod(broken))
    subscribe(broker, 1, NAV, [])
    assert filters(sent)[-1] is None
