"""NOOP round-trip latency through the kernel vs a bare pyzmq DEALER/ROUTER echo server.

Three client paths, measured in interleaved blocks so that machine noise hits them alike:

* ``bare``:   a DEALER sending the noop request frames to a ROUTER echo server (own process);
* ``raw``:    the same DEALER and frames to the kernel's control socket (protocol cost, no SDK);
* ``sdk``:    ``CloveClient.call("noop", msg="x")`` on the control socket;

plus ``agent sdk`` / ``agent raw``: the same loops run by a sandboxed agent over its own
per-agent socket, read back from the agent's log. Ratios are against ``bare``; the targets (issue
15) are for the SDK's round trip: p50 ≤ 1.2 and p99 ≤ 1.5 times the bare echo's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from common import (
    CloveClient,
    EchoServer,
    RawDealer,
    Report,
    Stats,
    agent_script,
    bench_kernel,
    main,
    noop_frames,
    poll_for,
    stats_dict,
    summarize,
    time_calls,
)

WARMUP = 500
ROUNDS = 12
BLOCK = 500
AGENT_N = 3000
AGENT_WARMUP = 300


def _measure_interleaved(paths: dict[str, Callable[[], object]]) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in paths}
    for fn in paths.values():
        time_calls(fn, 0, WARMUP)
    for _ in range(ROUNDS):
        for name, fn in paths.items():
            samples[name].extend(time_calls(fn, BLOCK, 20))
    return samples


def _agent_samples(client: CloveClient) -> dict[str, list[int]]:
    reply = client.spawn("noop-agent", agent_script("noop_loop.py"), args=[str(AGENT_N), str(AGENT_WARMUP)])
    if not reply.get("success"):
        raise RuntimeError(f"spawn failed: {reply}")

    def finished() -> dict[str, Any] | None:
        logs = client.logs("noop-agent", offset=0, max_bytes=1 << 20)
        return logs if logs["state"] in ("exited", "failed") else None

    logs = poll_for(finished, timeout=60, interval=0.1, message="the noop agent to finish")
    client.remove("noop-agent")
    for line in logs["data"].decode(errors="replace").splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"no results in the agent's log: {logs['data'][-2000:]!r}")


#: Targets of the SDK's round trip against the bare echo (the raw rows show the protocol's own share).
TARGET_P50, TARGET_P99 = "≤1.2x", "≤1.5x"


def _add(report: Report, label: str, stats: Stats, bare: Stats, *, sdk: bool) -> None:
    report.add(f"{label} p50", stats.p50, "µs", baseline=bare.p50, baseline_name="bare p50", target=TARGET_P50 if sdk else "")
    report.add(f"{label} p99", stats.p99, "µs", baseline=bare.p99, baseline_name="bare p99", target=TARGET_P99 if sdk else "")


def run(report: Report, say: Callable[[str], None]) -> None:
    frames = noop_frames("x")
    with EchoServer() as echo, bench_kernel() as kernel, kernel.client() as client:
        bare_dealer = RawDealer(echo.endpoint)
        raw_dealer = RawDealer(f"ipc://{kernel.socket}")
        say(f"noop_latency: {ROUNDS} rounds x {BLOCK} calls per path, interleaved")
        t0 = time.monotonic()
        samples = _measure_interleaved(
            {
                "bare": lambda: bare_dealer.roundtrip(frames),
                "raw": lambda: raw_dealer.roundtrip(frames),
                "sdk": lambda: client.call("noop", msg="x"),
            }
        )
        say(f"  control-socket paths done in {time.monotonic() - t0:.1f} s; running the agent path")
        bare_dealer.close()
        raw_dealer.close()
        agent = _agent_samples(client)

    stats = {name: summarize(s) for name, s in samples.items()}
    stats["agent sdk"] = summarize(agent["sdk"])
    stats["agent raw"] = summarize(agent["raw"])
    bare = stats["bare"]
    report.add("bare echo p50", bare.p50, "µs")
    report.add("bare echo p99", bare.p99, "µs")
    _add(report, "kernel raw", stats["raw"], bare, sdk=False)
    _add(report, "kernel sdk", stats["sdk"], bare, sdk=True)
    _add(report, "agent raw", stats["agent raw"], bare, sdk=False)
    _add(report, "agent sdk", stats["agent sdk"], bare, sdk=True)
    report.add("kernel added (raw-bare) p50", stats["raw"].p50 - bare.p50, "µs")
    report.add("SDK overhead (sdk-raw) p50", stats["sdk"].p50 - stats["raw"].p50, "µs")
    report.details["stats_us"] = {name: stats_dict(s) for name, s in stats.items()}
    report.notes.append(
        "bare/raw/sdk are interleaved; the agent loops run afterwards, so their ratios are noisier"
    )
    for name, s in stats.items():
        say(f"  {name:10s} {s.fmt()}")


if __name__ == "__main__":
    raise SystemExit(main("noop_latency", run))
