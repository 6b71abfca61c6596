"""The hub's board list while boards heartbeat: every board, every time.

``clove fleet ps``/``top`` and the set of boards a fleet command waits for come from
``board_rows``. Listing a bucket's keys with a watcher (nats-py's ``KeyValue.keys()``) can end
before a key updated meanwhile is delivered, so a board heartbeating at that moment dropped out
of the list (an e-stop then did not wait for it).
"""

from __future__ import annotations

import asyncio
import json
import time

import nats

from clove.fleet.reader import board_rows
from clove.fleet.subjects import FleetNames
from tests.fleet.conftest import PASSWORDS, Hub

BOARDS = [f"board-{i:02d}" for i in range(12)]
READS = 150


def test_every_board_is_listed_while_all_of_them_heartbeat(hub: Hub) -> None:
    async def main() -> list[list[str]]:
        names = FleetNames("clove")
        writer = await nats.connect(hub.url, user="admin", password=PASSWORDS["admin"])
        reader = await nats.connect(hub.url, user="operator", password=PASSWORDS["operator"])
        try:
            kv = await writer.jetstream().key_value(names.bucket)
            for board in BOARDS:
                await kv.put(board, json.dumps({"heartbeat": time.time()}).encode())
            stop = asyncio.Event()

            async def heartbeat() -> None:  # every board, back to back, as fast as the hub takes it
                while not stop.is_set():
                    for board in BOARDS:
                        await kv.put(board, json.dumps({"heartbeat": time.time()}).encode())

            beating = asyncio.create_task(heartbeat())
            listed = []
            js = reader.jetstream(timeout=5)
            for _ in range(READS):
                listed.append([row["board"] for row in await board_rows(js, names)])
            stop.set()
            await beating
            await kv.delete(BOARDS[0])
            listed.append([row["board"] for row in await board_rows(js, names)])
            return listed
        finally:
            await writer.close()
            await reader.close()

    listed = asyncio.run(main())
    short = [i for i, boards in enumerate(listed[:-1]) if boards != BOARDS]
    assert not short, f"{len(short)} of {READS} lists missed a board, e.g. {listed[short[0]]}"
    assert listed[-1] == BOARDS[1:], "a deleted board is not listed"
