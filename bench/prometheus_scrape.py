"""Prometheus scrape time, and what scraping costs the kernel's loop (docs/metrics.md).

One kernel with ``[metrics] listen`` on a free loopback port. Figures:

* ``scrape`` p50/p99: a full GET of ``/metrics`` that renders the page (the exporter's threads
  render the snapshot and read each live agent's cgroup files; scrapes spaced past the page's
  reuse time, ``[metrics] interval``) with 0 agents, then with AGENTS idle sandboxed agents; the
  ratio against the 0-agent scrape shows the per-agent cost;
* operator NOOP p50/p99 while another thread scrapes back to back, against the same client
  with no scraping (before and after, pooled): the exporter runs off the loop, renders a page at
  most once per interval and serves pages at least 50 ms apart, so the ratio should stay near 1;
* the loop's own cost: building one snapshot in this process with SNAP_AGENTS fake agents
  (the same builder the kernel runs every ``interval``), against a NOOP round trip p50;
* what serving metrics costs every syscall (the journal tally runs each loop turn): NOOP
  p50/p99 on a kernel with ``[metrics]`` against one without, both running, in interleaved blocks.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    Report,
    Stats,
    agent_script,
    bench_kernel,
    main,
    poll_for,
    stats_dict,
    summarize,
    time_calls,
    time_for,
)

AGENTS = 40
SCRAPES = 30
INTERVAL_S = 0.25  # the kernel's [metrics] interval here: a page is reused this long
PHASE_S = 3.0
SNAP_AGENTS = 1000
ROUNDS = 10
BLOCK = 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> Callable[[], bytes]:
    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback URL built here
            return bytes(response.read())

    return get


def _scrape_stats(url: str) -> tuple[Stats, int]:
    """Scrapes that each render the page: spaced past its reuse time."""
    get = _scrape(url)
    size = len(get())
    samples = []
    for _ in range(SCRAPES):
        time.sleep(INTERVAL_S * 1.1)
        t0 = time.perf_counter_ns()
        get()
        samples.append(time.perf_counter_ns() - t0)
    return summarize(samples), size


def _builder_cost() -> tuple[float, float]:
    """µs per snapshot with SNAP_AGENTS agents (fake sources, real builder and tally): the whole
    build, and the longest single step the loop takes (begin, one slice, or finish), p50."""
    import tempfile

    from clove.config import AgentConfig
    from clove.config.prometheus import MetricsSection
    from clove.kernel.audit.journal import Journal
    from clove.kernel.core.agents import Agent, AgentState
    from clove.kernel.services.prometheus_snapshot import SWEEP_SLICE, SnapshotBuilder, Sources
    from clove.kernel.services.prometheus_tally import JournalTally

    agents = [Agent(id=i, spec=AgentConfig(name=f"a{i}", script="x.py"), uid=None, state=AgentState.RUNNING, pid=i) for i in range(SNAP_AGENTS)]
    flows = [{"caller": "agent", "agent_id": i, "kernel_time_us": 10, "calls": 1, "throttled": 0} for i in range(SNAP_AGENTS)]
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.jsonl")
        journal.open()
        try:
            sources = Sources(agents=lambda: agents, cgroup_dirs=lambda a: (f"/sys/fs/cgroup/x/{a.id}",), kernel_time=lambda: flows)
            builder = SnapshotBuilder(MetricsSection(max_agent_series=SNAP_AGENTS * 2), sources, JournalTally(journal, ["noop"]))
            whole = time_calls(builder.build, 50, 5)
            longest: list[int] = []
            clock = time.perf_counter_ns
            for _ in range(50):
                steps = []
                t = clock()
                builder.begin()
                steps.append(clock() - t)
                done = False
                while not done:
                    t = clock()
                    done = builder.advance(SWEEP_SLICE)
                    steps.append(clock() - t)
                t = clock()
                builder.finish()
                steps.append(clock() - t)
                longest.append(max(steps))
        finally:
            journal.close()
    return summarize(whole).p50, summarize(longest).p50


def _tally_cost(report: Report, say: Callable[[str], None]) -> None:
    port = _free_port()
    with bench_kernel() as plain, bench_kernel(f'[metrics]\nlisten = "127.0.0.1:{port}"\n') as served, \
            plain.client() as a, served.client() as b:  # fmt: skip
        calls = {"off": lambda: a.call("noop", msg="x"), "on": lambda: b.call("noop", msg="x")}
        samples: dict[str, list[int]] = {"off": [], "on": []}
        for fn in calls.values():
            time_calls(fn, 300)
        for _ in range(ROUNDS):
            for name, fn in calls.items():
                samples[name].extend(time_calls(fn, BLOCK))
    off, on = summarize(samples["off"]), summarize(samples["on"])
    say(f"  NOOP without metrics {off.fmt()}\n  NOOP with metrics    {on.fmt()}")
    report.add("NOOP p50, metrics on", on.p50, "µs", baseline=off.p50, baseline_name="metrics off p50")
    report.add("NOOP p99, metrics on", on.p99, "µs", baseline=off.p99, baseline_name="metrics off p99", target="≤1.1")
    report.details["noop_us_metrics_on_off"] = {"on": stats_dict(on), "off": stats_dict(off)}


def run(report: Report, say: Callable[[str], None]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with bench_kernel(f'[metrics]\nlisten = "127.0.0.1:{port}"\ninterval = {INTERVAL_S}\n') as kernel, kernel.client() as client:
        poll_for(lambda: _scrape(url)(), timeout=10, message="the exporter")
        noop = lambda: client.call("noop", msg="x")  # noqa: E731
        time_calls(noop, 300)
        idle_before = time_for(noop, PHASE_S)
        empty, empty_size = _scrape_stats(url)
        say(f"prometheus_scrape: 0 agents: {empty.fmt()} ({empty_size} bytes); spawning {AGENTS} idle agents")
        for i in range(AGENTS):
            client.spawn(f"idle{i}", agent_script("hello_sleep.py"))
        poll_for(lambda: client.call("kernel.info")["resources"]["agents"] >= AGENTS, timeout=120, message="agents")
        time.sleep(INTERVAL_S * 3)  # a snapshot that lists them all
        full, full_size = _scrape_stats(url)
        say(f"  {AGENTS} agents: {full.fmt()} ({full_size} bytes)")

        stop = threading.Event()
        scrapes = [0]

        def scraper() -> None:
            get = _scrape(url)
            while not stop.is_set():
                get()
                scrapes[0] += 1

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        try:
            scraped = time_for(noop, PHASE_S)
        finally:
            stop.set()
            thread.join(15)
        idle_after = time_for(noop, PHASE_S)
        for i in range(AGENTS):
            client.kill(name=f"idle{i}")
    idle = summarize(idle_before + idle_after)
    under = summarize(scraped)
    build_us, step_us = _builder_cost()
    report.add("scrape 0 agents p50", empty.p50 / 1000, "ms")
    report.add("scrape 0 agents p99", empty.p99 / 1000, "ms")
    report.add(f"scrape {AGENTS} agents p50", full.p50 / 1000, "ms", baseline=empty.p50 / 1000, baseline_name="0 agents p50")
    report.add(f"scrape {AGENTS} agents p99", full.p99 / 1000, "ms", baseline=empty.p99 / 1000, baseline_name="0 agents p99")
    report.add("per agent (p50)", (full.p50 - empty.p50) / AGENTS, "µs")
    report.add("NOOP p50 while scraping", under.p50, "µs", baseline=idle.p50, baseline_name="NOOP p50 idle")
    report.add("NOOP p99 while scraping", under.p99, "µs", baseline=idle.p99, baseline_name="NOOP p99 idle", target="≤1.5")
    report.add("pages served per second to the back-to-back scraper", scrapes[0] / PHASE_S, "pages/s")
    report.add(f"snapshot build, {SNAP_AGENTS} agents", build_us, "µs", baseline=idle.p50, baseline_name="NOOP p50")
    report.add("  longest loop step of it", step_us, "µs", baseline=idle.p50, baseline_name="NOOP p50")
    details: dict[str, Any] = {
        "scrape_us": {"0 agents": stats_dict(empty), f"{AGENTS} agents": stats_dict(full)},
        "noop_us": {"idle": stats_dict(idle), "scraping": stats_dict(under)},
        "bytes": {"0 agents": empty_size, f"{AGENTS} agents": full_size},
        "scrapes_during_noop_phase": scrapes[0],
    }
    report.details.update(details)
    _tally_cost(report, say)
    report.notes.append("the snapshot is built once per [metrics] interval (1 s by default) on the loop, 128 agents a turn; scrapes never touch it")
    report.notes.append(f"the page is rendered at most once per interval ({INTERVAL_S} s here) and pages leave at least 50 ms apart: a back-to-back scraper waits")


if __name__ == "__main__":
    raise SystemExit(main("prometheus_scrape", run))
