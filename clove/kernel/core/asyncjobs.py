"""Results of asynchronous syscalls (``exec``/``http``/``llm.think`` with ``async_=True``), per
caller, until ``poll_async`` collects them.

Each result is held as the UTF-8 bytes of its JSON payload (what ``poll_async`` sends: the
``payload`` string), so what is counted is what is held: 1 MB of command output costs about
1-3 MB, not the 6.5 MB its ASCII-escaped JSON text cost. A caller's unpolled results are bounded
by ``[limits].async_result_bytes`` (its own) and :data:`MAX_RESULTS`.

What happens at the bound (see :meth:`AsyncResults.admit` and :meth:`AsyncResults.push`):

* while a caller holds ``bound`` bytes or more (or :data:`MAX_RESULTS` results), its *new* async
  submissions are refused with ``quota.exceeded`` (details ``limit: "async_result_bytes"``,
  ``held``, ``bound``): nothing starts, so nothing is lost, and it can retry after polling;
* a result that arrives for a request already accepted is kept if the caller held less than the
  bound when it arrived (so the bound is overshot by at most one result), and otherwise replaced
  by a small ``quota.exceeded`` failure payload under the same ``request_id`` that says how large
  it was. Every accepted request gets exactly one result: none is dropped silently.

Refusing submissions rather than dropping old results is the least surprising choice: the
caller hears "no" at the moment it asks, and results it was promised are never thrown away.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from clove.errors import CloveError, QuotaExceeded, to_wire

MAX_RESULTS: Final = 1000
#: The bound used when none is given (``AgentLimits.async_result_bytes``'s default).
DEFAULT_MAX_BYTES: Final = 8 << 20


@dataclass(slots=True)
class _Result:
    request_id: str | int
    opcode_name: str
    payload: bytes  # UTF-8 JSON of the reply

    def to_wire(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "opcode_name": self.opcode_name, "payload": self.payload.decode("utf-8")}


@dataclass(eq=False, slots=True)
class _Queue:
    items: deque[_Result] = field(default_factory=deque)
    bytes: int = 0


def encode_payload(reply: Any) -> bytes:
    """The JSON of ``reply`` as UTF-8 bytes (non-ASCII text unescaped: 3 bytes, not 6)."""
    try:
        return json.dumps(reply, default=str, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only the escaped form is valid UTF-8
        return json.dumps(reply, default=str).encode("ascii")


class AsyncResults:
    """Per-caller queues of unpolled results, bounded in count and bytes (see the module doc)."""

    def __init__(self, *, max_per_caller: int = MAX_RESULTS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._queues: dict[int, _Queue] = {}
        self.max_per_caller = max_per_caller
        self.max_bytes = max_bytes
        #: Results replaced by a "too large" failure because the caller was at its bound.
        self.replaced = 0

    def admit(self, principal_id: int, max_bytes: int | None = None) -> None:
        """Check that the caller may start another async request.

        :raises QuotaExceeded: it holds ``max_bytes`` or more of unpolled results, or
            ``max_per_caller`` results; details name the limit, what is held and the bound.
        """
        bound = self.max_bytes if max_bytes is None else max_bytes
        queue = self._queues.get(principal_id)
        if queue is None:
            return
        if queue.bytes >= bound:
            raise QuotaExceeded(
                f"{queue.bytes} bytes of async results are waiting to be polled (the bound is {bound}); poll_async first",
                details={"limit": "async_result_bytes", "held": queue.bytes, "bound": bound, "results": len(queue.items)},
            )
        if len(queue.items) >= self.max_per_caller:
            raise QuotaExceeded(
                f"{len(queue.items)} async results are waiting to be polled (the bound is {self.max_per_caller}); poll_async first",
                details={"limit": "async_results", "held": len(queue.items), "bound": self.max_per_caller},
            )

    def push(
        self, principal_id: int, request_id: str | int, opcode_name: str, reply: dict[str, Any], *, max_bytes: int | None = None
    ) -> None:
        """Keep ``reply`` (what the synchronous call would have returned) for the caller.

        Kept as it is while the caller holds less than ``max_bytes``; otherwise replaced by a
        small ``quota.exceeded`` failure payload saying how large it was. Never dropped.
        """
        bound = self.max_bytes if max_bytes is None else max_bytes
        queue = self._queues.get(principal_id)
        if queue is None:
            queue = self._queues[principal_id] = _Queue()
        payload = encode_payload(reply)
        if queue.bytes >= bound:
            self.replaced += 1
            payload = encode_payload(failure_reply(QuotaExceeded(
                f"the result ({len(payload)} bytes) arrived while {queue.bytes} bytes of async results were waiting "
                f"to be polled (the bound is {bound}); it was not kept",
                details={"limit": "async_result_bytes", "size": len(payload), "held": queue.bytes, "bound": bound},
            )))  # fmt: skip
        queue.items.append(_Result(request_id, opcode_name, payload))
        queue.bytes += len(payload)

    def poll(self, principal_id: int, max_results: int) -> list[dict[str, Any]]:
        """Up to ``max_results`` of the caller's results, oldest first, as
        ``{request_id, opcode_name, payload}`` with ``payload`` the JSON text of the reply."""
        queue = self._queues.get(principal_id)
        out: list[dict[str, Any]] = []
        while queue is not None and queue.items and len(out) < max_results:
            result = queue.items.popleft()
            queue.bytes -= len(result.payload)
            out.append(result.to_wire())
        if queue is not None and not queue.items:
            del self._queues[principal_id]  # an empty queue costs nothing to rebuild
        return out

    def held_by(self, principal_id: int) -> dict[str, int]:
        """What one caller holds: ``{async_results, async_result_bytes}``."""
        queue = self._queues.get(principal_id)
        return {"async_results": len(queue.items) if queue else 0, "async_result_bytes": queue.bytes if queue else 0}

    def held(self) -> dict[str, int]:
        queues = self._queues.values()
        return {
            "async_queues": len(self._queues),
            "async_results": sum(len(q.items) for q in queues),
            "async_result_bytes": sum(q.bytes for q in queues),
        }

    def drop(self, principal_id: int) -> None:
        self._queues.pop(principal_id, None)


def failure_reply(error: CloveError) -> dict[str, Any]:
    """The original SDK's failure shape, used for async payloads."""
    return {"success": False, "error": error.message, "code": error.code, "details": to_wire(error)["details"]}
