"""Unit tests for the audit journal: real files in ``tmp_path``, no kernel, no processes."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.cli.main import main
from clove.config import JournalSection
from clove.errors import InternalError
from clove.kernel.audit import files as files_mod
from clove.kernel.audit import space as space_mod
from clove.kernel.audit import writer as writer_mod
from clove.kernel.audit.files import journal_files, rotated_name
from clove.kernel.audit.format import GENESIS_HASH, RECORD_KEYS, canonical_json, record_hash
from clove.kernel.audit.journal import Category, Journal, read_journal, summarize_args, verify_journal

_CATEGORIES = [Category(c) for c in ("SECURITY", "AGENT_LIFECYCLE", "IPC", "STATE_STORE", "RESOURCE", "SYSCALL", "NETWORK")]  # fixed: ids in tests depend on it


def poll_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Wait until ``condition()`` holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


def fill(journal: Journal, count: int) -> list[dict[str, Any]]:
    """Append ``count`` varied records."""
    return [
        journal.append(
            _CATEGORIES[i % len(_CATEGORIES)],
            "syscall" if i % 3 else "agent.state",
            agent_id=i % 4,
            agent_name=f"agent-{i % 4}",
            syscall="state.set",
            args={"key": f"k{i}", "value": "é" * (i % 7), "blob": b"\x00" * i},
            decision="denied" if i % 5 == 0 else "allowed",
            code="perm.denied" if i % 5 == 0 else "ok",
            duration_us=i * 10,
            details={"n": i},
        )
        for i in range(count)
    ]


def lines_of(path: Path) -> list[bytes]:
    """The file's lines, each with its newline (a partial last line keeps none)."""
    data = path.read_bytes()
    parts = data.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.jsonl"


@pytest.fixture
def journal(jpath: Path) -> Iterator[Journal]:
    j = Journal(jpath)
    j.open()
    yield j
    j.close()


@pytest.fixture
def closed20(jpath: Path) -> Path:
    """A closed journal of 20 valid records."""
    with Journal(jpath) as j:
        fill(j, 20)
    return jpath


# --- format and chain ------------------------------------------------------------------------------


def test_category_vocabulary() -> None:
    assert {c.value for c in Category} == {
        "SECURITY", "AGENT_LIFECYCLE", "IPC", "STATE_STORE", "RESOURCE", "SYSCALL", "NETWORK", "DEVICE"
    }  # fmt: skip


def test_chain_verifies_over_many_records(jpath: Path) -> None:
    j = Journal(jpath, clock=lambda: 1700000000.25)
    j.open()
    records = fill(j, 300)
    j.close()

    assert stat.S_IMODE(jpath.stat().st_mode) == 0o600
    assert stat.S_IMODE(jpath.parent.stat().st_mode) == 0o700
    result = verify_journal(jpath)
    assert result.ok, result.reason
    assert (result.records, result.first_bad_id, result.first_bad_line) == (300, None, None)

    lines = lines_of(jpath)
    assert len(lines) == 300
    prev = GENESIS_HASH
    for index, (line, appended) in enumerate(zip(lines, records, strict=True), start=1):
        record = json.loads(line)
        assert record == appended
        assert set(record) == RECORD_KEYS
        assert line == (canonical_json(record) + "\n").encode()
        assert record["id"] == index
        assert record["timestamp"] == 1700000000.25
        assert record["prev_hash"] == prev
        body = {k: v for k, v in record.items() if k != "hash"}
        assert record["hash"] == hashlib.sha256(canonical_json(body).encode()).hexdigest()
        prev = record["hash"]
    assert json.loads(lines[0])["args"] == {"key": "k0", "value": "", "blob": "<0 bytes>"}


def test_reopen_continues_ids_and_chain(jpath: Path) -> None:
    with Journal(jpath) as j:
        first = fill(j, 10)
        assert j.last_id == 10

    j2 = Journal(jpath)
    j2.open()
    try:
        assert j2.last_id == 10
        assert [r["id"] for r in j2.query(limit=100)] == list(range(1, 11))
        record = j2.append(Category.AGENT_LIFECYCLE, "agent.started", agent_id=7, decision="n/a")
        assert record["id"] == 11
        assert record["prev_hash"] == first[-1]["hash"]
        fill(j2, 4)
    finally:
        j2.close()

    result = verify_journal(jpath)
    assert result.ok, result.reason
    assert result.records == 15
    assert not [r for r in read_journal(jpath) if r["event_type"] == "journal.tail_repaired"]


@pytest.mark.parametrize("chunk", [64, 1000, 64 * 1024])
def test_reopen_loads_only_the_most_recent_ring(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(files_mod, "_TAIL_CHUNK", chunk)  # cross chunk borders while reading back
    with Journal(jpath) as j:
        fill(j, 50)
    with Journal(jpath, ring_size=5) as j:
        assert j.last_id == 50
        assert [r["id"] for r in j.query(limit=100)] == [46, 47, 48, 49, 50]
        assert j.append("IPC", "ipc.send")["id"] == 51
    assert verify_journal(jpath).records == 51


# --- tamper detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("details", {"n": 999}),
        ("decision", "allowed"),
        ("agent_id", 42),
        ("timestamp", 1.0),
        ("code", "ok"),
        ("hash", "f" * 64),
        ("prev_hash", "e" * 64),
    ],
)
def test_edited_field_names_the_record(closed20: Path, field: str, value: Any) -> None:
    lines = lines_of(closed20)
    record = json.loads(lines[6])
    assert record["id"] == 7
    record[field] = value if record[field] != value else "changed"
    lines[6] = (canonical_json(record) + "\n").encode()
    write_lines(closed20, lines)

    result = verify_journal(closed20)
    assert not result.ok
    assert (result.first_bad_id, result.first_bad_line, result.records) == (7, 7, 6)


