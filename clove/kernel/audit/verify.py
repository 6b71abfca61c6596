"""The journal's record format and its offline readers.

One record is one line of canonical JSON (:func:`canonical_json`: keys sorted, no spaces, UTF-8)
holding exactly the keys in :data:`RECORD_KEYS`. ``hash`` is the SHA-256 of the canonical JSON of
the record without ``hash``; ``prev_hash`` is the previous record's ``hash``, :data:`GENESIS_HASH`
for id 1, and ids count up from 1 without gaps. :func:`verify_journal` recomputes that chain and
names the first record that breaks it; :func:`read_journal` streams records for the CLI, and
:func:`read_tail` reads only the end of a file (the kernel continues the chain from it).

The journal is a set of files (docs/audit.md): the active ``journal.jsonl`` and the rotated
``journal.<first id>-<last id>.jsonl`` beside it (ids zero-padded to 12 digits, so ``ls`` sorts
them). The chain runs on across files: a rotated-to file opens with a ``journal.rotated`` record
naming its predecessor, a deleted old file is named by a ``journal.retention`` record, and records
the kernel could not write are named by a ``journal.gap`` record that chains from the last record
written. :func:`verify_journal` checks the whole set and tells these recorded events apart from
breaks nobody recorded.

This module is pure and thread-free, so the CLI can read a journal without the kernel's writer
(:mod:`clove.kernel.audit.journal`). It also holds :func:`summarize_args`, which bounds what a record may
carry. A chain cannot reveal records cut from the *end* of a file; compare :func:`verify_journal`'s
``last_id`` with the last id the kernel reported to catch that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final, final

import orjson

__all__ = [
    "DECISIONS",
    "GAP_EVENT",
    "GENESIS_HASH",
    "RECORD_KEYS",
    "RETENTION_EVENT",
    "ROTATED_EVENT",
    "Category",
    "JournalGap",
    "VerifyProblem",
    "VerifyResult",
    "canonical_json",
    "clip_text",
    "journal_files",
    "parse_record",
    "read_journal",
    "read_tail",
    "record_hash",
    "rotated_files",
    "rotated_name",
    "summarize_args",
    "verify_journal",
]

log = logging.getLogger(__name__)

#: ``prev_hash`` of the first record.
GENESIS_HASH: Final = "0" * 64
#: The event type of a record that counts denials instead of listing them (see journal.py).
AGGREGATED_EVENT: Final = "denials.aggregated"
#: The exact keys of every record.
RECORD_KEYS: Final = frozenset(
    {"id", "timestamp", "category", "event_type", "agent_id", "agent_name", "syscall", "args",
     "decision", "code", "duration_us", "details", "prev_hash", "hash"}
)  # fmt: skip
#: The values of a record's ``decision``.
DECISIONS: Final = frozenset({"allowed", "denied", "n/a"})
#: The first record of a rotated-to file: ``details`` name the previous file and its last id and hash.
ROTATED_EVENT: Final = "journal.rotated"
#: Rotated files deleted by retention: ``details.deleted`` lists ``{file, first_id, last_id}``.
RETENTION_EVENT: Final = "journal.retention"
#: Records the writer could not write: ``details`` hold ``first_id, last_id, count, reason``.
GAP_EVENT: Final = "journal.gap"
#: The active file's name when a directory is given.
ACTIVE_NAME: Final = "journal.jsonl"

_ROTATED = re.compile(r"^(?P<stem>.+)\.(?P<first>[0-9]+)-(?P<last>[0-9]+)\.jsonl$")
_MAX_PROBLEMS = 100  # problems listed by verify_journal; more are only counted

_TAIL_CHUNK = 64 * 1024
# orjson, not the stdlib encoder: a record encodes in ~2 µs instead of ~20 µs, and the kernel
# encodes one per syscall on its loop. Keys sorted, no spaces, UTF-8 (not \u-escaped).
_CANONICAL = orjson.OPT_SORT_KEYS


class Category(str, Enum):
    """The record categories, Clove's original audit vocabulary."""

    SECURITY = "SECURITY"
    AGENT_LIFECYCLE = "AGENT_LIFECYCLE"
    IPC = "IPC"
    STATE_STORE = "STATE_STORE"
    RESOURCE = "RESOURCE"
    SYSCALL = "SYSCALL"
    NETWORK = "NETWORK"
    DEVICE = "DEVICE"


