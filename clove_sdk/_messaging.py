"""Messaging: names, send, receive (optionally blocking), broadcast (docs/messaging.md)."""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class MessagingMixin(ClientBase):
    def register_name(self, name: str) -> dict[str, Any]:
        """Register a name others can send to (one per caller; a new one replaces the old).

        :returns: ``{success, agent_id, name}``; ``code`` ``conflict`` when it is taken.
        """
        return self._compat("ipc.register", name=name)

    def register(self, name: str) -> dict[str, Any]:
        """Alias of :meth:`register_name` (the original SDK's name)."""
        return self.register_name(name)

    def send_message(
        self, message: dict[str, Any], to: int | None = None, to_name: str | None = None
    ) -> dict[str, Any]:
        """Send ``message`` to an agent or operator by id (``to``) or name (``to_name``).

        :returns: ``{success, delivered_to}``; failures carry ``code`` ``notfound`` (no such
            live recipient), ``ipc.mailbox_full`` or ``quota.exceeded`` (above 256 KiB).
        """
        body: dict[str, Any] = {}
        if to is not None:
            body["to"] = to
        if to_name is not None:
            body["to_name"] = to_name
        body["message"] = message  # last: the kernel passes it on as encoded here
        return self._compat("ipc.send", **body)

    def recv_messages(self, max_messages: int = 10, timeout: float | None = None) -> dict[str, Any]:
        """Take up to ``max_messages`` queued messages, oldest first: ``{success, messages,
        count}``; each is ``{from_id, from_name, message, age_ms}``. Returns at once unless
        ``timeout`` (seconds) is given, in which case it waits for the first message."""
        body: dict[str, Any] = {"max_messages": max_messages}
        if timeout:
            body["timeout"] = float(timeout)
        return self._compat("ipc.recv", **body)

    def broadcast(self, message: dict[str, Any], include_self: bool = False) -> dict[str, Any]:
        """Send ``message`` to every live agent (and operator sessions that use messaging).

        :returns: ``{success, delivered_count, full}`` (``full``: ids whose mailbox was full).
        """
        return self._compat("ipc.broadcast", include_self=include_self, message=message)  # message last, as in send
