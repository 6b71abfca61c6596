"""The boards' entries as the hub has them, kept current by a watch on the key-value bucket.

The boards already put their inventory in the bucket every heartbeat; ``clove fleet top``
watches it (an ordered consumer: the newest entry of every key first, then each update as it
is stored), so the view costs the boards nothing and the hub one consumer. What it holds is
bounded: at most :data:`MAX_BOARDS` boards (more are counted, not kept) and
:data:`MAX_ENTRY_BYTES` per entry (a larger one shows as ``invalid``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import orjson
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from clove.cli.fleet_view.model import BoardRow, parse_board
from clove.fleet.subjects import FleetNames

__all__ = ["MAX_BOARDS", "MAX_ENTRY_BYTES", "BoardEntries", "open_watch", "pump", "read_initial"]

#: Boards the view keeps; a fleet larger than this shows the count of the rest.
MAX_BOARDS: Final = 10_000
#: An inventory lists at most 500 agents (about 60 KiB); anything far larger is not one.
MAX_ENTRY_BYTES: Final = 1 << 20


class BoardEntries:
    """Board name → the row of its newest entry, parsed as it arrives (not yet aged:
    :meth:`~clove.cli.fleet_view.model.BoardRow.at`)."""

    def __init__(self, max_boards: int = MAX_BOARDS) -> None:
        self.max_boards = max_boards
        self.entries: dict[str, BoardRow] = {}
        self.omitted: set[str] = set()
        self.updates = 0

    def apply(self, entry: KeyValue.Entry) -> None:
        key = entry.key
        self.updates += 1
        if entry.operation in (KV_DEL, KV_PURGE):
            self.entries.pop(key, None)
            self.omitted.discard(key)
            return
        if key not in self.entries and len(self.entries) >= self.max_boards:
            if len(self.omitted) < self.max_boards:
                self.omitted.add(key)
            return
        value = entry.value or b""
        data: Any = None
        if len(value) <= MAX_ENTRY_BYTES:
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(value)
        self.entries[key] = parse_board(key, data)


async def open_watch(js: JetStreamContext, names: FleetNames) -> Any:
    """A watch on every key of the boards bucket (a ``KeyValue.KeyWatcher``; nats-py leaves its
    methods untyped, hence ``Any``).

    :raises nats.js.errors.BucketNotFoundError: nobody created the bucket (``clove fleet init``).
    """
    kv = await js.key_value(names.bucket)
    return await kv.watchall()


async def read_initial(watcher: Any, boards: BoardEntries, *, timeout: float) -> None:
    """Take the current entry of every board (the watch marks their end with ``None``).

    :raises nats.errors.TimeoutError: the hub sent nothing for ``timeout`` seconds.
    """
    while True:
        entry = await watcher.updates(timeout)
        if entry is None:
            return
        boards.apply(entry)


async def pump(watcher: Any, boards: BoardEntries) -> None:
    """Apply every update as it comes; ends when the watch is stopped."""
    async for entry in watcher:
        if entry is not None:
            boards.apply(entry)
