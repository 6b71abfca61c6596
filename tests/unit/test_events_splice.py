"""events.emit: large data is queued (and echoed) as the caller encoded it, the echo can be left
out, and the SDK's emit_event returns what it always did either way."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgpack

from clove import wire
from clove.kernel.core.channels import Caller
from clove.kernel.core.events import EventBus
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.registry import SYSCALLS
from clove.policy import for_level
from clove_sdk._events import EventsMixin

DATA = {"blob": "y" * 100_000, "n": 1}


def emit(bus: EventBus, body: dict[str, Any]) -> Any:
    request = wire.decode_request(wire.encode_request(4, "events.emit", body))
    ctx = SyscallContext(SimpleNamespace(events=bus), Caller("agent", agent_id=7), None, for_level("standard"), None, request)  # type: ignore[arg-type]
    syscall = SYSCALLS["events.emit"]
    return syscall.execute(ctx, syscall.parse(request.body))


def test_large_data_is_queued_and_echoed_as_sent() -> None:
    bus = EventBus(clock=lambda: 12.5)
    bus.subscribe(3, ["custom.big"])
    result = emit(bus, {"event_type": "custom.big", "data": DATA})
    event = {"type": "custom.big", "data": DATA, "source_agent_id": 7, "timestamp": 12.5}
    assert isinstance(result, wire.Packed)
    assert wire.ok_reply(1, result) == wire.ok_reply(1, {"success": True, "event": event})
    queued = bus._subs[3].queue[0]
    assert queued == msgpack.packb(event, use_bin_type=True)  # what encoding it would have queued
    assert bus.poll(3, 10) == [event]


def test_the_echo_can_be_left_out() -> None:
    bus = EventBus(clock=lambda: 1.0)
    bus.subscribe(3, ["CUSTOM"])
    result = emit(bus, {"event_type": "custom.big", "echo": False, "data": DATA})
    assert result == {"success": True, "event": {"type": "custom.big", "source_agent_id": 7, "timestamp": 1.0}}
    assert bus.poll(3, 10)[0]["data"] == DATA  # subscribers still get it whole
    small = emit(bus, {"event_type": "custom.small", "data": {"x": 1}})
    assert small["event"]["data"] == {"x": 1}  # small data: echoed, encoded as before


class FakeClient(EventsMixin):
    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []

    def _compat(self, syscall: str, **body: Any) -> dict[str, Any]:
        self.calls.append(body)
        return self.replies.pop(0)


def test_the_sdk_puts_the_data_back_and_lays_it_out_last() -> None:
    client = FakeClient([{"success": True, "event": {"type": "t", "source_agent_id": None, "timestamp": 1.0}}])
    assert client.emit_event("t", DATA) == {"success": True, "event": {"type": "t", "source_agent_id": None, "timestamp": 1.0, "data": DATA}}
    assert list(client.calls[0]) == ["event_type", "echo", "data"] and client.calls[0]["echo"] is False


def test_the_sdk_asks_an_older_kernel_again_with_the_echo() -> None:
    refused = {"success": False, "code": "proto.invalid_args", "error": "unknown argument 'echo'", "details": {"argument": "echo"}}
    echoed = {"success": True, "event": {"type": "t", "data": 1, "source_agent_id": None, "timestamp": 1.0}}
    client = FakeClient([refused, echoed])
    assert client.emit_event("t", 1) == echoed
    assert "echo" not in client.calls[1]