def canonical_json(record: Mapping[str, Any]) -> str:
    """The one serialisation of a record: sorted keys, no spaces, non-ASCII kept as UTF-8."""
    return canonical_bytes(record).decode()


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """:func:`canonical_json`, encoded (what the journal writes and hashes)."""
    return orjson.dumps(record, option=_CANONICAL)


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``record`` without its ``hash`` key.

    Records written by :class:`~clove.kernel.audit.journal.Journal` never hold unpaired surrogates;
    ``surrogatepass`` only keeps a tampered line that does from crashing the verifier.
    """
    body = {key: value for key, value in record.items() if key != "hash"}
    try:
        return hashlib.sha256(canonical_bytes(body)).hexdigest()
    except (TypeError, orjson.JSONEncodeError):  # a tampered line with unencodable content
        return ""


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """Decode one journal line; ``None`` if it is not a JSON object with an integer ``id``."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or type(record.get("id")) is not int:
        return None
    return record


def summarize_args(args: Any, *, max_str: int = 200, max_items: int = 20, max_depth: int = 4) -> Any:
    """A bounded, JSON-safe summary of syscall arguments for the journal.

    Strings longer than ``max_str`` end in ``"…(+N chars)"``; bytes become ``"<N bytes>"``; lists,
    tuples and sets keep ``max_items`` items plus a ``"…(+N items)"`` marker; mappings keep
    ``max_items`` entries plus a ``"…"`` entry; containers nested deeper than ``max_depth`` become
    ``"<dict of N items>"``; dataclass instances become mappings of their fields; non-finite floats
    and very large ints become strings; anything else becomes its ``repr``, clipped. Unpaired
    surrogates are escaped, so the result always encodes as UTF-8.

    :param args: anything, typically a decoded request body or a request dataclass.
    :returns: ``None``, ``bool``, ``int``, ``float``, ``str``, or lists and str-keyed dicts of those.
    """
    return _summarize(args, max_str, max_items, max_depth, 0)


_SCALARS = (type(None), bool, float)


def _summarize(value: Any, max_str: int, max_items: int, max_depth: int, depth: int) -> Any:
    kind = type(value)
    if kind is str and len(value) <= max_str and value.isascii():
        return value  # the common case, checked first: short plain strings need no work
    if kind is dict and len(value) <= max_items and depth < max_depth:
        return {
            (k if type(k) is str and len(k) <= max_str and k.isascii() else clip_text(k if isinstance(k, str) else _safe_repr(k), max_str)): (
                v if (type(v) is str and len(v) <= max_str and v.isascii()) or type(v) in (bool, type(None))
                else _summarize(v, max_str, max_items, max_depth, depth + 1)
            )
            for k, v in value.items()
        }  # fmt: skip
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        bits = value.bit_length()
        return int(value) if bits <= 63 else f"<int of {bits} bits>"  # JSON readers lose precision past 2**53 anyway
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, str):
        return clip_text(value, max_str)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, memoryview):
        return f"<{value.nbytes} bytes>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {field.name: getattr(value, field.name, None) for field in dataclasses.fields(value)}
    if isinstance(value, (Mapping, list, tuple, set, frozenset, deque)):
        count = len(value)
        if depth >= max_depth:
            what = "dict" if isinstance(value, Mapping) else type(value).__name__
            return f"<{what} of {count} item{'' if count == 1 else 's'}>"
        more = count - max_items
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for index, (key, item) in enumerate(value.items()):
                if index >= max_items:
                    out["…"] = f"+{more} more items"
                    break
                name = clip_text(key if isinstance(key, str) else _safe_repr(key), max_str)
                out[name] = _summarize(item, max_str, max_items, max_depth, depth + 1)
            return out
        items: list[Any] = []
        for index, item in enumerate(value):
            if index >= max_items:
                items.append(f"…(+{more} items)")
                break
            items.append(_summarize(item, max_str, max_items, max_depth, depth + 1))
        return items
    return clip_text(_safe_repr(value), max_str)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break the audit trail
        return f"<unrepresentable {type(value).__name__}>"


def clip_text(text: str, limit: int) -> str:
    """``text`` as a plain, UTF-8-safe str: at most ``limit`` characters, then ``"…(+N chars)"``."""
    if type(text) is str and len(text) <= limit and text.isascii():
        return text
    text = str.__str__(text)  # a plain str, also for str subclasses such as str-valued Enums
    extra = len(text) - limit
    if extra > 0:
        text = f"{text[:limit]}…(+{extra} chars)"
    try:
        text.encode()
    except UnicodeEncodeError:  # unpaired surrogates, e.g. from a "\ud800" escape in a JSON body
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


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


def rotated_name(active: Path | str, first_id: int, last_id: int) -> str:
    """The name a full active file is renamed to: ``journal.jsonl`` holding ids 1..4711 becomes
    ``journal.000000000001-000000004711.jsonl`` (zero-padded so a plain ``ls`` sorts by id)."""
    stem = Path(active).name.removesuffix(".jsonl")
    return f"{stem}.{first_id:012d}-{last_id:012d}.jsonl"


