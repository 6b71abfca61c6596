"""Fleet deploy: from a signed desired state written to the hub to the board's report that its
agents run (docs/fleet.md, "Deploy").

One run, one real ``nats-server -js`` on a free port with the deploy bucket, one board whose
operator key may deploy. Each of ``ROUNDS`` rounds writes a desired state of ``AGENTS`` agents
and polls the board's status key until its report for that revision is in (every agent
started), then writes an empty one and waits for the report that all were stopped. The baseline,
measured in the same run: the same agents spawned, then killed, by an operator on the board's
own control socket, one after the other (what an operator without a fleet does).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Report, agent_script, bench_kernel, main, poll_for, summarize
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.fleet.commands import public_key_text
from clove.fleet.deploy import DeployNames, sign_desired
from clove.fleet.deploy_store import ensure_deploy_bucket, publish_desired, read_current, read_status

ROUNDS = int(os.environ.get("CLOVE_BENCH_ROUNDS", "5"))
AGENTS = 4
NAMES = DeployNames("clove")
BOARD = "bench-0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _agents() -> list[dict[str, Any]]:
    return [{"name": f"w{i}", "script": agent_script("hello_sleep.py"), "args": ["600"]} for i in range(AGENTS)]


async def _fleet_rounds(url: str, key: Ed25519PrivateKey) -> tuple[list[float], list[float]]:
    import nats

    async def quiet(err: Exception) -> None:
        pass

    nc = await nats.connect(url, allow_reconnect=False, error_cb=quiet)
    js = nc.jetstream(timeout=5)
    await ensure_deploy_bucket(js, NAMES)

    async def deploy(agents: list[dict[str, Any]], action: str) -> float:
        current = await read_current(js, NAMES, BOARD)
        state = sign_desired(key, board=BOARD, generation=current.next_generation, agents=agents)
        t0 = time.perf_counter_ns()
        revision = await publish_desired(js, NAMES, BOARD, state, after_seq=current.desired_seq)
        deadline = time.monotonic() + 60
        while True:
            status = await read_status(js, NAMES, BOARD)
            if status is not None and status.get("revision", 0) >= revision:
                break
            if time.monotonic() > deadline:
                raise SystemExit("fleet_deploy: no report within 60 s")
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter_ns() - t0
        done = [a.get("action") for a in status.get("agents") or []]
        if not status.get("accepted") or done != [action] * len(done):
            raise SystemExit(f"fleet_deploy: unexpected report {status}")
        return elapsed

    starts, stops = [], []
    try:
        for _ in range(ROUNDS):
            starts.append(await deploy(_agents(), "started"))
            stops.append(await deploy([], "stopped"))
    finally:
        await nc.close()
    return starts, stops


def run(report: Report, say: Any) -> None:
    binary = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    if binary is None:
        raise SystemExit("fleet_deploy: nats-server is not installed (make fleet-setup)")
    store = Path(tempfile.mkdtemp(prefix="clvbenchhub"))
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    hub = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    key = Ed25519PrivateKey.generate()
    config = f"""
[fleet]
servers = ["{url}"]
board = "{BOARD}"
heartbeat = 1.0
lost_after = 5.0

[fleet.operators.bench]
public_key = "{public_key_text(key.public_key())}"
may = ["deploy"]
"""
    try:

        def hub_up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        poll_for(hub_up, 15, message="nats-server")
        with bench_kernel(config) as kernel, kernel.client(timeout=60) as client:
            poll_for(lambda: '"fleet.connected"' in (kernel.state_dir / "journal.jsonl").read_text(), 30, interval=0.1, message="the board to join")
            say(f"fleet_deploy: {AGENTS} agents, {ROUNDS} rounds; baseline: the same spawns and kills on the board's control socket")
            local_start, local_stop = [], []
            for _ in range(ROUNDS):
                t0 = time.perf_counter_ns()
                for spec in _agents():
                    client.call("agent.spawn", **spec)
                local_start.append(time.perf_counter_ns() - t0)
                t0 = time.perf_counter_ns()
                for spec in _agents():
                    client.call("agent.kill", name=spec["name"])
                local_stop.append(time.perf_counter_ns() - t0)
            fleet_start, fleet_stop = asyncio.run(_fleet_rounds(url, key))
        for what, local, fleet in (("start", local_start, fleet_start), ("stop", local_stop, fleet_stop)):
            ls, fs = summarize(local, 1e-6), summarize(fleet, 1e-6)
            report.add(f"local {what} of {AGENTS} agents in turn, p50", ls.p50, "ms")
            report.add(f"fleet deploy: {what} {AGENTS} agents to the report, p50", fs.p50, "ms", baseline=ls.p50, baseline_name=f"local {what} p50")
            say(f"  {what}: local p50 {ls.p50:.0f} ms, fleet p50 {fs.p50:.0f} ms ({fs.p50 / ls.p50:.2f}x)")
        report.notes.append("fleet: desired state written to the hub until the board's report for it is in (polled with direct gets every 5 ms)")
    finally:
        hub.terminate()
        hub.wait(10)
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main("fleet_deploy", run))
