"""The journal's record format and its offline readers.

One record is one line of canonical JSON (:func:`canonical_json`: keys sorted, no spaces, UTF-8)
holding exactly the keys in :data:`RECORD_KEYS`. ``hash`` is the SHA-256 of the canonical JSON of
the record without ``hash``; ``prev_hash`` is the previous record's ``hash``, :data:`GENESIS_HASH`
for id 1, and ids count up from 1 without gaps. :func:`verify_journal` recomputes that chain and
names the first record that breaks it; :func:`read_journal` streams records for the CLI, and
:func:`read_tail` reads only the end of a file (the kernel continues the chain from it).

This module is pure and thread-free, so the CLI can read a journal without the kernel's writer
(:mod:`clove.kernel.journal`). It also holds :func:`summarize_args`, which bounds what a record may
carry. A chain cannot reveal records cut from the *end* of a file; compare :func:`verify_journal`'s
``records`` with the last id the kernel reported to catch that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import orjson
import logging
import math
import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final, final

__all__ = [
    "DECISIONS",
    "GENESIS_HASH",
    "RECORD_KEYS",
    "Category",
    "VerifyResult",
    "canonical_json",
    "clip_text",
    "parse_record",
    "read_journal",
    "read_tail",
    "record_hash",
    "summarize_args",
    "verify_journal",
]

log = logging.getLogger(__name__)

#: ``prev_hash`` of the first record.
GENESIS_HASH: Final = "0" * 64
#: The exact keys of every record.
RECORD_KEYS: Final = frozenset(
    {"id", "timestamp", "category", "event_type", "agent_id", "agent_name", "syscall", "args",
     "decision", "code", "duration_us", "details", "prev_hash", "hash"}
)  # fmt: skip
#: The values of a record's ``decision``.
DECISIONS: Final = frozenset({"allowed", "denied", "n/a"})

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

    Records written by :class:`~clove.kernel.journal.Journal` never hold unpaired surrogates;
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
class VerifyResult:
    """The outcome of :func:`verify_journal`.

    :param ok: the whole file is an intact chain.
    :param records: how many records verified, counting from id 1 (all of them when ``ok``).
    :param first_bad_id: the first id not verified: the record that was edited, deleted (its id is
        missing), moved, or whose line is unreadable. Smaller ids form an intact chain from genesis
        (a record rewritten *with* a recomputed hash shows up as a break at the next id). ``None``
        when ``ok``.
    :param first_bad_line: the 1-based line where the chain broke, ``None`` when ``ok``.
    :param reason: what is wrong there, or a one-line summary when ``ok``.
    """

    ok: bool
    records: int
    first_bad_id: int | None
    first_bad_line: int | None
    reason: str


def verify_journal(path: Path) -> VerifyResult:
    """Recompute the hash chain of a journal file and report the first record that breaks it.

    Detects an edited field (hash mismatch), a deleted record (id gap), reordered or duplicated
    records (unexpected id), a forged record whose hash was recomputed (the next ``prev_hash``
    mismatches), a line that is not JSON or not a record, a line that is not in canonical form, and a
    partial last line. Reads the file once, line by line.

    :raises OSError: the file cannot be read.
    """
    expected_id, prev_hash = 1, GENESIS_HASH
    with Path(path).open("rb") as stream:
        for line_no, raw in enumerate(stream, start=1):
            record, problem = _check_line(raw, expected_id, prev_hash)
            if record is None:
                return VerifyResult(
                    ok=False, records=expected_id - 1, first_bad_id=expected_id, first_bad_line=line_no,
                    reason=f"line {line_no}: {problem}",
                )  # fmt: skip
            expected_id, prev_hash = expected_id + 1, record["hash"]
    count = expected_id - 1
    return VerifyResult(ok=True, records=count, first_bad_id=None, first_bad_line=None,
                        reason=f"{count} records, chain intact")  # fmt: skip


def _check_line(raw: bytes, expected_id: int, prev_hash: str) -> tuple[dict[str, Any] | None, str]:
    """The record on ``raw`` if it is the next link of the chain, else ``None`` and why not."""
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
    found = record["id"]
    if type(found) is not int:
        return None, f"id {found!r} is not an integer"
    if found > expected_id:
        return None, f"id {found} where {expected_id} was expected: record {expected_id} deleted or moved"
    if found < expected_id:
        return None, f"id {found} where {expected_id} was expected: record out of order or duplicated"
    if record["prev_hash"] != prev_hash:
        previous = "genesis" if expected_id == 1 else f"record {expected_id - 1}"
        return None, f"prev_hash does not match the hash of {previous}: a record before it was forged"
    if record_hash(record) != record["hash"]:
        return None, f"record {found} does not match its hash: edited"
    try:
        canonical = canonical_bytes(record) + b"\n"
    except (TypeError, orjson.JSONEncodeError):
        canonical = b""
    if raw != canonical:
        return None, f"record {found} is not in canonical form (reformatted or duplicate keys)"
    return record, ""


def read_journal(
    path: Path,
    *,
    category: str | None = None,
    agent_id: int | None = None,
    agent_name: str | None = None,
    since_id: int = 0,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream records from a journal file, oldest first, that match every given filter.

    Safe to run while the kernel appends. Unreadable lines are skipped with a warning
    (:func:`verify_journal` says what is wrong with them); a partial last line is ignored.

    :param since_id: only records with a larger id.
    :param limit: stop after this many records (``None``: no limit).
    :raises OSError: the file cannot be read.
    """
    if limit is not None and limit <= 0:
        return
    wanted = category.value if isinstance(category, Category) else category
    count = 0
    with Path(path).open("rb") as stream:
        for line_no, raw in enumerate(stream, start=1):
            if not raw.endswith(b"\n"):
                break  # being written right now, or a crash remnant
            record = parse_record(raw)
            if record is None:
                log.warning("journal %s: line %d is not a record; skipped", path, line_no)
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
