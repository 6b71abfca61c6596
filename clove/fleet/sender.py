"""The operator's side of a signed fleet command: publish it, collect the boards' answers.

A command for one board goes to ``{prefix}.cmd.board.{board}``, one for every board to
``{prefix}.cmd.all``, with a fresh reply inbox. Each board that receives it answers once
(:mod:`clove.kernel.services.fleet_commands`). :func:`send` waits at most ``wait`` seconds, and
stops early once every board it expects has answered: the one board addressed, or, for the
whole fleet, every board the bucket shows as up (a lost board is not waited for, but its
answer is taken if it comes).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from clove.fleet.commands import SignedCommand
from clove.fleet.reader import board_rows
from clove.fleet.subjects import FleetNames

__all__ = ["MAX_ANSWERS", "Outcome", "send"]

#: Answers kept from one command (a fleet is at most a few thousand boards).
MAX_ANSWERS: Final = 100_000


@dataclass(slots=True)
class Outcome:
    """``answers`` by board; ``expected``: the boards waited for (``None``: the bucket could not
    be read, so the whole wait was spent)."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected: set[str] | None = None

    def boards(self) -> list[str]:
        return sorted(set(self.answers) | (self.expected or set()))

    @property
    def ok(self) -> bool:
        """Every board answered, accepted, and every call it made succeeded."""
        if not self.boards():
            return False
        for board in self.boards():
            answer = self.answers.get(board)
            if answer is None or not answer.get("accepted"):
                return False
            if not all(isinstance(r, dict) and r.get("ok") for r in answer.get("results") or []):
                return False
        return True


async def send(nc: Any, js: Any, names: FleetNames, signed: SignedCommand, *, board: str | None, wait: float) -> Outcome:
    """Publish ``signed`` to ``board`` (``None``: every board) and collect the answers."""
    outcome = Outcome()
    if board is not None:
        subject, outcome.expected = names.command_subject(board), {board}
    else:
        subject = names.command_all
        with contextlib.suppress(Exception):  # no bucket, no permission: wait the whole time
            outcome.expected = {row["board"] for row in await board_rows(js, names) if row["state"] == "up"}
    everyone = asyncio.Event()

    async def on_answer(msg: Any) -> None:
        try:
            answer = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(answer, dict) or not isinstance(answer.get("board"), str) or len(outcome.answers) >= MAX_ANSWERS:
            return
        outcome.answers.setdefault(answer["board"], answer)
        if outcome.expected is not None and outcome.expected <= outcome.answers.keys():
            everyone.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_answer)
    try:
        await nc.publish(subject, signed.to_wire(), reply=inbox)
        await nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), wait)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return outcome
