"""What an operator reads from the hub: every board's entry, and one board's audit records.

A board is ``lost`` when its last heartbeat is older than its ``lost_after`` (or the reader's):
the reader decides, from the heartbeat time in the entry, so a board that died says nothing
and still shows as lost. Boards and readers are expected to keep their clocks in sync (NTP);
the age shown makes a skew visible.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from clove.fleet.subjects import FleetNames

__all__ = ["board_records", "board_rows"]


def _row(key: str, data: Any, now: float, lost_after: float | None) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {"board": key, "state": "invalid", "entry": None}
    beat = data.get("heartbeat_at")
    age = now - beat if isinstance(beat, (int, float)) else None
    limit = lost_after if lost_after is not None else data.get("lost_after")
    lost = age is None or (isinstance(limit, (int, float)) and age > limit)
    return {"board": key, "state": "lost" if lost else "up", "heartbeat_age": age, "lost_after": limit, "entry": data}


async def board_rows(js: JetStreamContext, names: FleetNames, *, lost_after: float | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """One row per board in the bucket: ``{board, state (up|lost), heartbeat_age, lost_after,
    entry}``, sorted by board name.

    :raises nats.js.errors.BucketNotFoundError: nobody created the bucket (``clove fleet init``).
    """
    kv = await js.key_value(names.bucket)
    now = time.time() if now is None else now
    rows = []
    for key in await _keys(js, names.bucket):
        try:
            entry = await kv.get(key)
        except (KeyDeletedError, KeyNotFoundError):  # deleted or purged since the snapshot
            continue
        try:
            data = orjson.loads(entry.value or b"null")
        except orjson.JSONDecodeError:
            data = None
        rows.append(_row(key, data, now, lost_after))
    return rows


async def _keys(js: JetStreamContext, bucket: str) -> list[str]:
    """The bucket's keys, sorted, from one snapshot of its stream's subjects. Not
    ``KeyValue.keys()``: its watcher may finish before a key that was updated meanwhile is
    delivered, so a board heartbeating at that moment went missing from the list."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return sorted(subject[len(prefix) :] for subject in info.state.subjects or {})


async def board_records(js: JetStreamContext, names: FleetNames, board: str, *, timeout: float = 5.0) -> AsyncIterator[tuple[int, Any]]:
    """``(stream sequence, record)`` for every message of ``board``'s audit subject, in stream
    order (a message that is not JSON comes as ``None``), read with an ordered consumer.

    :raises nats.errors.TimeoutError: the hub sent nothing for ``timeout`` seconds mid-read.
    """
    subject = names.audit_subject(board)
    info = await js.stream_info(names.audit_stream, subjects_filter=subject)
    if not (info.state.subjects or {}).get(subject):
        return
    sub = await js.subscribe(subject, stream=names.audit_stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            msg = await sub.next_msg(timeout=timeout)
            try:
                record = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                record = None
            yield msg.metadata.sequence.stream, record
            if msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()
