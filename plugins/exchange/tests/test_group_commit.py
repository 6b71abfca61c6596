"""The group commit on its own: fake files and a fake fdatasync that blocks until the test lets it
go, so every "not yet" is checked while a sync is provably in progress (never by sleeping).

Run: ``.venv/bin/python -m pytest -q plugins/exchange/tests/test_group_commit.py``.
"""

from __future__ import annotations

import errno
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1]
if str(PLUGIN) not in sys.path:  # until the plugin is installed (pip install -e plugins/exchange)
    sys.path.insert(0, str(PLUGIN))

from fake_disk import Disk  # noqa: E402

from clove.testing.kernel import poll_for  # noqa: E402
from clove_driver_exchange.commit import CommitFailed, GroupCommit  # noqa: E402
from clove_driver_exchange.journal import OrderJournal  # noqa: E402


class File:
    """Stands for the journal (fd 0) or the sequence store (fd 1)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def sync_with(self, sync: Callable[[int], None]) -> None:
        sync(self.fd)


@pytest.fixture
def commit(disk: Disk) -> Iterator[GroupCommit]:
    group = GroupCommit(sync=disk)
    yield group
    disk.release()
    group.close()


def _waiter(commit: GroupCommit, ticket: int, out: list[str]) -> threading.Thread:
    def run() -> None:
        try:
            commit.wait(ticket)
            out.append("durable")
        except CommitFailed:
            out.append("failed")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_nothing_is_released_before_the_sync_that_covers_it(commit: GroupCommit, disk: Disk) -> None:
    wrote = commit.add(File(0))
    released: list[str] = []
    disk.hold()
    wrote(True)
    commit.after(lambda: released.append("message"))
    replies: list[str] = []
    _waiter(commit, commit.mark(), replies)
    poll_for(lambda: disk.started == 1, message="the sync to start")
    assert released == [] and replies == [] and disk.synced == []
    disk.release()
    poll_for(lambda: released == ["message"] and replies == ["durable"], message="the release")
    assert disk.synced == [0]


def test_one_sync_covers_everything_written_while_the_last_one_ran(commit: GroupCommit, disk: Disk) -> None:
    journal, store = commit.add(File(0)), commit.add(File(1))
    released: list[str] = []
    disk.hold()
    journal(True)
    commit.after(lambda: released.append("first"))
    poll_for(lambda: disk.started == 1, message="the first sync to start")
    for name in ("order 1", "order 2", "order 3"):  # they arrive while the disk is busy
        journal(True)
        store(True)
        commit.after(lambda name=name: released.append(name))  # type: ignore[misc]
    replies: list[str] = []
    _waiter(commit, commit.mark(), replies)
    assert released == [] and replies == []
    disk.release()
    poll_for(lambda: replies == ["durable"], message="the second commit")
    assert released == ["first", "order 1", "order 2", "order 3"]
    assert commit.commits == 2 and commit.records == 7  # 1, then 6 writes in one group
    assert sorted(disk.synced) == [0, 0, 1]  # the second commit synced each file once


def test_a_waiter_wakes_only_when_its_own_ticket_is_durable(commit: GroupCommit, disk: Disk) -> None:
    wrote = commit.add(File(0))
    disk.hold()
    wrote(True)
    first: list[str] = []
    _waiter(commit, commit.mark(), first)
    poll_for(lambda: disk.started == 1, message="the first sync")
    wrote(True)  # during the first sync: the next group
    second: list[str] = []
    _waiter(commit, commit.mark(), second)
    disk.step()
    poll_for(lambda: first == ["durable"] and disk.started == 2, message="the first waiter, then the second sync")
    assert second == []
    disk.release()
    poll_for(lambda: second == ["durable"], message="the second waiter")
    assert commit.commits == 2


def test_lazy_writes_ride_along_and_never_force_a_sync(commit: GroupCommit, disk: Disk) -> None:
    journal, store = commit.add(File(0)), commit.add(File(1))
    store(False)  # an inbound sequence number: nobody waits for it
    journal(True)
    commit.wait(commit.mark())
    assert disk.synced == [0]  # the store had only a lazy write: not synced
    store(True)  # an outbound message: now the store is due, the lazy write goes with it
    commit.wait(commit.mark())
    assert disk.synced == [0, 1]
    store(False)
    commit.close()
    assert disk.synced == [0, 1, 1]  # closing syncs what is left


def test_a_failed_sync_acknowledges_nothing(disk: Disk) -> None:
    failures: list[OSError] = []
    commit = GroupCommit(sync=disk, on_failure=failures.append)
    try:
        wrote = commit.add(File(0))
        released: list[str] = []
        disk.hold()
        wrote(True)
        commit.after(lambda: released.append("message"))
        replies: list[str] = []
        _waiter(commit, commit.mark(), replies)
        poll_for(lambda: disk.started == 1, message="the sync")
        disk.fail = OSError(errno.EIO, "I/O error")
        disk.release()
        poll_for(lambda: replies == ["failed"], message="the waiter to fail")
        assert released == [] and len(failures) == 1 and commit.failed is failures[0]
        commit.after(lambda: released.append("later"))
        wrote(True)
        with pytest.raises(CommitFailed, match="I/O error"):
            commit.wait(commit.mark())
        assert released == []
    finally:
        commit.close()


def test_closing_fails_what_can_no_longer_become_durable(disk: Disk) -> None:
    commit = GroupCommit(sync=disk)
    commit.add(File(0))(True)
    commit.close()
    assert disk.synced == [0]
    commit.add(File(1))(True)
    with pytest.raises(CommitFailed, match="closed"):
        commit.wait(commit.mark())


def test_without_fsync_everything_runs_at_once(disk: Disk) -> None:
    commit = GroupCommit(fsync=False, sync=disk)
    wrote = commit.add(File(0))
    released: list[str] = []
    wrote(True)
    commit.after(lambda: released.append("now"))
    commit.wait(commit.mark())
    assert released == ["now"] and disk.started == 0
    commit.close()


def test_the_journal_numbers_records_and_cuts_a_torn_tail(tmp_path: Path, disk: Disk) -> None:
    path = tmp_path / "orders.jsonl"
    commit = GroupCommit(sync=disk)
    journal = OrderJournal(path, commit=commit)
    journal.append("order", client_id="a", agent="x", symbol="ACME", side="buy", qty=1, price=1.0)
    journal.append("state", state="halted", agent=None)
    commit.wait(commit.mark())
    journal.close()
    commit.close()
    with path.open("ab") as f:
        f.write(b'{"kind":"order","n":3,"client_id":"torn"')  # the machine died mid-write
    again = OrderJournal(path, fsync=False)
    book = again.replay()
    assert (book.records, book.last_n, list(book.orders)) == (2, 2, ["a"])
    entry = again.append("state", state="active", agent=None)
    again.close()
    assert entry["n"] == 3
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4 and b"torn" not in path.read_bytes()
