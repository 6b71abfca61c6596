"""Verification of a journal's hash chain across its files: :func:`verify_journal`.

The chain (:mod:`clove.kernel.audit.format`) runs on across files
(:mod:`clove.kernel.audit.files`): a rotated-to file opens with a ``journal.rotated`` record
naming its predecessor, a deleted old file is named by a ``journal.retention`` record, and records
the kernel could not write are named by a ``journal.gap`` record that chains from the last record
written. :func:`verify_journal` recomputes the chain over the whole set, names the first record
that breaks it, and tells these recorded events apart from breaks nobody recorded.

Pure and thread-free, so the CLI can verify a journal without the kernel. A chain cannot reveal
records cut from the *end* of a file; compare :func:`verify_journal`'s ``last_id`` with the last id
the kernel reported to catch that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import orjson

from clove.kernel.audit.files import journal_files
from clove.kernel.audit.format import (
    GAP_EVENT,
    GENESIS_HASH,
    RECORD_KEYS,
    RETENTION_EVENT,
    ROTATED_EVENT,
    canonical_bytes,
    record_hash,
)

__all__ = ["JournalGap", "VerifyProblem", "VerifyResult", "verify_journal"]

_MAX_PROBLEMS = 100  # problems listed by verify_journal; more are only counted


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class JournalGap:
    """Records the kernel could not write, as its ``journal.gap`` record names them.

    :param first_id: the first id lost; ``last_id`` the last; ``count`` how many.
    :param reason: why, as the kernel recorded it (``write failed: [Errno 28] ...``).
    :param recorded_id: the id of the ``journal.gap`` record; ``file`` the file holding it.
    """

    first_id: int
    last_id: int
    count: int
    reason: str
    recorded_id: int
    file: str


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyProblem:
    """One place where the chain breaks and no record explains why.

    :param file: the file's name; ``line`` the 1-based line in it.
    :param id: the id expected there (or found, when nothing was expected), ``None`` if unknown.
    """

    file: str
    line: int
    id: int | None
    reason: str


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """The outcome of :func:`verify_journal`.

    :param ok: every record present is an intact chain, and every discontinuity is explained by
        a record (a retention truncation at the start, ``journal.gap`` records). Recorded gaps
        still mean records were lost: see ``gaps`` (and :attr:`complete`).
    :param records: when ``ok``, how many records verified; otherwise how many verified before
        the first problem.
    :param first_bad_id: the id expected where the chain first broke: the record that was edited,
        deleted (its id is missing), moved, or whose line is unreadable. ``None`` when ``ok``.
    :param first_bad_line: the 1-based line (in ``first_bad_file``) where it broke.
    :param reason: what is wrong there, or a one-line summary when ``ok``.
    :param files: the names of the files checked, oldest first.
    :param first_id: the first id present (``None``: no records); ``last_id`` the last.
    :param truncated_before: the journal starts at this id because older rotated files were
        deleted, acknowledged by the ``journal.rotated`` record opening the oldest file left.
    :param truncation_recorded: a ``journal.retention`` record names the deleted file just
        before ``truncated_before`` (the kernel deleted it, not someone else).
    :param gaps: ids the kernel recorded as lost (``journal.gap`` records), oldest first.
    :param problems: every unexplained break found (at most 100; ``problems_omitted`` more).
    :param warnings: things worth a look that do not break the chain.
    """

    ok: bool
    records: int
    first_bad_id: int | None
    first_bad_line: int | None
    reason: str
    first_bad_file: str | None = None
    files: tuple[str, ...] = ()
    first_id: int | None = None
    last_id: int | None = None
    truncated_before: int | None = None
    truncation_recorded: bool = False
    gaps: tuple[JournalGap, ...] = ()
    problems: tuple[VerifyProblem, ...] = ()
    problems_omitted: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Intact and nothing lost: no recorded gap (a retention truncation is not a loss)."""
        return self.ok and not self.gaps

    @property
    def lost_records(self) -> int:
        """How many records the recorded gaps name."""
        return sum(gap.count for gap in self.gaps)



