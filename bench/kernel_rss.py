"""Kernel memory: VmRSS and PSS (smaps_rollup) of the kernel process idle and with 100 idle
agents, the zygote's (the kernel's child running ``clove.sandbox.zygote``), and the mean
PSS of one idle agent. Target: kernel ≤ 40 MB idle.

Baseline in the same run: a bare Python process that has imported zmq and msgpack and holds a
ZeroMQ context (what any Python ZeroMQ server costs before doing anything).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from common import (
    CloveClient,
    Report,
    agent_script,
    audit_entries,
    bench_kernel,
    children_of,
    cmdline_of,
    main,
    mem_of,
    poll_for,
)

N_AGENTS = 100
RING_CALLS = 12_000  # more than the default audit ring (kernel.audit_ring = 10 000 records)
LIMITS = {"memory": "128M", "pids": 64}
BASELINE_CODE = (
    "import zmq, msgpack, sys; ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); "
    "print('ready', flush=True); sys.stdin.read()"
)


def baseline_mem() -> dict[str, float]:
    """Memory of a bare Python + pyzmq process holding a context and a socket."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BASELINE_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None  # noqa: S101
        proc.stdout.readline()
        time.sleep(0.2)
        return mem_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def zygote_pid(kernel_pid: int) -> int | None:
    for pid in children_of(kernel_pid):
        if "zygote" in cmdline_of(pid):
            return pid
    return None


def settle(client: CloveClient, calls: int = 200) -> None:
    """Exercise the request path so the measured RSS includes warmed code, then pause."""
    for _ in range(calls):
        client.call("noop", msg="x")
    client.list_agents()
    time.sleep(0.5)


def run(report: Report, say: Callable[[str], None]) -> None:
    base = baseline_mem()
    with bench_kernel() as kernel, kernel.client(timeout=60) as client:
        zygote = zygote_pid(kernel.pid)
        settle(client)
        idle = mem_of(kernel.pid)
        zygote_idle = mem_of(zygote) if zygote else {}
        say(f"kernel_rss: idle kernel {idle}; {RING_CALLS} noop calls to fill the audit ring")
        settle(client, RING_CALLS)
        ring_full = mem_of(kernel.pid)
        say(f"  ring full: {ring_full}; spawning {N_AGENTS} idle agents")
        pids: list[int] = []
        ids: list[int] = []
        for i in range(N_AGENTS):
            reply = client.spawn(f"idle{i}", agent_script("hello_sleep.py"), limits=LIMITS)
            if not reply.get("success"):
                raise RuntimeError(f"spawn failed: {reply}")
            ids.append(int(reply["id"]))
            pids.append(int(reply["pid"]))
        for agent_id in ids:
            poll_for(
                lambda a=agent_id: any(e.get("syscall") == "hello" for e in audit_entries(client, a)),
                30,
                0.01,
                "hello",
            )
        settle(client)
        loaded = mem_of(kernel.pid)
        zygote_loaded = mem_of(zygote) if zygote else {}
        agent_pss = [mem_of(pid).get("pss", 0.0) for pid in pids]
        for agent_id in ids:
            client.kill(agent_id=agent_id)
        settle(client)
        after = mem_of(kernel.pid)

    target = "≤40 MB"
    report.add("baseline python+zmq RSS", base.get("rss", 0), "MiB")
    report.add("baseline python+zmq PSS", base.get("pss", 0), "MiB")
    report.add(
        "kernel idle RSS",
        idle["rss"],
        "MiB",
        baseline=base.get("rss"),
        baseline_name="python+zmq",
        target=target,
    )
    report.add("kernel idle PSS", idle["pss"], "MiB", baseline=base.get("pss"), baseline_name="python+zmq")
    report.add(
        f"kernel RSS, audit ring full ({RING_CALLS} calls)",
        ring_full["rss"],
        "MiB",
        baseline=idle["rss"],
        baseline_name="idle",
        target=target,
    )
    report.add(
        f"kernel RSS, {N_AGENTS} agents",
        loaded["rss"],
        "MiB",
        baseline=ring_full["rss"],
        baseline_name="ring full",
    )
    report.add(
        f"kernel PSS, {N_AGENTS} agents",
        loaded["pss"],
        "MiB",
        baseline=ring_full["pss"],
        baseline_name="ring full",
    )
    report.add("kernel per-agent RSS growth", (loaded["rss"] - ring_full["rss"]) * 1024 / N_AGENTS, "KiB")
    report.add(
        "kernel RSS after killing all",
        after["rss"],
        "MiB",
        baseline=ring_full["rss"],
        baseline_name="ring full",
    )
    report.add("zygote idle RSS", zygote_idle.get("rss", float("nan")), "MiB")
    report.add("zygote idle PSS", zygote_idle.get("pss", float("nan")), "MiB")
    report.add(
        f"zygote RSS, {N_AGENTS} agents",
        zygote_loaded.get("rss", float("nan")),
        "MiB",
        baseline=zygote_idle.get("rss"),
        baseline_name="idle",
    )
    measured = [p for p in agent_pss if p > 0]
    report.add(
        "idle agent PSS (mean)",
        sum(measured) / max(1, len(measured)),
        "MiB",
        baseline=base.get("pss"),
        baseline_name="python+zmq",
    )
    report.details.update(
        {
            "baseline": base,
            "idle": idle,
            "ring_full": ring_full,
            "loaded": loaded,
            "after": after,
            "zygote_idle": zygote_idle,
            "zygote_loaded": zygote_loaded,
            "agents_measured": len(measured),
        }
    )
    if zygote is None:
        report.notes.append("zygote not found among the kernel's children")
    report.notes.append("agent PSS is of the agent process itself (not its pid-1 init in the namespace)")


if __name__ == "__main__":
    raise SystemExit(main("kernel_rss", run))
