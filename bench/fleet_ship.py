"""Audit shipping to a fleet hub: what it costs the kernel and how fast it goes (docs/fleet.md).

One run, one real ``nats-server -js`` on a free port with a private store, two kernels:
``plain`` (no ``[fleet]``) and ``shipped`` (joined to the hub):

* NOOP p50/p99 on both control sockets, measured in interleaved blocks so machine noise hits
  both alike; the ratio shipped/plain is the cost of shipping (target p99 ≤ 1.2);
* shipping rate under load: a flooding agent (``bench/agents/flood.py noop``) in the shipped
  kernel; records/s journaled and records/s acknowledged by the hub over the same window, and
  the link process's CPU per record;
* catch-up: the hub killed while the flood goes on for ``BACKLOG_S`` seconds, the flood
  stopped, the hub restarted on the same store; the time until the hub holds every record.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    CpuMeter,
    Report,
    agent_script,
    bench_kernel,
    children_of,
    cmdline_of,
    main,
    poll_for,
    summarize,
    time_calls,
)

from clove.fleet.streams import ensure_streams
from clove.fleet.subjects import FleetNames

ROUNDS = 20
BLOCK = 250
LOAD_S = 5.0
BACKLOG_S = 30.0
NAMES = FleetNames("clove")
BOARD = "bench-board"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hub:
    def __init__(self, binary: str, store: Path) -> None:
        self.binary, self.store, self.port = binary, store, _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        poll_for(up, 15, message="nats-server")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def call(self, body: Callable[[Any], Any]) -> Any:
        import nats

        async def quiet(err: Exception) -> None:
            pass

        async def run() -> Any:
            nc = await nats.connect(self.url, allow_reconnect=False, error_cb=quiet)
            try:
                return await body(nc.jetstream(timeout=5))
            finally:
                await nc.close()

        return asyncio.run(run())

    def last_shipped(self) -> int:
        """The id of the board's newest record on the hub (0: none)."""

        async def body(js: Any) -> int:
            try:
                msg = await js.get_last_msg(NAMES.audit_stream, NAMES.audit_subject(BOARD))
            except Exception:  # no message yet
                return 0
            return int(json.loads(msg.data)["id"])

        return int(self.call(body))


def _journal_last_id(state_dir: Path) -> int:
    with open(state_dir / "journal.jsonl", "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 65536))
        lines = f.read().split(b"\n")[:-1]
    return int(json.loads(lines[-1])["id"]) if lines else 0


def run(report: Report, say: Callable[[str], None]) -> None:
    binary = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    if binary is None:
        raise SystemExit("fleet_ship: nats-server is not installed (make fleet-setup)")
    store = Path(tempfile.mkdtemp(prefix="clvbenchhub"))
    hub = _Hub(binary, store)
    hub.start()
    try:
        hub.call(lambda js: ensure_streams(js, NAMES))
        fleet = f'[fleet]\nservers = ["{hub.url}"]\nboard = "{BOARD}"\nheartbeat = 1.0\nlost_after = 5.0\n'
        with bench_kernel() as plain, bench_kernel(fleet) as shipped, plain.client() as pc, shipped.client() as sc:
            poll_for(lambda: hub.last_shipped() > 0, 15, interval=0.1, message="the board's first shipped record")
            say(f"fleet_ship: NOOP latency, {ROUNDS} rounds x {BLOCK} calls per kernel, interleaved")
            samples: dict[str, list[int]] = {"plain": [], "shipped": []}
            time_calls(lambda: pc.call("noop", msg="x"), 0, 300)
            time_calls(lambda: sc.call("noop", msg="x"), 0, 300)
            for _ in range(ROUNDS):
                samples["plain"].extend(time_calls(lambda: pc.call("noop", msg="x"), BLOCK, 10))
                samples["shipped"].extend(time_calls(lambda: sc.call("noop", msg="x"), BLOCK, 10))
            plain_s, shipped_s = summarize(samples["plain"]), summarize(samples["shipped"])
            report.add("NOOP p50, no fleet", plain_s.p50, "µs")
            report.add("NOOP p99, no fleet", plain_s.p99, "µs")
            report.add("NOOP p50, shipping", shipped_s.p50, "µs", baseline=plain_s.p50, baseline_name="no fleet p50")
            report.add("NOOP p99, shipping", shipped_s.p99, "µs", baseline=plain_s.p99, baseline_name="no fleet p99", target="≤1.2")
            say(f"  plain {plain_s.fmt()}\n  shipped {shipped_s.fmt()}")

            say(f"fleet_ship: shipping under load ({LOAD_S:.0f} s of a noop flood)")
            sc.spawn("flood", agent_script("flood.py"), args=["noop"], sandboxed=False)
            time.sleep(1.0)  # a warm-up: the flood reaches its pace
            link_pid = next(pid for pid in children_of(shipped.pid) if "clove.kernel.services.fleet" in cmdline_of(pid))
            with CpuMeter(link_pid) as cpu:
                j0, s0, t0 = _journal_last_id(shipped.state_dir), hub.last_shipped(), time.monotonic()
                time.sleep(LOAD_S)
                j1, s1, t1 = _journal_last_id(shipped.state_dir), hub.last_shipped(), time.monotonic()
            report.add("link process CPU per shipped record", cpu.total / max(1, s1 - s0) * 1e6, "µs")
            report.add("link process CPU share", cpu.total / (t1 - t0) * 100, "% of a core")
            journal_rate, ship_rate = (j1 - j0) / (t1 - t0), (s1 - s0) / (t1 - t0)
            report.add("journal rate under a flood", journal_rate, "records/s")
            report.add("shipping rate under a flood", ship_rate, "records/s", baseline=journal_rate, baseline_name="journal rate")
            report.add("shipping lag at the end", j1 - s1, "records")
            say(f"  journaled {journal_rate:.0f}/s, shipped {ship_rate:.0f}/s, lag {j1 - s1}")

            say(f"fleet_ship: catch-up after a {BACKLOG_S:.0f} s outage under the flood")
            poll_for(lambda: hub.last_shipped() >= _journal_last_id(shipped.state_dir) - 5000, 60, interval=0.2, message="the shipper to catch up before the outage")
            hub.kill()
            time.sleep(BACKLOG_S)  # the outage's length is the figure's parameter
            sc.call("agent.kill", name="flood")
            time.sleep(0.5)  # the journal writer's last batch
            target = _journal_last_id(shipped.state_dir)
            t_restart = time.monotonic()
            hub.start()
            shipped_before = hub.last_shipped()
            hub_last = poll_for(lambda: (n := hub.last_shipped()) >= target and n, 300, interval=0.05, message="the hub to hold every record")
            catch_up = time.monotonic() - t_restart
            backlog = target - shipped_before
            report.add("journal rate under a flood, hub down", backlog / BACKLOG_S, "records/s", baseline=journal_rate, baseline_name="journal rate, shipping")
            report.add(f"catch-up after {BACKLOG_S:.0f} s offline", catch_up, "s")
            report.add("backlog", backlog, "records")
            report.add("catch-up rate", backlog / catch_up if catch_up > 0 else 0.0, "records/s")
            report.details["hub_last_id"] = hub_last
            say(f"  backlog {backlog} records caught up in {catch_up:.2f} s")
        report.notes.append("NOOP p99 ratio: shipping/no fleet, interleaved blocks in one run; flood agent unsandboxed")
    finally:
        hub.stop()
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main("fleet_ship", run))
