"""The kernel's event bus: typed events, per-subscriber bounded queues, blocking polls.

Kernel event types (only the kernel emits these)::

    AGENT_SPAWNED  AGENT_EXITED  AGENT_RESTARTING  AGENT_ESCALATED  MESSAGE_RECEIVED
    STATE_CHANGED  SYSCALL_BLOCKED  RESOURCE_WARNING

Anything else an agent emits is a custom event and keeps its own name; subscribing to
``CUSTOM`` receives every custom event, ``*`` receives everything. An event is
``{type, data, source_agent_id, timestamp}`` with a wall-clock timestamp. A full queue drops
its oldest event and counts it, so a subscriber that never polls costs bounded memory.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from clove.errors import InvalidArguments, PermissionDenied
from clove.kernel.waiting import WaitSlot

if TYPE_CHECKING:
    from clove.kernel.loop import Loop
    from clove.kernel.syscalls.base import Deferred

KERNEL_EVENTS: Final = frozenset(
    {"AGENT_SPAWNED", "AGENT_EXITED", "AGENT_RESTARTING", "AGENT_ESCALATED", "MESSAGE_RECEIVED",
     "STATE_CHANGED", "SYSCALL_BLOCKED", "RESOURCE_WARNING", "DEVICE_DOWN", "DEVICE_UP",
     "INTERLOCK_ENGAGED", "INTERLOCK_RELEASED"}
)  # fmt: skip
CUSTOM: Final = "CUSTOM"
ALL: Final = "*"
_NAME: Final = re.compile(r"^[A-Za-z0-9_.:\-/]{1,64}$")


def check_event_type(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArguments(f"event types are 1-64 of [A-Za-z0-9_.:-/], got {name!r}")
    return name


@dataclass(eq=False)
class _Subscriber:
    types: set[str] = field(default_factory=set)
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    dropped: int = 0
    wait: WaitSlot = field(default_factory=WaitSlot)


class EventBus:
    def __init__(self, *, loop: Loop | None = None, queue_size: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self.loop = loop
        self.queue_size = queue_size
        self.clock = clock
        self._subs: dict[int, _Subscriber] = {}
        #: Kernel parts that see every event as it is emitted (interlock triggers).
        self.watchers: list[Callable[[dict[str, Any]], None]] = []
        self.emitted = 0

    def held(self) -> dict[str, int]:
        return {"subscribers": len(self._subs), "queued_events": sum(len(s.queue) for s in self._subs.values())}

    def subscribe(self, principal_id: int, types: Iterable[str]) -> list[str]:
        names = [check_event_type(t) if t != ALL else t for t in types]
        sub = self._subs.setdefault(principal_id, _Subscriber())
        sub.types.update(names)
        return sorted(sub.types)

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
        self.emitted += 1
        for watcher in self.watchers:
            watcher(event)
        custom = event_type not in KERNEL_EVENTS
        allowed = set(targets) if targets is not None else None
        for principal_id, sub in self._subs.items():
            if allowed is not None and principal_id not in allowed:
                continue
            if event_type in sub.types or ALL in sub.types or (custom and CUSTOM in sub.types):
                if len(sub.queue) >= self.queue_size:
                    sub.queue.popleft()
                    sub.dropped += 1
                sub.queue.append(event)
                self._wake(sub)
        return event

    def emit_custom(self, event_type: str, data: Any, *, source_agent_id: int | None) -> dict[str, Any]:
        """An event from a caller: kernel event names cannot be forged."""
        check_event_type(event_type)
        if event_type in KERNEL_EVENTS:
            raise PermissionDenied(f"{event_type} is emitted by the kernel only", details={"event_type": event_type})
        return self.emit(event_type, data, source_agent_id=source_agent_id)

    def poll(self, principal_id: int, max_events: int) -> list[dict[str, Any]]:
        sub = self._subs.get(principal_id)
        out: list[dict[str, Any]] = []
        while sub is not None and sub.queue and len(out) < max_events:
            out.append(sub.queue.popleft())
        return out

    def dropped(self, principal_id: int) -> int:
        sub = self._subs.get(principal_id)
        return sub.dropped if sub else 0

    def wait(self, principal_id: int, max_events: int, timeout: float, deferred: Deferred) -> None:
        """Resolve ``deferred`` with events as soon as there are some, or with none at
        ``timeout`` seconds. One waiter per subscriber: a newer wait answers the older empty."""
        sub = self._subs.setdefault(principal_id, _Subscriber())
        if sub.queue or timeout <= 0 or self.loop is None:
            deferred.resolve(self.poll(principal_id, max_events))
            return
        sub.wait.park(self.loop, deferred, max_events, timeout)

    @staticmethod
    def _wake(sub: _Subscriber) -> None:
        sub.wait.answer(lambda limit: [sub.queue.popleft() for _ in range(min(limit, len(sub.queue)))])

    def drop(self, principal_id: int) -> None:
        """Forget a caller that is gone (its subscriptions and queue)."""
        sub = self._subs.pop(principal_id, None)
        if sub is not None:
            sub.wait.cancel()
