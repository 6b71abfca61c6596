"""The journal's files: their names, the set a path stands for, and the readers.

The journal is a set of files (docs/audit.md): the active ``journal.jsonl`` and the rotated
``journal.<first id>-<last id>.jsonl`` beside it (ids zero-padded to 12 digits, so ``ls`` sorts
them). :func:`read_journal` streams records across the set for the CLI, and :func:`read_tail`
reads only the end of a file (the kernel continues the chain from it).

Pure and thread-free, so the CLI can read a journal without the kernel's writer
(:mod:`clove.kernel.audit.journal`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from clove.kernel.audit.format import Category, parse_record

__all__ = [
    "ACTIVE_NAME",
    "journal_files",
    "read_journal",
    "read_tail",
    "rotated_files",
    "rotated_name",
]

log = logging.getLogger(__name__)

#: The active file's name when a directory is given.
ACTIVE_NAME: Final = "journal.jsonl"

_ROTATED = re.compile(r"^(?P<stem>.+)\.(?P<first>[0-9]+)-(?P<last>[0-9]+)\.jsonl$")
_TAIL_CHUNK = 64 * 1024


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
    retention deleted it). Unreadable lines are skipped with a warning
    (:func:`~clove.kernel.audit.verify.verify_journal` says what is wrong with them); a partial
    last line is ignored.

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