def rotated_files(active: Path | str) -> list[tuple[Path, int, int]]:
    """The rotated files beside the active file ``active``: ``(path, first_id, last_id)`` from
    their names, oldest first. An unreadable directory has none."""
    active = Path(active)
    stem = active.name.removesuffix(".jsonl")
    try:
        names = os.listdir(active.parent)
    except OSError:
        return []
    found = []
    for name in names:
        match = _ROTATED.match(name)
        if match is not None and match["stem"] == stem:
            found.append((active.parent / name, int(match["first"]), int(match["last"])))
    found.sort(key=lambda item: (item[1], item[2]))
    return found


def journal_files(path: Path | str) -> list[Path]:
    """The files a journal path stands for, oldest first.

    A directory stands for its ``journal.jsonl``; an active file (``NAME.jsonl``) for its rotated
    predecessors ``NAME.<first>-<last>.jsonl`` and then itself (if it exists, or if there is
    nothing else); a rotated file, or any other file, for itself alone.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ACTIVE_NAME
    if not path.name.endswith(".jsonl") or _ROTATED.match(path.name):
        return [path]
    files = [found for found, _, _ in rotated_files(path)]
    if path.exists() or not files:
        files.append(path)
    return files


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


def read_journal(
    path: Path | str,
    *,
    category: str | None = None,
    agent_id: int | None = None,
    agent_name: str | None = None,
    since_id: int = 0,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream records from a journal, oldest first, that match every given filter.

    ``path`` is read as :func:`journal_files` says: the active file brings the rotated files
    before it (those wholly at or below ``since_id`` are skipped unread). Safe to run while the
    kernel appends (a file rotated away mid-read is read under its new name, or skipped if
    retention deleted it). Unreadable lines are skipped with a warning (:func:`verify_journal` says
    what is wrong with them); a partial last line is ignored.

    :param since_id: only records with a larger id.
    :param limit: stop after this many records (``None``: no limit).
    :raises OSError: a file cannot be read.
    """
    if limit is not None and limit <= 0:
        return
    wanted = category.value if isinstance(category, Category) else category
    count = 0
    files = journal_files(path)
    last = files[-1]
    active = last if last.name.endswith(".jsonl") and _ROTATED.match(last.name) is None else None
    done: set[str] = set()
    while files:
        file = files.pop(0)
        if file == active:
            # Files rotated away since we listed them hold records older than the new active file's.
            newer = [found for found, _, last in rotated_files(active) if found.name not in done and last > since_id]
            if newer:
                files = [*newer, active]
                continue
        done.add(file.name)
        match = _ROTATED.match(file.name)
        if match is not None and int(match["last"]) <= since_id:
            continue
        try:
            stream = file.open("rb")
        except FileNotFoundError:
            if match is None:
                raise
            continue  # deleted by retention while we read the files before it
        with stream:
            for line_no, raw in enumerate(stream, start=1):
                if not raw.endswith(b"\n"):
                    break  # being written right now, or a crash remnant
                record = parse_record(raw)
                if record is None:
                    log.warning("journal %s: line %d is not a record; skipped", file, line_no)
                    continue
                if (
                    record["id"] <= since_id
                    or (wanted is not None and record.get("category") != wanted)
                    or (agent_id is not None and record.get("agent_id") != agent_id)
                    or (agent_name is not None and record.get("agent_name") != agent_name)
                ):
                    continue
                yield record
                count += 1
                if limit is not None and count >= limit:
                    return


def read_tail(fd: int, size: int, want_lines: int) -> tuple[int, list[bytes]]:
    """Read a journal backwards: where its last complete line ends, and its last complete lines.

    Reads only what it needs, in chunks from the end, so a huge journal opens quickly.

    :param fd: an open descriptor of the file (read with :func:`os.pread`; its offset is untouched).
    :param size: the file size.

    :returns: ``(end, lines)``: bytes past ``end`` are a partial line; ``lines`` holds up to
        ``want_lines`` complete lines before ``end``, oldest first, without their newlines.
    """
    end, pos = 0, size
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        newline = os.pread(fd, pos - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        pos = start
    chunks: list[bytes] = []
    newlines, pos = 0, end
    while pos > 0 and newlines <= want_lines:
        start = max(0, pos - _TAIL_CHUNK)
        chunk = os.pread(fd, pos - start, start)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
        pos = start
    lines = b"".join(reversed(chunks)).split(b"\n")[:-1]
    if pos > 0:
        lines = lines[1:]  # the window began in the middle of a line
    return end, lines[-want_lines:]
