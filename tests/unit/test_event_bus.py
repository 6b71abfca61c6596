"""The event bus, sessions bookkeeping, async results and audit switches, with fakes."""

from __future__ import annotations

import json

import pytest

from clove.errors import InvalidArguments, PermissionDenied, QuotaExceeded
from clove.kernel.audit.settings import AuditConfig
from clove.kernel.core.asyncjobs import AsyncResults
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.events import EventBus
from clove.kernel.core.sessions import OperatorSessions, parse_peer_address


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list = []

    def call_later(self, delay: float, callback):  # noqa: ANN001, ANN201
        class T:
            cancelled = False

            def cancel(self) -> None:
                self.cancelled = True

        timer = T()
        self.timers.append((delay, callback, timer))
        return timer

    def fire(self) -> None:
        for _, callback, timer in self.timers:
            if not timer.cancelled:
                callback()
        self.timers.clear()


def test_subscribers_get_their_types_only() -> None:
    bus = EventBus(clock=lambda: 1.0)
    bus.subscribe(1, ["AGENT_EXITED"])
    bus.subscribe(2, ["CUSTOM"])
    bus.subscribe(3, ["*"])
    bus.emit("AGENT_EXITED", {"agent_id": 9}, source_agent_id=9)
    bus.emit("sensor.temp", {"c": 20}, source_agent_id=4)
    assert [e["type"] for e in bus.poll(1, 10)] == ["AGENT_EXITED"]
    assert [e["type"] for e in bus.poll(2, 10)] == ["sensor.temp"]
    assert [e["type"] for e in bus.poll(3, 10)] == ["AGENT_EXITED", "sensor.temp"]
    assert bus.poll(1, 10) == []


def test_targets_limit_delivery_and_queues_are_bounded() -> None:
    bus = EventBus(queue_size=3)
    for p in (1, 2):
        bus.subscribe(p, ["MESSAGE_RECEIVED"])
    for i in range(5):
        bus.emit("MESSAGE_RECEIVED", {"n": i}, targets=[1])
    assert [e["data"]["n"] for e in bus.poll(1, 10)] == [2, 3, 4]
    assert bus.dropped(1) == 2 and bus.poll(2, 10) == []


def test_kernel_event_names_cannot_be_forged() -> None:
    bus = EventBus()
    with pytest.raises(PermissionDenied):
        bus.emit_custom("AGENT_EXITED", None, source_agent_id=1)
    with pytest.raises(InvalidArguments):
        bus.emit_custom("bad name", None, source_agent_id=1)


def test_blocking_wait_resolves_on_event_or_timeout() -> None:
    loop = FakeLoop()
    bus = EventBus(loop=loop)  # type: ignore[arg-type]
    bus.subscribe(1, ["X.Y"])
    got: list = []
    d = Deferred()
    d.bind(lambda value, err: got.append(value))
    bus.wait(1, 5, 10.0, d)
    assert got == []
    bus.emit("X.Y", 1)
    assert [e["data"] for e in got[0]] == [1]
    d2 = Deferred()
    d2.bind(lambda value, err: got.append(value))
    bus.wait(1, 5, 10.0, d2)
    loop.fire()
    assert got[-1] == []


def test_sessions_get_ids_and_are_reaped_when_their_process_dies() -> None:
    ids = iter(range(100, 200))
    alive = {4242: True}
    sessions = OperatorSessions(lambda: next(ids), pid_alive=lambda pid: alive.get(pid, False))
    closed: list[int] = []
    sessions.on_close.append(lambda s: closed.append(s.id))
    s = sessions.open(b"r1", "localhost:1000:1000:4242")
    assert (s.id, s.uid, s.gid, s.pid) == (100, 1000, 1000, 4242)
    assert sessions.lookup(b"r1") is s
    assert sessions.reap(now=10.0) == 0
    alive[4242] = False
    assert sessions.reap(now=10.5) == 0  # at most once a second
    assert sessions.reap(now=11.1) == 1 and closed == [100] and sessions.lookup(b"r1") is None
    assert parse_peer_address(None) == (None, None, None) and parse_peer_address("garbage") == (None, None, None)
    assert parse_peer_address("localhost:0:0:0") == (0, 0, None)  # a peer in a pid namespace we cannot see


def test_async_results_are_per_caller_json_and_never_dropped() -> None:
    results = AsyncResults(max_per_caller=2)
    for i in range(3):  # a result for an accepted request is kept even past the count
        results.push(7, f"r{i}", "SYS_EXEC", {"success": True, "n": i})
    with pytest.raises(QuotaExceeded) as full:
        results.admit(7)  # ...but no new request is accepted until the caller polls
    assert full.value.details == {"limit": "async_results", "held": 3, "bound": 2}
    got = results.poll(7, 10)
    assert [r["request_id"] for r in got] == ["r0", "r1", "r2"]
    assert json.loads(got[1]["payload"]) == {"success": True, "n": 1}
    assert results.poll(8, 10) == []
    results.admit(7)


def test_audit_config_never_drops_denials() -> None:
    cfg = AuditConfig()
    cfg.update({"log_syscalls": False, "log_lifecycle": False})
    assert not cfg.wants("SYSCALL", denied=False) and not cfg.wants("AGENT_LIFECYCLE", denied=False)
    assert cfg.wants("SYSCALL", denied=True) and cfg.wants("SECURITY", denied=False)
    with pytest.raises(InvalidArguments):
        cfg.update({"log_syscalls": "no"})
    with pytest.raises(InvalidArguments):
        cfg.update({"max_entries": 0, "log_ipc": False})
    assert cfg.log_ipc is True  # nothing changed on a refused update
