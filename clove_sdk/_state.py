"""State: a key-value store in the kernel, in three scopes (docs/state.md).

``global`` is shared by everyone, ``agent`` is private to you (kept by your agent name across
restarts), ``session`` is shared but forgotten when the kernel stops. Values are anything
msgpack carries (bytes stay bytes; tuples come back as lists), up to 1 MiB encoded.
"""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class StateMixin(ClientBase):
    def store(self, key: str, value: Any, scope: str = "global", ttl: float | None = None) -> dict[str, Any]:
        """Set ``key`` (1-256 characters) in ``scope``; ``ttl`` in seconds, ``None`` for never.

        :returns: ``{success, key, scope}`` or ``{success: False, error, code}``
            (``proto.invalid_args``, ``quota.exceeded``, ``perm.denied``).
        """
        body: dict[str, Any] = {"key": key, "value": value, "scope": scope}
        if ttl is not None:
            body["ttl"] = ttl
        return self._compat("state.store", **body)

    def fetch(self, key: str, scope: str | None = None) -> dict[str, Any]:
        """Look ``key`` up in your agent scope, then session, then global (or in ``scope``).

        :returns: ``{success, exists, value, scope}``; ``exists`` False with ``value`` and
            ``scope`` None when the key is absent or expired.
        """
        return self._compat("state.fetch", key=key, **({"scope": scope} if scope is not None else {}))

    def delete_key(self, key: str, scope: str | None = None) -> dict[str, Any]:
        """Delete the key :meth:`fetch` would return. :returns: ``{success, deleted, scope}``."""
        return self._compat("state.delete", key=key, **({"scope": scope} if scope is not None else {}))

    def list_keys(self, prefix: str = "", scope: str | None = None) -> dict[str, Any]:
        """Names starting with ``prefix`` in every scope you can see (or in ``scope``), sorted,
        each once. :returns: ``{success, keys, count, truncated}`` (at most 10,000 keys)."""
        return self._compat("state.keys", prefix=prefix, **({"scope": scope} if scope is not None else {}))
