"""Syscalls that may answer at once and deliver their result later (``async_=True``):
``exec``, ``http`` and ``llm.think`` share this glue between the dispatcher's reply and the
caller's :class:`~clove.kernel.core.asyncjobs.AsyncResults` queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clove.errors import CloveError
from clove.kernel.core.asyncjobs import failure_reply
from clove.kernel.core.deferred import Deferred

if TYPE_CHECKING:
    from clove.kernel.syscalls.base import SyscallContext


def accept_or_wait(
    ctx: SyscallContext, *, async_: bool, request_id: str | int | None, opcode_name: str, start: Callable[[], Deferred]
) -> Any:
    """Start a syscall that may run asynchronously (``start()`` begins the work).

    Synchronous: return ``start()``'s Deferred (the dispatcher replies when it resolves).
    Asynchronous: check the caller is under its ``async_result_bytes`` bound *before* starting
    (:meth:`AsyncResults.admit`), answer ``{success, async, request_id, status: "accepted"}``
    now and put the eventual reply in the caller's ``poll_async`` queue under ``opcode_name``
    (``SYS_EXEC``, ``SYS_HTTP``, ``SYS_THINK``).

    :raises QuotaExceeded: asynchronous, and the caller's unpolled results are at the bound.
    """
    if not async_:
        return start()
    results = ctx.kernel.async_results
    principal = ctx.principal_id
    bound = ctx.limits.async_result_bytes
    results.admit(principal, bound)
    deferred = start()
    rid: str | int = request_id if request_id is not None else f"{opcode_name.lower()}-{id(deferred):x}"

    def done(value: Any, error: CloveError | None) -> None:
        results.push(principal, rid, opcode_name, failure_reply(error) if error is not None else value, max_bytes=bound)

    deferred.bind(done)
    return {"success": True, "async": True, "request_id": rid, "status": "accepted"}
