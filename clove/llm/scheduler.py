"""Weighted fair queuing of LLM requests by tokens: start-time fair queuing with a virtual time.

One :class:`FairQueue` per provider; a *flow* is one caller's FIFO of requests for it. The
scheduler is start-time fair queuing (Goyal, Vin and Cheng, SIGCOMM 1996) counted in tokens, as
the Virtual Token Counter of Sheng et al., "Fairness in Serving Large Language Models" (OSDI
2024) is, with weights:

* each flow has a *tag*, the start tag of its head request: the finish tag of its previous one
  (the tokens it was served, divided by its weight, cumulated from where it was last lifted);
* the next request comes from the backlogged flow (requests queued) with the smallest tag whose
  head request is eligible (its budget and rate limits admit it); a tie goes to the flow served
  least recently (never served first, then the one backlogged first), so equal flows alternate;
* on dispatch the flow's tag grows by an *estimate* of the request's tokens divided by its
  weight; when the request returns, the estimate is replaced by the tokens billed, exactly (a
  failure or a cancellation bills 0): an estimate counts only while its request is in flight;
* the *virtual time* ``V``, while any request is in service, is the largest start tag dispatched,
  counted in tokens billed (a flow's estimates still in flight are left out, so over-estimates
  with several slots cannot inflate it); with none in service, the smallest tag among the
  backlogged flows (no less than that), or, with none either, the largest tag of any flow;
* a flow that becomes backlogged starts at ``max(its tag, V)``: idle time earns no credit, and a
  flow that arrives while another's request is in service starts level with that request, not
  behind it.

What this guarantees (``L``: a request's billed tokens divided by its flow's weight; ``E``: the
gap between its estimate and its billed tokens, divided likewise); docs/llm.md says it for users
and tests/unit/test_llm_fairness.py checks it:

* two flows backlogged (and eligible) from the same moment have been served, counting at
  dispatch, within ``L_max + (slots - 1) * E_max`` of each other at every moment: within one
  request with one slot, whatever the sizes and estimates; so weights 3 and 1 share 3 : 1;
* with one slot, a flow that sends one request at a time (the next when the previous returns)
  beside one backlogged flow waits for the request in service ``j``; besides ``j``, the other
  flow is dispatched requests only while it has been served, from ``j`` on, less than the
  one-at-a-time flow's previous request ``b`` (each flow's tag when it arrives is
  ``max(start(b) + b, start(j))`` against the other's ``start(j) + j + ...``, and
  ``start(b) <= start(j)``). So when ``b`` was no larger than ``j`` (equal sizes and weights:
  always), it gets the next free slot.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar, final

__all__ = ["FairQueue", "Ticket"]

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class _Flow(Generic[T]):
    key: int
    weight: float = 1.0
    finish: float = 0.0  # finish tag of its settled requests (billed / weight, cumulated; lifted)
    pending: float = 0.0  # estimates / weight of its requests in flight
    in_flight: int = 0
    since: int = -1  # when it last became backlogged
    served: int = -1  # when it was last dispatched (-1: never): ties go to the least recent
    queue: deque[T] = field(default_factory=deque)

    @property
    def tag(self) -> float:
        return self.finish + self.pending


@dataclass(eq=False, slots=True)
class Ticket(Generic[T]):
    """A dispatched request: what :meth:`FairQueue.settle` needs when it returns."""

    item: T
    start: float  # its start tag
    charge: float  # its estimate / weight, charged until it settles
    flow: _Flow[T]


@final
class FairQueue(Generic[T]):
    """Flows of items keyed by an int (the caller's id), served by smallest start tag."""

    def __init__(self) -> None:
        self._flows: dict[int, _Flow[T]] = {}
        self._backlogged: dict[int, _Flow[T]] = {}
        self._seq = itertools.count()
        self._vtime = 0.0  # the largest start tag dispatched, counting billed tokens only
        self._in_service = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def set_weight(self, key: int, weight: float) -> None:
        if weight <= 0:
            raise ValueError(f"a weight must be positive, got {weight}")
        self._flow(key).weight = weight

    def _flow(self, key: int) -> _Flow[T]:
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = _Flow(key)
        return flow

    def virtual_time(self) -> float:
        """``V``, where a flow that becomes backlogged starts: while any request is in service,
        the largest start tag dispatched (counting tokens billed, not estimates in flight); else
        the smallest tag of a backlogged flow (no less than that); else the largest tag."""
        if self._in_service > 0:
            return self._vtime
        if self._backlogged:
            return max(self._vtime, min(f.tag for f in self._backlogged.values()))
        return max(self._vtime, max((f.tag for f in self._flows.values()), default=0.0))

    def push(self, key: int, item: T, *, front: bool = False) -> None:
        """Queue ``item`` in ``key``'s flow (``front``: ahead of its others, for a retry)."""
        flow = self._flow(key)
        if not flow.queue:
            vtime = self.virtual_time()
            if flow.tag < vtime:  # lifted: no credit for having been idle
                flow.finish = vtime - flow.pending
            flow.since = next(self._seq)
            self._backlogged[key] = flow
        if front:
            flow.queue.appendleft(item)
        else:
            flow.queue.append(item)
        self._size += 1

    def order(self) -> Iterator[int]:
        """Backlogged flows, smallest tag first (ties: the least recently served first, then the
        first backlogged), lazily: a caller that takes the first one pays O(n) for the snapshot,
        not a sort."""
        heap = [(f.tag, f.served, f.since, f.key) for f in self._backlogged.values()]
        heapq.heapify(heap)
        while heap:
            yield heapq.heappop(heap)[3]

    def head(self, key: int) -> T | None:
        flow = self._flows.get(key)
        return flow.queue[0] if flow is not None and flow.queue else None

    def pop(self, key: int) -> T:
        """Take ``key``'s head item out without serving it (it is refused). :raises KeyError:
        the flow has none."""
        flow = self._backlogged[key]
        item = flow.queue.popleft()
        self._taken(flow)
        return item

    def dispatch(self, key: int, estimate: float) -> Ticket[T]:
        """Take ``key``'s head item into service, charging ``estimate`` tokens until it settles.
        :raises KeyError: the flow has none."""
        flow = self._backlogged[key]
        item = flow.queue.popleft()
        self._taken(flow)
        start = flow.tag
        self._vtime = max(self._vtime, flow.finish)  # billed only: flow.pending is estimates
        charge = estimate / flow.weight
        flow.pending += charge
        flow.in_flight += 1
        flow.served = next(self._seq)
        self._in_service += 1
        return Ticket(item, start, charge, flow)

    def settle(self, ticket: Ticket[T], billed: float) -> None:
        """A dispatched item returned, billed ``billed`` tokens (0: a failure, refunded)."""
        flow = ticket.flow
        self._in_service -= 1
        flow.in_flight -= 1
        flow.pending = flow.pending - ticket.charge if flow.in_flight > 0 else 0.0  # no drift
        flow.finish += billed / flow.weight

    def _taken(self, flow: _Flow[T]) -> None:
        self._size -= 1
        if not flow.queue:
            self._backlogged.pop(flow.key, None)

    def remove(self, key: int, item: T) -> bool:
        """Take ``item`` out of ``key``'s flow wherever it is; False if it is not there."""
        flow = self._flows.get(key)
        if flow is None:
            return False
        try:
            flow.queue.remove(item)
        except ValueError:
            return False
        self._taken(flow)
        return True

    def charge(self, key: int, tokens: float) -> None:
        """Add ``tokens`` (negative: refund) to the flow's tag, scaled by its weight."""
        flow = self._flow(key)
        flow.finish += tokens / flow.weight

    def drop(self, key: int) -> list[T]:
        """Forget a flow; returns the items it still had queued. Its items in service still
        settle (on the forgotten flow)."""
        flow = self._flows.pop(key, None)
        if flow is None:
            return []
        self._backlogged.pop(key, None)
        items = list(flow.queue)
        flow.queue.clear()
        self._size -= len(items)
        return items

    def counter(self, key: int) -> float:
        """The flow's tag: where its next request starts, in virtual tokens."""
        flow = self._flows.get(key)
        return flow.tag if flow is not None else 0.0

    def queued(self, key: int) -> int:
        flow = self._flows.get(key)
        return len(flow.queue) if flow is not None else 0

    def in_service(self) -> int:
        return self._in_service

    def items(self) -> Iterator[T]:
        for flow in self._backlogged.values():
            yield from flow.queue
