"""A large message is kept as its sender encoded it and spliced into the receiver's reply: it
arrives byte for byte, and every bound still applies to it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clove import wire
from clove.errors import MailboxFull, QuotaExceeded
from clove.kernel.core.channels import Caller
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.messaging import MessagingService
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.registry import SYSCALLS
from clove.policy import for_level
from tests.unit.test_messaging import Clock, FakeLoop, FakePrincipals

MESSAGE = {"blob": "z" * 100_000, "n": [1, 2.5, None], "b": b"\x00\xff"}


def service(**bounds: int) -> MessagingService:
    principals = FakePrincipals()
    principals.agents.update({1: "alpha", 2: "beta"})
    return MessagingService(principals, loop=FakeLoop(), clock=Clock(), **bounds)  # type: ignore[arg-type]


def call(svc: MessagingService, principal: int, name: str, body: dict[str, Any]) -> Any:
    """The syscall as the dispatcher runs it: with the request as it arrived."""
    request = wire.decode_request(wire.encode_request(9, name, body))
    ctx = SyscallContext(SimpleNamespace(messaging=svc), Caller("agent", agent_id=principal), None, for_level("standard"), None, request)  # type: ignore[arg-type]
    syscall = SYSCALLS[name]
    return syscall.execute(ctx, syscall.parse(request.body))


def test_a_large_message_arrives_byte_for_byte_without_being_encoded_again() -> None:
    svc = service(max_message_bytes=1 << 20, mailbox_bytes=4 << 20)
    assert call(svc, 1, "ipc.send", {"to": 2, "message": MESSAGE}) == {"success": True, "delivered_to": 2}
    held = svc._boxes[2].queue[0].payload
    assert isinstance(held, memoryview) and bytes(held) == wire.pack(MESSAGE)  # a view of the request frame
    result = call(svc, 2, "ipc.recv", {"max_messages": 5})
    assert isinstance(result, wire.Packed)
    decoded = {"success": True, "messages": [{"from_id": 1, "from_name": "alpha", "message": MESSAGE, "age_ms": 0}], "count": 1}
    assert wire.ok_reply(3, result) == wire.ok_reply(3, decoded)  # the reply encoding would give
    assert wire.decode_reply(wire.ok_reply(3, result)).result == decoded


def test_a_waiting_receiver_gets_it_spliced_too() -> None:
    svc = service(max_message_bytes=1 << 20, mailbox_bytes=4 << 20)
    pending = call(svc, 2, "ipc.recv", {"timeout": 5.0})
    assert isinstance(pending, Deferred) and not pending.done
    got: list[Any] = []
    pending.bind(lambda value, error: got.append(value))
    call(svc, 1, "ipc.send", {"to_name": "beta", "message": MESSAGE})
    assert isinstance(got[0], wire.Packed) and got[0].value()["messages"][0]["message"] == MESSAGE


def test_the_size_bound_holds_for_a_message_kept_as_sent() -> None:
    svc = service(max_message_bytes=50_000)
    with pytest.raises(QuotaExceeded) as err:
        call(svc, 1, "ipc.send", {"to": 2, "message": MESSAGE})
    assert err.value.details["size"] == len(wire.pack(MESSAGE)) and svc.pending(2) == 0


def test_the_recipients_mailbox_bytes_hold_for_messages_kept_as_sent() -> None:
    svc = service(max_message_bytes=1 << 20, mailbox_bytes=250_000)
    call(svc, 1, "ipc.send", {"to": 2, "message": MESSAGE})
    call(svc, 1, "ipc.send", {"to": 2, "message": MESSAGE})
    with pytest.raises(MailboxFull) as err:
        call(svc, 1, "ipc.send", {"to": 2, "message": MESSAGE})
    assert err.value.details["limit"] == "mailbox_bytes" and svc.pending(2) == 2
    assert svc.held_by(2)["mailbox_bytes"] == 2 * len(wire.pack(MESSAGE))


def test_a_small_or_differently_laid_out_message_is_encoded_as_before() -> None:
    svc = service(max_message_bytes=1 << 20, mailbox_bytes=4 << 20)
    call(svc, 1, "ipc.send", {"message": MESSAGE, "to": 2})  # message first: the old SDK's layout
    call(svc, 1, "ipc.send", {"to": 2, "message": {"small": 1}})
    assert all(isinstance(m.payload, bytes) for m in svc._boxes[2].queue)
    result = call(svc, 2, "ipc.recv", {"max_messages": 5})
    assert [m["message"] for m in result.value()["messages"]] == [MESSAGE, {"small": 1}]
    call(svc, 1, "ipc.send", {"to": 2, "message": {"small": 2}})
    assert call(svc, 2, "ipc.recv", {"max_messages": 5})["messages"][0]["message"] == {"small": 2}  # small: a plain dict
    broadcast = call(svc, 1, "ipc.broadcast", {"include_self": False, "message": MESSAGE})
    assert broadcast["delivered_count"] == 1 and isinstance(svc._boxes[2].queue[0].payload, memoryview)