def verify_journal(path: Path | str) -> VerifyResult:
    """Recompute the hash chain of a journal, across its rotated files, and report every break.

    ``path`` is read as :func:`journal_files` says (the active file brings its rotated
    predecessors). Detects an edited field (hash mismatch), a deleted record (id gap), reordered or
    duplicated records (unexpected id), a forged record whose hash was recomputed (the next
    ``prev_hash`` mismatches), a line that is not JSON or not a record, a line that is not in
    canonical form, a partial last line, a chain break at a file boundary and a missing file in
    the middle. It goes on past a break (re-anchoring on the next record) to report later ones.
    Not problems, but reported: a journal that starts with a ``journal.rotated`` record (older
    files deleted by retention) and ids the kernel named lost in ``journal.gap`` records. Reads
    each file once, line by line.

    :raises OSError: a file cannot be read.
    """
    files = journal_files(path)
    check = _ChainCheck(many=len(files) > 1)
    for file in files:
        check.read_file(file)
    return check.result([file.name for file in files])


class _ChainCheck:
    """The state of :func:`verify_journal` as it walks the files."""

    def __init__(self, *, many: bool) -> None:
        self.many = many
        self.expected: int | None = None  # None: nothing read yet
        self.prev_hash = GENESIS_HASH
        self.prev_file = ""
        self.resync = False  # after an unreadable line: take the next record as the new anchor
        self.intact = 0  # records verified before the first problem
        self.total = 0
        self.first_id: int | None = None
        self.last_id: int | None = None
        self.present: set[str] = set()
        self.truncated_before: int | None = None
        self.retention_last_ids: set[int] = set()
        self.gaps: list[JournalGap] = []
        self.problems: list[VerifyProblem] = []
        self.omitted = 0
        self.warnings: list[str] = []

    def read_file(self, file: Path) -> None:
        self.present.add(file.name)
        with file.open("rb") as stream:
            for line_no, raw in enumerate(stream, start=1):
                self.line(file.name, line_no, raw, first_in_file=line_no == 1)

    def problem(self, file: str, line: int, rid: int | None, reason: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(VerifyProblem(file=file, line=line, id=rid, reason=reason))
        else:
            self.omitted += 1

    def line(self, file: str, line_no: int, raw: bytes, *, first_in_file: bool) -> None:
        record, why = _parse_line(raw)
        if record is None:
            self.problem(file, line_no, None if self.resync else (self.expected or 1), why)
            self.resync = True
            return
        rid = record["id"]
        if not self.resync and self.expected is not None and rid < self.expected:
            # A duplicate or a record moved back: report it and keep waiting for the expected id.
            self.problem(file, line_no, self.expected, f"id {rid} where {self.expected} was expected: record out of order or duplicated")
            return
        why = self.link(file, record, first_in_file=first_in_file)
        if not why and record_hash(record) != record["hash"]:
            why = f"record {rid} does not match its hash: edited"
        if not why and raw != _canonical_line(record):
            why = f"record {rid} is not in canonical form (reformatted or duplicate keys)"
        if why:
            self.problem(file, line_no, rid if self.resync else (self.expected or 1), why)
        self.accept(file, record, counted=not why)

    def link(self, file: str, record: dict[str, Any], *, first_in_file: bool) -> str:
        """Why ``record`` (its id not below the expected one) is not the next link; "" if it is."""
        rid, prev = record["id"], record["prev_hash"]
        event = record.get("event_type")
        details = record["details"] if isinstance(record.get("details"), dict) else {}
        if self.resync:
            return ""  # the unreadable line before it was reported; anchor here
        if self.expected is None:  # the very first record: the chain starts at genesis...
            if rid > 1 and event == ROTATED_EVENT and details.get("previous_last_id") == rid - 1 and details.get("previous_last_hash") == prev:
                self.truncated_before = rid  # ...unless older files were deleted: this record vouches for its link
                return ""
            expected, prev_hash = 1, GENESIS_HASH
        else:
            expected, prev_hash = self.expected, self.prev_hash
        boundary = first_in_file and bool(self.prev_file) and self.prev_file != file
        if rid == expected:
            if prev == prev_hash:
                return ""
            if boundary:
                return f"chain break at the boundary between {self.prev_file} and {file}: record {rid}'s prev_hash does not match the hash of record {rid - 1}"
            if rid == 1:
                return "prev_hash of record 1 is not the genesis hash"
            return f"prev_hash does not match the hash of record {rid - 1}: a record before it was forged"
        if event == GAP_EVENT and prev == prev_hash and details.get("first_id") == expected and details.get("last_id") == rid - 1:
            self.gaps.append(JournalGap(first_id=expected, last_id=rid - 1, count=rid - expected,
                                        reason=str(details.get("reason", "")), recorded_id=rid, file=file))  # fmt: skip
            return ""
        if boundary and event == ROTATED_EVENT and details.get("previous_file") not in self.present:
            return (f"file {details.get('previous_file')} (ids {details.get('previous_first_id')}..{details.get('previous_last_id')}) "
                    f"is missing between {self.prev_file} and {file}")  # fmt: skip
        if boundary:
            return f"ids {expected}..{rid - 1} are missing between {self.prev_file} and {file}"
        if self.expected is None:
            return f"the journal starts at id {rid}: records 1..{rid - 1} deleted or lost, and no journal.rotated record acknowledges it"
        return f"id {rid} where {expected} was expected: records {expected}..{rid - 1} deleted or moved"

    def accept(self, file: str, record: dict[str, Any], *, counted: bool) -> None:
        rid = record["id"]
        self.resync = False
        self.expected, self.prev_hash, self.prev_file = rid + 1, record["hash"], file
        self.first_id = rid if self.first_id is None else self.first_id
        self.last_id = rid
        if counted:
            self.total += 1
            if not self.problems:
                self.intact += 1
        details = record["details"] if isinstance(record.get("details"), dict) else {}
        if record.get("event_type") == RETENTION_EVENT and isinstance(details.get("deleted"), list):
            for entry in details["deleted"]:
                if isinstance(entry, dict) and type(entry.get("last_id")) is int:
                    self.retention_last_ids.add(entry["last_id"])

    def result(self, names: list[str]) -> VerifyResult:
        recorded = self.truncated_before is not None and self.truncated_before - 1 in self.retention_last_ids
        if self.truncated_before is not None and not recorded:
            self.warnings.append(f"records 1..{self.truncated_before - 1} are gone and no journal.retention record names "
                                 "their file: deleted by hand, or the record went with the files")  # fmt: skip
        common: dict[str, Any] = {
            "files": tuple(names), "first_id": self.first_id, "last_id": self.last_id,
            "truncated_before": self.truncated_before, "truncation_recorded": recorded,
            "gaps": tuple(self.gaps), "problems": tuple(self.problems), "problems_omitted": self.omitted,
            "warnings": tuple(self.warnings),
        }  # fmt: skip
        if self.problems:
            first = self.problems[0]
            where = f"{first.file} line {first.line}" if self.many else f"line {first.line}"
            return VerifyResult(ok=False, records=self.intact, first_bad_id=first.id, first_bad_line=first.line,
                                first_bad_file=first.file, reason=f"{where}: {first.reason}", **common)  # fmt: skip
        summary = f"{self.total} records" + (f" in {len(names)} files" if self.many else "") + ", chain intact"
        return VerifyResult(ok=True, records=self.total, first_bad_id=None, first_bad_line=None, reason=summary, **common)


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """The record on ``raw`` if it has a record's shape, else ``None`` and why not."""
    if not raw.endswith(b"\n"):
        return None, "partial last line (a crash remnant or a cut file; the kernel repairs it on open)"
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if set(record) != RECORD_KEYS:
        missing, extra = sorted(RECORD_KEYS - set(record)), sorted(set(record) - RECORD_KEYS)
        return None, f"wrong keys (missing {missing}, unexpected {extra})"
    if type(record["id"]) is not int:
        return None, f"id {record['id']!r} is not an integer"
    if not isinstance(record["hash"], str) or not isinstance(record["prev_hash"], str):
        return None, "hash or prev_hash is not a string"
    return record, ""


def _canonical_line(record: dict[str, Any]) -> bytes:
    try:
        return canonical_bytes(record) + b"\n"
    except (TypeError, orjson.JSONEncodeError):
        return b""
