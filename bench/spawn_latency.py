"""Spawn latency with the full sandbox (namespaces, cgroups memory 128M + pids 64, uid drop,
Landlock, seccomp, a bounded work dir): from the kernel's ``agent.created`` journal record to the
agent's first syscall (``hello``) reaching the kernel, plus the client-side ``agent.spawn`` reply
time.

Baselines measured in the same run: ``fork()`` + ``_exit`` of this Python process, ``subprocess``
exec of ``python -c "import zmq"``, and plain ``subprocess.Popen`` of a script with the idle
agent's imports to its first line of output. Also: the same spawn under a 20 % CPU cap, and 100
idle agents spawned in a row (each reply awaited, then the next spawn) with the default pool of
prepared spares, and again on a kernel holding a single spare (``spares_max = 1``): per spawn
p50/p90/max to the first syscall, how many spawns a prepared spare served (``kernel.info``), and
the memory (PSS, ``/proc/PID/smaps_rollup``) of an idle agent (its process and its sandbox's
init) and of an idle spare (its two processes).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    REPO,
    CloveClient,
    Report,
    agent_script,
    audit_entries,
    bench_kernel,
    main,
    mem_of,
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
N_POPEN = 20
SINGLE_SPARE = "[sandbox]\nspares_max = 1\nspares_min = 1\n"
TARGET = "≤ 15 ms"


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


def popen_first_line_ns() -> list[int]:
    """Plain ``Popen`` of a script with the idle agent's imports, to its first line of output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = []
    for _ in range(N_POPEN + 2):
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen([sys.executable, agent_script("first_line.py")], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None  # noqa: S101
        line = proc.stdout.readline()
        out.append(time.perf_counter_ns() - t0)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if line.strip() != b"ready":
            raise RuntimeError(f"first_line.py printed {line!r}")
    return out[2:]


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


def spares_info(client: CloveClient) -> dict[str, Any]:
    """The kernel's pool of spares (empty from a kernel without one)."""
    return {"served": 0, "slots": [], **client.call("kernel.info").get("spares", {})}


def spawn_row(client: CloveClient, kernel_pid: int, n: int, prefix: str = "row") -> dict[str, Any]:
    """``n`` idle agents spawned back to back; then wait for every hello, measure the idle
    agents' and spares' memory, and kill them all."""
    ids: list[int] = []
    series = Series()
    served_before = spares_info(client)["served"]
    t0 = time.perf_counter_ns()
    for i in range(n):
        agent_id, reply_ns = spawn_one(client, f"{prefix}{i}", agent_script("hello_sleep.py"), SANDBOX_LIMITS)
        ids.append(agent_id)
        series.reply.append(reply_ns)
    spawned_ns = time.perf_counter_ns() - t0
    for agent_id in ids:
        series.add_marks(start_phases(client, agent_id))
    rows = [a for a in client.list_agents() if a["id"] in ids]
    info = spares_info(client)
    memory = {"agent": idle_agent_pss(rows), "spare": idle_spare_pss(kernel_pid, info["slots"])}
    t1 = time.perf_counter_ns()
    for agent_id in ids:
        client.kill(agent_id=agent_id)
    killed_ns = time.perf_counter_ns() - t1
    live = sum(1 for a in rows if a["state"] == "running")
    served = info["served"] - served_before
    return {"spawned_ns": spawned_ns, "killed_ns": killed_ns, "series": series, "live": live, "served": served, "memory": memory, "spares": info}


# ---- memory ---------------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def idle_agent_pss(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean PSS (MiB) of an idle agent's process (A) and of its sandbox's init (G, A's parent)."""
    agent, init = [], []
    for row in rows:
        pid = row.get("pid")
        parent = _ppid(pid) if pid else None
        if pid and parent:
            agent.append(mem_of(pid).get("pss", 0.0))
            init.append(mem_of(parent).get("pss", 0.0))
    if not agent:
        return {}
    return {"agent": statistics.fmean(agent), "init": statistics.fmean(init), "total": statistics.fmean(agent) + statistics.fmean(init), "n": len(agent)}


def idle_spare_pss(kernel_pid: int, slots: list[str]) -> dict[str, float]:
    """Mean PSS (MiB) of an idle spare: the two processes in its cgroup (C and G), counted only
    for spares whose both processes are there (made, not still making its image)."""
    suffixes = {f"/clove-{kernel_pid}/{slot}": slot for slot in slots}
    members: dict[str, set[int]] = {slot: set() for slot in slots}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            lines = Path(f"/proc/{entry}/cgroup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            tail = "/" + "/".join(line.split(":", 2)[-1].rsplit("/", 2)[-2:])  # ".../clove-<pid>/slot-N"
            slot = suffixes.get(tail)
            if slot is not None:
                members[slot].add(int(entry))
                break
    totals = [sum(mem_of(pid).get("pss", 0.0) for pid in pids) for pids in members.values() if len(pids) == 2]
    return {"spare": statistics.fmean(totals), "n": len(totals)} if totals else {}


# ---- the report -----------------------------------------------------------------------------


def p90(samples: list[float], scale: float) -> float:
    data = sorted(s * scale for s in samples)
    return statistics.quantiles(data, n=10, method="inclusive")[8] if len(data) > 1 else (data[0] if data else float("nan"))


def run(report: Report, say: Callable[[str], None]) -> None:
    say("spawn_latency: baselines (fork+exit, exec python -c 'import zmq', Popen to a first line)")
    fork = summarize(fork_exit_ns(), 1e-6)
    exec_zmq = summarize(exec_import_zmq_ns(), 1e-6)
    popen = summarize(popen_first_line_ns(), 1e-6)
    with bench_kernel() as kernel, kernel.client(timeout=60) as client:
        spawn_series(client, "warm", WARMUP_SPAWNS, SANDBOX_LIMITS)
        say(f"  {N_SPAWNS} sandboxed spawns (memory 128M, pids 64)")
        single = spawn_series(client, "sb", N_SPAWNS, SANDBOX_LIMITS)
        say(f"  {N_CAPPED} spawns under a 20 % CPU cap")
        capped = spawn_series(client, "cap", N_CAPPED, CAPPED_LIMITS)
        say(f"  {N_ROW} idle agents in a row (pool of spares)")
        row = spawn_row(client, kernel.pid, N_ROW)
    with bench_kernel(SINGLE_SPARE) as kernel, kernel.client(timeout=60) as client:
        say(f"  {N_ROW} idle agents in a row (one spare)")
        spawn_series(client, "warm", WARMUP_SPAWNS, SANDBOX_LIMITS)
        one = spawn_row(client, kernel.pid, N_ROW)
    ms = 1e-6
    first, reply = summarize(single.first, ms), summarize(single.reply, ms)
    sandbox, script = summarize(single.sandbox, ms), summarize(single.script, ms)
    capped_first, capped_reply = summarize(capped.first, ms), summarize(capped.reply, ms)
    row_series: Series = row["series"]
    one_series: Series = one["series"]
    row_first, one_first = summarize(row_series.first, ms), summarize(one_series.first, ms)

    report.add("baseline fork()+exit p50", fork.p50, "ms")
    report.add("baseline exec python -c 'import zmq' p50", exec_zmq.p50, "ms")
    report.add("baseline Popen to first line p50", popen.p50, "ms")
    base = {"baseline": popen.p50, "baseline_name": "Popen first line"}
    report.add("created→first syscall p50", first.p50, "ms", **base)
    report.add("created→first syscall p95", first.p95, "ms", **base)
    report.add("  created→running (sandbox) p50", sandbox.p50, "ms")
    report.add("  running→first syscall p50", script.p50, "ms")
    report.add("spawn reply (client) p50", reply.p50, "ms", **base)
    report.add("20% CPU cap: created→first syscall p50", capped_first.p50, "ms", baseline=first.p50, baseline_name="uncapped p50")
    report.add("20% CPU cap: spawn reply p50", capped_reply.p50, "ms", baseline=reply.p50, baseline_name="uncapped p50")
    single_base = {"baseline_name": "one spare"}
    report.add(f"{N_ROW} in a row: created→first syscall p50", row_first.p50, "ms", baseline=one_first.p50, target=TARGET, **single_base)
    report.add(f"{N_ROW} in a row: created→first syscall p90", p90(row_series.first, ms), "ms", baseline=p90(one_series.first, ms), **single_base)
    report.add(f"{N_ROW} in a row: created→first syscall max", row_first.max, "ms", baseline=one_first.max, **single_base)
    report.add(f"{N_ROW} in a row: vs Popen first line p50", row_first.p50, "ms", baseline=popen.p50, baseline_name="Popen first line")
    report.add(f"{N_ROW} in a row: per-agent mean (client)", row["spawned_ns"] / 1e6 / N_ROW, "ms", baseline=one["spawned_ns"] / 1e6 / N_ROW, **single_base)
    report.add(f"{N_ROW} in a row: served by a prepared spare", row["served"], "spawns", baseline=one["served"], **single_base)
    report.add(f"{N_ROW} in a row: kill all (sequential)", row["killed_ns"] / 1e9, "s")
    memory = row["memory"]
    if memory["agent"]:
        report.add("idle agent PSS (agent + its init)", memory["agent"]["total"], "MiB")
        report.add("  the agent process", memory["agent"]["agent"], "MiB")
        report.add("  its sandbox's init (G)", memory["agent"]["init"], "MiB")
    if memory["spare"]:
        report.add("idle spare PSS (its two processes)", memory["spare"]["spare"], "MiB")
    all_stats = {
        "fork": fork,
        "exec_import_zmq": exec_zmq,
        "popen_first_line": popen,
        "first_syscall": first,
        "reply": reply,
        "sandbox": sandbox,
        "script": script,
        "capped_first": capped_first,
        "row_first": row_first,
        "one_spare_row_first": one_first,
    }
    for key, stats in all_stats.items():
        report.details[f"{key}_ms"] = stats_dict(stats)
    report.details["row_first_ms"] = [round(r * ms, 2) for r in row_series.first]
    report.details["one_spare_row_first_ms"] = [round(r * ms, 2) for r in one_series.first]
    report.details["memory_mib"] = memory
    report.details["spares_after_row"] = row["spares"]
    for label, result in (("pool", row), ("one spare", one)):
        if result["live"] != N_ROW:
            report.notes.append(f"{label}: only {result['live']} of {N_ROW} row agents were running before the kill")
    report.notes.append("first syscall = journal timestamp of the agent's hello minus its agent.created record")
    report.notes.append("PSS: mean over the idle agents of the pool's row, and over the spares whose two processes were up")


if __name__ == "__main__":
    raise SystemExit(main("spawn_latency", run))
