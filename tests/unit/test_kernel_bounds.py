"""Per-agent byte bounds on what the kernel holds, with fakes: async results, event queues and
subscriptions, mailboxes, device stream queues, the recording ring, and the syscalls that pass
each caller's own ``[limits]`` in."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from clove.config import AgentConfig, AgentLimits, KernelConfig, LimitsSection, RecordingSection
from clove.errors import MailboxFull, QuotaExceeded
from clove.kernel.core.agents import Agent, AgentState
from clove.kernel.core.asyncjobs import AsyncResults, encode_payload
from clove.kernel.core.channels import Caller
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.events import EventBus, Subscribed
from clove.kernel.services.devices.subscriptions import ReadWant, Subscription
from clove.kernel.services.messaging import MessagingService
from clove.kernel.services.recording.recorder import Recorder, RecordingOptions
from clove.kernel.syscalls.asynccalls import accept_or_wait
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.events import Emit, EmitRequest, Poll, PollRequest, Subscribe, TypesRequest
from clove.policy import for_level
from clove.wire import Request

# ---- async results -------------------------------------------------------------------------------


def test_results_are_held_as_compact_utf8_json_and_polled_as_the_same_text() -> None:
    results = AsyncResults()
    reply = {"success": True, "stdout": "\ufffd" * 1000 + "é", "n": 1}
    results.push(7, "r1", "SYS_EXEC", reply)
    held = results.held_by(7)["async_result_bytes"]
    assert held == len(json.dumps(reply, ensure_ascii=False).encode()) < len(json.dumps(reply))  # 3 bytes, not 6
    (got,) = results.poll(7, 10)
    assert isinstance(got["payload"], str) and json.loads(got["payload"]) == reply
    assert got == {"request_id": "r1", "opcode_name": "SYS_EXEC", "payload": got["payload"]}
    assert results.held() == {"async_queues": 0, "async_results": 0, "async_result_bytes": 0}


def test_a_lone_surrogate_falls_back_to_escaped_json() -> None:
    payload = encode_payload({"s": "\udcff"})
    assert payload == b'{"s": "\\udcff"}' and json.loads(payload) == {"s": "\udcff"}


def test_new_submissions_are_refused_at_the_bound_and_late_results_are_replaced_not_dropped() -> None:
    results = AsyncResults()
    big = {"success": True, "stdout": "x" * 600}
    results.admit(7, 1000)
    results.push(7, "a", "SYS_EXEC", big, max_bytes=1000)  # under the bound: kept
    results.push(7, "b", "SYS_EXEC", big, max_bytes=1000)  # held 6xx < 1000 before it: kept (crosses)
    with pytest.raises(QuotaExceeded) as refused:
        results.admit(7, 1000)
    held = results.held_by(7)["async_result_bytes"]
    assert refused.value.code == "quota.exceeded"
    assert refused.value.details == {"limit": "async_result_bytes", "held": held, "bound": 1000, "results": 2}
    results.push(7, "c", "SYS_EXEC", big, max_bytes=1000)  # accepted earlier, arrives over the bound
    got = results.poll(7, 10)
    assert [r["request_id"] for r in got] == ["a", "b", "c"]
    late = json.loads(got[2]["payload"])
    assert late["success"] is False and late["code"] == "quota.exceeded"
    assert late["details"]["limit"] == "async_result_bytes" and late["details"]["size"] > 600
    assert results.replaced == 1
    results.admit(7, 1000)  # polled: accepted again
    results.admit(8, 1)  # another caller is not affected


def fake_ctx(limits: AgentLimits, *, agent_name: str | None = "worker") -> SyscallContext:
    config = KernelConfig(limits=LimitsSection(defaults=AgentLimits(), agents={"worker": limits}))
    kernel = SimpleNamespace(config=config, async_results=AsyncResults(), events=EventBus())
    agent = SimpleNamespace(name=agent_name) if agent_name else None
    caller = Caller("agent", agent_id=5) if agent_name else Caller("operator", session_id=9)
    return SyscallContext(kernel, caller, agent, for_level("standard"))  # type: ignore[arg-type]


def test_an_async_call_over_the_bound_starts_nothing() -> None:
    ctx = fake_ctx(AgentLimits(async_result_bytes=100))
    ctx.kernel.async_results.push(5, "old", "SYS_EXEC", {"success": True, "stdout": "y" * 200}, max_bytes=100)
    started: list[Deferred] = []

    def start() -> Deferred:
        started.append(Deferred())
        return started[-1]

    with pytest.raises(QuotaExceeded) as err:
        accept_or_wait(ctx, async_=True, request_id="new", opcode_name="SYS_EXEC", start=start)
    assert started == [] and err.value.details["bound"] == 100
    assert accept_or_wait(ctx, async_=False, request_id=None, opcode_name="SYS_EXEC", start=start) is started[0]
    ctx.kernel.async_results.poll(5, 10)
    reply = accept_or_wait(ctx, async_=True, request_id="new", opcode_name="SYS_EXEC", start=start)
    assert reply["status"] == "accepted"
    started[1].resolve({"success": True, "stdout": "z" * 500})  # bigger than the bound, but the queue was empty
    (got,) = ctx.kernel.async_results.poll(5, 10)
    assert json.loads(got["payload"])["stdout"] == "z" * 500


def test_operators_get_the_default_limits() -> None:
    assert fake_ctx(AgentLimits(subscriptions=1), agent_name=None).limits == AgentLimits()
    assert fake_ctx(AgentLimits(subscriptions=1)).limits.subscriptions == 1


# ---- events --------------------------------------------------------------------------------------


def event_size(data: Any, event_type: str = "e.x") -> int:
    return len(msgpack.packb({"type": event_type, "data": data, "source_agent_id": None, "timestamp": 1.0}, use_bin_type=True))


def test_a_queue_is_bounded_in_bytes_drops_the_oldest_and_reports_bytes() -> None:
    bus = EventBus(clock=lambda: 1.0)
    bus.subscribe(1, ["e.x"], max_bytes=1100)
    size = event_size("a" * 300)  # 354: three fit in 1100
    for i in range(5):
        bus.emit("e.x", str(i) * 300)
    assert bus.held_by(1) == {"subscriptions": 1, "queued_events": 3, "event_queue_bytes": 3 * size}
    assert bus.dropped(1) == 2 and bus.dropped_bytes(1) == 2 * size
    got = bus.poll(1, 10)
    assert [e["data"][0] for e in got] == ["2", "3", "4"]
    assert got[0] == {"type": "e.x", "data": "2" * 300, "source_agent_id": None, "timestamp": 1.0}
    assert bus.held()["event_queue_bytes"] == 0


def test_each_subscriber_has_its_own_bound_and_an_oversized_event_is_its_loss_alone() -> None:
    bus = EventBus(clock=lambda: 1.0)
    bus.subscribe(1, ["CUSTOM"], max_bytes=100)
    bus.subscribe(2, ["*"], max_bytes=10_000)
    bus.emit("e.x", "b" * 500)
    assert bus.poll(1, 10) == [] and bus.dropped(1) == 1 and bus.dropped_bytes(1) == event_size("b" * 500)
    assert [e["data"] for e in bus.poll(2, 10)] == ["b" * 500] and bus.dropped(2) == 0


def test_subscriptions_are_capped_all_or_nothing_and_replies_name_only_the_call() -> None:
    bus = EventBus()
    first = bus.subscribe(1, ["b.1", "a.1", "a.1"], max_subscriptions=3)
    assert first == Subscribed(["a.1", "b.1"], ["a.1", "b.1"], 2)
    with pytest.raises(QuotaExceeded) as err:
        bus.subscribe(1, ["c.1", "d.1"], max_subscriptions=3)
    assert err.value.details == {"limit": "subscriptions", "held": 2, "bound": 3, "requested": 2}
    assert bus.held_by(1)["subscriptions"] == 2  # nothing of the refused call was added
    assert bus.subscribe(1, ["a.1", "c.1"], max_subscriptions=3) == Subscribed(["a.1", "c.1"], ["c.1"], 3)
    assert bus.subscribe(1, ["b.1"], max_subscriptions=3) == Subscribed(["b.1"], [], 3)  # at the cap, nothing new: fine
    with pytest.raises(QuotaExceeded):
        bus.subscribe(2, [f"t.{i}" for i in range(4)], max_subscriptions=3)
    assert bus.held()["subscribers"] == 1  # a refused first subscribe leaves nothing behind


def test_a_custom_event_is_bounded_at_emit() -> None:
    bus = EventBus()
    bus.subscribe(1, ["CUSTOM"])
    with pytest.raises(QuotaExceeded) as err:
        bus.emit_custom("e.big", "x" * 2000, source_agent_id=3, max_bytes=1000)
    assert err.value.details["limit"] == "event_data_bytes" and err.value.details["bound"] == 1000
    assert bus.poll(1, 10) == [] and bus.emitted == 0
    event = bus.emit_custom("e.ok", "x" * 100, source_agent_id=3, max_bytes=1000)
    assert bus.poll(1, 10) == [event]


def test_the_event_syscalls_pass_the_callers_own_limits() -> None:
    ctx = fake_ctx(AgentLimits(subscriptions=2, event_queue_bytes=350))  # two events of ~160 bytes
    reply = Subscribe().execute(ctx, TypesRequest(event_types=["e.x", "e.y"]))
    assert reply == {"success": True, "subscribed": ["e.x", "e.y"], "added": ["e.x", "e.y"], "count": 2}
    with pytest.raises(QuotaExceeded):
        Subscribe().execute(ctx, TypesRequest(event_types=["e.z"]))
    for _ in range(3):
        Emit().execute(ctx, EmitRequest(event_type="e.x", data="d" * 100))
    polled = Poll().execute(ctx, PollRequest(max_events=10))
    assert polled["count"] == 2 and polled["dropped"] == 1 and polled["dropped_bytes"] > 100


# ---- mailboxes ------------------------------------------------------------------------------------


class Principals:
    def __init__(self) -> None:
        self.agents = {1: "small", 2: "large", 3: "sender"}

    def is_live(self, principal_id: int) -> bool:
        return principal_id in self.agents

    def live_agents(self) -> list[int]:
        return list(self.agents)

    def live_agent_named(self, name: str) -> int | None:
        return next((i for i, n in self.agents.items() if n == name), None)

    def agent_name(self, principal_id: int) -> str | None:
        return self.agents.get(principal_id)


def test_a_mailbox_takes_its_recipients_byte_bound_and_holds_encoded_bytes() -> None:
    principals = Principals()
    bounds = {"small": 500, "large": 5000}
    svc = MessagingService(principals, mailbox_bytes_of=lambda pid: bounds.get(principals.agent_name(pid) or "", 10_000))
    message = {"blob": "m" * 200}
    size = len(msgpack.packb(message, use_bin_type=True))
    svc.send(3, 1, message)
    svc.send(3, 1, message)
    with pytest.raises(MailboxFull) as err:
        svc.send(3, 1, message)
    assert err.value.code == "ipc.mailbox_full"
    assert err.value.details == {**err.value.details, "limit": "mailbox_bytes", "bytes": 2 * size, "size": size, "max_bytes": 500}
    delivered, full = svc.broadcast(3, message)
    assert full == [1] and delivered == [2]  # each recipient's own bound
    assert svc.held_by(1) == {"queued_messages": 2, "mailbox_bytes": 2 * size}
    assert svc.held()["mailbox_bytes"] == 3 * size
    assert [m["message"] for m in svc.receive(1, 10)] == [message, message]
    assert svc.held_by(1) == {"queued_messages": 0, "mailbox_bytes": 0}


# ---- device stream queues --------------------------------------------------------------------------


def test_a_device_items_queue_is_bounded_by_encoded_bytes_too() -> None:
    sub = Subscription(7, kind="items", limit=100, grant=None, wants=None, max_bytes=100)
    sub.offer_items([{"n": i} for i in range(6)], item_bytes=30)
    assert [i["n"] for i in sub.items] == [3, 4, 5] and sub.dropped == 3 and sub.held_bytes() == 90
    reply = sub.take(ReadWant(max_items=2))
    assert reply["count"] == 2 and sub.held_bytes() == 30
    smaller = Subscription(7, kind="items", limit=100, grant=None, wants=None, max_bytes=20)
    smaller.adopt(sub)  # a re-subscribe with a smaller bound trims what is queued
    assert smaller.queued() == 0 and smaller.dropped == 4


# ---- the recording ring ---------------------------------------------------------------------------


def make_agent(agent_id: int, name: str) -> Agent:
    a = Agent(id=agent_id, spec=AgentConfig(name=name, script=f"/agents/{name}.py"), uid=None)
    a.incarnation, a.state = 1, AgentState.RUNNING
    return a


def test_the_recording_ring_drops_an_agents_own_oldest_at_its_bytes(tmp_path: Path) -> None:
    section = RecordingSection(max_bytes=1 << 20)
    r = Recorder(tmp_path / "recordings", section, bytes_of=lambda name: 2000 if name == "chatty" else 1 << 20)
    r.start(RecordingOptions.from_section(section))
    chatty, quiet = make_agent(1, "chatty"), make_agent(2, "quiet")
    for a in (chatty, quiet):
        r.lifecycle("agent.created", a, {})
    for n in range(10):
        for a in (chatty, quiet):
            pending = r.capture(a, Request(1, "noop", {"msg": f"{n}" * 300}), 1)
            assert pending is not None
            r.record(pending, str(n), None)
    assert r.held_by(1)["recording_bytes"] <= 2000 < r.held_by(2)["recording_bytes"]
    kept = [e for e in json.loads(r.export()) if e["kind"] == "syscall"]
    assert [e["result"] for e in kept if e["agent_name"] == "quiet"] == [str(n) for n in range(10)]
    mine = [e["result"] for e in kept if e["agent_name"] == "chatty"]
    assert mine == [str(n) for n in range(10 - len(mine), 10)] and 0 < len(mine) < 10
    status = r.status()
    assert status["entry_count"] == len(kept) and status["dropped"] == 20 - len(kept)
    r.stop()
