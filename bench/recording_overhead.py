"""What recording costs an agent's syscalls, and how fast a replay runs against recorded time.

Overhead: the sandboxed NOOP loop (``agents/noop_loop.py``, its own per-agent socket) runs
several times with recording off and on, alternated in the same kernel so that machine noise
hits both alike; recording on keeps every call (request, reply, timestamps) in the ring and the
agent's file. Figures: p50 and p99 round trip and calls per second, on against off (target:
p99 within 1.5x).

Replay: an agent that waits in the kernel (ten 100 ms receives) between bursts of NOOPs is
recorded, then replayed in the same kernel at full speed and at recorded speed; the replay's
wall time is set against the recorded one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from common import CloveClient, Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

ROUNDS = 3
N = 2000
WARMUP = 200
WAIT_NOOPS = 50


def _noop_run(client: CloveClient) -> dict[str, list[int]]:
    reply = client.spawn("noop-agent", agent_script("noop_loop.py"), args=[str(N), str(WARMUP)])
    if not reply.get("success"):
        raise RuntimeError(f"spawn failed: {reply}")

    def finished() -> dict[str, Any] | None:
        logs = client.logs("noop-agent", offset=0, max_bytes=1 << 20)
        return logs if logs["state"] in ("exited", "failed") else None

    logs = poll_for(finished, timeout=120, interval=0.1, message="the noop agent to finish")
    client.remove("noop-agent")
    for line in logs["data"].decode(errors="replace").splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"no results in the agent's log: {logs['data'][-2000:]!r}")


def _replay(client: CloveClient, recording: str, speed: str) -> dict[str, Any]:
    started = client.start_replay(recording, agent="waiter", speed=speed)
    if not started.get("success"):
        raise RuntimeError(f"replay failed to start: {started}")
    status: dict[str, Any] = poll_for(lambda: (s := client.get_replay_status())["state"] != "REPLAYING" and s, timeout=60, message="the replay")
    if status["state"] != "COMPLETED":
        raise RuntimeError(f"replay did not complete: {status}")
    return status


def _recorder_cost(n: int = 20000) -> float:
    """µs the recorder adds to one NOOP (capture on arrival, record after the reply), measured
    in-process on the real recorder writing its real file: the part of the overhead that the
    round-trip figures' noise hides."""
    import tempfile
    import time
    from pathlib import Path

    from clove.config import AgentConfig, RecordingSection
    from clove.kernel.core.agents import Agent
    from clove.kernel.services.recording.recorder import Recorder, RecordingOptions
    from clove.wire import Request

    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(Path(tmp), RecordingSection())
        recorder.start(RecordingOptions())
        agent = Agent(id=1, spec=AgentConfig(name="bench", script="/bench.py"), uid=None)
        recorder.lifecycle("agent.created", agent, {})
        request = Request(1, "noop", {"msg": "x"})
        t0 = time.perf_counter_ns()
        for _ in range(n):
            pending = recorder.capture(agent, request, time.perf_counter_ns())
            assert pending is not None  # noqa: S101
            recorder.record(pending, "x", None)
        elapsed = time.perf_counter_ns() - t0
        recorder.stop()
    return elapsed / n / 1000


def run(report: Report, say: Callable[[str], None]) -> None:
    samples: dict[str, dict[str, list[int]]] = {"off": {"sdk": [], "raw": []}, "on": {"sdk": [], "raw": []}}
    with bench_kernel() as kernel, kernel.client(timeout=60) as client:
        say(f"recording_overhead: {ROUNDS} rounds x {N} agent NOOPs (SDK and raw), recording off and on alternated")
        recorded = 0
        for _ in range(ROUNDS):
            for mode in ("off", "on"):
                if mode == "on":
                    client.start_recording(filter_agents=["noop-agent"])
                got = _noop_run(client)
                if mode == "on":
                    recorded += client.stop_recording()["recorded"]
                for path in ("sdk", "raw"):
                    samples[mode][path].extend(got[path])
        say(f"  {recorded} syscalls recorded; recording a waiting agent and replaying it")
        client.start_recording(filter_agents=["waiter"])
        client.spawn("waiter", agent_script("record_waits.py"), args=[str(WAIT_NOOPS)])
        poll_for(lambda: any(a["name"] == "waiter" and a["state"] in ("exited", "failed") for a in client.list_agents()), timeout=60, message="the waiter")
        export = client.get_recording_status(export=True)["recording"]
        client.stop_recording()
        client.remove("waiter")
        full = _replay(client, export, "full")
        client.remove(agent_id=full["agents"][0]["agent_id"])
        paced = _replay(client, export, "recorded")

    stats = {f"{mode} {path}": summarize(s) for mode, paths in samples.items() for path, s in paths.items()}
    for path in ("sdk", "raw"):
        off, on = stats[f"off {path}"], stats[f"on {path}"]
        report.add(f"agent {path} p50, recording on", on.p50, "µs", baseline=off.p50, baseline_name="off p50")
        report.add(f"agent {path} p99, recording on", on.p99, "µs", baseline=off.p99, baseline_name="off p99", target="≤1.5")
        off_rate = off.n / (off.mean * off.n / 1e6)
        on_rate = on.n / (on.mean * on.n / 1e6)
        report.add(f"agent {path} calls/s, recording on", on_rate, "calls/s", baseline=off_rate, baseline_name="off calls/s")
    cost = _recorder_cost()
    report.add("recorder cost per NOOP (in-process)", cost, "µs", baseline=stats["off sdk"].p50, baseline_name="off sdk p50")
    recorded_s = full["recorded_elapsed"]
    report.add("replay at full speed", full["elapsed"], "s", baseline=recorded_s, baseline_name="recorded run")
    report.add("replay at recorded speed", paced["elapsed"], "s", baseline=recorded_s, baseline_name="recorded run")
    report.details["stats_us"] = {name: stats_dict(s) for name, s in stats.items()}
    report.details["replay"] = {"syscalls": full["progress"]["total"], "recorded_s": recorded_s, "full_s": full["elapsed"], "recorded_speed_s": paced["elapsed"]}
    report.notes.append("calls/s is one agent's sequential rate (1 / mean round trip); off and on runs alternate in one kernel")
    for name, s in stats.items():
        say(f"  {name:8s} {s.fmt()}")
    say(f"  replay of {full['progress']['total']} syscalls: recorded {recorded_s:.3f} s, full speed {full['elapsed']:.3f} s, recorded speed {paced['elapsed']:.3f} s")


if __name__ == "__main__":
    raise SystemExit(main("recording_overhead", run))
