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

from clove.errors import InternalError
from clove.kernel import journal as journal_mod
from clove.kernel import journal_verify
from clove.kernel.journal import Category, Journal, read_journal, summarize_args, verify_journal
from clove.kernel.journal_verify import GENESIS_HASH, RECORD_KEYS, canonical_json

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
    monkeypatch.setattr(journal_verify, "_TAIL_CHUNK", chunk)  # cross chunk borders while reading back
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
    record["hash"] = journal_verify.record_hash(record)
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

    real_write = journal_mod._write_fully
    batches: list[int] = []

    def slow_write(fd: int, data: bytes) -> None:
        batches.append(data.count(b"\n"))
        time.sleep(0.2)  # a disk that takes 0.2 s per write
        real_write(fd, data)

    monkeypatch.setattr(journal_mod, "_write_fully", slow_write)
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
    real_write = journal_mod._write_fully
    disk_full = [True]

    def flaky_write(fd: int, data: bytes) -> None:
        if disk_full[0]:
            os.write(fd, data[: len(data) // 2])  # a short write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(journal_mod, "_write_fully", flaky_write)
    caplog.set_level(logging.ERROR, logger="clove.kernel.journal")
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
    caplog.set_level(logging.WARNING, logger="clove.kernel.journal_verify")
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


def test_records_dropped_past_the_retry_cap_show_as_a_chain_break(
    jpath: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = journal_mod._write_fully
    disk_full = [True]

    def flaky_write(fd: int, data: bytes) -> None:
        if disk_full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(journal_mod, "_write_fully", flaky_write)
    monkeypatch.setattr(journal_mod, "_MAX_PENDING_BYTES", 1)  # keep nothing for retry
    with Journal(jpath) as j:
        fill(j, 3)
        assert poll_for(lambda: j.write_errors >= 1)
        disk_full[0] = False
        j.append(Category.RESOURCE, "after.recovery")
        assert poll_for(lambda: jpath.stat().st_size > 0)
        assert len(j.query()) == 4  # the ring still has every record
    result = verify_journal(jpath)
    assert (result.ok, result.first_bad_id, result.first_bad_line) == (False, 1, 1)
    assert "deleted" in result.reason


def test_batch_mode_hands_off_in_one_piece(jpath: Path) -> None:
    j = Journal(jpath, batch=True)
    j.open()
    try:
        puts: list[tuple[int, bytes]] = []
        real_queue = j._queue

        class Spy:
            def put(self, item: tuple[int, bytes]) -> None:
                puts.append(item)
                real_queue.put(item)

        j._queue = Spy()  # type: ignore[assignment]
        fill(j, 10)
        assert j.batch_pending and puts == []  # nothing woke the writer yet
        j.hand_off()
        assert len(puts) == 1 and puts[0][0] == 10 and puts[0][1].count(b"\n") == 10
        assert not j.batch_pending
        fill(j, 3)
        j._queue = real_queue
        assert j.flush()  # flush hands off what is batched
        assert len(lines_of(jpath)) == 13
    finally:
        j.close()
    assert verify_journal(jpath).ok
