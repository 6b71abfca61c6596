"""What a compiled core would buy: the NOOP path in C against the Python kernel, same run.

``compiled_core/noop_core.c`` is the kernel's NOOP path (receive, decode the msgpack envelope,
authorize by an (identity, call) table lookup, build and hash-chain the journal record with the
Python kernel's flush policy, reply) in C on libzmq. This script builds it into a cache dir
(``~/.cache/clove-bench/compiled_core/<hash>/``; missing libzmq/OpenSSL headers are installed
with ``apt-get install --no-install-recommends`` unless ``CLOVE_BENCH_NO_INSTALL`` is set; no
compiler means a skipped report), checks it against the real kernel (same reply bytes, a journal
``verify_journal`` accepts, the same record), then measures, interleaved:

* NOOP round trips p50/p99 through the unchanged SDK (``CloveClient.noop("x")``) and a raw
  pyzmq DEALER against the Python kernel, the compiled prototype, the bare pyzmq ROUTER echo
  (the floor, ``common.EchoServer``) and the same echo in C (the compiled floor);
* client and server CPU per call, and the SDK's own encode/decode: how much of an SDK round
  trip is the client, which no kernel can make faster;
* synchronous calls/s with 1 and 4 client processes (``throughput.run_clients``) against the
  bare pyzmq echo, the Python kernel and the prototype, each twice in mirrored order.

The original C++ Clove's published figures are printed as fixed reference rows (not measured
here, other hardware); compare their *shape* (p99/p50, 4-vs-1 scaling) rather than their values.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    CloveClient,
    CpuMeter,
    EchoServer,
    RawDealer,
    Report,
    Stats,
    bench_kernel,
    main,
    noop_frames,
    stats_dict,
    summarize,
    time_calls,
)
from throughput import CLIENTS, run_clients

from clove import wire
from clove.kernel.audit.verify import verify_journal

SOURCE = BENCH_DIR / "compiled_core" / "noop_core.c"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clove-bench" / "compiled_core"
#: pkg-config name -> the Debian package that brings its headers.
LIBRARIES = {"libzmq": "libzmq3-dev", "libcrypto": "libssl-dev"}
CFLAGS = ["-O2", "-g0", "-Wall", "-Wextra", "-std=gnu11"]

WARMUP = 500
ROUNDS = 40
BLOCK = 250
CODEC_N = 20_000
COST_N = 200_000

#: The original C++ Clove's published NOOP figures, as quoted in issue 15: reference, not measured.
PUBLISHED = {"p50_us": 35.0, "p99_us": 70.0, "calls_1": 25_300.0, "calls_4": 33_800.0}
PUBLISHED_NOTE = "original C++ Clove, published figure (other machine): not measured here"


# ---- building the prototype -------------------------------------------------------------------


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _pkg_config_has(lib: str) -> bool:
    return shutil.which("pkg-config") is not None and _run(["pkg-config", "--exists", lib]).returncode == 0


def _apt_install(packages: list[str], say: Callable[[str], None]) -> str | None:
    """Install ``packages`` with apt-get; ``None`` on success, else why not."""
    if os.environ.get("CLOVE_BENCH_NO_INSTALL"):
        return f"missing {', '.join(packages)} and CLOVE_BENCH_NO_INSTALL is set"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"missing {', '.join(packages)} (install them; apt-get needs root)"
    say(f"  apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    for attempt in range(2):
        proc = subprocess.run(install, capture_output=True, text=True, timeout=300, env=env, check=False)
        if proc.returncode == 0:
            return None
        if attempt == 0:  # stale package lists are the usual cause
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, env=env, check=False)
    return f"apt-get install {' '.join(packages)} failed: {proc.stderr.strip()[-300:]}"


def build_core(say: Callable[[str], None]) -> tuple[Path | None, str]:
    """The prototype's binary (built once per source, compiler and flags) or ``None`` and why."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc or gcc) on PATH"
    needed = [pkg for lib, pkg in LIBRARIES.items() if not _pkg_config_has(lib)]
    if shutil.which("pkg-config") is None:
        needed.append("pkg-config")
    if needed:
        why_not = _apt_install(needed, say)
        if why_not:
            return None, why_not
    flags = _run(["pkg-config", "--cflags", "--libs", *LIBRARIES])
    if flags.returncode != 0:
        return None, f"pkg-config: {flags.stderr.strip()}"
    argv_tail = [*CFLAGS, str(SOURCE), *flags.stdout.split(), "-lpthread", "-lm"]
    version = _run([cc, "--version"]).stdout.splitlines()[:1]
    key = hashlib.sha256(SOURCE.read_bytes() + repr((cc, version, argv_tail)).encode()).hexdigest()[:16]
    binary = CACHE_DIR / key / "noop_core"
    if binary.exists():
        return binary, f"cached build {binary}"
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"noop_core.{os.getpid()}.tmp")
    started = time.monotonic()
    proc = _run([cc, "-o", str(partial), *argv_tail], timeout=120)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        return None, f"build failed: {proc.stderr.strip()[-600:]}"
    os.replace(partial, binary)  # atomic: a concurrent run never sees half a binary
    return binary, f"built {binary} in {time.monotonic() - started:.1f} s ({' '.join(version)})"