def test_forged_record_with_recomputed_hash_breaks_the_next_link(closed20: Path) -> None:
    lines = lines_of(closed20)
    record = json.loads(lines[6])
    record["decision"] = "allowed" if record["decision"] == "denied" else "denied"
    record["hash"] = record_hash(record)
    lines[6] = (canonical_json(record) + "\n").encode()
    write_lines(closed20, lines)

    result = verify_journal(closed20)
    assert (result.ok, result.first_bad_id, result.first_bad_line) == (False, 8, 8)
    assert "prev_hash" in result.reason


def test_deleted_record_is_detected(closed20: Path) -> None:
    lines = lines_of(closed20)
    del lines[6]
    write_lines(closed20, lines)
    result = verify_journal(closed20)
    assert (result.ok, result.first_bad_id, result.first_bad_line) == (False, 7, 7)
    assert "deleted" in result.reason


def test_swapped_records_are_detected(closed20: Path) -> None:
    lines = lines_of(closed20)
    lines[6], lines[7] = lines[7], lines[6]
    write_lines(closed20, lines)
    result = verify_journal(closed20)
    assert (result.ok, result.first_bad_id, result.first_bad_line) == (False, 7, 7)


def test_replayed_record_is_detected(closed20: Path) -> None:
    lines = lines_of(closed20)
    lines.insert(7, lines[6])
    write_lines(closed20, lines)
    result = verify_journal(closed20)
    assert (result.ok, result.first_bad_id, result.first_bad_line) == (False, 8, 8)


def test_appended_garbage_is_detected(closed20: Path) -> None:
    with closed20.open("ab") as stream:
        stream.write(b"this is not json\n")
    result = verify_journal(closed20)
    assert (result.ok, result.first_bad_id, result.first_bad_line, result.records) == (False, 21, 21, 20)
    assert "JSON" in result.reason


def test_reformatted_line_is_detected(closed20: Path) -> None:
    lines = lines_of(closed20)
    lines[6] = (json.dumps(json.loads(lines[6]), sort_keys=True) + "\n").encode()  # same content, spaces
    write_lines(closed20, lines)
    result = verify_journal(closed20)
    assert (result.ok, result.first_bad_id) == (False, 7)
    assert "canonical" in result.reason


def test_partial_last_line_fails_verification(closed20: Path) -> None:
    with closed20.open("ab") as stream:
        stream.write(b'{"id":21,"timest')
    result = verify_journal(closed20)
    assert (result.ok, result.first_bad_id, result.first_bad_line) == (False, 21, 21)


def test_empty_journal_verifies(jpath: Path) -> None:
    with Journal(jpath):
        pass
    result = verify_journal(jpath)
    assert (result.ok, result.records) == (True, 0)


# --- opening an existing file ------------------------------------------------------------------------


@pytest.mark.parametrize("complete", [5, 0])
def test_partial_tail_is_cut_and_recorded(jpath: Path, complete: int) -> None:
    with Journal(jpath) as j:
        fill(j, complete)
    complete_size = jpath.stat().st_size
    partial = b'{"agent_id":1,"agent_name":"nav","ar'
    with jpath.open("ab") as stream:
        stream.write(partial)

    with Journal(jpath) as j:
        assert j.last_id == complete + 1
        (repair,) = j.query(category=Category.SECURITY, event_type="journal.tail_repaired")
        assert repair["id"] == complete + 1
        assert repair["details"] == {"dropped_bytes": len(partial), "offset": complete_size}
        assert repair["decision"] == "n/a"
        assert j.flush()

    result = verify_journal(jpath)
    assert result.ok, result.reason
    assert result.records == complete + 1
    assert partial not in jpath.read_bytes()


def test_open_refuses_a_journal_whose_last_line_is_not_a_record(closed20: Path) -> None:
    with closed20.open("ab") as stream:
        stream.write(b"garbage\n")
    before = closed20.read_bytes()
    with pytest.raises(InternalError, match="last complete line"):
        Journal(closed20).open()
    assert closed20.read_bytes() == before


def test_a_second_journal_on_the_same_file_is_refused(jpath: Path) -> None:
    first = Journal(jpath)
    first.open()
    with pytest.raises(InternalError, match="in use"):
        Journal(jpath).open()
    first.close()
    with Journal(jpath) as again:
        assert again.last_id == 0


# --- query -------------------------------------------------------------------------------------------


def test_query_filters_since_and_limit(journal: Journal) -> None:
    fill(journal, 40)
    everything = journal.query(limit=1000)
    assert [r["id"] for r in everything] == list(range(1, 41))

    ipc = journal.query(category="IPC")
    assert ipc
    assert all(r["category"] == "IPC" for r in ipc)
    assert journal.query(category=Category.IPC) == ipc
    assert [r["id"] for r in journal.query(agent_id=2)] == [i + 1 for i in range(40) if i % 4 == 2]
    assert [r["id"] for r in journal.query(event_type="agent.state")] == [
        i + 1 for i in range(40) if i % 3 == 0
    ]
    combined = journal.query(agent_id=0, event_type="agent.state")
    assert [r["id"] for r in combined] == [i + 1 for i in range(40) if i % 4 == 0 and i % 3 == 0]

    assert [r["id"] for r in journal.query(since_id=35)] == [36, 37, 38, 39, 40]
    assert [r["id"] for r in journal.query(since_id=10, limit=3)] == [11, 12, 13]
    assert journal.query(since_id=40) == []
    assert journal.query(limit=0) == []
    assert journal.query(category="NO_SUCH") == []


