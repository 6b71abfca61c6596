"""Messaging syscalls: register a name, send, receive (optionally blocking), broadcast.

See :mod:`clove.kernel.services.messaging` and docs/messaging.md. All need the ``ipc`` right and are
journaled under ``IPC``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from clove import wire
from clove.kernel.core.deferred import Deferred
from clove.kernel.syscalls.base import Syscall, SyscallContext

if TYPE_CHECKING:
    from clove.kernel.services.mailbox import Message
    from clove.kernel.services.messaging import MessagingService


def _service(ctx: SyscallContext) -> MessagingService:
    return ctx.kernel.messaging


def _as_sent(ctx: SyscallContext) -> memoryview | None:
    """The message exactly as the sender encoded it, when its request allows (the SDK puts it
    last): kept as it is rather than encoded again."""
    return wire.encoded_tail(ctx.request, "message") if ctx.request is not None else None


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    name: str


@final
class Register(Syscall):
    """``ipc.register {name}`` → ``{success, agent_id, name}`` (``agent_id`` is the caller's
    principal id: an operator's is its session id).

    :raises Conflict: another live principal holds the name, or it is another live agent's name.
    :raises InvalidArguments: not 1-128 of ``[A-Za-z0-9_.:@/-]``.
    """

    name = "ipc.register"
    category = "IPC"
    right = "ipc"
    Request = RegisterRequest

    def execute(self, ctx: SyscallContext, req: RegisterRequest) -> dict[str, Any]:
        registered = _service(ctx).register(ctx.principal_id, req.name)
        return {"success": True, "agent_id": ctx.principal_id, "name": registered}


@dataclass(frozen=True, slots=True)
class SendRequest:
    message: dict[str, Any]
    to: int | None = None
    to_name: str | None = None


@final
class Send(Syscall):
    """``ipc.send {message, to? | to_name?}`` → ``{success, delivered_to}``.

    :raises NotFound: no live agent or operator session by that id or name.
    :raises MailboxFull: the recipient's mailbox is at 1000 messages or at the recipient's
        ``[limits].mailbox_bytes`` (``details.limit`` says which; nothing delivered).
    :raises QuotaExceeded: the message is above 256 KiB encoded.
    """

    name = "ipc.send"
    category = "IPC"
    right = "ipc"
    Request = SendRequest

    def execute(self, ctx: SyscallContext, req: SendRequest) -> dict[str, Any]:
        service = _service(ctx)
        recipient = service.resolve(req.to, req.to_name)
        service.send(ctx.principal_id, recipient, req.message, encoded=_as_sent(ctx))
        return {"success": True, "delivered_to": recipient}


@dataclass(frozen=True, slots=True)
class RecvRequest:
    max_messages: int = 10
    timeout: float | None = None


@final
class Recv(Syscall):
    """``ipc.recv {max_messages, timeout}`` → ``{success, messages, count}``, oldest first;
    each message is ``{from_id, from_name, message, age_ms}``. Without a timeout it returns at
    once; with one (seconds, at most 300) it waits for the first message. A reply with a large
    message carries each as its sender encoded it (a :class:`wire.Packed` result: not decoded and
    encoded again), byte for byte what encoding the decoded messages would give."""

    name = "ipc.recv"
    category = "IPC"
    right = "ipc"
    Request = RecvRequest

    def execute(self, ctx: SyscallContext, req: RecvRequest) -> dict[str, Any] | wire.Packed | Deferred:
        service = _service(ctx)
        limit = max(1, min(req.max_messages, 1000))

        def reply(messages: list[Message]) -> dict[str, Any] | wire.Packed:
            now = service.clock()
            if any(m.size >= wire.SPLICE_MIN_BYTES for m in messages):
                return wire.pack_spliced({"success": True, "messages": [m.packed(now) for m in messages], "count": len(messages)})
            return {"success": True, "messages": [m.to_wire(now) for m in messages], "count": len(messages)}  # small: cheaper decoded

        if not req.timeout or req.timeout <= 0:
            return reply(service.take(ctx.principal_id, limit))
        waiting, answer = Deferred(), Deferred()
        waiting.bind(lambda messages, _err: answer.resolve(reply(messages)))
        service.wait(ctx.principal_id, limit, req.timeout, waiting, encoded=True)
        return answer


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    message: dict[str, Any]
    include_self: bool = False


@final
class Broadcast(Syscall):
    """``ipc.broadcast {message, include_self}`` → ``{success, delivered_count, full}``: to
    every live agent and every operator session that has used messaging; ``full`` lists the
    ids skipped because their mailbox was full.

    :raises QuotaExceeded: the message is above 256 KiB encoded (nothing delivered).
    """

    name = "ipc.broadcast"
    category = "IPC"
    right = "ipc"
    Request = BroadcastRequest

    def execute(self, ctx: SyscallContext, req: BroadcastRequest) -> dict[str, Any]:
        service = _service(ctx)
        delivered, full = service.broadcast(ctx.principal_id, req.message, include_self=req.include_self, encoded=_as_sent(ctx))
        return {"success": True, "delivered_count": len(delivered), "full": full}


SYSCALLS: tuple[type[Syscall], ...] = (Register, Send, Recv, Broadcast)
