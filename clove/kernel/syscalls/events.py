"""Event syscalls: subscribe, unsubscribe, poll (optionally blocking), emit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, final

from clove import wire
from clove.errors import InvalidArguments
from clove.kernel.core.deferred import Deferred
from clove.kernel.syscalls.base import Syscall, SyscallContext

MAX_WAIT = 300.0


@dataclass(frozen=True, slots=True)
class TypesRequest:
    event_types: list[str] = field(default_factory=list)


def _types(req: TypesRequest) -> list[str]:
    if not req.event_types:
        raise InvalidArguments("give at least one event type", details={"argument": "event_types"})
    return req.event_types


@final
class Subscribe(Syscall):
    """``events.subscribe {event_types}`` → ``{success, subscribed, added, count}``:
    ``subscribed`` the types of this call (sorted, all now subscribed), ``added`` those it newly
    added, ``count`` how many the caller holds. The reply never lists the caller's whole set.

    :raises QuotaExceeded: the call would take the caller over its ``[limits].subscriptions``
        (nothing is added).
    """

    name = "events.subscribe"
    right = "events"
    Request = TypesRequest

    def execute(self, ctx: SyscallContext, req: TypesRequest) -> dict[str, Any]:
        limits = ctx.limits
        done = ctx.kernel.events.subscribe(
            ctx.principal_id, _types(req), max_subscriptions=limits.subscriptions, max_bytes=limits.event_queue_bytes
        )
        return {"success": True, "subscribed": done.subscribed, "added": done.added, "count": done.count}


@final
class Unsubscribe(Syscall):
    """``events.unsubscribe {event_types}`` → ``{success, unsubscribed}`` (those removed)."""

    name = "events.unsubscribe"
    right = "events"
    Request = TypesRequest

    def execute(self, ctx: SyscallContext, req: TypesRequest) -> dict[str, Any]:
        return {"success": True, "unsubscribed": ctx.kernel.events.unsubscribe(ctx.principal_id, _types(req))}


@dataclass(frozen=True, slots=True)
class PollRequest:
    max_events: int = 10
    timeout: float | None = None


@final
class Poll(Syscall):
    """``events.poll {max_events, timeout}`` → ``{success, events, count, dropped,
    dropped_bytes}``: ``dropped``/``dropped_bytes`` count the events (and their encoded bytes)
    this caller's queue has dropped so far at its bounds. With a timeout (seconds) the reply
    waits for the first event instead of returning empty."""

    name = "events.poll"
    right = "events"
    Request = PollRequest

    def execute(self, ctx: SyscallContext, req: PollRequest) -> dict[str, Any] | Deferred:
        bus = ctx.kernel.events
        limit = max(1, min(req.max_events, 1000))
        principal = ctx.principal_id

        def reply(events: list[dict[str, Any]]) -> dict[str, Any]:
            return {"success": True, "events": events, "count": len(events), "dropped": bus.dropped(principal),
                    "dropped_bytes": bus.dropped_bytes(principal)}  # fmt: skip

        if not req.timeout:
            return reply(bus.poll(principal, limit))
        waiting, answer = Deferred(), Deferred()
        waiting.bind(lambda events, _err: answer.resolve(reply(events)))
        bus.wait(principal, limit, min(max(req.timeout, 0.0), MAX_WAIT), waiting)
        return answer


@dataclass(frozen=True, slots=True)
class EmitRequest:
    event_type: str
    data: Any = None
    echo: bool = True


@final
class Emit(Syscall):
    """``events.emit {event_type, data, echo?}`` → ``{success, event}``. Kernel event names are
    refused. ``echo: false`` leaves ``data`` out of the reply's event: the caller has it, and a
    large one would otherwise travel back and be decoded again (the SDK asks for that and puts
    its own ``data`` back, so ``emit_event`` returns what it always did).

    Large ``data`` is encoded once, by the caller: when the SDK sent it last in the body, its
    bytes go into the queues (and an echo) as they are (a :class:`wire.Packed` result).

    :raises QuotaExceeded: the event is above 1 MiB encoded (``limit: "event_data_bytes"``).
    """

    name = "events.emit"
    right = "events"
    Request = EmitRequest

    def execute(self, ctx: SyscallContext, req: EmitRequest) -> dict[str, Any] | wire.Packed:
        encoded = wire.encoded_tail(ctx.request, "data") if ctx.request is not None else None
        event, packed = ctx.kernel.events.publish_custom(
            req.event_type, req.data, source_agent_id=ctx.caller.agent_id, encoded_data=encoded
        )
        if not req.echo:
            return {"success": True, "event": {key: value for key, value in event.items() if key != "data"}}
        if encoded is None:  # small (or not laid out for it): encoding it again is cheaper
            return {"success": True, "event": event}
        return wire.pack_spliced({"success": True, "event": wire.Packed(packed)})


SYSCALLS: tuple[type[Syscall], ...] = (Subscribe, Unsubscribe, Poll, Emit)
