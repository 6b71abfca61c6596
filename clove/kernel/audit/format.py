"""The journal's record format: the keys, the event names, the canonical encoding and the chain hash.

One record is one line of canonical JSON (:func:`canonical_json`: keys sorted, no spaces, UTF-8)
holding exactly the keys in :data:`RECORD_KEYS`. ``hash`` is the SHA-256 of the canonical JSON of
the record without ``hash``; ``prev_hash`` is the previous record's ``hash``, :data:`GENESIS_HASH`
for id 1, and ids count up from 1 without gaps. The chain runs on across the journal's files
(:mod:`clove.kernel.audit.files`): the ``journal.rotated``, ``journal.retention`` and
``journal.gap`` records named here are how the kernel records a file boundary, a deleted file and
records it could not write; :mod:`clove.kernel.audit.verify` checks the chain.

Pure and thread-free: the kernel's writer (:mod:`clove.kernel.audit.journal`) and the offline
readers share it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import Enum
from typing import Any, Final

import orjson

__all__ = [
    "AGGREGATED_EVENT",
    "DECISIONS",
    "GAP_EVENT",
    "GENESIS_HASH",
    "RECORD_KEYS",
    "RETENTION_EVENT",
    "ROTATED_EVENT",
    "Category",
    "canonical_bytes",
    "canonical_json",
    "parse_record",
    "record_hash",
]

#: ``prev_hash`` of the first record.
GENESIS_HASH: Final = "0" * 64
#: The event type of a record that counts denials instead of listing them (see denials.py).
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
