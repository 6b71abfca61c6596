"""Synchronous NOOP throughput (calls/s) with 1 and 4 client processes, kernel vs bare echo.

Each client is its own process doing back-to-back calls for DURATION seconds from a common start
time. Kernel clients use ``CloveClient.call("noop")`` (``sdk``) or a raw DEALER (``raw``); the
baseline is the bare pyzmq ROUTER echo server with the same raw frames and client counts (target,
issue 15: the SDK with 4 clients at ≥ 0.9 times the bare rate). Every
configuration runs twice in mirrored order (bare, raw, sdk, sdk, raw, bare) and the two rates are
averaged, so a slow drift of the shared machine's load hits all of them alike.

``python bench/throughput.py --worker MODE ENDPOINT START_AT DURATION`` is one client process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import CloveClient, EchoServer, RawDealer, Report, bench_kernel, main, noop_frames

DURATION = 2.0
CLIENTS = (1, 4)
TARGET = "≥0.9x"
WARMUP = 200


def worker(mode: str, endpoint: str, start_at: float, duration: float) -> None:
    """One client process: warm up, wait for ``start_at`` (epoch s), count calls for ``duration``."""
    frames = noop_frames("x")
    if mode == "sdk":
        client = CloveClient(endpoint)
        call: Callable[[], object] = lambda: client.call("noop", msg="x")  # noqa: E731
    else:
        dealer = RawDealer(endpoint)
        call = lambda: dealer.roundtrip(frames)  # noqa: E731
    for _ in range(WARMUP):
        call()
    print("ready", flush=True)
    late = time.time() > start_at
    time.sleep(max(0.0, start_at - time.time()))
    calls = 0
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        call()
        calls += 1
    print(json.dumps({"calls": calls, "late": late}), flush=True)


def run_clients(mode: str, endpoint: str, clients: int) -> float:
    """Total calls/s of ``clients`` worker processes running at once."""
    start_at = time.time() + 0.6 + 0.2 * clients  # after every worker's start-up and warmup
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                mode,
                endpoint,
                repr(start_at),
                repr(DURATION),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=DURATION + 60)
        lines = out.split()
        if proc.returncode != 0 or not lines or lines[0] != "ready":
            raise RuntimeError(f"throughput worker failed ({proc.returncode}): {out!r}")
        result = json.loads(out.splitlines()[-1])
        if result["late"]:
            print(f"warning: a {mode} worker started after the common start time", file=sys.stderr)
        total += result["calls"]
    return total / DURATION


def run(report: Report, say: Callable[[str], None]) -> None:
    runs: dict[tuple[str, int], list[float]] = {}
    with EchoServer() as echo, bench_kernel() as kernel:
        kernel_ep = f"ipc://{kernel.socket}"
        order = [("bare", echo.endpoint), ("raw", kernel_ep), ("sdk", kernel_ep)]
        for clients in CLIENTS:
            for mode, endpoint in order + order[::-1]:
                rate = run_clients("raw" if mode == "bare" else mode, endpoint, clients)
                runs.setdefault((mode, clients), []).append(rate)
                say(f"  {mode:4s} x{clients}: {rate:10,.0f} calls/s")
    results = {key: sum(rates) / len(rates) for key, rates in runs.items()}
    for clients in CLIENTS:
        bare = results[("bare", clients)]
        report.add(f"bare echo, {clients} client(s)", bare, "calls/s")
        for mode in ("raw", "sdk"):
            report.add(
                f"kernel {mode}, {clients} client(s)",
                results[(mode, clients)],
                "calls/s",
                baseline=bare,
                baseline_name=f"bare x{clients}",
                target=TARGET if (mode, clients) == ("sdk", 4) else "",
            )
    scaling = results[("sdk", 4)] / results[("sdk", 1)]
    report.add(
        "kernel sdk scaling 4 vs 1 clients",
        scaling,
        "x",
        baseline=results[("bare", 4)] / results[("bare", 1)],
        baseline_name="bare scaling",
    )
    report.details["calls_per_s"] = {f"{m} x{c}": rates for (m, c), rates in runs.items()}
    report.notes.append(
        f"mean of 2 runs of {DURATION:g} s each; 2 CPUs are shared by the server and all clients"
    )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        raise SystemExit(main("throughput", run))
