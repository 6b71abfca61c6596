"""Writing one post-mortem bundle: a directory of small files, fitted under a size cap, made
visible in one ``rename`` (a reader never sees half a bundle), then the agent's oldest bundles
pruned.

:func:`write_bundle` runs on a worker thread: its :class:`BundleJob` owns everything it needs
(plain dicts and bytes gathered on the loop thread) and it touches nothing of the kernel's.
Layout::

    <root>/<agent name>/<YYYYmmddTHHMMSS.mmmZ>-<incarnation>/
        summary.json     everything small; written last, it lists the other files with their
                         sizes and SHA-256, so a copied bundle can be checked on its own
        log.txt          the tail of the agent's log
        journal.jsonl    the agent's journal records since its last start, byte for byte as in
                         the journal (each still matches its own ``hash``)
        recording.jsonl  its recording, when the kernel records agents
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from clove.kernel.audit.format import canonical_bytes

#: Bumped when the layout or the summary's meaning changes.
FORMAT: Final = 1
SUMMARY: Final = "summary.json"
LOG: Final = "log.txt"
JOURNAL: Final = "journal.jsonl"
RECORDING: Final = "recording.jsonl"
FILES: Final = (SUMMARY, LOG, JOURNAL, RECORDING)
#: Bytes of the cap kept for summary.json; the other files share the rest.
SUMMARY_RESERVE: Final = 16 << 10
_TMP_PREFIX: Final = ".tmp-"


@dataclass(frozen=True, slots=True)
class BundleJob:
    """One bundle to write.

    :param root: ``<state dir>/postmortem``.
    :param agent_name: the agent's name (validated at spawn: one safe path component).
    :param dir_name: from :func:`bundle_dir_name`; a suffix is added if it is taken.
    :param summary: JSON-safe facts; the writer adds ``bundle``, ``files`` and ``truncated``.
    :param log: the log tail, already at most ``log_tail_bytes``.
    :param journal: journal records, oldest first.
    :param recording: the agent's recording entries, or ``None`` when there is none.
    :param keep: how many bundles of this agent to keep, this one included.
    :param max_bytes: the bundle's size cap.
    """

    root: Path
    agent_name: str
    dir_name: str
    summary: dict[str, Any]
    log: bytes = b""
    journal: list[dict[str, Any]] = field(default_factory=list)
    recording: list[Any] | None = None
    keep: int = 10
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class BundleResult:
    """What :func:`write_bundle` made: the directory, its total size, each file's size, what
    had to be cut to fit the cap (file → lines or bytes dropped), and the bundles pruned."""

    path: Path
    bytes: int
    files: dict[str, int]
    truncated: dict[str, int]
    pruned: list[str]


def bundle_dir_name(at: float, incarnation: int) -> str:
    """``20250102T030405.678Z-3``: UTC to the millisecond, then the incarnation. Names sort in
    time order, which is how pruning finds the oldest."""
    seconds = int(at)
    millis = min(999, int(round((at - seconds) * 1000)))
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(seconds))}.{millis:03d}Z-{incarnation}"


def fit_newest(lines: list[bytes], budget: int) -> tuple[list[bytes], int]:
    """The newest ``lines`` whose sizes add up to at most ``budget``, in their order, and how
    many older ones were left out (the end of a slice is what explains a death)."""
    kept: list[bytes] = []
    used = 0
    for line in reversed(lines):
        if used + len(line) > budget:
            break
        kept.append(line)
        used += len(line)
    kept.reverse()
    return kept, len(lines) - len(kept)


def _encode_entry(entry: Any) -> bytes:
    return orjson.dumps(entry, default=repr, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def _write(directory: Path, name: str, data: bytes) -> tuple[int, str]:
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    import hashlib  # here: hashlib loads OpenSSL (about 3.5 MiB); a kernel that never writes a bundle keeps it out

    return len(data), hashlib.sha256(data).hexdigest()


def write_bundle(job: BundleJob) -> BundleResult:
    """Write ``job`` under ``<root>/<agent name>/``, then keep only the newest ``keep`` bundles.

    The log tail goes first, then the newest journal records that fit, then the newest
    recording entries that fit: each in what the cap leaves after the summary's reserve.

    :raises OSError: the directory or a file cannot be written (nothing half-made remains).
    """
    job.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    agent_dir = job.root / job.agent_name
    agent_dir.mkdir(mode=0o700, exist_ok=True)
    budget = max(0, job.max_bytes - SUMMARY_RESERVE)
    truncated: dict[str, int] = {}
    log = job.log
    if len(log) > budget:
        truncated[LOG] = len(log) - budget
        log = log[-budget:] if budget else b""
    budget -= len(log)
    journal, dropped = fit_newest([canonical_bytes(r) + b"\n" for r in job.journal], budget)
    if dropped:
        truncated[JOURNAL] = dropped
    budget -= sum(map(len, journal))
    recording: list[bytes] | None = None
    if job.recording is not None:
        recording, dropped = fit_newest([_encode_entry(e) for e in job.recording], budget)
        if dropped:
            truncated[RECORDING] = dropped

    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=agent_dir))
    try:
        files: dict[str, dict[str, Any]] = {}
        contents: list[tuple[str, bytes]] = [(LOG, log), (JOURNAL, b"".join(journal))]
        if recording is not None:
            contents.append((RECORDING, b"".join(recording)))
        for name, data in contents:
            size, digest = _write(tmp, name, data)
            files[name] = {"bytes": size, "sha256": digest}
        final = _free_name(agent_dir, job.dir_name)
        summary = {
            **job.summary,
            "format": FORMAT,
            "bundle": final.name,
            "files": files,
            "truncated": truncated,
        }
        text = json.dumps(summary, indent=2, ensure_ascii=False, default=repr).encode() + b"\n"
        size, _ = _write(tmp, SUMMARY, text)
        files[SUMMARY] = {"bytes": size}
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pruned = prune(agent_dir, job.keep)
    sizes = {name: int(info["bytes"]) for name, info in files.items()}
    return BundleResult(path=final, bytes=sum(sizes.values()), files=sizes, truncated=truncated, pruned=pruned)


def _free_name(agent_dir: Path, name: str) -> Path:
    """``name``, or ``name.2``, ``name.3``... if an agent of the same name died in the same
    millisecond. Only the one writer thread creates bundles, so checking then renaming is safe."""
    candidate, n = agent_dir / name, 1
    while candidate.exists():
        n += 1
        candidate = agent_dir / f"{name}.{n}"
    return candidate


def bundle_names(agent_dir: Path) -> list[str]:
    """The agent's bundle directories, oldest first (half-written ``.tmp-*`` ones excluded)."""
    try:
        entries: Iterable[os.DirEntry[str]] = list(os.scandir(agent_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))


def prune(agent_dir: Path, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` bundles, and temporary directories a crash left
    behind; returns the bundles removed."""
    names = bundle_names(agent_dir)
    doomed = names[: max(0, len(names) - keep)]
    for name in doomed:
        shutil.rmtree(agent_dir / name, ignore_errors=True)
    for entry in os.scandir(agent_dir):
        if entry.name.startswith(_TMP_PREFIX):
            shutil.rmtree(entry.path, ignore_errors=True)
    return doomed
