"""The HIL bench results the console lists (``--hil-results DIR``): every ``report.html`` that
``clove hil run --report`` wrote under DIR, and the JSON reports beside them.

Files are served only from inside DIR (resolved, symlinks included) and only of the kinds a
report is made of; anything else is "not found", never a path outside DIR.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

MAX_DEPTH = 3  # DIR/<run>/<bench>/report.html at most
MAX_LISTED = 500
SERVED = {".html": "text/html; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json", ".txt": "text/plain; charset=utf-8"}
REPORT_NAMES = ("report.html",)


@dataclass(frozen=True, slots=True)
class Found:
    path: str  # relative to DIR, with "/" separators
    kind: str  # "html" | "json"
    size: int
    modified: str  # UTC, ISO 8601


def list_reports(root: str) -> list[Found]:
    """The reports under ``root``, newest first (at most :data:`MAX_LISTED`)."""
    base = Path(root)
    found: list[tuple[float, Found]] = []
    if not base.is_dir():
        return []
    for directory, subdirs, files in os.walk(base):
        depth = len(Path(directory).relative_to(base).parts)
        if depth >= MAX_DEPTH:
            subdirs[:] = []
        subdirs.sort()
        for name in sorted(files):
            if name not in REPORT_NAMES and not name.endswith(".json"):
                continue
            if name == "plots.json":  # the report's own plot data, not a report
                continue
            full = Path(directory) / name
            try:
                info = full.stat()
            except OSError:
                continue
            rel = full.relative_to(base).as_posix()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime))
            found.append((info.st_mtime, Found(rel, "html" if name in REPORT_NAMES else "json", info.st_size, stamp)))
            if len(found) >= MAX_LISTED:
                break
    return [f for _, f in sorted(found, key=lambda pair: pair[0], reverse=True)]


def resolve(root: str, relative: str) -> tuple[Path, str] | None:
    """The file ``relative`` under ``root`` and its content type, or ``None`` when it is not a
    servable file inside ``root``."""
    base = Path(root).resolve()
    try:
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    kind = SERVED.get(target.suffix.lower())
    return (target, kind) if kind else None
