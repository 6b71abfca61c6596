"""Shared helpers for the Clove benchmarks: percentiles, a bare ZeroMQ echo server, a kernel
fixture, raw DEALER round trips, /proc memory readers and the report/table printer.

Every benchmark script builds a :class:`Report` of :class:`Metric` rows, each optionally paired
with a baseline measured *in the same run* (the machine is a noisy shared 2-core box, so only
ratios mean anything) and calls :func:`main` with it. ``--json`` prints the report as JSON instead
of the human table; ``--json-out PATH`` writes the JSON to a file as well (``run_all.py`` uses it).

Run as a script, this module is the bare echo server: ``python bench/common.py echo ENDPOINT``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
AGENTS_DIR = BENCH_DIR / "agents"
# The repo first: the venv's editable install can resolve ``clove_sdk`` as a bare namespace
# package when the interpreter is not started from the repo root.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import zmq  # noqa: E402

from clove import wire  # noqa: E402
from clove.testing.kernel import KernelProcess, poll_for  # noqa: E402
from clove_sdk import CloveClient  # noqa: E402

__all__ = [
    "AGENTS_DIR",
    "CloveClient",
    "METRIC_HEADERS",
    "CpuMeter",
    "EchoServer",
    "Metric",
    "RawDealer",
    "Report",
    "Stats",
    "agent_script",
    "audit_entries",
    "bench_kernel",
    "children_of",
    "cmdline_of",
    "fmt_num",
    "main",
    "mem_of",
    "noop_frames",
    "poll_for",
    "print_report",
    "print_table",
    "stats_dict",
    "summarize",
    "thread_cpu",
    "time_calls",
    "time_for",
]

# ---- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of samples, in the unit :func:`summarize` scaled them to (µs by default)."""

    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    def fmt(self) -> str:
        quantiles = f"p50 {self.p50:8.1f}  p95 {self.p95:8.1f}  p99 {self.p99:8.1f}"
        return f"{quantiles}  max {self.max:9.1f} µs  (n={self.n})"


def summarize(samples_ns: list[int] | list[float], scale: float = 1e-3) -> Stats:
    """p50/p95/p99 of ``samples_ns`` (nanoseconds by default), scaled to µs."""
    if not samples_ns:
        return Stats(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
    data = sorted(float(s) * scale for s in samples_ns)
    if len(data) == 1:
        v = data[0]
        return Stats(1, v, v, v, v, v)
    q = statistics.quantiles(data, n=100, method="inclusive")
    return Stats(len(data), statistics.fmean(data), q[49], q[94], q[98], data[-1])


def stats_dict(s: Stats, digits: int = 2) -> dict[str, float]:
    """A :class:`Stats` as a JSON-friendly dict, floats rounded."""
    values = {f.name: getattr(s, f.name) for f in fields(s)}
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in values.items()}


def time_calls(fn: Callable[[], object], n: int, warmup: int = 0) -> list[int]:
    """Run ``fn`` ``warmup`` times untimed, then ``n`` times; the per-call durations in ns."""
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    out: list[int] = []
    append = out.append
    for _ in range(n):
        t0 = clock()
        fn()
        append(clock() - t0)
    return out


def time_for(fn: Callable[[], object], seconds: float) -> list[int]:
    """Call ``fn`` back to back for ``seconds``; the per-call durations in ns."""
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    out: list[int] = []
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        out.append(t1 - t0)
        if t1 >= end:
            return out


# ---- ZeroMQ: raw DEALER and the bare echo server ------------------------------------------


def noop_frames(msg: str = "x") -> list[bytes]:
    """The exact frames ``CloveClient.call("noop", msg=msg)`` sends (request id 1)."""
    return wire.encode_request(1, "noop", {"msg": msg})


class RawDealer:
    """A bare DEALER that sends prepared frames and waits for one multipart reply."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.ctx = zmq.Context.instance()
        self.sock: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        self.sock.connect(endpoint)

    def roundtrip(self, frames: list[bytes]) -> list[bytes]:
        self.sock.send_multipart(frames)
        return self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> RawDealer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_echo(endpoint: str) -> None:
    """The bare baseline: a blocking ROUTER that sends every message straight back."""
    ctx = zmq.Context(io_threads=1)
    sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.RCVHWM, 10_000)
    sock.bind(endpoint)
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        sock.send_multipart(sock.recv_multipart())


class EchoServer:
    """The bare pyzmq DEALER/ROUTER echo server in its own process, on a private ipc:// path."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="clvbench")
        self.endpoint = f"ipc://{self.dir}/echo.sock"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> EchoServer:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "echo", self.endpoint],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None  # noqa: S101
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"echo server failed to start: {line!r}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(f"{self.dir}/echo.sock")
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- the kernel under test ------------------------------------------------------------------


