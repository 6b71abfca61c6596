"""Permissions: read your own, lower them, or set a child's within your own."""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class PermissionsMixin(ClientBase):
    def get_permissions(self, agent_id: int | None = None) -> dict[str, Any]:
        """:returns: ``{success, permissions, level}``."""
        return self._compat("permissions.get", **({"agent_id": agent_id} if agent_id is not None else {}))

    def set_permissions(
        self, permissions: dict[str, Any] | None = None, level: str | None = None, agent_id: int | None = None
    ) -> dict[str, Any]:
        """Set an agent's level and/or grants (``read_paths``, ``write_paths``, ``exec_allow``,
        ``exec_deny``, ``http_domains``, ``http_methods``, ``can_spawn``, ``max_children``, ``can_detach``,
        ``llm_tokens``); without ``agent_id``, the caller's own (an agent's, or an operator
        session's), which can only be lowered. :returns: ``{success, agent_id}`` (and the new
        permissions; ``session_id`` for an operator session)."""
        body: dict[str, Any] = {}
        if permissions is not None:
            body["permissions"] = dict(permissions)
        if level is not None:
            body["level"] = level
        if agent_id is not None:
            body["agent_id"] = agent_id
        return self._compat("permissions.set", **body)
