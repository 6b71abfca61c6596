"""Weighted fair queuing of LLM requests by tokens: a virtual token counter per flow.

One :class:`FairQueue` per provider; a *flow* is one caller's FIFO of requests for it. The
scheduler follows the Virtual Token Counter of Sheng et al., "Fairness in Serving Large
Language Models" (OSDI 2024), with weights:

* each flow has a counter of the tokens it was served, divided by its weight;
* the next request comes from the backlogged flow (queued requests) with the smallest counter
  that is eligible (its budget and rate limits admit its head request);
* on dispatch the flow is charged an *estimate* of the request's tokens, and on completion the
  difference to the actual count (a failure or a cancellation refunds the estimate);
* a flow that becomes backlogged is lifted to the smallest counter among the backlogged flows
  (or, when none is, to the counter of the flow that left last), so idle time earns no credit.

Among flows that stay backlogged, served tokens over any interval differ by at most a bounded
amount (about one request's tokens times the concurrency), whatever the request sizes: a greedy
flow with fifty requests queued gets its share, not more. Weights scale shares: a flow of weight
3 is served three tokens for each token of a flow of weight 1.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar, final

__all__ = ["FairQueue"]

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class _Flow(Generic[T]):
    key: int
    weight: float = 1.0
    counter: float = 0.0
    since: int = 0  # when it last became backlogged: breaks ties first-come first-served
    queue: deque[T] = field(default_factory=deque)


@final
class FairQueue(Generic[T]):
    """Flows of items keyed by an int (the caller's id), served by smallest virtual counter."""

    def __init__(self) -> None:
        self._flows: dict[int, _Flow[T]] = {}
        self._backlogged: dict[int, _Flow[T]] = {}
        self._seq = itertools.count()
        self._last_left: _Flow[T] | None = None
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

    def push(self, key: int, item: T, *, front: bool = False) -> None:
        """Queue ``item`` in ``key``'s flow (``front``: ahead of its others, for a retry)."""
        flow = self._flow(key)
        if not flow.queue:
            self._lift(flow)
            flow.since = next(self._seq)
            self._backlogged[key] = flow
        if front:
            flow.queue.appendleft(item)
        else:
            flow.queue.append(item)
        self._size += 1

    def _lift(self, flow: _Flow[T]) -> None:
        others = [f.counter for f in self._backlogged.values() if f is not flow]
        if others:
            flow.counter = max(flow.counter, min(others))
        elif self._last_left is not None and self._last_left is not flow:
            flow.counter = max(flow.counter, self._last_left.counter)

    def order(self) -> Iterator[int]:
        """Backlogged flows, smallest counter first (ties: first backlogged first), lazily: a
        caller that takes the first one pays O(n) for the snapshot, not a sort."""
        heap = [(f.counter, f.since, f.key) for f in self._backlogged.values()]
        heapq.heapify(heap)
        while heap:
            yield heapq.heappop(heap)[2]

    def head(self, key: int) -> T | None:
        flow = self._flows.get(key)
        return flow.queue[0] if flow is not None and flow.queue else None

    def pop(self, key: int) -> T:
        """Take ``key``'s head item. :raises KeyError: the flow has none."""
        flow = self._backlogged[key]
        item = flow.queue.popleft()
        self._size -= 1
        if not flow.queue:
            self._leave(flow)
        return item

    def remove(self, key: int, item: T) -> bool:
        """Take ``item`` out of ``key``'s flow wherever it is; False if it is not there."""
        flow = self._flows.get(key)
        if flow is None:
            return False
        try:
            flow.queue.remove(item)
        except ValueError:
            return False
        self._size -= 1
        if not flow.queue:
            self._leave(flow)
        return True

    def _leave(self, flow: _Flow[T]) -> None:
        self._backlogged.pop(flow.key, None)
        self._last_left = flow

    def charge(self, key: int, tokens: float) -> None:
        """Add ``tokens`` (negative: refund) to the flow's counter, scaled by its weight."""
        flow = self._flow(key)
        flow.counter += tokens / flow.weight

    def drop(self, key: int) -> list[T]:
        """Forget a flow; returns the items it still had queued."""
        flow = self._flows.pop(key, None)
        if flow is None:
            return []
        self._backlogged.pop(key, None)
        if self._last_left is flow:
            self._last_left = None
        items = list(flow.queue)
        flow.queue.clear()
        self._size -= len(items)
        return items

    def counter(self, key: int) -> float:
        flow = self._flows.get(key)
        return flow.counter if flow is not None else 0.0

    def queued(self, key: int) -> int:
        flow = self._flows.get(key)
        return len(flow.queue) if flow is not None else 0

    def items(self) -> Iterator[T]:
        for flow in self._backlogged.values():
            yield from flow.queue
