"""Events: subscribe to kernel and custom events, poll them (optionally blocking), emit."""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class EventsMixin(ClientBase):
    def subscribe(self, event_types: list[str] | str) -> dict[str, Any]:
        """Receive these event types (``"*"`` for all, ``"CUSTOM"`` for every custom one).

        :returns: ``{success, subscribed, added, count}``: the types of this call (sorted),
            those newly added, how many types you now hold; or ``{success: False, code:
            "quota.exceeded", ...}`` past your ``subscriptions`` limit (nothing added).
        """
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        return self._compat("events.subscribe", event_types=types)

    def unsubscribe(self, event_types: list[str] | str) -> dict[str, Any]:
        """:returns: ``{success, unsubscribed}``."""
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        return self._compat("events.unsubscribe", event_types=types)

    def poll_events(self, max_events: int = 10, timeout: float | None = None) -> dict[str, Any]:
        """Queued events, oldest first: ``{success, events, count, dropped, dropped_bytes}``;
        each event is ``{type, data, source_agent_id, timestamp}``; ``dropped``/``dropped_bytes``
        count what your bounded queue lost. ``timeout`` (seconds) waits for the first."""
        body: dict[str, Any] = {"max_events": max_events}
        if timeout:
            body["timeout"] = float(timeout)
        return self._compat("events.poll", **body)

    def emit_event(self, event_type: str, data: Any = None) -> dict[str, Any]:
        """Publish a custom event (kernel event names are refused; at most 1 MiB encoded).
        :returns: ``{success, event}``."""
        # The kernel need not send ``data`` back (``echo``): it is put back here. ``data`` goes
        # last, where the kernel can take it as encoded here rather than encode it again.
        reply = self._compat("events.emit", event_type=event_type, echo=False, data=data)
        if not reply.get("success") and reply.get("code") == "proto.invalid_args" and reply.get("details", {}).get("argument") == "echo":
            return self._compat("events.emit", event_type=event_type, data=data)  # a kernel without ``echo``
        event = reply.get("event")
        if isinstance(event, dict) and "data" not in event:
            event["data"] = data
        return reply
