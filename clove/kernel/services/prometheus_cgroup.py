"""The few cgroup figures a scrape serves per agent, read cheaply on the exporter's threads.

:func:`~.metricscgroup.read_cgroup` reads every counter of every hierarchy (about a millisecond
an agent on a v1 host); a scrape needs four figures. :class:`CgroupFigures` finds once, per
cgroup, which file holds each (v1 or v2) and then reads only those: memory in use, the memory
limit, CPU time, and CPU throttling. Figures that cannot be read (the cgroup was removed
mid-scrape, a garbled file, no limit) are left out.

Thread-safe: the cache is replaced whole (one reference store), never changed in place, and is
bounded to the cgroups of the snapshot being served.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["CgroupFigures"]

_UNLIMITED: Final = 1 << 62  # v1 writes "no limit" as 9223372036854771712

# figure -> candidate files (v1 first, then v2), each with how to read it.
_Reader = Callable[[str], "dict[str, float]"]


def _single(key: str, scale: float = 1.0, *, limit: bool = False) -> _Reader:
    def read(text: str) -> dict[str, float]:
        value = text.strip()
        if not value.isdigit():
            return {}  # "max" (no limit) or garbage
        number = int(value)
        if limit and number >= _UNLIMITED:
            return {}
        return {key: number * scale}

    return read


def _keyed(keys: dict[str, tuple[str, float]]) -> _Reader:
    def read(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in keys and value.strip().isdigit():
                ours, scale = keys[name]
                out[ours] = int(value) * scale
        return out

    return read


_CANDIDATES: Final[tuple[tuple[str, _Reader], ...]] = (
    ("memory.usage_in_bytes", _single("memory_bytes")),
    ("memory.current", _single("memory_bytes")),
    ("memory.limit_in_bytes", _single("memory_limit_bytes", limit=True)),
    ("memory.max", _single("memory_limit_bytes", limit=True)),
    ("cpuacct.usage", _single("cpu_seconds", 1e-9)),
    ("cpu.stat", _keyed({"usage_usec": ("cpu_seconds", 1e-6), "nr_throttled": ("throttled_periods", 1.0),
                         "throttled_time": ("throttled_seconds", 1e-9), "throttled_usec": ("throttled_seconds", 1e-6)})),
)  # fmt: skip


class CgroupFigures:
    """:param read_text: reads one file (tests hand their own)."""

    def __init__(self, read_text: Callable[[str], str] | None = None) -> None:
        self.read_text = read_text or _read
        self._files: dict[tuple[str, ...], tuple[tuple[str, _Reader], ...]] = {}

    def _locate(self, dirs: tuple[str, ...]) -> tuple[tuple[str, _Reader], ...]:
        found = self._files.get(dirs)
        if found is None:
            found = tuple((os.path.join(d, name), reader) for d in dirs for name, reader in _CANDIDATES
                          if os.path.exists(os.path.join(d, name)))  # fmt: skip
        return found

    def read(self, dirs: tuple[str, ...]) -> dict[str, float]:
        """The figures of the cgroup in ``dirs`` (the first file that has one wins)."""
        out: dict[str, float] = {}
        for path, reader in self._locate(dirs):
            try:
                text = self.read_text(path)
            except (OSError, ValueError):
                continue  # removed mid-scrape
            for key, value in reader(text).items():
                out.setdefault(key, value)
        return out

    def keep(self, wanted: Iterable[tuple[str, ...]]) -> None:
        """Remember the files of these cgroups only (the ones the snapshot still lists)."""
        self._files = {dirs: self._locate(dirs) for dirs in wanted}


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # one read(2): cgroup files are small
    try:
        return os.read(fd, 8192).decode("ascii", "replace")
    finally:
        os.close(fd)
