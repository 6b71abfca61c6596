"""State store round trips through the kernel vs NOOP, and the store's own cost in-process.

Through one operator client on the control socket, in interleaved blocks so machine noise hits
every path alike:

* ``noop``:        ``call("noop", msg="x")``, the baseline;
* ``store``:       a small map into the global scope (one lookup and one WAL commit);
* ``store ttl``:   the same with ``ttl=3600``;
* ``store 4 KiB``: 4 KiB of bytes;
* ``fetch``:       a global key (the lookup misses the caller's private and session scopes first);
* ``fetch miss``:  an absent key (three misses);
* ``keys``:        ``list_keys("bench/")``: 104 names out of 1,104 keys.

Then ``StateStore`` alone on a file in a temp dir, without the kernel: µs per store and fetch,
the part of each round trip the store itself costs. Ratios are against ``noop`` at p50.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import Report, bench_kernel, main, stats_dict, summarize, time_calls

from clove.kernel.services.statestore import StateStore  # common.py put the repo on sys.path

WARMUP = 300
ROUNDS = 10
BLOCK = 300
INPROC_N = 5000
SMALL = {"n": 1, "s": "hello", "f": 1.5}
BLOB = b"x" * 4096


def _measure_interleaved(paths: dict[str, Callable[[], object]]) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in paths}
    for fn in paths.values():
        time_calls(fn, 0, WARMUP)
    for _ in range(ROUNDS):
        for name, fn in paths.items():
            samples[name].extend(time_calls(fn, BLOCK, 20))
    return samples


def _in_process() -> dict[str, list[int]]:
    with tempfile.TemporaryDirectory(prefix="clvbench") as tmp:
        store = StateStore(Path(tmp) / "state.db").open()
        for i in range(1000):
            store.store("bench", f"other/{i}", i)
        counter = iter(range(10**9))
        out = {
            "store": time_calls(
                lambda: store.store("bench", f"k{next(counter) % 100}", SMALL), INPROC_N, 200
            ),
            "fetch": time_calls(lambda: store.fetch("bench", "k1"), INPROC_N, 200),
            "fetch miss": time_calls(lambda: store.fetch("bench", "nope"), INPROC_N, 200),
        }
        store.close()
    return out


def run(report: Report, say: Callable[[str], None]) -> None:
    with bench_kernel() as kernel, kernel.client() as client:
        for i in range(100):
            client.call("state.store", key=f"bench/{i:03d}", value=i)
        for i in range(1000):
            client.call("state.store", key=f"other/{i}", value=i)
        client.call("state.store", key="bench/hit", value=SMALL)
        say(f"state_ops: {ROUNDS} rounds x {BLOCK} calls per path, interleaved")
        t0 = time.monotonic()
        samples = _measure_interleaved(
            {
                "noop": lambda: client.call("noop", msg="x"),
                "store": lambda: client.call("state.store", key="bench/w", value=SMALL),
                "store ttl": lambda: client.call("state.store", key="bench/t", value=SMALL, ttl=3600.0),
                "store 4 KiB": lambda: client.call("state.store", key="bench/b", value=BLOB),
                "fetch": lambda: client.call("state.fetch", key="bench/hit"),
                "fetch miss": lambda: client.call("state.fetch", key="bench/nope"),
                "keys": lambda: client.call("state.keys", prefix="bench/"),
            }
        )
        say(f"  kernel paths done in {time.monotonic() - t0:.1f} s; now the store in-process")
    inproc = _in_process()

    stats = {name: summarize(s) for name, s in samples.items()}
    noop = stats["noop"]
    report.add("noop p50", noop.p50, "µs")
    report.add("noop p99", noop.p99, "µs")
    for name in ("store", "store ttl", "store 4 KiB", "fetch", "fetch miss", "keys"):
        s = stats[name]
        target = "≤1.5" if name in ("store", "fetch") else ""
        report.add(f"{name} p50", s.p50, "µs", baseline=noop.p50, baseline_name="noop p50", target=target)
        report.add(f"{name} p99", s.p99, "µs", baseline=noop.p99, baseline_name="noop p99")
    for name, s in inproc.items():
        report.add(f"in-process {name} p50", summarize(s).p50, "µs")
    report.details["stats_us"] = {name: stats_dict(s) for name, s in stats.items()}
    report.details["in_process_us"] = {name: stats_dict(summarize(s)) for name, s in inproc.items()}
    report.notes.append("keys lists 104 of 1,104 keys; fetch resolves agent -> session -> global")
    report.notes.append(
        "in-process: StateStore on a temp file, WAL + synchronous=NORMAL, no kernel or socket"
    )
    for name, s in stats.items():
        say(f"  {name:12s} {s.fmt()}")


if __name__ == "__main__":
    raise SystemExit(main("state_ops", run))
