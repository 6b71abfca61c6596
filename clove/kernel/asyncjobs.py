"""Results of asynchronous syscalls (``exec``/``http`` with ``async_=True``), per caller, until
``poll_async`` collects them. Bounded: the oldest result is dropped (and counted) when full."""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any

from clove.errors import CloveError, to_wire

if TYPE_CHECKING:
    from clove.kernel.syscalls.base import Deferred, SyscallContext

MAX_RESULTS = 1000


class AsyncResults:
    def __init__(self, *, max_per_caller: int = MAX_RESULTS) -> None:
        self._queues: dict[int, deque[dict[str, Any]]] = {}
        self.max_per_caller = max_per_caller
        self.dropped = 0

    def push(self, principal_id: int, request_id: str | int, opcode_name: str, reply: dict[str, Any]) -> None:
        """``reply`` is what the synchronous call would have returned (a ``success`` dict)."""
        queue = self._queues.setdefault(principal_id, deque())
        if len(queue) >= self.max_per_caller:
            queue.popleft()
            self.dropped += 1
        queue.append({"request_id": request_id, "opcode_name": opcode_name, "payload": json.dumps(reply, default=str)})

    def poll(self, principal_id: int, max_results: int) -> list[dict[str, Any]]:
        queue = self._queues.get(principal_id)
        out: list[dict[str, Any]] = []
        while queue and len(out) < max_results:
            out.append(queue.popleft())
        return out

    def held(self) -> dict[str, int]:
        return {"async_queues": len(self._queues)}

    def drop(self, principal_id: int) -> None:
        self._queues.pop(principal_id, None)


def failure_reply(error: CloveError) -> dict[str, Any]:
    """The original SDK's failure shape, used for async payloads."""
    return {"success": False, "error": error.message, "code": error.code, "details": to_wire(error)["details"]}


def accept_or_wait(ctx: SyscallContext, *, async_: bool, request_id: str | int | None, opcode_name: str, deferred: Deferred) -> Any:
    """Finish a syscall that may run asynchronously.

    Synchronous: return ``deferred`` (the dispatcher replies when it resolves). Asynchronous:
    answer ``{success, async, request_id, status: "accepted"}`` now and put the eventual reply
    in the caller's ``poll_async`` queue under ``opcode_name`` (``SYS_EXEC``, ``SYS_HTTP``).
    """
    if not async_:
        return deferred
    results = ctx.kernel.async_results
    rid: str | int = request_id if request_id is not None else f"{opcode_name.lower()}-{id(deferred):x}"
    principal = ctx.principal_id

    def done(value: Any, error: CloveError | None) -> None:
        results.push(principal, rid, opcode_name, failure_reply(error) if error is not None else value)

    deferred.bind(done)
    return {"success": True, "async": True, "request_id": rid, "status": "accepted"}
