"""Deploys on the hub, the operator's side: the deploy bucket, a board's desired state and its
report (docs/fleet.md, "Deploy").

Everything here reads single keys with JetStream's direct get (last message by subject), so the
hub can give each board the right to read its own desired key and nothing else, and the
operator needs no consumers. A desired state is written with the expected last sequence of its
key (optimistic concurrency): two operators deploying to one board at once cannot both take the
same generation; the second is told to run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Final

from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError

from clove.fleet.commands import SignedCommand
from clove.fleet.deploy import BUCKET_MAX_VALUE, DeployNames

__all__ = ["Current", "KeyMoved", "ensure_deploy_bucket", "publish_desired", "read_current", "read_status", "wait_for_reports"]

#: Revisions of each key the bucket keeps: the recent desired states and reports, for a look back.
HISTORY: Final = 5
#: How often the operator looks for the boards' reports while waiting.
POLL_INTERVAL: Final = 0.2
EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"


async def ensure_deploy_bucket(js: Any, names: DeployNames) -> bool:
    """Create the deploy bucket where missing (an admin's job, with ``clove fleet init``);
    whether it was created."""
    try:
        await js.key_value(names.bucket)
        return False
    except BucketNotFoundError:
        pass
    await js.create_key_value(
        KeyValueConfig(
            bucket=names.bucket, history=HISTORY, max_value_size=BUCKET_MAX_VALUE, storage=StorageType.FILE, direct=True,
            description="Clove deploys: each board's desired state (desired.B) and its report (status.B)",
        )
    )  # fmt: skip
    return True


async def _last(js: Any, names: DeployNames, key: str) -> tuple[int, Any] | None:
    """``(sequence, JSON value)`` of a key's newest revision (the value ``None`` when it is
    deleted or not JSON), or ``None`` when the key was never written."""
    try:
        msg = await js.get_last_msg(names.stream, names.subject(key), direct=True)
    except NotFoundError:
        return None
    try:
        value = json.loads(msg.data) if msg.data else None
    except ValueError:
        value = None
    return int(msg.seq or 0), value


@dataclass(frozen=True, slots=True)
class Current:
    """What the hub holds for one board: the sequence of its desired key (0: none yet) and the
    generation the next deploy takes (above both the desired state's and the board's report's)."""

    board: str
    desired_seq: int
    next_generation: int


def _generation(value: Any, *, signed: bool) -> int:
    if not isinstance(value, dict):
        return 0
    if signed:
        try:
            value = json.loads(value.get("payload", ""))
        except (TypeError, ValueError):
            return 0
    generation = value.get("generation") if isinstance(value, dict) else None
    return generation if type(generation) is int and generation > 0 else 0


async def read_current(js: Any, names: DeployNames, board: str) -> Current:
    desired = await _last(js, names, names.desired_key(board))
    status = await _last(js, names, names.status_key(board))
    top = max(_generation(desired[1], signed=True) if desired else 0, _generation(status[1], signed=False) if status else 0)
    return Current(board, desired[0] if desired else 0, top + 1)


async def read_status(js: Any, names: DeployNames, board: str) -> dict[str, Any] | None:
    """The board's last report, or ``None``."""
    found = await _last(js, names, names.status_key(board))
    return found[1] if found is not None and isinstance(found[1], dict) else None


class KeyMoved(Exception):
    """Another desired state was written to the key since it was read."""


async def publish_desired(js: Any, names: DeployNames, board: str, signed: SignedCommand, *, after_seq: int) -> int:
    """Write ``signed`` as ``board``'s desired state if the key is still at ``after_seq``;
    returns the new revision (stream sequence).

    :raises KeyMoved: the key moved on meanwhile.
    """
    try:
        ack = await js.publish(names.subject(names.desired_key(board)), signed.to_wire(), headers={EXPECTED_LAST_SUBJECT_SEQ: str(after_seq)})
    except APIError as err:
        if err.err_code == 10071:  # JSStreamWrongLastSequenceErrF
            raise KeyMoved(board) from None
        raise
    return int(ack.seq)


async def wait_for_reports(js: Any, names: DeployNames, revisions: dict[str, int], *, wait: float) -> dict[str, dict[str, Any]]:
    """The boards' reports on the desired states written at ``revisions`` (board → sequence),
    polled until every board has reported or ``wait`` seconds have passed."""
    reports: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait
    while True:
        for board, revision in revisions.items():
            if board in reports:
                continue
            with contextlib.suppress(Exception):  # a slow or missing answer: asked again next turn
                status = await read_status(js, names, board)
                if status is not None and isinstance(status.get("revision"), int) and status["revision"] >= revision and status.get("phase") == "done":
                    reports[board] = status
        if len(reports) == len(revisions) or time.monotonic() >= deadline:
            return reports
        await asyncio.sleep(POLL_INTERVAL)
