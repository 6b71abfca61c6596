"""The messaging service and its syscalls, with fake principals, a fake loop and a fake clock."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from clove import wire
from clove.config import AgentConfig
from clove.errors import Conflict, InvalidArguments, MailboxFull, NotFound, QuotaExceeded
from clove.kernel.core.agents import Agent, AgentState
from clove.kernel.core.channels import Caller
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.messaging import MessagingService
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.registry import SYSCALLS
from clove.policy import for_level


class FakePrincipals:
    def __init__(self) -> None:
        self.agents: dict[int, str] = {}  # live agents: id -> spawn name
        self.sessions: set[int] = set()

    def is_live(self, principal_id: int) -> bool:
        return principal_id in self.agents or principal_id in self.sessions

    def live_agents(self) -> Iterable[int]:
        return list(self.agents)

    def live_agent_named(self, name: str) -> int | None:
        return next((i for i, n in self.agents.items() if n == name), None)

    def agent_name(self, principal_id: int) -> str | None:
        return self.agents.get(principal_id)


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list = []

    def call_later(self, delay: float, callback):  # noqa: ANN001, ANN201
        timer = SimpleNamespace(cancelled=False, delay=delay)
        timer.cancel = lambda: setattr(timer, "cancelled", True)
        self.timers.append((callback, timer))
        return timer

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for callback, timer in timers:
            if not timer.cancelled:
                callback()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> SimpleNamespace:
    principals = FakePrincipals()
    principals.agents.update({1: "alpha", 2: "beta"})
    principals.sessions.add(3)
    events: list[tuple[str, Any, dict[str, Any]]] = []
    loop, clock = FakeLoop(), Clock()
    service = MessagingService(
        principals,
        emit=lambda kind, data, **kw: events.append((kind, data, kw)),
        loop=loop,  # type: ignore[arg-type]
        clock=clock,
        mailbox_messages=3,
        mailbox_bytes=1000,
        max_message_bytes=200,
    )
    return SimpleNamespace(p=principals, events=events, loop=loop, clock=clock, svc=service)


def deferred_into(out: list) -> Deferred:
    d = Deferred()
    d.bind(lambda value, err: out.append(value))
    return d


def test_send_by_id_and_name_with_from_name_and_age(world) -> None:
    svc = world.svc
    svc.register(1, "svc.a")
    svc.send(1, svc.resolve(None, "beta"), {"n": 1})  # a spawn name
    svc.send(3, svc.resolve(2, None), {"n": 2})  # an operator, by id
    world.clock.now += 0.25
    assert svc.receive(2, 10) == [
        {"from_id": 1, "from_name": "svc.a", "message": {"n": 1}, "age_ms": 250.0},
        {"from_id": 3, "from_name": None, "message": {"n": 2}, "age_ms": 250.0},
    ]
    assert svc.resolve(None, "svc.a") == 1 and svc.resolve(None, "alpha") == 1
    assert svc.receive(2, 10) == []


def test_registered_name_wins_over_a_spawn_name_and_names_are_unique(world) -> None:
    svc = world.svc
    with pytest.raises(Conflict):
        svc.register(1, "beta")  # another live agent's spawn name
    svc.register(2, "beta")  # one's own spawn name is fine
    svc.register(3, "console")
    with pytest.raises(Conflict) as err:
        svc.register(1, "console")
    assert err.value.details == {"name": "console", "holder": 3}
    svc.register(3, "console2")  # a new name replaces the old one
    assert svc.register(1, "console") == "console"
    for bad in ("", "has space", "x" * 129, 5):
        with pytest.raises(InvalidArguments):
            svc.register(1, bad)  # type: ignore[arg-type]


def test_unknown_or_dead_recipients_are_notfound(world) -> None:
    svc = world.svc
    with pytest.raises(NotFound):
        svc.resolve(99, None)
    with pytest.raises(NotFound):
        svc.resolve(None, "nobody")
    with pytest.raises(InvalidArguments):
        svc.resolve(None, None)
    with pytest.raises(InvalidArguments):
        svc.resolve(1, "alpha")
    svc.register(2, "b")
    del world.p.agents[2]  # died without the kernel telling us yet: still not deliverable
    with pytest.raises(NotFound):
        svc.resolve(None, "b")


def test_mailbox_bounds_refuse_and_deliver_nothing(world) -> None:
    svc = world.svc
    for i in range(3):
        svc.send(1, 2, {"i": i})
    with pytest.raises(MailboxFull) as err:
        svc.send(1, 2, {"i": 3})
    assert err.value.code == "ipc.mailbox_full" and err.value.details["messages"] == 3
    assert [m["message"]["i"] for m in svc.receive(2, 10)] == [0, 1, 2]
    with pytest.raises(QuotaExceeded):
        svc.send(1, 2, {"x": "y" * 300})
    roomy = MessagingService(world.p, mailbox_messages=100, mailbox_bytes=1000)
    for _ in range(6):  # ~155 bytes each: the sixth would pass 1000 bytes
        roomy.send(1, 2, {"x": "y" * 150})
    with pytest.raises(MailboxFull) as err:
        roomy.send(1, 2, {"x": "y" * 150})
    assert err.value.details["bytes"] <= 1000 and roomy.pending(2) == 6


def test_message_received_goes_to_the_recipient_only(world) -> None:
    world.svc.register(1, "a")
    world.svc.send(1, 3, {"hi": 1})
    assert world.events == [("MESSAGE_RECEIVED", {"from_id": 1, "from_name": "a"}, {"source_agent_id": 1, "targets": [3]})]


def test_blocking_receive_wakes_on_arrival_or_times_out(world) -> None:
    svc = world.svc
    got: list = []
    svc.wait(2, 5, 10.0, deferred_into(got))
    assert got == [] and world.loop.timers[0][1].delay == 10.0
    svc.send(1, 2, {"wake": 1})
    assert [m["message"] for m in got[0]] == [{"wake": 1}]
    assert world.loop.timers[0][1].cancelled
    later: list = []
    svc.wait(2, 5, 0.5, deferred_into(later))
    world.loop.fire()
    assert later == [[]]
    svc.send(1, 2, {"kept": 1})  # after the timeout: queued, not lost to the expired waiter
    assert svc.pending(2) == 1
    now: list = []
    svc.wait(2, 5, 1.0, deferred_into(now))  # messages waiting: answered at once
    assert [m["message"] for m in now[0]] == [{"kept": 1}]


def test_a_newer_wait_answers_the_older_empty(world) -> None:
    first: list = []
    second: list = []
    world.svc.wait(2, 5, 10.0, deferred_into(first))
    world.svc.wait(2, 5, 10.0, deferred_into(second))
    assert first == [[]] and second == []
    world.svc.send(1, 2, {"n": 1})
    assert len(second[0]) == 1


def test_broadcast_counts_live_agents_and_operators_with_a_mailbox(world) -> None:
    svc = world.svc
    delivered, full = svc.broadcast(1, {"b": 1})
    assert (delivered, full) == ([2], [])  # session 3 never used messaging
    svc.receive(3, 1)  # now it has a mailbox
    assert svc.broadcast(1, {"b": 2})[0] == [2, 3]
    assert svc.broadcast(1, {"b": 3}, include_self=True)[0] == [1, 2, 3]
    delivered, full = svc.broadcast(3, {"b": 4})
    assert delivered == [1] and full == [2]  # beta's mailbox (3 messages) is full


def _agent(agent_id: int, name: str, state: AgentState) -> Agent:
    return Agent(id=agent_id, spec=AgentConfig(name=name, script="/x.py"), uid=None, state=state)


def test_lifecycle_releases_names_keeps_mail_for_backoff_and_drops_it_when_settled(world) -> None:
    svc = world.svc
    svc.register(1, "worker")
    svc.send(2, 1, {"for": "after restart"})
    svc.on_lifecycle("agent.exited", _agent(1, "alpha", AgentState.BACKOFF), {})
    assert svc.registered_name(1) is None and svc.pending(1) == 1  # name gone, mail kept
    svc.register(2, "worker")  # the released name can be taken by another
    svc.on_lifecycle("agent.state", _agent(1, "alpha", AgentState.BACKOFF), {})
    svc.on_lifecycle("agent.state", _agent(1, "alpha", AgentState.STARTING), {})
    assert svc.pending(1) == 1
    svc.on_lifecycle("agent.state", _agent(1, "alpha", AgentState.EXITED), {})
    assert svc.pending(1) == 0
    svc.on_lifecycle("agent.removed", _agent(1, "alpha", AgentState.EXITED), {})
    assert svc.pending(1) == 0
    svc.send(1, 3, {"x": 1})
    svc.register(3, "console")
    svc.on_session_closed(SimpleNamespace(id=3))  # type: ignore[arg-type]
    assert svc.pending(3) == 0 and svc.registered_name(3) is None


def test_exit_answers_a_pending_receive_so_mail_is_not_lost_to_a_dead_process(world) -> None:
    svc = world.svc
    dead: list = []
    svc.wait(1, 5, 10.0, deferred_into(dead))
    svc.on_lifecycle("agent.exited", _agent(1, "alpha", AgentState.BACKOFF), {})
    assert dead == [[]]
    svc.send(2, 1, {"x": 1})
    assert svc.pending(1) == 1


# ---- the syscalls ------------------------------------------------------------------------------


def ctx_for(world: SimpleNamespace, principal_id: int, *, operator: bool = False) -> SyscallContext:
    kernel = SimpleNamespace(messaging=world.svc)
    caller = Caller("operator", session_id=principal_id) if operator else Caller("agent", agent_id=principal_id)
    return SyscallContext(kernel, caller, None, for_level("standard"), None)  # type: ignore[arg-type]


def run(name: str, ctx: SyscallContext, body: dict[str, Any]) -> Any:
    """What the caller gets: a result the syscall returned encoded (wire.Packed) decoded."""
    syscall = SYSCALLS[name]
    result = syscall.execute(ctx, syscall.parse(body))
    if isinstance(result, Deferred):
        out: list = []
        result.bind(lambda value, err: out.append(value))
        if not out:
            return result
        result = out[0]
    return result.value() if isinstance(result, wire.Packed) else result


def test_syscalls_end_to_end(world) -> None:
    op = ctx_for(world, 3, operator=True)
    assert run("ipc.register", op, {"name": "console"}) == {"success": True, "agent_id": 3, "name": "console"}
    assert run("ipc.send", ctx_for(world, 1), {"message": {"q": 1}, "to_name": "console"}) == {"success": True, "delivered_to": 3}
    assert run("ipc.recv", op, {"max_messages": 5}) == {
        "success": True, "count": 1, "messages": [{"from_id": 1, "from_name": "alpha", "message": {"q": 1}, "age_ms": 0}],
    }  # fmt: skip
    pending = run("ipc.recv", op, {"timeout": 2.0})
    assert isinstance(pending, Deferred) and not pending.done
    run("ipc.send", ctx_for(world, 2), {"message": {"q": 2}, "to": 3})
    assert pending.done
    assert run("ipc.broadcast", ctx_for(world, 1), {"message": {"all": 1}}) == {"success": True, "delivered_count": 2, "full": []}
    with pytest.raises(InvalidArguments):
        run("ipc.send", op, {"message": "not a dict", "to": 1})
    assert all(SYSCALLS[n].category == "IPC" and SYSCALLS[n].right == "ipc" for n in ("ipc.register", "ipc.send", "ipc.recv", "ipc.broadcast"))