def test_query_limit_is_capped(jpath: Path) -> None:
    with Journal(jpath, ring_size=10_050) as j:
        for _ in range(10_050):
            j.append(Category.RESOURCE, "tick")
        found = j.query(limit=50_000)
    assert len(found) == 10_000
    assert found[0]["id"] == 1


def test_ring_keeps_the_newest_records(jpath: Path) -> None:
    with Journal(jpath, ring_size=5) as j:
        fill(j, 12)
        assert [r["id"] for r in j.query()] == [8, 9, 10, 11, 12]
    assert verify_journal(jpath).records == 12


# --- the writer thread -------------------------------------------------------------------------------


def test_records_reach_the_file_promptly_without_flush(journal: Journal) -> None:
    fill(journal, 3)
    assert poll_for(lambda: len(list(read_journal(journal.path))) == 3)


def test_append_does_not_wait_for_a_slow_disk(jpath: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Journal(jpath.with_name("baseline.jsonl")) as baseline_journal:
        started = time.perf_counter()
        for i in range(1000):
            baseline_journal.append(Category.SYSCALL, "syscall", agent_id=1, args={"i": i})
        baseline = time.perf_counter() - started

    real_write = writer_mod._write_fully
    batches: list[int] = []

    def slow_write(fd: int, data: bytes) -> None:
        batches.append(data.count(b"\n"))
        time.sleep(0.2)  # a disk that takes 0.2 s per write
        real_write(fd, data)

    monkeypatch.setattr(writer_mod, "_write_fully", slow_write)
    with Journal(jpath) as j:
        j.append(Category.SYSCALL, "syscall")
        assert poll_for(lambda: len(batches) == 1)  # the writer is now inside a slow write
        started = time.perf_counter()
        for i in range(1000):
            j.append(Category.SYSCALL, "syscall", agent_id=1, args={"i": i})
        elapsed = time.perf_counter() - started
        assert elapsed < max(0.15, 3 * baseline), (
            f"1000 appends took {elapsed:.3f} s (baseline {baseline:.3f} s)"
        )
        assert j.flush(timeout=10.0)
    assert sum(batches) == 1001
    assert batches[0] == 1
    assert len(batches) < 10  # the writer drained the backlog in a few writes, not 1000
    assert verify_journal(jpath).records == 1001


def test_write_error_is_counted_not_raised_and_retried(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write = writer_mod._write_fully
    disk_full = [True]

    def flaky_write(fd: int, data: bytes) -> None:
        if disk_full[0]:
            os.write(fd, data[: len(data) // 2])  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(writer_mod, "_write_fully", flaky_write)
    caplog.set_level(logging.ERROR, logger="clove.kernel.audit.journal")
    j = Journal(jpath)
    j.open()
    try:
        fill(j, 5)
        assert poll_for(lambda: j.write_errors >= 1)
        fill(j, 5)  # still no exception on the loop
        assert [r["id"] for r in j.query()] == list(range(1, 11))
        assert not j.flush(timeout=0.05)
        assert poll_for(lambda: jpath.stat().st_size == 0)  # the half-written line was cut
        assert any("No space left" in r.getMessage() for r in caplog.records)

        disk_full[0] = False
        assert j.flush(timeout=5.0)  # retried about a second after the failure
    finally:
        j.close()
    result = verify_journal(jpath)
    assert result.ok, result.reason
    assert result.records == 10


def test_close_flushes_and_is_idempotent(jpath: Path) -> None:
    j = Journal(jpath)
    j.open()
    fill(j, 100)
    j.close()
    assert len(lines_of(jpath)) == 100
    assert verify_journal(jpath).ok
    j.close()
    assert j.flush()
    with pytest.raises(RuntimeError, match="not open"):
        j.append(Category.SYSCALL, "late")
    with pytest.raises(RuntimeError, match="already opened"):
        j.open()
    assert j.last_id == 100


def test_close_without_open_is_harmless(jpath: Path) -> None:
    j = Journal(jpath)
    j.close()
    j.close()
    assert not jpath.exists()


def test_append_validates_its_vocabulary(journal: Journal) -> None:
    with pytest.raises(ValueError, match="NOT_A_CATEGORY"):
        journal.append("NOT_A_CATEGORY", "x")
    with pytest.raises(ValueError, match="decision"):
        journal.append(Category.SYSCALL, "x", decision="maybe")
    assert journal.last_id == 0
    record = journal.append("NETWORK", "http.get", decision="denied", code="perm.denied")
    assert record["category"] == "NETWORK"


def test_untrusted_strings_are_clipped_and_stay_encodable(journal: Journal) -> None:
    record = journal.append(
        Category.SECURITY,
        "proto.unknown_syscall",
        agent_name="evil\ud800",
        syscall="x" * 5000,
        args={"\udfff": "y" * 10_000},
        decision="denied",
        code="proto.unknown_syscall",
    )
    assert record["syscall"] == "x" * 200 + "…(+4800 chars)"
    assert record["agent_name"] == "evil\\ud800"
    assert record["args"] == {"\\udfff": "y" * 200 + "…(+9800 chars)"}
    assert journal.flush()
    assert verify_journal(journal.path).ok


# --- read_journal ------------------------------------------------------------------------------------


def test_read_journal_filters_and_streams(closed20: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert [r["id"] for r in read_journal(closed20)] == list(range(1, 21))
    assert [r["id"] for r in read_journal(closed20, agent_id=1)] == [2, 6, 10, 14, 18]
    assert [r["id"] for r in read_journal(closed20, agent_name="agent-1", since_id=6)] == [10, 14, 18]
    assert [r["id"] for r in read_journal(closed20, category=Category.IPC)] == [3, 10, 17]
    assert [r["id"] for r in read_journal(closed20, since_id=3, limit=2)] == [4, 5]
    assert list(read_journal(closed20, limit=0)) == []

    lines = lines_of(closed20)
    lines.insert(3, b"{broken\n")
    write_lines(closed20, [*lines, b'{"id":21,"par'])
    caplog.set_level(logging.WARNING, logger="clove.kernel.audit.files")
    assert [r["id"] for r in read_journal(closed20)] == list(range(1, 21))
    assert any("line 4" in r.getMessage() for r in caplog.records)


# --- summarize_args ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Request:
    path: str
    data: bytes


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("nope")


class _LongRepr:
    def __repr__(self) -> str:
        return "L" * 300


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (None, None),
        (True, True),
        (7, 7),
        (1.5, 1.5),
        ("short", "short"),
        ("a" * 250, "a" * 200 + "…(+50 chars)"),
        (b"\x00\x01\x02", "<3 bytes>"),
        (bytearray(10), "<10 bytes>"),
        (memoryview(b"abcd"), "<4 bytes>"),
        (2**300, "<int of 301 bits>"),
        (math.nan, "nan"),
        (-math.inf, "-inf"),
        ((1, "two"), [1, "two"]),
        ({"x"}, ["x"]),
        (list(range(25)), [*range(20), "…(+5 items)"]),
        ({1: "a", (2, 3): "b"}, {"1": "a", "(2, 3)": "b"}),
        ({"a": {"b": {"c": {"d": {"e": 1}}}}}, {"a": {"b": {"c": {"d": "<dict of 1 item>"}}}}),
        ([[[[[1, 2]]]]], [[[["<list of 2 items>"]]]]),
        (_Request("/tmp/x", b"\xff" * 64), {"path": "/tmp/x", "data": "<64 bytes>"}),
        (Category.SECURITY, "SECURITY"),
        ("bad\ud800", "bad\\ud800"),
        (_BadRepr(), "<unrepresentable _BadRepr>"),
        (_LongRepr(), "L" * 200 + "…(+100 chars)"),
    ],
)
def test_summarize_args(args: Any, expected: Any) -> None:
    summary = summarize_args(args)
    assert summary == expected
    assert type(summary) is type(expected)
    json.dumps(summary, ensure_ascii=False).encode()  # always JSON- and UTF-8-safe


def test_summarize_args_bounds_are_parameters() -> None:
    big = {f"k{i}": "v" * 50 for i in range(30)}
    summary = summarize_args(big, max_str=10, max_items=3)
    assert summary == {"k0": "v" * 10 + "…(+40 chars)", "k1": "v" * 10 + "…(+40 chars)",
                       "k2": "v" * 10 + "…(+40 chars)", "…": "+27 more items"}  # fmt: skip
    assert summarize_args([[1], (2,)], max_depth=1) == ["<list of 1 item>", "<tuple of 1 item>"]
    assert summarize_args({"a": [1]}, max_depth=0) == "<dict of 1 item>"


def test_summarize_args_terminates_on_cycles() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert summarize_args(loop) == [[[["<list of 1 item>"]]]]


def test_records_given_up_after_the_retry_cap_are_named_by_a_gap_record(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = writer_mod._write_fully
    disk_full = [True]

    def flaky_write(fd: int, data: bytes) -> None:
        if disk_full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    with Journal(jpath) as j:
        fill(j, 4)
        assert j.flush()
        monkeypatch.setattr(writer_mod, "_write_fully", flaky_write)
        monkeypatch.setattr(writer_mod, "_MAX_PENDING_BYTES", 1)  # keep nothing for retry
        fill(j, 3)  # ids 5..7: the writer gives up on them
        assert poll_for(lambda: j._writer.gap_requested)
        disk_full[0] = False
        after = j.append(Category.RESOURCE, "after.recovery")  # the loop writes the gap record first
        assert after is not None and after["id"] == 9
        (gap,) = j.query(event_type="journal.gap")
        assert gap["id"] == 8
        assert gap["details"] == {"first_id": 5, "last_id": 7, "count": 3, "reason": "write failed: [Errno 28] No space left on device"}
        assert gap["prev_hash"] == j.query()[3]["hash"]  # chained from record 4, the last on disk
        assert j.flush()
        assert len(j.query()) == 9  # the ring still has every record
    assert [r["id"] for r in read_journal(jpath)] == [1, 2, 3, 4, 8, 9]
    result = verify_journal(jpath)
    assert result.ok, result.reason
    assert not result.complete
    assert [(g.first_id, g.last_id, g.count, g.recorded_id) for g in result.gaps] == [(5, 7, 3, 8)]
    assert result.lost_records == 3
    assert "No space left" in result.gaps[0].reason


def test_batch_mode_hands_off_in_one_piece(jpath: Path) -> None:
    j = Journal(jpath, batch=True)
    j.open()
    try:
        puts: list[Any] = []
        real_queue = j._queue

        class Spy:
            def put(self, item: Any) -> None:
                puts.append(item)
                real_queue.put(item)

            def get(self, timeout: float | None = None) -> Any:
                return real_queue.get(timeout=timeout)

            def get_nowait(self) -> Any:
                return real_queue.get_nowait()

        j._queue = Spy()  # type: ignore[assignment]
        fill(j, 10)
        assert j.batch_pending and puts == []  # nothing woke the writer yet
        j.hand_off()
        assert len(puts) == 1
        (lines,) = puts[0]
        assert (lines.first_id, lines.last_id) == (1, 10) and lines.data.count(b"\n") == 10
        assert not j.batch_pending
        fill(j, 3)
        j._queue = real_queue
        assert j.flush()  # flush hands off what is batched
        assert len(lines_of(jpath)) == 13
    finally:
        j.close()
    assert verify_journal(jpath).ok


# --- rotation, retention and verify across files -------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def small(**overrides: Any) -> JournalSection:
    """Settings with 4 KiB files (about 8 records of ``fill``) and nothing else in the way."""
    values: dict[str, Any] = {"max_file_bytes": 4096, "keep_files": 1000, "keep_days": 0.0,
                              "denial_burst": 1000, "denial_window": 10.0, "disk_reserve_bytes": 0}  # fmt: skip
    return JournalSection(**(values | overrides))


def records_in(path: Path) -> list[dict[str, Any]]:
    """The records of one file (``read_journal`` on an active file reads its rotated ones too)."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def rotated_journal(jpath: Path, count: int = 100, **overrides: Any) -> list[Path]:
    with Journal(jpath, settings=small(**overrides)) as j:
        fill(j, count)
    return journal_files(jpath)


def test_rotation_names_files_by_their_ids_and_chains_across_them(jpath: Path) -> None:
    with Journal(jpath, settings=small()) as j:
        appended = fill(j, 100)
        assert j.flush()
        assert len(j.query(limit=1000)) == 100 + len(j.rotated_files)  # the ring spans the files
    files = journal_files(jpath)
    assert len(files) >= 10 and files[-1] == jpath
    assert all(f.stat().st_size <= 4096 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)

    previous: list[dict[str, Any]] = []
    previous_name = ""
    every: list[dict[str, Any]] = []
    for file in files:
        records = records_in(file)
        if file != jpath:
            assert file.name == rotated_name(jpath, records[0]["id"], records[-1]["id"])
            assert file.name == f"journal.{records[0]['id']:012d}-{records[-1]['id']:012d}.jsonl"
        if previous:
            header = records[0]
            assert (header["event_type"], header["category"], header["decision"]) == ("journal.rotated", "SECURITY", "n/a")
            assert header["details"] == {"previous_file": previous_name, "previous_first_id": previous[0]["id"],
                                         "previous_last_id": previous[-1]["id"], "previous_last_hash": previous[-1]["hash"]}  # fmt: skip
            assert header["prev_hash"] == previous[-1]["hash"]
        previous, previous_name = records, file.name
        every += records
    assert [r["id"] for r in every] == list(range(1, len(every) + 1))
    by_id = {r["id"]: r for r in every}
    assert all(by_id[r["id"]] == r for r in appended)

    result = verify_journal(jpath)
    assert result.ok and result.complete, result.reason
    assert (result.records, result.first_id, result.last_id) == (len(every), 1, len(every))
    assert result.files == tuple(f.name for f in files)
    assert result.truncated_before is None and not result.gaps
    assert [r["id"] for r in read_journal(jpath)] == list(range(1, len(every) + 1))
    assert [r["id"] for r in read_journal(jpath.parent, since_id=len(every) - 3)] == list(range(len(every) - 2, len(every) + 1))
    assert [r["id"] for r in read_journal(files[1])] == [r["id"] for r in records_in(files[1])]  # one rotated file alone


def test_retention_keeps_the_newest_files_and_verify_acknowledges_the_truncation(
    jpath: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Journal(jpath, settings=small(keep_files=2)) as j:
        fill(j, 150)
        assert j.flush()
        assert len(j.rotated_files) == 2
    files = journal_files(jpath)
    assert len(files) == 3
    assert sum(f.stat().st_size for f in files) <= 3 * 4096
    retention = [r for r in read_journal(jpath) if r["event_type"] == "journal.retention"]
    deleted = [entry for r in retention for entry in r["details"]["deleted"]]
    assert retention and all(r["details"]["keep_files"] == 2 for r in retention)
    assert not any((jpath.parent / entry["file"]).exists() for entry in deleted)

    head = records_in(files[0])[0]
    assert head["event_type"] == "journal.rotated" and head["id"] > 1
    result = verify_journal(jpath)
    assert result.ok and result.complete, result.reason
    assert (result.truncated_before, result.truncation_recorded) == (head["id"], True)
    assert result.first_id == head["id"] and not result.warnings
    assert head["id"] - 1 == max(entry["last_id"] for entry in deleted)

    assert main(["audit", "--verify", "--file", str(jpath)]) == 0
    out = capsys.readouterr().out
    assert "journal OK" in out and "chain intact" in out
    assert f"records 1..{head['id'] - 1} were in rotated files deleted by retention" in out


def test_keep_days_deletes_rotated_files_by_age_oldest_first(jpath: Path) -> None:
    wall, mono = FakeClock(1_000_000.0), FakeClock(0.0)
    with Journal(jpath, settings=small(keep_days=1.0), clock=wall, monotonic=mono) as j:
        fill(j, 40)
        old = j.rotated_files
        wall.now += 43_200  # half a day later
        fill(j, 40)
        young = j.rotated_files[len(old):]
        assert old and young
        wall.now += 50_000  # the first files are now more than a day old
        j.tick(mono())
        assert j.rotated_files[: len(young)] == young  # (the retention record may have filled the file)
        (record,) = j.query(event_type="journal.retention")
        assert [entry["file"] for entry in record["details"]["deleted"]] == old
        assert record["details"]["keep_days"] == 1.0
    assert not any((jpath.parent / name).exists() for name in old)
    assert all((jpath.parent / name).exists() for name in young)
    result = verify_journal(jpath)
    assert result.ok and result.truncation_recorded, result.reason

    # Files found at open are aged by their mtime: retention applies as the journal opens.
    for name in young[:2]:
        os.utime(jpath.parent / name, (time.time() - 3 * 86400,) * 2)
    with Journal(jpath, settings=small(keep_days=1.0)) as j:
        assert young[0] not in j.rotated_files and young[1] not in j.rotated_files
        assert young[2] in j.rotated_files
    assert verify_journal(jpath).truncation_recorded


def test_verify_reports_a_missing_middle_file(jpath: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = rotated_journal(jpath)
    missing = records_in(files[2])
    files[2].unlink()
    result = verify_journal(jpath)
    assert not result.ok
    (problem,) = result.problems  # one break; the files after it still verify
    assert f"file {files[2].name} (ids {missing[0]['id']}..{missing[-1]['id']}) is missing" in problem.reason
    assert (result.first_bad_id, result.first_bad_file, result.first_bad_line) == (missing[0]["id"], files[3].name, 1)
    assert result.records == missing[0]["id"] - 1

    assert main(["audit", "--verify", "--file", str(jpath)]) == 1
    assert f"journal BROKEN at record {missing[0]['id']} ({files[3].name} line 1)" in capsys.readouterr().out


def test_verify_reports_id_jumps_in_several_files(jpath: Path) -> None:
    files = rotated_journal(jpath)
    cut = {}
    for index in (1, 4):
        lines = lines_of(files[index])
        cut[index] = json.loads(lines[3])["id"]
        del lines[3]
        write_lines(files[index], lines)
    result = verify_journal(jpath)
    assert not result.ok
    assert [(p.file, p.line, p.id) for p in result.problems] == [(files[1].name, 4, cut[1]), (files[4].name, 4, cut[4])]
    assert all("deleted" in p.reason for p in result.problems)
    assert result.reason.startswith(f"{files[1].name} line 4: id {cut[1] + 1} where {cut[1]} was expected")


def test_verify_reports_a_chain_break_at_a_file_boundary(jpath: Path) -> None:
    files = rotated_journal(jpath)
    lines = lines_of(files[1])
    record = json.loads(lines[-1])
    record["decision"] = "allowed" if record["decision"] == "denied" else "denied"
    record["hash"] = record_hash(record)  # a careful forger
    lines[-1] = (canonical_json(record) + "\n").encode()
    write_lines(files[1], lines)
    result = verify_journal(jpath)
    assert not result.ok
    (problem,) = result.problems
    assert (problem.file, problem.line, problem.id) == (files[2].name, 1, record["id"] + 1)
    assert f"chain break at the boundary between {files[1].name} and {files[2].name}" in problem.reason


def test_oldest_files_deleted_by_hand_are_acknowledged_but_flagged(jpath: Path) -> None:
    files = rotated_journal(jpath)
    files[0].unlink()
    files[1].unlink()
    result = verify_journal(jpath)
    assert result.ok, result.reason  # the journal.rotated record at the head vouches for its link
    assert result.truncated_before == records_in(files[2])[0]["id"]
    assert not result.truncation_recorded
    assert result.warnings and "no journal.retention record" in result.warnings[0]

    lines = lines_of(files[2])
    write_lines(files[2], lines[1:])  # without its journal.rotated record nothing vouches for the start
    result = verify_journal(jpath)
    assert not result.ok
    assert "the journal starts at id" in result.reason


def test_reopen_after_rotation_continues_the_chain_and_fills_the_ring_across_files(jpath: Path) -> None:
    with Journal(jpath, settings=small()) as j:
        fill(j, 60)
        last = j.last_id
    with Journal(jpath, settings=small(), ring_size=50) as j:
        assert j.last_id == last
        assert [r["id"] for r in j.query(limit=100)] == list(range(last - 49, last + 1))
        record = j.append(Category.IPC, "ipc.send")
        assert record is not None and record["id"] == last + 1
    result = verify_journal(jpath)
    assert result.ok and result.records == last + 1, result.reason


def test_a_crash_between_rename_and_the_next_record_is_continued(jpath: Path) -> None:
    with Journal(jpath, settings=small()) as j:
        fill(j, 30)
        last, last_hash = j.last_id, j.query()[-1]["hash"]
    first = records_in(jpath)[0]["id"]
    renamed = jpath.with_name(rotated_name(jpath, first, last))
    jpath.rename(renamed)  # the writer renamed the full file and died before opening the next
    with Journal(jpath, settings=small()) as j:
        assert j.last_id == last + 1
        (header,) = j.query(event_type="journal.rotated", since_id=last)
        assert header["details"]["previous_file"] == renamed.name
        assert header["prev_hash"] == last_hash
    result = verify_journal(jpath)
    assert result.ok and result.records == last + 1, result.reason


# --- denial aggregation ------------------------------------------------------------------------------


def deny(j: Journal, agent_id: int = 7, syscall: str = "no.such.call", code: str = "proto.unknown_syscall") -> dict[str, Any] | None:
    return j.append(Category.SECURITY, syscall, agent_id=agent_id, agent_name=f"agent-{agent_id}", syscall=syscall,
                    args={"n": 1}, decision="denied", code=code)  # fmt: skip


def denial_totals(records: list[dict[str, Any]], agent_id: int) -> tuple[int, int]:
    """(denials written one by one, denials counted in aggregates) of one agent."""
    mine = [r for r in records if r["agent_id"] == agent_id and r["decision"] == "denied"]
    aggregated = [r for r in mine if r["event_type"] == "denials.aggregated"]
    return len(mine) - len(aggregated), sum(r["details"]["count"] for r in aggregated)


def test_denials_past_the_burst_become_one_record_when_the_window_ends(jpath: Path) -> None:
    wall, mono = FakeClock(5000.0), FakeClock(100.0)
    with Journal(jpath, settings=small(denial_burst=3, denial_window=10.0), clock=wall, monotonic=mono) as j:
        written = []
        for i in range(50):
            wall.now = 5000.0 + i
            written.append(deny(j) is not None)
        assert written == [True] * 3 + [False] * 47
        assert j.append(Category.SYSCALL, "noop", agent_id=7) is not None  # allowed calls are never counted
        assert deny(j, agent_id=8) is not None  # another agent has a burst of its own
        mono.now = 109.9
        j.tick(mono())
        assert not j.query(event_type="denials.aggregated")
        mono.now = 110.0
        j.tick(mono())  # the window ended: written without waiting for another denial
        (aggregate,) = j.query(event_type="denials.aggregated")
        assert (aggregate["agent_id"], aggregate["agent_name"], aggregate["syscall"], aggregate["code"]) == (7, "agent-7", "no.such.call", "proto.unknown_syscall")
        assert (aggregate["category"], aggregate["decision"]) == ("SECURITY", "denied")
        assert aggregate["details"] == {"count": 47, "first_time": 5003.0, "last_time": 5049.0, "window_s": 10.0,
                                        "burst": 3, "event_type": "no.such.call"}  # fmt: skip
        assert denial_totals(j.query(limit=1000), 7) == (3, 47)
    assert verify_journal(jpath).ok


def test_a_steady_flood_costs_one_record_per_window_and_every_denial_is_counted(jpath: Path) -> None:
    mono = FakeClock(0.0)
    with Journal(jpath, settings=small(denial_burst=5, denial_window=1.0), monotonic=mono) as j:
        for step in range(500):  # 100 denials a second for 5 s, the kernel ticking in between
            mono.now = step / 100
            deny(j)
            j.tick(mono())
        mono.now = 6.0
        j.tick(mono())
        records = j.query(limit=10_000)
        assert denial_totals(records, 7) == (5, 495)  # only the first burst is written one by one
        assert len([r for r in records if r["event_type"] == "denials.aggregated"]) == 5
        mono.now = 10.0  # after a quiet window the burst allowance is back
        assert [deny(j) is not None for _ in range(7)] == [True] * 5 + [False] * 2
    assert denial_totals(list(read_journal(jpath)), 7) == (10, 497)  # close() wrote the open window


def test_aggregates_are_per_syscall_and_code_and_bounded_in_number(jpath: Path) -> None:
    mono = FakeClock(0.0)
    with Journal(jpath, settings=small(denial_burst=2, denial_window=10.0), monotonic=mono) as j:
        for _ in range(3):
            deny(j, syscall="a")
            deny(j, syscall="b")
        deny(j, syscall="a", code="perm.denied")
        for i in range(40):  # an agent inventing names: past 32 pairs they share one count per code
            deny(j, syscall=f"x{i}")
    records = list(read_journal(jpath))
    aggregates = {(r["syscall"], r["code"]): r["details"] for r in records if r["event_type"] == "denials.aggregated"}
    assert aggregates[("a", "proto.unknown_syscall")]["count"] == 2
    assert aggregates[("b", "proto.unknown_syscall")]["count"] == 2
    assert aggregates[("a", "perm.denied")]["count"] == 1
    assert len(aggregates) == 33
    assert aggregates[(None, "proto.unknown_syscall")]["other_syscalls"] is True
    assert denial_totals(records, 7) == (2, 3 * 2 + 1 + 40 - 2)
    assert verify_journal(jpath).ok


# --- gaps ----------------------------------------------------------------------------------------------


def test_records_still_unwritable_at_close_get_a_final_gap_record(
    jpath: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_write = writer_mod._write_fully

    def small_writes_only(fd: int, data: bytes) -> None:
        if len(data) > 1500:  # the ten records do not fit; one small gap record does
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    with Journal(jpath, batch=True) as j:
        fill(j, 3)
        assert j.flush()
        monkeypatch.setattr(writer_mod, "_write_fully", small_writes_only)
        fill(j, 10)
    assert [r["id"] for r in read_journal(jpath)] == [1, 2, 3, 14]
    gap = list(read_journal(jpath))[-1]
    assert gap["event_type"] == "journal.gap"
    assert gap["details"] == {"first_id": 4, "last_id": 13, "count": 10, "reason": "not written when the journal closed"}
    result = verify_journal(jpath)
    assert result.ok and not result.complete and result.lost_records == 10, result.reason

    assert main(["audit", "--verify", "--file", str(jpath)]) == 1  # records were lost
    out = capsys.readouterr().out
    assert "journal INCOMPLETE" in out and "GAP: records 4..13 (10) lost" in out
    assert main(["audit", "--verify", "--json", "--file", str(jpath)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["complete"], data["lost_records"]) == (True, False, 10)
    assert data["gaps"][0]["recorded_id"] == 14

    with Journal(jpath) as j:  # the next kernel continues after the gap record
        assert j.last_id == 14


def test_a_journal_whose_first_records_were_lost_verifies_from_its_gap_record(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = writer_mod._write_fully

    def small_writes_only(fd: int, data: bytes) -> None:
        if len(data) > 1500:
            raise OSError(errno.EIO, "Input/output error")
        real_write(fd, data)

    monkeypatch.setattr(writer_mod, "_write_fully", small_writes_only)
    with Journal(jpath, batch=True) as j:
        fill(j, 10)
    result = verify_journal(jpath)
    assert result.ok, result.reason
    assert [(g.first_id, g.last_id) for g in result.gaps] == [(1, 10)]


# --- the disk reserve --------------------------------------------------------------------------------


def test_space_low_follows_the_reserve_and_reports_each_change_once(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = [100 << 20]
    calls = []

    class Stats:
        f_frsize = 4096

        @property
        def f_bavail(self) -> int:
            return free[0] // 4096

    def statvfs(path: Any) -> Stats:
        calls.append(path)
        return Stats()

    monkeypatch.setattr(space_mod.os, "statvfs", statvfs)
    mono = FakeClock(0.0)
    changes: list[tuple[bool, int | None]] = []
    j = Journal(jpath, settings=small(disk_reserve_bytes=10 << 20), monotonic=mono)
    j.on_space_change = lambda low, details: changes.append((low, details["free_bytes"]))
    j.open()
    try:
        assert not j.space_low and j.space_free_bytes == 100 << 20
        free[0] = 5 << 20
        checks = len(calls)
        for _ in range(1000):
            assert not j.space_low  # cached: statvfs runs at most every 0.5 s
        assert len(calls) == checks
        mono.now = 0.6
        assert j.space_low
        assert changes == [(True, 5 << 20)]
        mono.now = 1.2
        j.tick(mono())
        assert j.space_low and changes == [(True, 5 << 20)]  # once per change
        free[0] = 50 << 20
        mono.now = 2.0
        j.tick(mono())  # the kernel's timer notices without anyone asking
        assert changes == [(True, 5 << 20), (False, 50 << 20)]
        assert not j.space_low
        (low,) = j.query(event_type="journal.space_low")
        (ok,) = j.query(event_type="journal.space_ok")
        assert low["category"] == "RESOURCE" and low["details"]["reserve_bytes"] == 10 << 20
        assert ok["id"] > low["id"]
    finally:
        j.close()


def test_space_low_is_true_at_once_while_writes_fail(jpath: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = writer_mod._write_fully
    failing = [True]

    def flaky_write(fd: int, data: bytes) -> None:
        if failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        real_write(fd, data)

    mono = FakeClock(0.0)
    with Journal(jpath, settings=small(), monotonic=mono) as j:
        assert not j.space_low
        monkeypatch.setattr(writer_mod, "_write_fully", flaky_write)
        j.append(Category.SYSCALL, "noop")
        assert poll_for(lambda: j.write_errors >= 1)
        assert j.space_low  # no 0.5 s wait: a failed write refreshes it
        failing[0] = False
        assert j.flush(timeout=5.0)
        assert not j.space_low
    assert verify_journal(jpath).complete


def test_every_id_is_on_disk_or_named_lost_under_failing_writes_and_rotation(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    rng = random.Random(7)
    real_write = writer_mod._write_fully
    failing = [False]

    def flaky_write(fd: int, data: bytes) -> None:
        if failing[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(writer_mod, "_write_fully", flaky_write)
    monkeypatch.setattr(writer_mod, "_MAX_PENDING_BYTES", 3000)
    monkeypatch.setattr(writer_mod, "_RETRY_INTERVAL", 0.01)
    with Journal(jpath, settings=small(keep_files=1000), batch=True) as j:
        for _ in range(30):
            failing[0] = rng.random() < 0.4
            fill(j, rng.randrange(1, 25))
            j.hand_off()
            if not failing[0]:
                assert j.flush(timeout=5.0)
            else:
                poll_for(lambda: j._writer.gap_requested, 0.1)
        failing[0] = False
        assert j.flush(timeout=5.0)
        last = j.last_id
    result = verify_journal(jpath)
    assert result.ok, result.reason
    assert result.gaps  # the scenario did lose records
    on_disk = [r["id"] for r in read_journal(jpath)]
    lost = [i for g in result.gaps for i in range(g.first_id, g.last_id + 1)]
    assert sorted(on_disk + lost) == list(range(1, last + 1))


# --- group commit: the loop writes the turn's records itself when the writer is idle -----------------


def test_write_now_puts_the_batch_on_disk_on_the_calling_thread(jpath: Path) -> None:
    j = Journal(jpath, batch=True)
    j.open()
    try:
        first = j.append(Category.STATE_STORE, "state.store", syscall="state.store")
        second = j.append(Category.STATE_STORE, "state.store", syscall="state.store")
        assert first is not None and second is not None
        assert j.written_id < second["id"]  # batched: nothing handed to the writer yet
        assert j.write_now()
        assert j.written_id == second["id"]
        assert [json.loads(line)["id"] for line in lines_of(jpath)][-2:] == [first["id"], second["id"]]
        assert j.write_now(), "nothing new: still all written"
    finally:
        j.close()
    assert verify_journal(jpath).ok


def test_write_now_leaves_older_work_to_the_writer_thread(jpath: Path) -> None:
    j = Journal(jpath, batch=True)
    j.open()
    try:
        with j._writer._write_lock:  # the writer is busy writing
            j.append(Category.SYSCALL, "one")
            assert not j.write_now()
            j.hand_off()  # now the writer holds it: newer lines must not overtake it
            last = j.append(Category.SYSCALL, "two")
            assert last is not None
            assert not j.write_now()
        j.hand_off()
        assert j.flush()
        assert j.written_id == last["id"]
    finally:
        j.close()
    ids = [json.loads(line)["id"] for line in lines_of(jpath)]
    assert ids == sorted(ids)
    assert verify_journal(jpath).ok
