"""Spawn latency with the full sandbox (namespaces, cgroups memory 128M + pids 64, uid drop,
Landlock): from the kernel's ``agent.created`` journal record to the agent's first syscall
(``hello``) reaching the kernel, plus the client-side ``agent.spawn`` reply time.

Baselines measured in the same run: ``fork()`` + ``_exit`` of this Python process, and
``subprocess`` exec of ``python -c "import zmq"``. Also: the same spawn under a 20 % CPU cap,
and 100 idle agents spawned in a row (then all killed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import (
    CloveClient,
    Report,
    agent_script,
    audit_entries,
    bench_kernel,
    main,
    poll_for,
    stats_dict,
    summarize,
)

SANDBOX_LIMITS: dict[str, Any] = {"memory": "128M", "pids": 64}
CAPPED_LIMITS: dict[str, Any] = {**SANDBOX_LIMITS, "cpu": "20%"}
N_SPAWNS = 30
N_CAPPED = 8
N_ROW = 100
WARMUP_SPAWNS = 3
N_FORK = 50
N_EXEC = 15


# ---- baselines ------------------------------------------------------------------------------


def fork_exit_ns() -> list[int]:
    out = []
    for _ in range(N_FORK):
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out.append(time.perf_counter_ns() - t0)
    return out


def exec_import_zmq_ns() -> list[int]:
    out = []
    for _ in range(N_EXEC + 2):
        t0 = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", "import zmq"], check=True)
        out.append(time.perf_counter_ns() - t0)
    return out[2:]  # the first runs warm the page cache


# ---- spawning through the kernel ------------------------------------------------------------


def start_phases(client: CloveClient, agent_id: int, timeout: float = 30.0) -> dict[str, float]:
    """Journal timestamps (epoch s) of the agent's ``agent.created``, its first ``running``
    state record (the zygote's ``started`` event) and its first syscall (``hello``)."""

    def found() -> dict[str, float] | None:
        marks: dict[str, float] = {}
        for entry in audit_entries(client, agent_id):
            if entry["event_type"] == "agent.created":
                marks.setdefault("created", entry["timestamp"])
            elif entry["event_type"] == "agent.state" and entry["details"].get("state") == "running":
                marks.setdefault("running", entry["timestamp"])
            elif entry.get("syscall") == "hello":
                marks.setdefault("hello", entry["timestamp"])
        return marks if len(marks) == 3 else None

    return poll_for(found, timeout, interval=0.005, message=f"agent {agent_id}'s hello")


@dataclass
class Series:
    """Per-spawn samples in ns."""

    first: list[float] = field(default_factory=list)  # created → hello
    sandbox: list[float] = field(default_factory=list)  # created → running
    script: list[float] = field(default_factory=list)  # running → hello
    reply: list[int] = field(default_factory=list)  # client-side spawn call

    def add_marks(self, marks: dict[str, float]) -> None:
        self.first.append((marks["hello"] - marks["created"]) * 1e9)
        self.sandbox.append((marks["running"] - marks["created"]) * 1e9)
        self.script.append((marks["hello"] - marks["running"]) * 1e9)


def spawn_one(client: CloveClient, name: str, script: str, limits: dict[str, Any]) -> tuple[int, int]:
    """Spawn; returns (agent id, reply latency in ns)."""
    t0 = time.perf_counter_ns()
    reply = client.spawn(name, script, limits=limits)
    elapsed = time.perf_counter_ns() - t0
    if not reply.get("success"):
        raise RuntimeError(f"spawn of {name} failed: {reply}")
    return int(reply["id"]), elapsed


def spawn_series(client: CloveClient, prefix: str, n: int, limits: dict[str, Any]) -> Series:
    """``n`` sequential hello-and-exit agents, each killed (and removed) before the next."""
    series = Series()
    for i in range(n):
        agent_id, reply_ns = spawn_one(client, f"{prefix}{i}", agent_script("hello_exit.py"), limits)
        series.reply.append(reply_ns)
        series.add_marks(start_phases(client, agent_id))
        client.kill(agent_id=agent_id)  # replies once it is gone, and removes it
    return series


def spawn_row(client: CloveClient, n: int) -> dict[str, Any]:
    """``n`` idle agents spawned back to back; then wait for every hello and kill them all."""
    ids: list[int] = []
    series = Series()
    t0 = time.perf_counter_ns()
    for i in range(n):
        agent_id, reply_ns = spawn_one(client, f"row{i}", agent_script("hello_sleep.py"), SANDBOX_LIMITS)
        ids.append(agent_id)
        series.reply.append(reply_ns)
    spawned_ns = time.perf_counter_ns() - t0
    for agent_id in ids:
        series.add_marks(start_phases(client, agent_id))
    live = sum(1 for a in client.list_agents() if a["state"] == "running")
    t1 = time.perf_counter_ns()
    for agent_id in ids:
        client.kill(agent_id=agent_id)
    killed_ns = time.perf_counter_ns() - t1
    return {"spawned_ns": spawned_ns, "killed_ns": killed_ns, "series": series, "live": live}


def run(report: Report, say: Callable[[str], None]) -> None:
    say("spawn_latency: baselines (fork+exit, exec python -c 'import zmq')")
    fork = summarize(fork_exit_ns(), 1e-6)
    exec_zmq = summarize(exec_import_zmq_ns(), 1e-6)
    with bench_kernel() as kernel, kernel.client(timeout=60) as client:
        spawn_series(client, "warm", WARMUP_SPAWNS, SANDBOX_LIMITS)
        say(f"  {N_SPAWNS} sandboxed spawns (memory 128M, pids 64)")
        single = spawn_series(client, "sb", N_SPAWNS, SANDBOX_LIMITS)
        say(f"  {N_CAPPED} spawns under a 20 % CPU cap")
        capped = spawn_series(client, "cap", N_CAPPED, CAPPED_LIMITS)
        say(f"  {N_ROW} idle agents in a row")
        row = spawn_row(client, N_ROW)
    ms = 1e-6
    first, reply = summarize(single.first, ms), summarize(single.reply, ms)
    sandbox, script = summarize(single.sandbox, ms), summarize(single.script, ms)
    capped_first, capped_reply = summarize(capped.first, ms), summarize(capped.reply, ms)
    row_series: Series = row["series"]
    row_first = summarize(row_series.first, ms)
    row_head, row_tail = summarize(row_series.reply[:10], ms), summarize(row_series.reply[-10:], ms)

    report.add("baseline fork()+exit p50", fork.p50, "ms")
    report.add("baseline exec python -c 'import zmq' p50", exec_zmq.p50, "ms")
    base = {"baseline": exec_zmq.p50, "baseline_name": "exec import zmq"}
    report.add("created→first syscall p50", first.p50, "ms", **base)
    report.add("created→first syscall p95", first.p95, "ms", **base)
    report.add("  created→running (sandbox) p50", sandbox.p50, "ms")
    report.add("  running→first syscall p50", script.p50, "ms")
    report.add("spawn reply (client) p50", reply.p50, "ms", **base)
    report.add("spawn reply (client) p95", reply.p95, "ms", **base)
    report.add(
        "20% CPU cap: created→first syscall p50",
        capped_first.p50,
        "ms",
        baseline=first.p50,
        baseline_name="uncapped p50",
    )
    report.add(
        "20% CPU cap: spawn reply p50",
        capped_reply.p50,
        "ms",
        baseline=reply.p50,
        baseline_name="uncapped p50",
    )
    report.add(f"{N_ROW} in a row: total spawn time", row["spawned_ns"] / 1e9, "s")
    report.add(
        f"{N_ROW} in a row: per-agent mean",
        row["spawned_ns"] / 1e6 / N_ROW,
        "ms",
        baseline=reply.mean,
        baseline_name="single reply mean",
    )
    report.add(
        f"{N_ROW} in a row: reply p50, last 10",
        row_tail.p50,
        "ms",
        baseline=row_head.p50,
        baseline_name="first 10 p50",
    )
    report.add(
        f"{N_ROW} in a row: created→first syscall p50",
        row_first.p50,
        "ms",
        baseline=first.p50,
        baseline_name="single p50",
    )
    report.add(
        f"{N_ROW} in a row: created→first syscall p95",
        row_first.p95,
        "ms",
        baseline=first.p95,
        baseline_name="single p95",
    )
    report.add(f"{N_ROW} in a row: kill all (sequential)", row["killed_ns"] / 1e9, "s")
    all_stats = {
        "fork": fork,
        "exec_import_zmq": exec_zmq,
        "first_syscall": first,
        "reply": reply,
        "sandbox": sandbox,
        "script": script,
        "capped_first": capped_first,
        "row_first": row_first,
    }
    for key, stats in all_stats.items():
        report.details[f"{key}_ms"] = stats_dict(stats)
    report.details["row_reply_ms"] = [round(r * ms, 2) for r in row_series.reply]
    if row["live"] != N_ROW:
        report.notes.append(f"only {row['live']} of {N_ROW} row agents were running before the kill")
    report.notes.append(
        "first syscall = journal timestamp of the agent's hello minus its agent.created record"
    )


if __name__ == "__main__":
    raise SystemExit(main("spawn_latency", run))
