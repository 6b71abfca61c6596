"""Where a NOOP's time goes: the same raw DEALER round trip against five servers, interleaved.

* ``bare``          blocking ROUTER echo (the baseline of noop_latency);
* ``poller echo``   an echo shaped like the kernel loop (zmq.Poller, NOBLOCK batch of 32);
* ``kernel, no journal``       the real kernel with ``Journal.append`` patched to a no-op;
* ``kernel, journal no write`` records built (JSON, SHA-256, ring) and batched, but their bytes
  never written (the one ``write`` function of the journal, patched: on the loop or the writer thread);
* ``kernel``        the real kernel, unchanged.

The patched kernels are this script run as ``--kernel MODE SOCKET STATE_DIR``: it monkeypatches
the journal in its own process and then runs ``clove kernel`` as usual (no kernel code is
edited). Each step's cost is the p50 difference to the previous row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    CpuMeter,
    EchoServer,
    RawDealer,
    Report,
    main,
    noop_frames,
    poll_for,
    stats_dict,
    summarize,
    time_calls,
)

ROUNDS = 24
BLOCK = 300
WARMUP = 500
KERNEL_MODES = ("no journal", "journal no write", "full")


def serve_poller_echo(endpoint: str) -> None:
    import zmq

    sock = zmq.Context(io_threads=1).socket(zmq.ROUTER)
    sock.bind(endpoint)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    print("ready", flush=True)
    while True:
        for ready, _ in poller.poll(100):
            for _ in range(32):
                try:
                    frames = ready.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                ready.send_multipart(frames, zmq.NOBLOCK)


def run_patched_kernel(mode: str, socket: str, state_dir: str) -> int:
    import clove.kernel.audit.journal as journal
    import clove.kernel.audit.writer as writer
    from clove.cli.main import main as clove_main

    if mode == "no journal":
        journal.Journal.append = lambda self, *a, **k: {}  # type: ignore[method-assign]
    elif mode == "journal no write":
        original_open = journal.Journal.open

        def open_dropping(self: Any) -> None:
            original_open(self)  # the records found on disk are read; nothing is written after
            writer._write_fully = lambda fd, data: None  # type: ignore[assignment]

        journal.Journal.open = open_dropping  # type: ignore[method-assign]
    return clove_main(["kernel", "--socket", socket, "--state-dir", state_dir])


class Server:
    """A server subprocess of this script (poller echo or a patched kernel) on a private path."""

    def __init__(self, argv: list[str], path: str) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
        )

    def wait(self) -> None:
        poll_for(lambda: os.path.exists(self.path) or self.proc.poll() is not None, 20, 0.02, self.path)
        if self.proc.poll() is not None:
            raise RuntimeError(f"server for {self.path} exited with {self.proc.returncode}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run(report: Report, say: Callable[[str], None]) -> None:
    tmp = tempfile.mkdtemp(prefix="clvbrk")
    servers: dict[str, Server] = {
        "poller echo": Server(["--poller-echo", f"ipc://{tmp}/poll.sock"], f"{tmp}/poll.sock")
    }
    for i, mode in enumerate(KERNEL_MODES):
        servers[mode] = Server(["--kernel", mode, f"{tmp}/k{i}.sock", f"{tmp}/state{i}"], f"{tmp}/k{i}.sock")
    frames = noop_frames("x")
    try:
        with EchoServer() as echo:
            for server in servers.values():
                server.wait()
            time.sleep(0.5)
            dealers = {"bare": RawDealer(echo.endpoint)}
            dealers.update({name: RawDealer(f"ipc://{server.path}") for name, server in servers.items()})
            meters = {"bare": CpuMeter(echo.pid)}
            meters.update({name: CpuMeter(server.proc.pid) for name, server in servers.items()})
            say(f"noop_breakdown: {ROUNDS} rounds x {BLOCK} raw round trips per server, interleaved")
            samples: dict[str, list[int]] = {name: [] for name in dealers}
            for dealer in dealers.values():
                time_calls(lambda d=dealer: d.roundtrip(frames), 0, WARMUP)
            for _ in range(ROUNDS):
                for name, dealer in dealers.items():
                    time_calls(lambda d=dealer: d.roundtrip(frames), 0, 20)
                    with meters[name]:
                        samples[name].extend(time_calls(lambda d=dealer: d.roundtrip(frames), BLOCK))
            for dealer in dealers.values():
                dealer.close()
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    stats = {name: summarize(s) for name, s in samples.items()}
    bare = stats["bare"]
    labels = {
        "bare": "bare echo",
        "poller echo": "poller-loop echo",
        "no journal": "kernel, journal off",
        "journal no write": "kernel, journal records not written",
        "full": "kernel (unchanged)",
    }
    for name, s in stats.items():
        kw = {} if name == "bare" else {"baseline": bare.p50, "baseline_name": "bare p50"}
        report.add(f"{labels[name]} p50", s.p50, "µs", **kw)
    steps = [
        ("poller loop shape", "bare", "poller echo"),
        ("decode+dispatch+reply", "poller echo", "no journal"),
        ("journal record (JSON+SHA-256+ring)", "no journal", "journal no write"),
        ("journal write (batched, to the page cache)", "journal no write", "full"),
    ]
    for label, before, after in steps:
        report.add(f"step: {label}", stats[after].p50 - stats[before].p50, "µs")
    calls = ROUNDS * BLOCK
    cpu = {name: meter.total / calls * 1e6 for name, meter in meters.items()}
    for name, per_call in cpu.items():
        kw = {} if name == "bare" else {"baseline": cpu["bare"], "baseline_name": "bare CPU"}
        report.add(f"server CPU per call: {labels[name]}", per_call, "µs", **kw)
    for label, before, after in steps:
        report.add(f"CPU step: {label}", cpu[after] - cpu[before], "µs")
    # Python does not name its native threads, so the loop and the journal writer are both "python".
    thread_labels = {"python": "Python threads (loop + journal writer)", "ZMQbg/IO/0": "libzmq I/O thread"}
    full = meters["full"].by_thread
    for thread, seconds in sorted(full.items(), key=lambda kv: -kv[1]):
        if seconds > 0:
            report.add(
                f"kernel CPU per call: {thread_labels.get(thread, thread)}", seconds / calls * 1e6, "µs"
            )
    report.details["stats_us"] = {labels[name]: stats_dict(s) for name, s in stats.items()}
    report.details["cpu_by_thread_s"] = {labels[name]: m.by_thread for name, m in meters.items()}
    report.notes.append("latency steps are p50 differences between neighbouring rows (noisy); CPU steps are")
    report.notes.append(
        f"server CPU time (user+sys, all threads, 10 ms ticks) over {calls} calls: the steadier figure"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--poller-echo":
        serve_poller_echo(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "--kernel":
        raise SystemExit(run_patched_kernel(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        raise SystemExit(main("noop_breakdown", run))
