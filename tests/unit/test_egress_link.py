"""The proxy's record line on real ZeroMQ sockets: records are never dropped silently; at the
bound new connections are refused and counted, and the count reaches the kernel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import zmq

from clove.egress.link import Link


def test_records_at_the_bound_are_counted_and_reported(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'k.sock'}"
    ctx = zmq.Context()
    kernel = ctx.socket(zmq.ROUTER)
    kernel.bind(endpoint)

    async def scenario() -> list[dict[str, Any]]:
        link = Link(endpoint, b"egress#1", bound=2)
        assert link.reserve() and link.reserve()
        assert not link.reserve() and not link.reserve()  # the bound: refused, counted
        assert link.overflow == 2
        sender = asyncio.create_task(link.sender())
        link.record({"t": "conn", "n": 1})
        link.record({"t": "conn", "n": 2})
        received: list[dict[str, Any]] = []
        while len(received) < 3:
            while kernel.poll(0):
                identity, frame = kernel.recv_multipart()
                assert identity == b"egress#1"
                batch = msgpack.unpackb(frame)
                assert isinstance(batch, list)  # records travel in batches
                received.extend(batch)
            await asyncio.sleep(0.005)
        assert link.reserve()  # room again
        sender.cancel()
        link.close()
        return received

    try:
        got = asyncio.run(asyncio.wait_for(scenario(), 10))
    finally:
        kernel.close(0)
        ctx.term()
    assert [m for m in got if m["t"] == "conn"] == [{"t": "conn", "n": 1}, {"t": "conn", "n": 2}]
    assert {"t": "overflow", "count": 2} in got
