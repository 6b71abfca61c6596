"""The state service: the kernel's key-value store for agents and operators (``state.*``).

Scopes (see docs/state.md)::

    global   one namespace shared by every caller                         persisted
    agent    one private namespace per agent NAME (operators share one,    persisted
             "@operator"), so it survives restarts of the agent and of the kernel
    session  one namespace shared by every caller, in memory              gone when the kernel stops

A fetch or delete without a scope acts on the caller's agent scope first, then session, then
global. Storage is :class:`~clove.kernel.services.statestore.StateStore` (SQLite at
``<state_dir>/state.db``); this module names the caller, emits ``STATE_CHANGED`` and purges
expired keys from housekeeping at most once a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from clove.kernel.audit.journal import Category
from clove.kernel.services.statestore import PURGE_BATCH, StateStore

if TYPE_CHECKING:
    from clove.kernel.core.principal import Principal
    from clove.kernel.services.host import ServiceHost, ServiceRegistry

log = logging.getLogger(__name__)

#: The private scope shared by every operator session (agent names cannot start with "@").
OPERATOR_OWNER: Final = "@operator"
PURGE_INTERVAL: Final = 1.0


class StateService:
    """The store as callers see it: the caller's name picks its private scope, and every
    change is announced as a ``STATE_CHANGED`` event."""

    def __init__(
        self, kernel: ServiceHost, store: StateStore, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kernel = kernel
        self.store = store
        self._clock = clock
        self._next_purge = 0.0

    @staticmethod
    def owner(ctx: Principal) -> str:
        """The caller's private-scope name: its agent name, or ``"@operator"``."""
        return ctx.agent.name if ctx.agent is not None else OPERATOR_OWNER

    # ---- operations (the syscalls' bodies) ------------------------------------------------

    def put(self, ctx: Principal, key: str, value: Any, scope: str, ttl: float | None) -> dict[str, Any]:
        owner = self.owner(ctx)
        self.store.store(owner, key, value, scope=scope, ttl=ttl)
        self._changed(
            key, scope, owner if scope == "agent" else "", "store", ctx.principal_id, ctx.caller.agent_id
        )
        return {"success": True, "key": key, "scope": scope}

    def get(self, ctx: Principal, key: str, scope: str | None) -> dict[str, Any]:
        found = self.store.fetch(self.owner(ctx), key, scope)
        if found is None:
            return {"success": True, "exists": False, "value": None, "scope": None}
        return {"success": True, "exists": True, "value": found[1], "scope": found[0]}

    def delete(self, ctx: Principal, key: str, scope: str | None) -> dict[str, Any]:
        removed = self.store.delete(self.owner(ctx), key, scope)
        if removed is None:
            return {"success": True, "deleted": False, "scope": None}
        self._changed(key, removed.scope, removed.owner, "delete", ctx.principal_id, ctx.caller.agent_id)
        return {"success": True, "deleted": True, "scope": removed.scope}

    def keys(self, ctx: Principal, prefix: str, scope: str | None) -> dict[str, Any]:
        keys, truncated = self.store.keys(self.owner(ctx), prefix, scope)
        return {"success": True, "keys": keys, "count": len(keys), "truncated": truncated}

    # ---- housekeeping and shutdown --------------------------------------------------------

    def housekeeping(self) -> None:
        """Runs after every loop turn: a clock read unless a purge is due (once a second, and
        only when some deadline has passed). A full batch brings the next purge forward."""
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL
        if self.store.clock() < self.store.next_expiry:
            return
        gone = self.store.purge_expired()
        if not gone:
            return
        if len(gone) >= PURGE_BATCH:
            self._next_purge = now
        for removed in gone:
            self._changed(removed.key, removed.scope, removed.owner, "expire", None, None)
        if self.kernel.audit_config.wants(Category.STATE_STORE, False):
            self.kernel.journal.append(
                Category.STATE_STORE,
                "state.expired",
                decision="n/a",
                details={"count": len(gone), "keys": [f"{r.scope}:{r.key}" for r in gone[:20]]},
            )

    def close(self) -> None:
        self.store.close()

    # ---- events ---------------------------------------------------------------------------

    def _changed(
        self, key: str, scope: str, owner: str, action: str, by: int | None, source: int | None
    ) -> None:
        self.kernel.events.emit(
            "STATE_CHANGED",
            {"key": key, "scope": scope, "action": action, "by": by},
            source_agent_id=source,
            targets=self._targets(scope, owner),
        )

    def _targets(self, scope: str, owner: str) -> list[int] | None:
        """Who may hear of a change: everyone for shared scopes; for a private key only its
        owner (the live agent of that name, or every operator session)."""
        if scope != "agent":
            return None
        if owner == OPERATOR_OWNER:
            return self.kernel.sessions.ids()
        table = self.kernel.supervisor.table
        return [table.find(name=owner).id] if table.name_in_use(owner) else []


def attach(kernel: ServiceRegistry) -> None:
    """Open ``<state_dir>/state.db``, set ``kernel.state``, purge in housekeeping, close at
    shutdown."""
    service = StateService(kernel, StateStore(kernel.state_dir / "state.db").open())
    kernel.state = service
    kernel.loop.housekeeping.append(service.housekeeping)
    kernel.on_shutdown.append(service.close)
