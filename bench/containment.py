"""Containment of the kernel itself: what one abusive agent costs everyone else.

For each kind of flood (``bench/agents/flood.py``: cheap syscalls, denied syscalls, state writes,
subscriptions, large events nobody polls, large messages nobody reads, file writes), one
sandboxed agent with the default limits floods the kernel while an operator client measures its
NOOP round trip for PHASE_S seconds. Reported against the idle baseline of the same run (pooled
before and after the floods):

- operator NOOP p99 (and p50) per flood: target ≤ 2x, ≤ 1.5x for the plain syscall flood;
- kernel RSS growth per flood (MiB), bounded by the configured ``[limits]``;
- journal bytes per second written during the denial flood (aggregation and rotation bound it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from common import (
    AGENTS_DIR,
    CloveClient,
    Report,
    Stats,
    bench_kernel,
    main,
    mem_of,
    poll_for,
    stats_dict,
    summarize,
    time_calls,
    time_for,
)

PHASE_S = 4.0
FLOODS = ("noop", "denied", "state", "subscribe", "events", "messages", "files")
TARGETS = {"noop": "≤1.5x"}
CONFIG = """
[limits]
event_queue_bytes = "4M"
mailbox_bytes = "4M"
async_result_bytes = "4M"
subscriptions = 256
"""


def journal_bytes(state_dir: Path, agent_name: str) -> int:
    """Bytes of the journal's records about ``agent_name`` (the operator's own NOOPs, journaled
    too, are not the flood's doing)."""
    total = 0
    for path in state_dir.glob("journal*.jsonl"):
        with path.open("rb") as f:
            for line in f:
                if b'"agent_name":"' + agent_name.encode() + b'"' in line:
                    total += len(line)
    return total


def flood_phase(client: CloveClient, kind: str, kernel_pid: int, state_dir: Path) -> tuple[list[int], dict[str, float]]:
    args = [kind]
    if kind == "messages":
        args.append("sink")
    if kind == "events":
        client.subscribe("custom.flood")  # subscribed, never polled: the queue must stay bounded
    rss_before = mem_of(kernel_pid).get("rss", 0.0)
    name = f"flood-{kind}"
    journal_before = journal_bytes(state_dir, name)
    reply = client.spawn(name, str(AGENTS_DIR / "flood.py"), args=args)
    agent_id = int(reply["id"])
    poll_for(lambda: b"FLOODING" in client.logs(agent_id=agent_id)["data"], 60, 0.05, f"{kind} flood to start")
    t0 = time.monotonic()
    samples = time_for(lambda: client.call("noop", msg="x"), PHASE_S)
    elapsed = time.monotonic() - t0
    rss_after = mem_of(kernel_pid).get("rss", 0.0)
    journal_rate = (journal_bytes(state_dir, name) - journal_before) / elapsed
    client.kill(agent_id=agent_id)
    if kind == "events":
        client.unsubscribe("custom.flood")
    return samples, {"rss_growth_mib": rss_after - rss_before, "journal_bytes_per_s": journal_rate}


def run(report: Report, say: Callable[[str], None]) -> None:
    with bench_kernel(CONFIG) as kernel, kernel.client(timeout=60) as client:
        time_calls(lambda: client.call("noop", msg="x"), 0, 500)
        state_dir = Path(client.call("kernel.info")["state_dir"])
        sink = client.spawn("sink", str(AGENTS_DIR / "hello_sleep.py"))
        poll_for(lambda: client.call("kernel.info")["resources"]["agents"] >= 1, 30, 0.05, "the sink agent")
        say(f"containment: idle ({PHASE_S:g} s)")
        idle_ns = time_for(lambda: client.call("noop", msg="x"), PHASE_S)
        phases: dict[str, tuple[Stats, dict[str, float]]] = {}
        for kind in FLOODS:
            say(f"  {kind} flood")
            samples, figures = flood_phase(client, kind, kernel.pid, state_dir)
            phases[kind] = (summarize(samples), figures)
        say("  idle again")
        idle_again_ns = time_for(lambda: client.call("noop", msg="x"), PHASE_S)
        info = client.call("kernel.info")
        client.kill(agent_id=sink["id"])
    idle = summarize(idle_ns + idle_again_ns)
    report.add("idle p50 (before+after)", idle.p50, "µs")
    report.add("idle p99 (before+after)", idle.p99, "µs")
    for kind, (stats, figures) in phases.items():
        report.add(f"{kind} flood p50", stats.p50, "µs", baseline=idle.p50, baseline_name="idle p50")
        report.add(f"{kind} flood p99", stats.p99, "µs", baseline=idle.p99, baseline_name="idle p99", target=TARGETS.get(kind, "≤2x"))
        report.add(f"{kind} flood kernel RSS growth", figures["rss_growth_mib"], "MiB")
    report.add("denied flood journal (its records)", phases["denied"][1]["journal_bytes_per_s"] / 1024, "KiB/s")
    report.details.update(
        {
            "idle_us": stats_dict(idle),
            **{f"{kind}_us": stats_dict(stats) for kind, (stats, _) in phases.items()},
            "figures": {kind: figures for kind, (_, figures) in phases.items()},
            "kernel_time": info.get("kernel_time"),
            "resources": info.get("resources"),
        }
    )
    report.notes.append("one flooding agent at a time, sandboxed with the default [limits]; 2 shared CPUs")


if __name__ == "__main__":
    raise SystemExit(main("containment", run))
