"""A signed command captured before a board restarts cannot be replayed to it afterwards
(clove/fleet/nonces.py; docs/fleet.md, "Commands"): a real board, a real hub, two restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.fleet.commands import public_key_text, sign
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import requires_root
from tests.fleet.conftest import PASSWORDS, Hub, journal_events

pytestmark = [pytest.mark.integration, requires_root]

SUBJECT = "clove.cmd.board.board-a"


def _config(hub: Hub, key: Ed25519PrivateKey) -> str:
    return hub.board_config("board-a", lost_after=15.0) + f"""command_window = 30.0

[fleet.operators.site-team]
public_key = "{public_key_text(key.public_key())}"
may = ["estop", "estop.release"]

[interlocks.halt]
trigger = {{ event = "HALT" }}
actions = [{{ pause = ["nobody"] }}]
"""


def _ask(hub: Hub, wire: bytes) -> dict[str, Any]:
    """Publish one signed command as the operator and return the board's answer."""

    async def main() -> dict[str, Any]:
        nc = await nats.connect(hub.url, user="operator", password=PASSWORDS["operator"], inbox_prefix="_INBOX_operator", allow_reconnect=False)
        try:
            return dict(json.loads((await nc.request(SUBJECT, wire, timeout=10)).data))
        finally:
            await nc.close()

    return asyncio.run(main())


def _started(make_kernel: Callable[..., KernelProcess], config: str, state_dir: Path | None = None) -> KernelProcess:
    """A board (on ``state_dir``: restarted), once it has joined the fleet in this run."""
    before = journal_events(state_dir).count("fleet.connected") if state_dir is not None else 0
    k = make_kernel(config, state_dir=state_dir)
    poll_for(lambda: journal_events(k.state_dir).count("fleet.connected") > before, 15, message="the board to join the fleet")
    return k


def _journal(k: KernelProcess, event_type: str) -> list[dict[str, Any]]:
    lines = (k.state_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
    return [r["details"] for r in map(json.loads, lines) if r["event_type"] == event_type]


def test_a_command_captured_before_a_restart_is_refused_after_it(hub: Hub, make_kernel: Callable[..., KernelProcess]) -> None:
    key = Ed25519PrivateKey.generate()
    config = _config(hub, key)
    first = _started(make_kernel, config)
    captured = sign(key, "estop", board="board-a", args={"reason": "captured"}).to_wire()
    assert _ask(hub, captured)["accepted"] is True
    nonce = json.loads(json.loads(captured)["payload"])["nonce"]
    first.stop()
    assert nonce in (first.state_dir / "fleet" / "nonces.jsonl").read_text()

    # Restarted well inside the 30 s window: the same bytes again are a replay.
    second = _started(make_kernel, config, first.state_dir)
    replayed = _ask(hub, captured)
    assert (replayed["accepted"], replayed["code"], replayed["reason"]) == (False, "fleet.replayed", "this command was already received")
    denied = poll_for(lambda: [r for r in _journal(second, "fleet.command") if r["decision"] == "denied"], 5, message="the refusal journaled")
    assert [(r["nonce"], r["code"]) for r in denied] == [(nonce, "fleet.replayed")]
    fresh = _ask(hub, sign(key, "estop.release", board="board-a").to_wire())
    assert fresh["accepted"] is True  # not refusing everything: a new command is decided as usual
    second.stop()

    # The nonce file damaged while the board was down: it cannot tell what it accepted, so it
    # refuses every command issued before it started, journals why, and takes new ones.
    path = first.state_dir / "fleet" / "nonces.jsonl"
    path.write_text("not a nonce entry\n" + path.read_text())
    third = _started(make_kernel, config, first.state_dir)
    problems = [e["message"] for e in _journal(third, "fleet.error") if "nonces.jsonl:1: not a nonce entry" in e.get("message", "")]
    assert len(problems) == 1 and "commands issued before this start are refused" in problems[0], problems
    again = _ask(hub, captured)
    assert (again["accepted"], again["code"]) == (False, "fleet.replayed") and "could not be read" in again["reason"]
    poll_for(lambda: [r for r in _journal(third, "fleet.command") if r["code"] == "fleet.replayed"][1:], 5, message="the second refusal journaled")
    assert _ask(hub, sign(key, "estop", board="board-a").to_wire())["accepted"] is True
