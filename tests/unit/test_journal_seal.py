"""A record's line is encoded once, its hash spliced in where it sorts: the line is exactly the
canonical JSON of the whole record, whatever the record holds, and the chain verifies."""

from __future__ import annotations

from pathlib import Path

from clove.config import JournalSection
from clove.kernel.audit.format import canonical_bytes, record_hash
from clove.kernel.audit.journal import Category, Journal, verify_journal

AWKWARD = ',"id":1,"hash":"x"'  # what the splice looks for, inside values and keys


def test_lines_are_the_canonical_records_whatever_they_hold(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path, batch=True) as journal:
        records = [
            journal.append(Category.SYSCALL, "noop", syscall="noop", args={"msg": "x"}, details={"caller": "operator", "caller_id": 3}),
            journal.append("IPC", AWKWARD, agent_id=5, agent_name=AWKWARD, syscall=AWKWARD,
                           args={AWKWARD: [AWKWARD, {"id": 1}], "é": "\u2603"}, details={"id": 9, "x": AWKWARD}),  # fmt: skip
            journal.append(Category.SECURITY, "proto.rejected", decision="denied", code="proto.malformed"),
        ]
        assert journal.flush()
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines == [canonical_bytes(record) + b"\n" for record in journal.snapshot()]
    assert all(record is not None and record["hash"] == record_hash(record) for record in records)
    assert verify_journal(path).ok


def test_a_record_sealed_again_after_a_rotation_is_chained_afresh(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    settings = JournalSection(max_file_bytes=2000, keep_files=5)
    with Journal(path, batch=True, settings=settings) as journal:
        for n in range(30):
            journal.append(Category.SYSCALL, "noop", syscall="noop", args={"n": n, "pad": "p" * 100})
        assert journal.flush()
    assert len(list(tmp_path.glob("journal*.jsonl"))) > 1 and verify_journal(path).ok
