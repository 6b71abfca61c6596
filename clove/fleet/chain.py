"""Verifying a board's journal from the central stream alone.

The records arrive in stream order; each must carry the next id of the board's chain
(``id`` = previous + 1, or a ``journal.gap`` record naming the ids the board could not write)
and a ``prev_hash`` equal to the previous record's ``hash``, and its ``hash`` must be the hash
of its own content. A second copy of an id is a duplicate, a jump is a gap. Memory is bounded:
only the chain head and the first problems are kept.

The hash function is handed in (the CLI passes :func:`clove.kernel.audit.format.record_hash`),
so this floor never imports the kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, final

__all__ = ["ChainCheck", "ChainReport"]

GAP_EVENT: Final = "journal.gap"
_MAX_PROBLEMS: Final = 50


@final
@dataclass(slots=True)
class ChainReport:
    """:param ok: every record verified, none missing, none twice.
    :param starts_after_genesis: the first record is not id 1 (older records were never
        shipped, e.g. a board joined with an old journal whose first files retention deleted)."""

    ok: bool = True
    records: int = 0
    first_id: int | None = None
    last_id: int | None = None
    duplicates: int = 0
    missing: int = 0
    recorded_gaps: int = 0
    starts_after_genesis: bool = False
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@final
class ChainCheck:
    """Feed records with :meth:`add` in stream order; read :attr:`report`."""

    def __init__(self, record_hash: Callable[[Mapping[str, Any]], str], genesis: str) -> None:
        self._hash = record_hash
        self._genesis = genesis
        self._next: int | None = None
        self._prev_hash: str | None = None
        self.report = ChainReport()

    def _problem(self, text: str) -> None:
        self.report.ok = False
        if len(self.report.problems) < _MAX_PROBLEMS:
            self.report.problems.append(text)

    def add(self, record: Any) -> None:
        report = self.report
        if not isinstance(record, dict) or type(record.get("id")) is not int:
            self._problem(f"message {report.records + report.duplicates + 1}: not a journal record")
            return
        rid = record["id"]
        if self._next is not None and rid < self._next:
            report.duplicates += 1
            self._problem(f"record {rid} appears again after record {self._next - 1}")
            return
        if record.get("hash") != self._hash(record):
            self._problem(f"record {rid}: its hash does not match its content (edited)")
        if self._next is None:
            report.first_id = rid
            if rid != 1 or record.get("prev_hash") != self._genesis:
                report.starts_after_genesis = True
        else:
            explained = record.get("event_type") == GAP_EVENT and (record.get("details") or {}).get("first_id") == self._next
            if rid > self._next:
                if explained:
                    report.recorded_gaps += rid - self._next
                else:
                    report.missing += rid - self._next
                    self._problem(f"records {self._next}..{rid - 1} are missing")
            if record.get("prev_hash") != self._prev_hash:
                self._problem(f"record {rid}: prev_hash does not match the hash of the record before it")
        report.records += 1
        report.last_id = rid
        self._next = rid + 1
        self._prev_hash = record.get("hash")