def _pythonpath() -> str:
    old = os.environ.get("PYTHONPATH")
    return f"{REPO}:{old}" if old else str(REPO)


@contextlib.contextmanager
def bench_kernel(config: str = "") -> Iterator[KernelProcess]:
    """A real kernel subprocess with private paths (never /tmp/clove.sock), cleaned up after."""
    kernel = KernelProcess(config, env={"PYTHONPATH": _pythonpath()})
    try:
        kernel.start()
        yield kernel
    except BaseException:
        sys.stderr.write(f"--- kernel log tail ---\n{kernel.log()[-4000:]}\n")
        raise
    finally:
        kernel.cleanup()


def agent_script(name: str) -> str:
    return str(AGENTS_DIR / name)


def audit_entries(client: Any, agent_id: int, limit: int = 200) -> list[dict[str, Any]]:
    return list(client.get_audit_log(agent_id=agent_id, limit=limit).get("entries", []))


# ---- memory from /proc ----------------------------------------------------------------------


def mem_of(pid: int) -> dict[str, float]:
    """VmRSS and PSS (from smaps_rollup) of ``pid`` in MiB; missing fields are absent."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) / 1024
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1]) / 1024
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each thread of ``pid``, keyed by thread name
    (``comm``; threads sharing a name are summed). Resolution: one clock tick (10 ms)."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rfind(")")]
            fields_ = stat[stat.rfind(")") + 2 :].split()
            out[name] = out.get(name, 0.0) + (int(fields_[11]) + int(fields_[12])) / _TICK
    return out


class CpuMeter:
    """Accumulates the CPU time a process spends across several measured windows."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.by_thread: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = thread_cpu(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, seconds in thread_cpu(self.pid).items():
            self.by_thread[name] = self.by_thread.get(name, 0.0) + seconds - self._start.get(name, 0.0)

    @property
    def total(self) -> float:
        return sum(self.by_thread.values())


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (scans /proc/*/stat)."""
    kids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# ---- reports --------------------------------------------------------------------------------


@dataclass(slots=True)
class Metric:
    """One figure, optionally with a same-run baseline; ``ratio`` = value / baseline."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass(slots=True)
class Report:
    bench: str
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, **kw: Any) -> Metric:
        metric = Metric(name, value, unit, **kw)
        self.metrics.append(metric)
        return metric

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "metrics": [m.to_dict() for m in self.metrics],
            "details": self.details,
            "notes": self.notes,
        }


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value != value:  # nan
        return "nan"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def print_table(headers: list[str], rows: list[list[str]], out: Any = None, left: int = 1) -> None:
    """A plain fixed-width table; the first ``left`` columns are left-aligned, the rest right-aligned."""
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print(line(row), file=out)


def metric_rows(metrics: list[Metric], with_bench: str | None = None) -> list[list[str]]:
    rows = []
    for m in metrics:
        ratio = m.ratio
        row = [
            m.name,
            fmt_num(m.value),
            m.unit,
            m.baseline_name or "-",
            fmt_num(m.baseline),
            "-" if ratio is None else f"{ratio:.2f}",
            m.target or "-",
        ]
        rows.append(([with_bench] if with_bench else []) + row)
    return rows


METRIC_HEADERS = ["metric", "value", "unit", "baseline", "base value", "ratio", "target"]


def print_report(report: Report, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"\n== {report.bench} ==", file=out)
    print_table(METRIC_HEADERS, metric_rows(report.metrics), out)
    for note in report.notes:
        print(f"  * {note}", file=out)


def main(
    bench: str, run: Callable[[Report, Callable[[str], None]], None], argv: list[str] | None = None
) -> int:
    """Parse ``--json``/``--json-out``, run ``run(report, say)`` and print or write the report.

    ``say`` prints progress lines (to stderr under ``--json``, so stdout stays pure JSON).
    """
    parser = argparse.ArgumentParser(description=f"Clove benchmark: {bench}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON report to PATH")
    args = parser.parse_args(argv)
    progress = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=progress, flush=True)

    report = Report(bench)
    started = time.monotonic()
    run(report, say)
    report.details["elapsed_s"] = round(time.monotonic() - started, 2)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
        print(f"  ({report.details['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        _serve_echo(sys.argv[2])
    else:
        sys.exit("usage: common.py echo ENDPOINT")
