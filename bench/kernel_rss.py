"""Kernel memory: VmRSS and PSS (smaps_rollup) of the kernel process idle and with 100 idle
agents; each of its helpers on its own line: the zygote (the kernel's child running
``clove.sandbox.zygote``), the warden, and the prepared spares (the zygote's descendants while no
agent runs: each spare is two processes, its sandbox's init and the spare); the mean PSS of one
idle agent. Target: kernel idle RSS ≤ 1.1x the baseline (issue 15, item 6).

Baseline in the same run: a bare Python process that has imported zmq and msgpack and holds a
ZeroMQ context (what any Python ZeroMQ server costs before doing anything).

The idle kernel's RSS is also split by mapping (``/proc/PID/smaps``): anonymous memory and the
heap (Python's objects: mostly the code and classes of every imported module), and the shared
libraries that matter (docs/kernel-memory.md).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def child_running(kernel_pid: int, module: str) -> int | None:
    """The kernel's child whose command line runs ``module`` (``zygote``, ``warden``)."""
    for pid in children_of(kernel_pid):
        if module in cmdline_of(pid):
            return pid
    return None


def zygote_pid(kernel_pid: int) -> int | None:
    return child_running(kernel_pid, "zygote")


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


#: Mapping names (substrings of the path) reported on their own lines; the rest is summed.
SPLIT = (
    ("Python objects (heap, anonymous)", ("[heap]", "[anon]", "[stack]")),
    ("libpython", ("libpython",)),
    ("OpenSSL libcrypto/libssl (hashlib, ssl)", ("libcrypto", "libssl")),
    ("SQLite (state store)", ("libsqlite3",)),
    ("libzmq and libsodium", ("libzmq", "libsodium")),
)


def rss_split(pid: int) -> dict[str, float]:
    """RSS in MiB by mapping, named as in :data:`SPLIT` (``other`` for the rest)."""
    out: dict[str, float] = {name: 0.0 for name, _ in SPLIT}
    out["other mapped files"] = 0.0
    current = "[anon]"
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                current = head[5] if len(head) > 5 else "[anon]"
            elif head and head[0] == "Rss:":
                name = next((n for n, keys in SPLIT if any(k in current for k in keys)), "other mapped files")
                out[name] += int(head[1]) / 1024
    return out


def total(pids: list[int]) -> dict[str, float]:
    """Summed RSS and PSS of ``pids`` (RSS double-counts what they share; PSS does not)."""
    mems = [mem_of(pid) for pid in pids]
    return {"rss": sum(m.get("rss", 0.0) for m in mems), "pss": sum(m.get("pss", 0.0) for m in mems), "processes": len(pids)}


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
        warden = child_running(kernel.pid, "warden")
        settle(client)
        # The pool of spares is made in the background: wait until the kernel says it is ready.
        poll_for(lambda: client.kernel_info()["spares"].get("ready", 0) >= client.kernel_info()["spares"].get("target", 0), 30, 0.1, "spares")
        idle = mem_of(kernel.pid)
        idle_split = rss_split(kernel.pid)
        zygote_idle = mem_of(zygote) if zygote else {}
        warden_idle = mem_of(warden) if warden else {}
        spares_idle = total(descendants(zygote)) if zygote else {}
        spares_info = client.kernel_info()["spares"]
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

    target = "≤1.1x python+zmq"
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
    for part, mib in idle_split.items():
        report.add(f"  kernel idle RSS: {part}", mib, "MiB")
    report.add(
        f"kernel RSS, audit ring full ({RING_CALLS} calls)",
        ring_full["rss"],
        "MiB",
        baseline=idle["rss"],
        baseline_name="idle",
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
    report.add("zygote idle PSS", zygote_idle.get("pss", float("nan")), "MiB", baseline=base.get("pss"), baseline_name="python+zmq")
    report.add("warden idle PSS", warden_idle.get("pss", float("nan")), "MiB", baseline=base.get("pss"), baseline_name="python+zmq")
    report.add(
        f"spares idle PSS ({spares_info.get('ready', 0)} spares, {spares_idle.get('processes', 0)} processes)",
        spares_idle.get("pss", float("nan")),
        "MiB",
        baseline=base.get("pss"),
        baseline_name="python+zmq",
    )
    tree = idle.get("pss", 0.0) + zygote_idle.get("pss", 0.0) + warden_idle.get("pss", 0.0) + spares_idle.get("pss", 0.0)
    report.add("idle kernel tree PSS (kernel, zygote, warden, spares)", tree, "MiB", baseline=base.get("pss"), baseline_name="python+zmq")
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
            "idle_split": idle_split,
            "zygote_idle": zygote_idle,
            "warden_idle": warden_idle,
            "spares_idle": spares_idle,
            "spares_info": spares_info,
            "zygote_loaded": zygote_loaded,
            "agents_measured": len(measured),
        }
    )
    if zygote is None:
        report.notes.append("zygote not found among the kernel's children")
    report.notes.append("agent PSS is of the agent process itself (not its pid-1 init in the namespace)")


if __name__ == "__main__":
    raise SystemExit(main("kernel_rss", run))
