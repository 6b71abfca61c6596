"""Readers of the host's /proc figures (CPU, memory, disk, network, one process) and the
delta tracker that turns counters into percentages. Pure parsing over a root directory, so unit
tests point it at fixture files.

Every reader returns numbers only: a file that cannot be read gives zeros (or ``None`` for a
process that is gone), never an exception, because metrics must not fail a syscall.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
SECTOR: Final = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size
_SKIP_DISKS: Final = ("loop", "ram")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The ``cpu`` line of /proc/stat in clock ticks: ``busy`` excludes idle and iowait."""

    busy: int
    total: int
    count: int


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process from /proc/PID/{stat,fd}."""

    cpu_seconds: float
    threads: int
    vms: int
    rss: int
    fds: int
    start_ticks: int


def _whole_disk(sys_block: Path) -> Callable[[str], bool]:
    def check(name: str) -> bool:
        return not name.startswith(_SKIP_DISKS) and os.path.exists(sys_block / name)

    return check


class ProcFS:
    """Readers over ``root`` (``/proc``).

    :param is_disk: whether a /proc/diskstats device counts (default: whole disks listed in
        ``/sys/block``, without loop and ram devices, so partitions are not counted twice).
    """

    def __init__(self, root: Path = Path("/proc"), *, is_disk: Callable[[str], bool] | None = None) -> None:
        self.root = root
        self.is_disk = is_disk or _whole_disk(Path("/sys/block"))

    def _read(self, rel: str) -> str:
        try:
            with open(self.root / rel, encoding="ascii", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cpu_times(self) -> CpuTimes:
        busy = total = count = 0
        for line in self._read("stat").splitlines():
            if line.startswith("cpu "):
                values = [int(v) for v in line.split()[1:]]
                # user nice system idle iowait irq softirq steal (guest time is inside user)
                total = sum(values[:8])
                busy = total - values[3] - (values[4] if len(values) > 4 else 0)
            elif line.startswith("cpu") and line[3:4].isdigit():
                count += 1
        return CpuTimes(busy, total, count or (os.cpu_count() or 1))

    def loadavg(self) -> list[float]:
        parts = self._read("loadavg").split()
        try:
            return [float(p) for p in parts[:3]] if len(parts) >= 3 else [0.0, 0.0, 0.0]
        except ValueError:
            return [0.0, 0.0, 0.0]

    def memory(self) -> dict[str, float]:
        """Bytes: ``total``, ``available`` (MemAvailable), ``used`` (total - available), and
        ``percent`` used."""
        info: dict[str, int] = {}
        for line in self._read("meminfo").splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                info[key] = int(fields[0]) * (1024 if len(fields) > 1 and fields[1] == "kB" else 1)
        total = info.get("MemTotal", 0)
        available = info.get("MemAvailable", info.get("MemFree", 0) + info.get("Cached", 0))
        used = max(0, total - available)
        percent = round(100.0 * used / total, 1) if total else 0.0
        return {"total": total, "available": available, "used": used, "percent": percent}

    def disk(self) -> dict[str, int]:
        read = written = 0
        for line in self._read("diskstats").splitlines():
            fields = line.split()
            if len(fields) >= 10 and self.is_disk(fields[2]):
                read += int(fields[5]) * SECTOR
                written += int(fields[9]) * SECTOR
        return {"read_bytes": read, "write_bytes": written}

    def network(self) -> dict[str, int]:
        """Totals over every interface but ``lo``."""
        sent = received = 0
        for line in self._read("net/dev").splitlines():
            name, sep, rest = line.partition(":")
            fields = rest.split()
            if not sep or name.strip() == "lo" or len(fields) < 9 or not fields[0].isdigit():
                continue
            received += int(fields[0])
            sent += int(fields[8])
        return {"bytes_sent": sent, "bytes_recv": received}

    def process(self, pid: int) -> ProcessSample | None:
        """``None`` when the process is gone."""
        stat = self._read(f"{pid}/stat")
        if not stat:
            return None
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": fields from 3 on
        try:
            utime, stime = int(fields[11]), int(fields[12])
            threads, start = int(fields[17]), int(fields[19])
            vms, rss_pages = int(fields[20]), int(fields[21])
        except (IndexError, ValueError):
            return None
        try:
            fds = len(os.listdir(self.root / str(pid) / "fd"))
        except OSError:
            fds = 0
        return ProcessSample((utime + stime) / CLOCK_TICKS, threads, vms, rss_pages * PAGE_SIZE, fds, start)


class Rate:
    """A percentage from a growing counter: ``100 * Δvalue / Δbase`` against the newest earlier
    sample at least ``min_span`` seconds old (else the oldest one kept).

    Samples are stored at most every ``min_span`` seconds, so frequent readers (a client polling
    in a tight loop) cannot push out the housekeeping sample a reading is measured against.
    """

    __slots__ = ("min_span", "_samples")

    def __init__(self, min_span: float = 0.25, keep: int = 8) -> None:
        self.min_span = min_span
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=keep)

    def update(self, now: float, value: float, base: float) -> float | None:
        """Add a sample; the percentage since an earlier one, or ``None`` without one."""
        earlier = None
        for sample in reversed(self._samples):
            earlier = sample
            if now - sample[0] >= self.min_span:
                break
        if not self._samples or now - self._samples[-1][0] >= self.min_span:
            self._samples.append((now, value, base))
        if earlier is None or base - earlier[2] <= 0:
            return None
        return max(0.0, 100.0 * (value - earlier[1]) / (base - earlier[2]))
