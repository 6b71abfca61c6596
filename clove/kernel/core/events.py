"""The kernel's event bus: typed events, per-subscriber bounded queues, blocking polls.

Kernel event types (only the kernel emits these)::

    AGENT_SPAWNED  AGENT_EXITED  AGENT_RESTARTING  AGENT_ESCALATED  MESSAGE_RECEIVED
    STATE_CHANGED  SYSCALL_BLOCKED  RESOURCE_WARNING

Anything else an agent emits is a custom event and keeps its own name; subscribing to
``CUSTOM`` receives every custom event, ``*`` receives everything. An event is
``{type, data, source_agent_id, timestamp}`` with a wall-clock timestamp.

Bounds, so a subscriber that never polls costs bounded memory:

* each subscriber's queue holds at most ``queue_size`` events and ``max_bytes`` bytes (its own
  ``[limits].event_queue_bytes``, given at subscribe). Events are queued msgpack-encoded, so the
  bytes counted are the bytes held. A full queue drops its oldest events to make room, counting
  them (``dropped``) and their bytes (``dropped_bytes``); an event larger than the whole queue is
  dropped (and counted) for that subscriber only;
* a caller holds at most ``max_subscriptions`` types (its ``[limits].subscriptions``): a
  subscribe that would go over adds nothing and fails with ``quota.exceeded``. A subscribe costs
  O(types in the call) and its reply names only those types, whatever the caller already holds;
* a custom event is at most :data:`MAX_EVENT_BYTES` encoded (``quota.exceeded``).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgpack

from clove import wire
from clove.errors import InvalidArguments, PermissionDenied, QuotaExceeded
from clove.kernel.core.waiting import WaitSlot

if TYPE_CHECKING:
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.core.loop import Loop

KERNEL_EVENTS: Final = frozenset(
    {"AGENT_SPAWNED", "AGENT_EXITED", "AGENT_RESTARTING", "AGENT_ESCALATED", "MESSAGE_RECEIVED",
     "STATE_CHANGED", "SYSCALL_BLOCKED", "RESOURCE_WARNING", "DEVICE_DOWN", "DEVICE_UP",
     "INTERLOCK_ENGAGED", "INTERLOCK_RELEASED", "AGENT_THROTTLED", "KERNEL_RESOURCE_LOW", "FLEET_CONNECTION"}
)  # fmt: skip
CUSTOM: Final = "CUSTOM"
ALL: Final = "*"
_NAME: Final = re.compile(r"^[A-Za-z0-9_.:\-/]{1,64}$")
#: Defaults of a subscriber's bounds when none is given (``AgentLimits``' defaults).
QUEUE_BYTES: Final = 4 << 20
MAX_SUBSCRIPTIONS: Final = 256
#: The largest custom event (msgpack-encoded, data and envelope) a caller may emit.
MAX_EVENT_BYTES: Final = 1 << 20


def check_event_type(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArguments(f"event types are 1-64 of [A-Za-z0-9_.:-/], got {name!r}")
    return name


def _pack(event: dict[str, Any]) -> bytes:
    # default=str: a kernel event must never fail to queue over an odd value in its data.
    return msgpack.packb(event, use_bin_type=True, default=str)  # type: ignore[no-any-return]


def _unpack(packed: bytes) -> dict[str, Any]:
    return msgpack.unpackb(packed, raw=False, strict_map_key=False)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Subscribed:
    """What a subscribe did: the call's types (sorted), those it newly added, and how many the
    caller now holds."""

    subscribed: list[str]
    added: list[str]
    count: int


@dataclass(eq=False)
class _Subscriber:
    max_bytes: int = QUEUE_BYTES
    types: set[str] = field(default_factory=set)
    queue: deque[bytes] = field(default_factory=deque)  # msgpack-encoded events
    bytes: int = 0
    dropped: int = 0
    dropped_bytes: int = 0
    wait: WaitSlot = field(default_factory=WaitSlot)

    def take(self, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while self.queue and len(out) < limit:
            packed = self.queue.popleft()
            self.bytes -= len(packed)
            out.append(_unpack(packed))
        return out


class EventBus:
    def __init__(
        self,
        *,
        loop: Loop | None = None,
        queue_size: int = 1000,
        queue_bytes: int = QUEUE_BYTES,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loop = loop
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.max_subscriptions = max_subscriptions
        self.clock = clock
        self._subs: dict[int, _Subscriber] = {}
        #: Kernel parts that see every event as it is emitted (interlock triggers).
        self.watchers: list[Callable[[dict[str, Any]], None]] = []
        self.emitted = 0

    def held(self) -> dict[str, int]:
        subs = self._subs.values()
        return {
            "subscribers": len(self._subs),
            "subscriptions": sum(len(s.types) for s in subs),
            "queued_events": sum(len(s.queue) for s in subs),
            "event_queue_bytes": sum(s.bytes for s in subs),
        }

    def held_by(self, principal_id: int) -> dict[str, int]:
        """What one caller holds: ``{subscriptions, queued_events, event_queue_bytes}``."""
        sub = self._subs.get(principal_id)
        if sub is None:
            return {"subscriptions": 0, "queued_events": 0, "event_queue_bytes": 0}
        return {"subscriptions": len(sub.types), "queued_events": len(sub.queue), "event_queue_bytes": sub.bytes}

    def _subscriber(self, principal_id: int) -> _Subscriber:
        sub = self._subs.get(principal_id)
        if sub is None:
            sub = self._subs[principal_id] = _Subscriber(max_bytes=self.queue_bytes)
        return sub

    def subscribe(
        self, principal_id: int, types: Iterable[str], *, max_subscriptions: int | None = None, max_bytes: int | None = None
    ) -> Subscribed:
        """Add ``types`` to the caller's subscriptions, all or none, in O(len(types)).

        :param max_subscriptions: how many types the caller may hold (its ``subscriptions``).
        :param max_bytes: its queue's byte bound (its ``event_queue_bytes``).
        :raises InvalidArguments: a malformed type name.
        :raises QuotaExceeded: the new types would take it over ``max_subscriptions``.
        """
        wanted = list(dict.fromkeys(check_event_type(t) if t != ALL else t for t in types))
        cap = self.max_subscriptions if max_subscriptions is None else max_subscriptions
        sub = self._subs.get(principal_id)
        current = sub.types if sub is not None else set()
        added = [name for name in wanted if name not in current]
        if added and len(current) + len(added) > cap:
            raise QuotaExceeded(
                f"subscribing to {len(added)} more event types would hold {len(current) + len(added)}; the bound is {cap}",
                details={"limit": "subscriptions", "held": len(current), "bound": cap, "requested": len(added)},
            )
        sub = self._subscriber(principal_id)
        if max_bytes is not None:
            sub.max_bytes = max_bytes
        sub.types.update(added)
        return Subscribed(sorted(wanted), sorted(added), len(sub.types))

    def unsubscribe(self, principal_id: int, types: Iterable[str]) -> list[str]:
        sub = self._subs.get(principal_id)
        removed = []
        if sub is not None:
            for name in types:
                if name in sub.types:
                    sub.types.discard(name)
                    removed.append(name)
        return removed

    def subscriptions(self, principal_id: int) -> list[str]:
        sub = self._subs.get(principal_id)
        return sorted(sub.types) if sub else []

    def emit(
        self,
        event_type: str,
        data: Any = None,
        *,
        source_agent_id: int | None = None,
        targets: Iterable[int] | None = None,
    ) -> dict[str, Any]:
        """Deliver an event to every subscriber of its type (only ``targets`` when given)."""
        event = {"type": event_type, "data": data, "source_agent_id": source_agent_id, "timestamp": self.clock()}
        self._publish(event, targets, None)
        return event

    def _publish(self, event: dict[str, Any], targets: Iterable[int] | None, packed: bytes | None) -> None:
        self.emitted += 1
        for watcher in self.watchers:
            watcher(event)
        event_type = event["type"]
        custom = event_type not in KERNEL_EVENTS
        allowed = set(targets) if targets is not None else None
        for principal_id, sub in self._subs.items():
            if allowed is not None and principal_id not in allowed:
                continue
            if event_type in sub.types or ALL in sub.types or (custom and CUSTOM in sub.types):
                if packed is None:  # encoded once, shared by every queue it goes to
                    packed = _pack(event)
                self._enqueue(sub, packed)

    def _enqueue(self, sub: _Subscriber, packed: bytes) -> None:
        """Queue one event, dropping the oldest (counted) until it fits the count and bytes."""
        size = len(packed)
        if size > sub.max_bytes:  # could never fit: this subscriber loses it, counted
            sub.dropped += 1
            sub.dropped_bytes += size
            return
        queue = sub.queue
        while queue and (len(queue) >= self.queue_size or sub.bytes + size > sub.max_bytes):
            old = len(queue.popleft())
            sub.bytes -= old
            sub.dropped += 1
            sub.dropped_bytes += old
        queue.append(packed)
        sub.bytes += size
        self._wake(sub)

    def emit_custom(
        self, event_type: str, data: Any, *, source_agent_id: int | None, max_bytes: int = MAX_EVENT_BYTES
    ) -> dict[str, Any]:
        """An event from a caller: kernel event names cannot be forged.

        :raises QuotaExceeded: the event is larger than ``max_bytes`` encoded.
        """
        return self.publish_custom(event_type, data, source_agent_id=source_agent_id, max_bytes=max_bytes)[0]

    def publish_custom(
        self, event_type: str, data: Any, *, source_agent_id: int | None, max_bytes: int = MAX_EVENT_BYTES,
        encoded_data: bytes | memoryview | None = None,
    ) -> tuple[dict[str, Any], bytes]:  # fmt: skip
        """:meth:`emit_custom`, returning the event and its encoding too (what the queues hold).

        :param encoded_data: ``data`` as the caller encoded it: spliced in, not encoded again.
        """
        check_event_type(event_type)
        if event_type in KERNEL_EVENTS:
            raise PermissionDenied(f"{event_type} is emitted by the kernel only", details={"event_type": event_type})
        event = {"type": event_type, "data": data, "source_agent_id": source_agent_id, "timestamp": self.clock()}
        if encoded_data is None:
            packed = _pack(event)
        else:  # the same bytes, but the large part copied rather than encoded
            packed = bytes(wire.pack_spliced({**event, "data": wire.Packed(encoded_data)}).data)  # joined: no copy
        if len(packed) > max_bytes:
            raise QuotaExceeded(
                f"the event is {len(packed)} bytes encoded; the bound is {max_bytes}",
                details={"limit": "event_data_bytes", "size": len(packed), "bound": max_bytes},
            )
        self._publish(event, None, packed)
        return event, packed

    def poll(self, principal_id: int, max_events: int) -> list[dict[str, Any]]:
        sub = self._subs.get(principal_id)
        return sub.take(max_events) if sub is not None else []

    def dropped(self, principal_id: int) -> int:
        sub = self._subs.get(principal_id)
        return sub.dropped if sub else 0

    def dropped_bytes(self, principal_id: int) -> int:
        sub = self._subs.get(principal_id)
        return sub.dropped_bytes if sub else 0

    def wait(self, principal_id: int, max_events: int, timeout: float, deferred: Deferred) -> None:
        """Resolve ``deferred`` with events as soon as there are some, or with none at
        ``timeout`` seconds. One waiter per subscriber: a newer wait answers the older empty."""
        sub = self._subscriber(principal_id)
        if sub.queue or timeout <= 0 or self.loop is None:
            deferred.resolve(self.poll(principal_id, max_events))
            return
        sub.wait.park(self.loop, deferred, max_events, timeout)

    @staticmethod
    def _wake(sub: _Subscriber) -> None:
        sub.wait.answer(sub.take)

    def drop(self, principal_id: int) -> None:
        """Forget a caller that is gone (its subscriptions and queue)."""
        sub = self._subs.pop(principal_id, None)
        if sub is not None:
            sub.wait.cancel()
