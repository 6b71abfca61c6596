"""What the hub can make a board hold is bounded: commands waiting for the kernel, and answers
waiting for the link process (docs/fleet.md, "Commands")."""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from clove.fleet.actions import plan
from clove.fleet.connect import Endpoint
from clove.fleet.link import MAX_QUEUED_COMMANDS, FleetLink
from clove.fleet.position import ShippedPosition
from clove.fleet.process import MAX_PENDING_REPLIES, LinkProcess
from clove.fleet.subjects import FleetNames


@dataclass
class Message:
    """What nats-py hands a subscription callback, as far as the link reads it."""

    subject: str
    data: bytes
    reply: str


def test_commands_beyond_the_queue_are_dropped_counted_and_reported_once(tmp_path: Path) -> None:
    link = FleetLink(
        Endpoint(servers=("nats://127.0.0.1:9",)), FleetNames("clove"), "b1", read_after=lambda *_: [],
        position=ShippedPosition(tmp_path / "shipped.json", "b1"), heartbeat=1.0, lost_after=3.0,
    )  # fmt: skip

    async def deliver(count: int) -> None:
        for i in range(count):
            await link._on_command(Message("clove.cmd.all", b'{"n": %d}' % i, f"_INBOX_op.{i}"))

    try:
        asyncio.run(deliver(MAX_QUEUED_COMMANDS + 10))
        events = link.events()
        commands = [e for e in events if e.kind == "command"]
        errors = [e for e in events if e.kind == "error"]
        assert len(commands) == MAX_QUEUED_COMMANDS and commands[0].details == {"data": '{"n": 0}', "reply": "_INBOX_op.0"}
        assert len(errors) == 1 and "64 commands already waiting" in errors[0].details["message"]
        assert link.dropped_commands == 10
        asyncio.run(deliver(1))  # collected: there is room again
        assert [e.kind for e in link.events()] == ["command"]
    finally:
        link.close()


def test_answers_wait_for_a_stalled_link_process_up_to_a_bound() -> None:
    # A child that never reads its stdin: the pipe fills, then answers queue, then are refused.
    proc = LinkProcess([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.start()
    try:
        big = {"filler": "x" * 4096}
        taken = 0
        while proc.offer_reply("_INBOX_op.1", big):
            taken += 1
            assert taken < 10_000, "the answers were never bounded"
        assert proc.pending_replies == MAX_PENDING_REPLIES
        assert taken > MAX_PENDING_REPLIES  # the pipe took some first: nothing was dropped on the way
    finally:
        proc.close(wait=0.1)


def test_commands_turn_into_operator_calls_and_bad_arguments_are_refused() -> None:
    assert plan("estop", {}, operator="site", engaged=[], exchanges=[]) == [("interlock.engage", {"reason": "fleet estop by site: no reason given"})]
    assert plan("estop.release", {}, operator="site", engaged=["b", "a"], exchanges=[]) == [("interlock.release", {"name": "a"}), ("interlock.release", {"name": "b"})]
    halt = plan("trading.halt", {"reason": "risk"}, operator="desk", engaged=[], exchanges=["x1"])
    assert halt == [("device.call", {"device": "x1", "op": "set_state", "args": {"state": "HALTED", "reason": "fleet trading halt by desk: risk"}})]
    assert plan("kill", {"agent": "w"}, operator="r", engaged=[], exchanges=[]) == [("agent.kill", {"name": "w"})]
    for command, args, message in [
        ("kill", {}, "'agent' is required"),
        ("pause", {"agent": "w", "force": "1"}, "unknown argument 'force'"),
        ("estop", {"reason": "x" * 513}, "at most 512"),
        ("deploy", {}, "does not carry out"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            plan(command, args, operator="r", engaged=[], exchanges=[])