# ---- the compiled servers ------------------------------------------------------------------------


class CoreProcess:
    """``noop_core serve|echo`` in its own process on a private ipc:// path."""

    def __init__(self, binary: Path, mode: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clvcore"))
        self.path = str(self.dir / "core.sock")
        self.endpoint = f"ipc://{self.path}"
        self.journal = self.dir / "journal.jsonl"
        argv = [str(binary), mode, self.endpoint] + ([str(self.journal)] if mode == "serve" else [])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None  # noqa: S101
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"noop_core {mode} failed to start: {line!r}")
        self.counters: dict[str, int] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (the journal is written and synced first) and read the exit counters."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            for line in out.splitlines():
                if line.startswith("{"):
                    self.counters = json.loads(line)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- checks: the prototype answers and journals what the kernel does -----------------------------

_VOLATILE = {"id", "hash", "prev_hash", "timestamp", "duration_us"}


def _last_record(path: Path, event_type: str) -> dict[str, Any] | None:
    found = None
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event_type") == event_type:
                found = record
    return found


def _stable(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record without what differs call to call (and the session number)."""
    if record is None:
        return None
    out = {k: v for k, v in record.items() if k not in _VOLATILE}
    out["details"] = {k: v for k, v in out.get("details", {}).items() if k != "caller_id"}
    return out


def check_equivalence(kernel_ep: str, core: CoreProcess) -> dict[str, Any]:
    """The same requests to both servers: replies compared byte for byte (ok) or by error code."""
    requests = {
        "noop x": noop_frames("x"),
        "noop, string id": wire.encode_request("req-7", "noop", {"msg": "héllo\n"}),
        "echo": wire.encode_request(3, "echo", {"msg": "hi"}),
        "noop, no body": wire.encode_request(4, "noop"),
        "unknown syscall": wire.encode_request(5, "nosuch", {"token": "secret"}),
        "bad argument": wire.encode_request(6, "noop", {"msg": 1}),
        "not msgpack": [wire.PROTOCOL, wire.KIND_REQUEST, b"\xc1"],
    }
    same: dict[str, bool] = {}
    with RawDealer(kernel_ep) as kernel, RawDealer(core.endpoint) as compiled:
        for name, frames in requests.items():
            want, got = kernel.roundtrip(frames), compiled.roundtrip(frames)
            a, b = wire.decode_reply(want), wire.decode_reply(got)
            if a.ok:
                same[name] = want == got
            else:
                same[name] = (
                    (not b.ok)
                    and a.id == b.id
                    and a.error is not None
                    and b.error is not None
                    and a.error.code == b.error.code
                )
    with CloveClient(core.path) as client:
        same["sdk noop"] = client.noop("x") == "x"
    return same


# ---- measuring -------------------------------------------------------------------------------------


def measure_latency(
    paths: dict[str, Callable[[], object]], server_pids: dict[str, int]
) -> tuple[dict[str, list[int]], dict[str, float], dict[str, float]]:
    """Interleaved blocks of each path: samples (ns), client and server CPU µs per call."""
    samples: dict[str, list[int]] = {name: [] for name in paths}
    client_cpu = dict.fromkeys(paths, 0.0)
    meters = {name: CpuMeter(server_pids[name]) for name in paths}
    for fn in paths.values():
        time_calls(fn, 0, WARMUP)
    for _ in range(ROUNDS):
        for name, fn in paths.items():
            time_calls(fn, 0, 20)
            cpu0 = time.process_time()  # this process, its libzmq I/O thread included
            with meters[name]:
                samples[name].extend(time_calls(fn, BLOCK))
            client_cpu[name] += time.process_time() - cpu0
    calls = ROUNDS * BLOCK
    client = {name: seconds / calls * 1e6 for name, seconds in client_cpu.items()}
    server = {name: meter.total / calls * 1e6 for name, meter in meters.items()}
    return samples, client, server


def measure_core_work(binary: Path, journal: Path) -> dict[str, float]:
    """The prototype's own work per NOOP without ZeroMQ (``noop_core cost``): CPU ns of both
    threads (decode, authorize, record, chain, write, reply), and wall ns."""
    proc = _run([str(binary), "cost", str(journal), str(COST_N)], timeout=120)
    journal.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"noop_core cost failed: {proc.stderr.strip()}")
    return dict(json.loads(proc.stdout))


def measure_codec() -> float:
    """µs per call of the SDK's own envelope work (encode the request, decode the reply)."""
    reply = wire.ok_reply(1, "x")

    def codec() -> None:
        wire.encode_request(1, "noop", {"msg": "x"})
        wire.decode_reply(reply)

    samples = time_calls(codec, CODEC_N, 1000)
    return summarize(samples).p50


def measure_throughput(
    endpoints: dict[str, tuple[str, str]], say: Callable[[str], None]
) -> dict[str, list[float]]:
    """calls/s per ``"<config> x<clients>"``: each configuration twice, in mirrored order."""
    runs: dict[str, list[float]] = {}
    order = list(endpoints.items())
    for clients in CLIENTS:
        for name, (mode, endpoint) in order + order[::-1]:
            rate = run_clients(mode, endpoint, clients)
            runs.setdefault(f"{name} x{clients}", []).append(rate)
            say(f"  {name:14s} x{clients}: {rate:10,.0f} calls/s")
    return runs


# ---- the report ------------------------------------------------------------------------------------


def _published_rows(report: Report) -> None:
    report.add("C++ Clove NOOP p50 (published, not measured)", PUBLISHED["p50_us"], "µs", note=PUBLISHED_NOTE)
    report.add("C++ Clove NOOP p99 (published, not measured)", PUBLISHED["p99_us"], "µs", note=PUBLISHED_NOTE)
    report.add(
        "C++ Clove calls/s, 1 client (published, not measured)",
        PUBLISHED["calls_1"],
        "calls/s",
        note=PUBLISHED_NOTE,
    )
    report.add(
        "C++ Clove calls/s, 4 clients (published, not measured)",
        PUBLISHED["calls_4"],
        "calls/s",
        note=PUBLISHED_NOTE,
    )
    report.add(
        "C++ Clove p99/p50 (published, not measured)",
        PUBLISHED["p99_us"] / PUBLISHED["p50_us"],
        "x",
        note=PUBLISHED_NOTE,
    )
    report.add(
        "C++ Clove scaling 4 vs 1 (published, not measured)",
        PUBLISHED["calls_4"] / PUBLISHED["calls_1"],
        "x",
        note=PUBLISHED_NOTE,
    )


SERVERS = {"kernel": "Python kernel", "compiled": "compiled core"}
#: Each server's own floor: the echo in the same language on the same kind of libzmq binding.
FLOORS = {"kernel": "bare", "compiled": "c echo"}
LABELS = {
    "bare": "bare pyzmq echo",
    "c echo": "C echo",
    "kernel raw": "Python kernel raw",
    "kernel sdk": "Python kernel sdk",
    "compiled raw": "compiled core raw",
    "compiled sdk": "compiled core sdk",
}


def _latency_rows(report: Report, stats: dict[str, Stats]) -> None:
    bare = stats["bare"]
    report.add("bare pyzmq echo p50", bare.p50, "µs")
    report.add("bare pyzmq echo p99", bare.p99, "µs")
    for name in ("c echo", "kernel raw", "compiled raw", "kernel sdk", "compiled sdk"):
        s = stats[name]
        report.add(f"{LABELS[name]} p50", s.p50, "µs", baseline=bare.p50, baseline_name="bare p50")
        report.add(f"{LABELS[name]} p99", s.p99, "µs", baseline=bare.p99, baseline_name="bare p99")
    for path in ("raw", "sdk"):
        kernel, compiled = stats[f"kernel {path}"], stats[f"compiled {path}"]
        for q in ("p50", "p99"):
            report.add(
                f"compiled vs Python kernel, {path} {q}",
                getattr(compiled, q),
                "µs",
                baseline=getattr(kernel, q),
                baseline_name=f"Python kernel {path} {q}",
            )
    for server, label in SERVERS.items():
        floor = FLOORS[server]
        report.add(
            f"{label} added over {LABELS[floor]} (raw p50)",
            stats[f"{server} raw"].p50 - stats[floor].p50,
            "µs",
        )
    for name in ("kernel raw", "compiled raw", "kernel sdk", "compiled sdk"):
        s = stats[name]
        report.add(f"{LABELS[name]} p99/p50", s.p99 / s.p50, "x", baseline=PUBLISHED["p99_us"] / PUBLISHED["p50_us"],
                   baseline_name="published C++ p99/p50")  # fmt: skip


def _client_rows(report: Report, stats: dict[str, Stats], means: dict[str, float], client: dict[str, float],
                 server: dict[str, float], codec_us: float) -> None:  # fmt: skip
    report.add("SDK encode+decode per call (in-process)", codec_us, "µs")
    for key, label in SERVERS.items():
        sdk, raw = stats[f"{key} sdk"], stats[f"{key} raw"]
        report.add(f"SDK overhead over raw DEALER, {label} (sdk-raw p50)", sdk.p50 - raw.p50, "µs")
        report.add(
            f"client CPU per SDK call, {label}",
            client[f"{key} sdk"],
            "µs",
            baseline=means[f"{key} sdk"],
            baseline_name="mean SDK round trip",
            note="ratio = the client's share of the round trip",
        )
        # What a faster kernel can at most remove from an SDK call: its added time over its floor.
        report.add(
            f"kernel's added time in an SDK call, {label}",
            raw.p50 - stats[FLOORS[key]].p50,
            "µs",
            baseline=sdk.p50,
            baseline_name="SDK p50",
            note=f"raw p50 minus {LABELS[FLOORS[key]]} p50",
        )
    for name in ("bare", "c echo", "kernel raw", "compiled raw"):
        report.add(f"server CPU per call: {LABELS[name]}", server[name], "µs",
                   baseline=server["bare"] if name != "bare" else None, baseline_name="bare CPU" if name != "bare" else "")  # fmt: skip
    report.add("client CPU per raw DEALER call (compiled core)", client["compiled raw"], "µs",
               baseline=means["compiled raw"], baseline_name="mean raw round trip")  # fmt: skip


def _throughput_rows(report: Report, rates: dict[str, float]) -> None:
    for clients in CLIENTS:
        bare = rates[f"bare x{clients}"]
        report.add(f"bare pyzmq echo, {clients} client(s)", bare, "calls/s")
        for name in ("kernel raw", "kernel sdk", "compiled raw", "compiled sdk"):
            report.add(f"{LABELS[name]}, {clients} client(s)", rates[f"{name} x{clients}"], "calls/s",
                       baseline=bare, baseline_name=f"bare x{clients}")  # fmt: skip
        for path in ("raw", "sdk"):
            report.add(
                f"compiled vs Python kernel calls/s, {path}, {clients} client(s)",
                rates[f"compiled {path} x{clients}"],
                "calls/s",
                baseline=rates[f"kernel {path} x{clients}"],
                baseline_name=f"Python kernel {path} x{clients}",
            )
    for name in ("kernel sdk", "compiled sdk", "compiled raw"):
        report.add(f"{LABELS[name]} scaling 4 vs 1 clients", rates[f"{name} x4"] / rates[f"{name} x1"], "x",
                   baseline=PUBLISHED["calls_4"] / PUBLISHED["calls_1"], baseline_name="published C++ scaling")  # fmt: skip


def run(report: Report, say: Callable[[str], None]) -> None:
    binary, how = build_core(say)
    report.details["build"] = how
    say(f"compiled_core: {how}")
    if binary is None:
        report.notes.append(f"compiled prototype skipped: {how}")
        _published_rows(report)
        return
    frames = noop_frames("x")
    with EchoServer() as echo, bench_kernel() as kernel, contextlib.ExitStack() as cleanup:
        core = CoreProcess(binary, "serve")
        cleanup.callback(core.cleanup)
        c_echo = CoreProcess(binary, "echo")
        cleanup.callback(c_echo.cleanup)
        kernel_ep = f"ipc://{kernel.socket}"
        same = check_equivalence(kernel_ep, core)
        report.details["same_reply_as_kernel"] = same
        say(f"  replies as the kernel's: {same}")
        dealers = {
            "bare": RawDealer(echo.endpoint),
            "c echo": RawDealer(c_echo.endpoint),
            "kernel raw": RawDealer(kernel_ep),
            "compiled raw": RawDealer(core.endpoint),
        }
        kernel_sdk, core_sdk = CloveClient(kernel.socket), CloveClient(core.path)
        paths: dict[str, Callable[[], object]] = {
            name: functools.partial(dealer.roundtrip, frames) for name, dealer in dealers.items()
        }
        paths["kernel sdk"] = lambda: kernel_sdk.noop("x")
        paths["compiled sdk"] = lambda: core_sdk.noop("x")
        pids = {"bare": echo.pid, "c echo": c_echo.pid, "kernel raw": kernel.pid, "kernel sdk": kernel.pid,
                "compiled raw": core.pid, "compiled sdk": core.pid}  # fmt: skip
        say(f"  latency: {ROUNDS} rounds x {BLOCK} calls per path, interleaved")
        t0 = time.monotonic()
        samples, client_cpu, server_cpu = measure_latency(paths, pids)
        say(f"  done in {time.monotonic() - t0:.1f} s; the SDK's envelope work in-process")
        codec_us = measure_codec()
        for dealer in dealers.values():
            dealer.close()
        kernel_sdk.close()
        core_sdk.close()
        say("  throughput (2 s per run, each configuration twice, mirrored)")
        runs = measure_throughput(
            {
                "bare": ("raw", echo.endpoint),
                "kernel raw": ("raw", kernel_ep),
                "kernel sdk": ("sdk", kernel_ep),
                "compiled raw": ("raw", core.endpoint),
                "compiled sdk": ("sdk", core.endpoint),
            },
            say,
        )
        kernel_record = _stable(_last_record(kernel.state_dir / "journal.jsonl", "noop"))
        core.stop()  # writes and syncs its journal
        verified = verify_journal(core.journal)
        core_record = _stable(_last_record(core.journal, "noop"))
        work = measure_core_work(binary, core.dir / "cost.jsonl")

    stats = {name: summarize(s) for name, s in samples.items()}
    means = {name: sum(s) / len(s) / 1000 for name, s in samples.items()}
    rates = {key: sum(r) / len(r) for key, r in runs.items()}
    _latency_rows(report, stats)
    _client_rows(report, stats, means, client_cpu, server_cpu, codec_us)
    report.add(
        "compiled core: NOOP work without ZeroMQ, CPU per call",
        work["cpu_ns_per_request"] / 1000,
        "µs",
        baseline=server_cpu["compiled raw"],
        baseline_name="compiled core server CPU",
        note="decode, authorize, record, chain, write, reply in-process: the rest is the loop and libzmq",
    )
    _throughput_rows(report, rates)
    _published_rows(report)

    report.details["stats_us"] = {LABELS[name]: stats_dict(s) for name, s in stats.items()}
    report.details["client_cpu_us_per_call"] = {LABELS[k]: round(v, 2) for k, v in client_cpu.items()}
    report.details["server_cpu_us_per_call"] = {LABELS[k]: round(v, 2) for k, v in server_cpu.items()}
    report.details["calls_per_s"] = runs
    report.details["core_counters"] = core.counters
    report.details["core_work_in_process"] = work
    report.details["journal_verified"] = {
        "ok": verified.ok,
        "records": verified.records,
        "problems": [str(p) for p in verified.problems[:5]],
    }
    report.details["record_matches_kernel"] = core_record == kernel_record
    report.details["records"] = {"kernel": kernel_record, "compiled": core_record}
    checks_ok = all(same.values()) and verified.ok and core_record == kernel_record
    report.notes.append(
        f"equivalence: replies {'match' if all(same.values()) else 'DIFFER'} "
        f"({sum(same.values())}/{len(same)}), journal {'verifies' if verified.ok else 'FAILS verify'} "
        f"({verified.records} records), noop record {'matches' if core_record == kernel_record else 'DIFFERS from'} the kernel's"
        + ("" if checks_ok else ": see details")
    )
    report.notes.append("latency paths interleaved; CPU per call counts all threads, 10 ms ticks for servers")
    report.notes.append("throughput: mean of 2 runs of 2 s; 2 CPUs shared by the server and every client")
    report.notes.append(
        "published rows are the original C++ Clove's own figures on its own machine, not measured"
    )
    for name, s in stats.items():
        say(f"  {LABELS[name]:20s} {s.fmt()}")


if __name__ == "__main__":
    raise SystemExit(main("compiled_core", run))
