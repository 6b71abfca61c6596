"""The group commit: a held reply leaves once its record is written, and records batched by
read-only calls are written on the loop (paced), not handed to the writer thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.kernel.audit.journal import Category, Journal, verify_journal
from clove.kernel.audit.writer import Lines
from clove.kernel.core.commit import IDLE_WRITE_INTERVAL_S, HeldReplies


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.readers: dict[Any, Any] = {}

    def clock(self) -> float:
        return self.now

    def add_reader(self, source: Any, callback: Any) -> None:
        self.readers[source] = callback


class FakeSocket:
    closed = False


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.jsonl", batch=True)
    j.open()
    yield j
    j.close()
    assert verify_journal(tmp_path / "journal.jsonl").ok


def lines_handed(journal: Journal) -> list[Any]:
    """Spy on what reaches the writer thread's queue."""
    puts: list[Any] = []
    real = journal._queue

    class Spy:
        def put(self, item: Any) -> None:
            puts.append(item)
            real.put(item)

        def get(self, timeout: float | None = None) -> Any:
            return real.get(timeout=timeout)

        def get_nowait(self) -> Any:
            return real.get_nowait()

    journal._queue = Spy()  # type: ignore[assignment]
    return puts


def test_a_held_reply_leaves_once_its_record_is_written(journal: Journal) -> None:
    loop, sent = FakeLoop(), []
    replies = HeldReplies(journal, loop, lambda sock, routing, frames: sent.append((routing, frames)))  # type: ignore[arg-type]
    record = journal.append(Category.IPC, "ipc.send", syscall="ipc.send")
    assert record is not None
    replies.hold(record["id"], FakeSocket(), b"peer", [b"reply"])  # type: ignore[arg-type]
    assert sent == [] and journal.written_id < record["id"]
    replies.commit()
    assert sent == [(b"peer", [b"reply"])] and journal.written_id >= record["id"] and not replies.held


def test_read_only_records_are_written_on_the_loop_paced(journal: Journal) -> None:
    loop = FakeLoop()
    puts = lines_handed(journal)
    replies = HeldReplies(journal, loop, lambda *_: None)  # type: ignore[arg-type]
    first = [journal.append(Category.SYSCALL, "noop", syscall="noop") for _ in range(3)]
    replies.commit()
    assert journal.written_id == first[-1]["id"]  # type: ignore[index]
    later = journal.append(Category.SYSCALL, "noop", syscall="noop")
    replies.commit()
    assert journal.written_id < later["id"], "within the interval: left batched"  # type: ignore[index]
    loop.now += IDLE_WRITE_INTERVAL_S
    replies.commit()
    assert journal.written_id == later["id"]  # type: ignore[index]
    assert not any(isinstance(item, Lines) for batch in puts for item in batch), "no line went through the writer thread"
