"""State syscalls: store, fetch, delete, keys (see :mod:`clove.kernel.services.state`, docs/state.md).

Writes need the ``state.write`` right, reads ``state.read``. Each is a few indexed SQLite
statements on the loop. Errors: ``proto.invalid_args`` for a bad key (1-256 characters, no
NUL), scope (``global``, ``agent``, ``session``) or ttl (seconds above 0); ``quota.exceeded``
for a value above 1 MiB encoded, or an owner above its key or byte quota.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from clove.kernel.syscalls.base import Syscall, SyscallContext

if TYPE_CHECKING:
    from clove.kernel.services.state import StateService


def _service(ctx: SyscallContext) -> StateService:
    return ctx.kernel.state


@dataclass(frozen=True, slots=True)
class StoreRequest:
    key: str
    value: Any
    scope: str = "global"
    ttl: float | None = None


@final
class Store(Syscall):
    """``state.store {key, value, scope="global", ttl=None}`` → ``{success, key, scope}``.

    Replaces the key's value and TTL in that scope; ``ttl`` in seconds, ``None`` for never.
    """

    name = "state.store"
    category = "STATE_STORE"
    right = "state.write"
    Request = StoreRequest

    def execute(self, ctx: SyscallContext, req: StoreRequest) -> dict[str, Any]:
        return _service(ctx).put(ctx, req.key, req.value, req.scope, req.ttl)


@dataclass(frozen=True, slots=True)
class KeyRequest:
    key: str
    scope: str | None = None


@final
class Fetch(Syscall):
    """``state.fetch {key, scope=None}`` → ``{success, exists, value, scope}``.

    Without a scope: the caller's agent scope, then session, then global. Absent (or expired):
    ``exists`` False, ``value`` and ``scope`` None.
    """

    name = "state.fetch"
    category = "STATE_STORE"
    right = "state.read"
    Request = KeyRequest

    def execute(self, ctx: SyscallContext, req: KeyRequest) -> dict[str, Any]:
        return _service(ctx).get(ctx, req.key, req.scope)


@final
class Delete(Syscall):
    """``state.delete {key, scope=None}`` → ``{success, deleted, scope}``: removes the key
    :class:`Fetch` would return (only that one), and says from which scope."""

    name = "state.delete"
    category = "STATE_STORE"
    right = "state.write"
    Request = KeyRequest

    def execute(self, ctx: SyscallContext, req: KeyRequest) -> dict[str, Any]:
        return _service(ctx).delete(ctx, req.key, req.scope)


@dataclass(frozen=True, slots=True)
class KeysRequest:
    prefix: str = ""
    scope: str | None = None


@final
class Keys(Syscall):
    """``state.keys {prefix="", scope=None}`` → ``{success, keys, count, truncated}``: sorted
    names, each once however many visible scopes hold it, at most 10,000."""

    name = "state.keys"
    category = "STATE_STORE"
    right = "state.read"
    Request = KeysRequest

    def execute(self, ctx: SyscallContext, req: KeysRequest) -> dict[str, Any]:
        return _service(ctx).keys(ctx, req.prefix, req.scope)


SYSCALLS: tuple[type[Syscall], ...] = (Store, Fetch, Delete, Keys)
