"""The console's one line to the kernel: an operator client owned by a single worker thread.

The SDK client is not thread-safe, so exactly one thread makes it and uses it; the web server's
event loop hands that thread calls and awaits their futures. Live data (the overview's SSE
stream) is polled only while someone watches, through ``clove top``'s :class:`Source` (the
agents every tick, the slower sections in turn), and fanned out to each watcher's small queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clove.cli.top.source import Source
from clove_sdk.client import CloveClient

log = logging.getLogger(__name__)

MAX_WATCHERS = 32  # SSE streams open at once; one more gets 503
WATCHER_QUEUE = 4  # snapshots a slow watcher may lag; older ones are dropped for it


class Bridge:
    """
    :param connect: makes the operator client (called once, in the worker thread).
    :param interval: seconds between live snapshots while anyone watches.
    """

    def __init__(self, connect: Callable[[], CloveClient], interval: float = 1.0) -> None:
        self._connect = connect
        self.interval = interval
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clove-console-kernel")
        self._watchers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._source: Source | None = None
        self._clients: list[CloveClient] = []

    def _client(self) -> CloveClient:
        client: CloveClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect()
            self._clients.append(client)
        return client

    async def run(self, fn: Callable[[CloveClient], Any]) -> Any:
        """``fn(client)`` in the worker thread; its exception (a CloveError) is raised here."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(self._client()))

    async def call(self, syscall: str, **body: Any) -> Any:
        return await self.run(lambda c: c.call(syscall, **body))

    # ---- live snapshots ------------------------------------------------------------------------

    def _snapshot(self, client: CloveClient, everything: bool) -> dict[str, Any]:
        if self._source is None:
            self._source = Source(client)
            everything = True
        return self._source.refresh(everything=everything).to_dict()

    async def snapshot(self, *, everything: bool = True) -> dict[str, Any]:
        return dict(await self.run(lambda c: self._snapshot(c, everything)))

    def watch(self) -> asyncio.Queue[dict[str, Any]] | None:
        """A queue of live snapshots, or ``None`` when :data:`MAX_WATCHERS` are watching."""
        if len(self._watchers) >= MAX_WATCHERS:
            return None
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=WATCHER_QUEUE)
        self._watchers.add(queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return queue

    def unwatch(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._watchers.discard(queue)

    def soon(self, section: str) -> None:
        """Refresh ``section`` at the next tick (an action changed it)."""
        if self._source is not None:
            self._source.soon(section)

    async def _poll(self) -> None:
        first = True
        while self._watchers:  # nobody watching: no polling, no cost on the kernel
            try:
                snap: dict[str, Any] = {"ok": True, **await self.snapshot(everything=first)}
                first = False
            except Exception as err:  # the kernel went away or refused: say so, keep trying
                snap = {"ok": False, "error": getattr(err, "message", str(err))}
            for queue in list(self._watchers):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(snap)
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for client in self._clients:
            self._pool.submit(client.close).result(timeout=5)
        self._pool.shutdown(wait=True)
