"""Post-mortem syscalls, for operators: list the bundles and read one (``clove postmortem``).

They need the ``admin`` right. A bundle holds more than an agent's log (which ``agents.logs``
guards): its journal slice (the agent's syscalls, which ``audit`` guards), its grants and its
recording, which may hold prompts and replies. Only a caller trusted with all of those may read
it, so agents, even one that spawned the dead agent, cannot. See docs/postmortem.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, final

from clove.kernel.services.postmortem.store import LATEST
from clove.kernel.syscalls.base import Syscall, SyscallContext

#: The most of one file ``postmortem.get`` returns (the default is 64 KiB).
MAX_CONTENT_BYTES = 256 << 10


@dataclass(frozen=True, slots=True)
class ListRequest:
    name: str | None = None


@final
class ListPostmortems(Syscall):
    """``postmortem.list {name?}`` → ``{success, bundles}``: each ``{agent, agent_id, bundle,
    time, timestamp, reason, escalated, exit_code, signal, path, size}``, agents by name and
    each agent's newest bundle first.

    :raises proto.invalid_args: ``name`` is not a valid agent name.
    """

    name = "postmortem.list"
    right = "admin"
    Request = ListRequest

    def execute(self, ctx: SyscallContext, req: ListRequest) -> dict[str, Any]:
        return {"success": True, "bundles": ctx.kernel.postmortem.bundles(req.name)}


@dataclass(frozen=True, slots=True)
class GetRequest:
    name: str
    bundle: str = LATEST
    include: list[str] = field(default_factory=list)
    max_bytes: int = 64 << 10


@final
class GetPostmortem(Syscall):
    """``postmortem.get {name, bundle?, include?, max_bytes?}`` → ``{success, agent, bundle,
    path, summary, files, contents}``: the bundle ``bundle`` (a name from the list, or
    ``"latest"``, the default) of agent ``name``; ``contents`` holds the last ``max_bytes``
    (at most 256 KiB) of each file named in ``include`` (``log.txt``, ``journal.jsonl``...).

    :raises notfound: the agent has no such bundle.  :raises proto.invalid_args: bad name or file.
    """

    name = "postmortem.get"
    right = "admin"
    Request = GetRequest

    def execute(self, ctx: SyscallContext, req: GetRequest) -> dict[str, Any]:
        limit = max(1, min(req.max_bytes, MAX_CONTENT_BYTES))
        return {"success": True, **ctx.kernel.postmortem.bundle(req.name, req.bundle, req.include, limit)}


SYSCALLS: tuple[type[Syscall], ...] = (ListPostmortems, GetPostmortem)
