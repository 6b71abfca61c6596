"""Noisy neighbours: NOOP latency of an operator client while other agents misbehave.

Phases (each measured for PHASE_S seconds of back-to-back ``noop`` calls):

1. ``idle``:  nothing else running, measured before and after the rest (pooled: the baseline);
2. ``100 idle agents``: connected agents that sleep (what the single loop's poller must watch);
3. ``hogs``:  two CPU-hog agents (busy loops, no limits) and one memory hog (256M limit,
   allocating and touching memory until OOM-killed, restart on-failure);
4. ``kill``:  while ``agent.kill`` of an agent that ignores SIGTERM is in flight (the kernel waits
   ``kill_grace`` = KILL_GRACE s, then SIGKILLs); the kill is issued from another thread with its
   own client, since its reply comes only once the agent is gone. Repeated KILLS times.

Ratios are p99 (and p50) against the idle phase; target ≤ 2x.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from common import (
    CloveClient,
    Report,
    Stats,
    agent_script,
    audit_entries,
    bench_kernel,
    main,
    poll_for,
    stats_dict,
    summarize,
    time_calls,
    time_for,
)

PHASE_S = 3.0
KILL_GRACE = 1.0
KILLS = 3
IDLE_AGENTS = 100
CONFIG = f"""
[sandbox]
kill_grace = {KILL_GRACE}

[supervisor]
backoff_initial = 0.1
backoff_max = 0.5
"""


def wait_hello(client: CloveClient, agent_id: int) -> None:
    poll_for(
        lambda: any(e.get("syscall") == "hello" for e in audit_entries(client, agent_id)),
        30,
        0.01,
        f"agent {agent_id}'s hello",
    )


def spawn(client: CloveClient, name: str, script: str, **kw: Any) -> int:
    reply = client.spawn(name, agent_script(script), **kw)
    if not reply.get("success"):
        raise RuntimeError(f"spawn of {name} failed: {reply}")
    return int(reply["id"])


def measure(client: CloveClient) -> list[int]:
    return time_for(lambda: client.call("noop", msg="x"), PHASE_S)


def idle_agents_phase(client: CloveClient) -> list[int]:
    ids = [
        spawn(client, f"idle{i}", "hello_sleep.py", limits={"memory": "128M", "pids": 64})
        for i in range(IDLE_AGENTS)
    ]
    for agent_id in ids:
        wait_hello(client, agent_id)
    time.sleep(0.3)
    samples = measure(client)
    for agent_id in ids:
        client.kill(agent_id=agent_id)
    return samples


def hog_phase(client: CloveClient) -> tuple[list[int], dict[str, Any]]:
    ids = [spawn(client, f"cpu-hog{i}", "cpu_hog.py") for i in range(2)]
    mem = spawn(
        client,
        "mem-hog",
        "mem_hog.py",
        limits={"memory": "256M"},
        restart_policy="on-failure",
        max_restarts=1000,
    )
    for agent_id in [*ids, mem]:
        wait_hello(client, agent_id)
    time.sleep(0.5)
    samples = measure(client)
    info = {a["name"]: {"restarts": a["restarts"], "state": a["state"]} for a in client.list_agents()}
    for agent_id in [*ids, mem]:
        client.kill(agent_id=agent_id)
    return samples, info


def kill_phase(client: CloveClient, socket: str) -> tuple[list[int], list[float]]:
    """Neighbour samples taken while each slow kill is in flight, and each kill's duration (s)."""
    samples: list[int] = []
    durations: list[float] = []
    for i in range(KILLS):
        agent_id = spawn(client, f"stubborn{i}", "ignore_term.py")
        wait_hello(client, agent_id)
        done = threading.Event()

        def killer(agent_id: int = agent_id, done: threading.Event = done) -> None:
            with CloveClient(socket, timeout=30) as own:
                t0 = time.perf_counter()
                own.kill(agent_id=agent_id)
                durations.append(time.perf_counter() - t0)
            done.set()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        while not done.is_set():
            samples.extend(time_calls(lambda: client.call("noop", msg="x"), 50))
        thread.join()
    return samples, durations


def run(report: Report, say: Callable[[str], None]) -> None:
    with bench_kernel(CONFIG) as kernel, kernel.client(timeout=30) as client:
        time_calls(lambda: client.call("noop", msg="x"), 0, 500)
        say(f"neighbour: idle ({PHASE_S:g} s)")
        idle_ns = measure(client)
        say(f"  {IDLE_AGENTS} idle agents")
        crowd_ns = idle_agents_phase(client)
        say("  two CPU hogs + a memory hog (256M, restart on-failure)")
        hogs_ns, hog_info = hog_phase(client)
        say(f"  {KILLS} kills of a SIGTERM-ignoring agent (kill_grace {KILL_GRACE:g} s)")
        kill_ns, kill_s = kill_phase(client, kernel.socket)
        say("  idle again")
        idle_again_ns = measure(client)
    # The baseline pools the idle windows before and after the load, so one noisy window on
    # the shared machine does not decide every ratio.
    idle = summarize(idle_ns + idle_again_ns)
    idle_before, idle_again = summarize(idle_ns), summarize(idle_again_ns)
    crowd, hogs, kills = summarize(crowd_ns), summarize(hogs_ns), summarize(kill_ns)
    report.add("idle p50 (before+after)", idle.p50, "µs")
    report.add("idle p99 (before+after)", idle.p99, "µs")
    _phase(report, f"{IDLE_AGENTS} idle agents", crowd, idle)
    _phase(report, "hogs", hogs, idle)
    _phase(report, "during slow kill", kills, idle)
    report.add("idle before p99", idle_before.p99, "µs", baseline=idle.p99, baseline_name="idle p99")
    report.add("idle after p99", idle_again.p99, "µs", baseline=idle.p99, baseline_name="idle p99")
    report.add(
        "slow kill duration (mean)",
        sum(kill_s) / len(kill_s),
        "s",
        baseline=KILL_GRACE,
        baseline_name="kill_grace",
    )
    report.details.update(
        {
            "idle_us": stats_dict(idle),
            "idle_before_us": stats_dict(idle_before),
            "idle_agents_us": stats_dict(crowd),
            "hogs_us": stats_dict(hogs),
            "kill_us": stats_dict(kills),
            "idle_again_us": stats_dict(idle_again),
            "hog_agents": hog_info,
            "kill_durations_s": [round(d, 3) for d in kill_s],
        }
    )
    mem = hog_info.get("mem-hog", {})
    report.notes.append(
        f"memory hog restarts during the hog phase: {mem.get('restarts')} (OOM kills at 256M)"
    )
    report.notes.append("2 CPUs: two unlimited busy loops leave the kernel and the client competing for CPU")


def _phase(report: Report, label: str, stats: Stats, idle: Stats) -> None:
    report.add(f"{label} p50", stats.p50, "µs", baseline=idle.p50, baseline_name="idle p50")
    report.add(f"{label} p99", stats.p99, "µs", baseline=idle.p99, baseline_name="idle p99", target="≤2x")


if __name__ == "__main__":
    raise SystemExit(main("neighbour", run))
