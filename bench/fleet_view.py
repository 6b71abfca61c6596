"""Watching the fleet: ``clove fleet logs`` against a local ``clove logs``, and what a frame of
``clove fleet top`` costs (docs/fleet.md, "top and logs").

One run, one real ``nats-server -js`` on a free port and one board (a kernel joined to it, the
bench's key allowed ``logs``) with an agent that has written 2000 lines (120 kB). Each of
``ROUNDS`` rounds reads the last 100 lines:

* baseline: ``agent.logs`` of the last 64 KiB on the board's own control socket (what
  ``clove logs`` does);
* fleet: a signed ``logs`` command published on the board's command subject until its answer
  (the last 100 lines, cut) is back: signing, the hub both ways, the board's checks, the same
  ``agent.logs`` and the journal records.

Then, with no hub: parsing one board's entry (500 agents listed, as an update arrives) and one
frame of the board list for 1000 boards on a 200×40 screen (aging every row and rich's layout
of the rows that fit).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Report, bench_kernel, main, poll_for, summarize
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.fleet.commands import public_key_text, sign
from clove.fleet.logs import MAX_ANSWER_BYTES
from clove.fleet.subjects import FleetNames

ROUNDS = 30
FRAMES = 20
NAMES = FleetNames("clove")
TALKER = """\
import time
from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    c.hello()
    for i in range(2000):
        print(f"line-{i:05d} " + "x" * 48)
    print("burst-done", flush=True)
    while True:
        time.sleep(1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _board_config(url: str, public: str) -> str:
    return f"""
[fleet]
servers = ["{url}"]
board = "bench-a"
heartbeat = 1.0
lost_after = 5.0

[fleet.operators.bench]
public_key = "{public}"
may = ["logs"]
"""


def run(report: Report, say: Callable[[str], None]) -> None:
    binary = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    if binary is None:
        raise SystemExit("fleet_view: nats-server is not installed (make fleet-setup)")
    work = Path(tempfile.mkdtemp(prefix="clvbenchview"))
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    hub = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(work / "store")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    key = Ed25519PrivateKey.generate()
    try:

        def hub_up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        poll_for(hub_up, 15, message="nats-server")
        script = work / "agent" / "talker.py"  # the temporary dir is 0700: the agent's uid could not enter it
        script.parent.mkdir(mode=0o755)
        script.write_text(TALKER)
        with bench_kernel(_board_config(url, public_key_text(key.public_key()))) as kernel, kernel.client() as c:
            c.spawn("talker", str(script))
            poll_for(lambda: b"burst-done" in c.call("agent.logs", name="talker", offset=0, max_bytes=1 << 20)["data"], 30, message="the talker's lines")
            poll_for(lambda: '"fleet.connected"' in (kernel.state_dir / "journal.jsonl").read_text(), 30, interval=0.1, message="the board to join the hub")
            say(f"fleet_view: {ROUNDS} reads of the last 100 lines; baseline: agent.logs on the board's own socket")
            local: list[float] = []
            for _ in range(ROUNDS):
                t0 = time.perf_counter_ns()
                c.call("agent.logs", name="talker", offset=-MAX_ANSWER_BYTES, max_bytes=MAX_ANSWER_BYTES)
                local.append(time.perf_counter_ns() - t0)
            fleet = asyncio.run(_fleet_reads(url, key))
        local_s, fleet_s = summarize(local, 1e-6), summarize(fleet, 1e-6)
        report.add("local agent.logs (64 KiB), p50", local_s.p50, "ms")
        report.add("local agent.logs (64 KiB), p99", local_s.p99, "ms")
        report.add("fleet logs (100 lines), p50", fleet_s.p50, "ms", baseline=local_s.p50, baseline_name="local p50")
        report.add("fleet logs (100 lines), p99", fleet_s.p99, "ms", baseline=local_s.p99, baseline_name="local p99")
        say(f"  local p50 {local_s.p50:.2f} ms p99 {local_s.p99:.2f} ms; fleet p50 {fleet_s.p50:.2f} ms p99 {fleet_s.p99:.2f} ms")
    finally:
        hub.terminate()
        hub.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    _frames(report, say)


async def _fleet_reads(url: str, key: Ed25519PrivateKey) -> list[float]:
    import nats

    from clove.fleet.sender import send

    async def quiet(err: Exception) -> None:
        pass

    nc = await nats.connect(url, allow_reconnect=False, error_cb=quiet)
    samples: list[float] = []
    try:
        js = nc.jetstream()
        for _ in range(ROUNDS):
            t0 = time.perf_counter_ns()
            outcome = await send(nc, js, NAMES, sign(key, "logs", board="bench-a", args={"agent": "talker"}), board="bench-a", wait=10)
            samples.append(time.perf_counter_ns() - t0)
            answer: dict[str, Any] = outcome.answers.get("bench-a") or {}
            value = ((answer.get("results") or [{}])[0] or {}).get("value") or {}
            if value.get("lines") != 100:
                raise SystemExit(f"fleet_view: unexpected answer {str(answer)[:300]}")
    finally:
        await nc.close()
    return samples


def _frames(report: Report, say: Callable[[str], None]) -> None:
    from rich.console import Console

    from clove.cli.fleet_view import render
    from clove.cli.fleet_view.controls import boards_view
    from clove.cli.fleet_view.model import parse_board

    now = time.time()
    agents = [{"id": i, "name": f"agent-{i}", "state": "running", "restarts": 0, "uptime": 10.0} for i in range(500)]
    entry = {"heartbeat_at": now, "lost_after": 15, "kernel": {"version": "0.1.0"}, "uptime": 100.0, "agents": agents,
             "agents_total": 500, "shipped_seq": 5, "journal_last_id": 6, "devices": [], "interlocks_engaged": {}}  # fmt: skip
    parse: list[float] = []
    for i in range(FRAMES):
        t0 = time.perf_counter_ns()
        parse_board(f"b{i}", entry)
        parse.append(time.perf_counter_ns() - t0)
    rows = [parse_board(f"board-{i:04d}", {**entry, "agents": agents[:20], "agents_total": 20}) for i in range(1000)]
    view = boards_view()
    console = Console(file=io.StringIO(), width=200, height=40, force_terminal=True)
    frames: list[float] = []
    for _ in range(FRAMES):
        t0 = time.perf_counter_ns()
        aged = [row.at(now) for row in rows]
        console.print(render.board_list(aged, view, omitted=0, hub="hub", status="", prompt="", height=40))
        frames.append(time.perf_counter_ns() - t0)
    parse_s, frame_s = summarize(parse, 1e-6), summarize(frames, 1e-6)
    report.add("parse one entry with 500 agents, p50", parse_s.p50, "ms")
    report.add("fleet top frame, 1000 boards, p50", frame_s.p50, "ms")
    report.add("fleet top frame, 1000 boards, p99", frame_s.p99, "ms")
    say(f"  entry parse p50 {parse_s.p50:.2f} ms; frame of 1000 boards p50 {frame_s.p50:.1f} ms p99 {frame_s.p99:.1f} ms (one a second: {frame_s.p50 / 10:.1f} % of a core)")


if __name__ == "__main__":
    raise SystemExit(main("fleet_view", run))
