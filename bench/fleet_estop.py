"""Fleet e-stop: from a signed command published on the hub to every board's interlock engaged
(docs/fleet.md, "Commands").

One run, one real ``nats-server -js`` on a free port, ``BOARDS`` kernels (default 5; set
``CLOVE_BENCH_BOARDS`` to 3-5 on a small machine) joined to it, each with one interlock and the
bench's operator key allowed to e-stop. Each of ``ROUNDS`` rounds signs an ``estop`` for every
board, publishes it on ``clove.cmd.all`` and polls each kernel's ``interlock.list`` until all are
engaged; then releases them locally. The baseline, measured in the same run: an operator's local
``interlock.engage`` on each board's own control socket, one board after the other (what an
operator without a fleet does). Target: fleet p99 ≤ 100 ms.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import Report, bench_kernel, main, poll_for, summarize
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.fleet.commands import public_key_text, sign
from clove.fleet.subjects import FleetNames

ROUNDS = 20
BOARDS = int(os.environ.get("CLOVE_BENCH_BOARDS", "5"))
NAMES = FleetNames("clove")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _board_config(url: str, board: str, public: str) -> str:
    return f"""
[fleet]
servers = ["{url}"]
board = "{board}"
heartbeat = 1.0
lost_after = 5.0

[fleet.operators.bench]
public_key = "{public}"
may = ["estop", "estop.release"]

[interlocks.halt]
trigger = {{ event = "HALT" }}
actions = [{{ pause = ["nobody"] }}]
"""


def _engaged(client: Any) -> bool:
    return any(i["engaged"] for i in client.call("interlock.list")["interlocks"])


def _release_all(clients: list[Any]) -> None:
    for c in clients:
        if _engaged(c):
            c.call("interlock.release", name="halt")


def run(report: Report, say: Callable[[str], None]) -> None:
    binary = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    if binary is None:
        raise SystemExit("fleet_estop: nats-server is not installed (make fleet-setup)")
    store = Path(tempfile.mkdtemp(prefix="clvbenchhub"))
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    hub = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    key = Ed25519PrivateKey.generate()
    public = public_key_text(key.public_key())
    try:

        def hub_up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        poll_for(hub_up, 15, message="nats-server")
        with ExitStack() as stack:
            kernels = [stack.enter_context(bench_kernel(_board_config(url, f"bench-{i}", public))) for i in range(BOARDS)]
            clients = [stack.enter_context(k.client()) for k in kernels]

            def joined() -> bool:
                events = [(k.state_dir / "journal.jsonl").read_text() for k in kernels]
                return all('"fleet.connected"' in text for text in events)

            poll_for(joined, 30, interval=0.1, message="every board to join the hub")
            say(f"fleet_estop: {BOARDS} boards, {ROUNDS} rounds; baseline: local interlock.engage on each board in turn")

            local: list[float] = []
            for _ in range(ROUNDS):
                t0 = time.perf_counter_ns()
                for c in clients:
                    c.call("interlock.engage", name="halt", reason="bench")
                local.append(time.perf_counter_ns() - t0)
                _release_all(clients)
            fleet = asyncio.run(_fleet_rounds(url, key, clients))
        local_s, fleet_s = summarize(local, 1e-6), summarize(fleet, 1e-6)
        report.add(f"local e-stop of {BOARDS} boards in turn, p50", local_s.p50, "ms")
        report.add(f"local e-stop of {BOARDS} boards in turn, p99", local_s.p99, "ms")
        report.add(f"fleet e-stop, {BOARDS} boards, p50", fleet_s.p50, "ms", baseline=local_s.p50, baseline_name="local p50")
        report.add(f"fleet e-stop, {BOARDS} boards, p99", fleet_s.p99, "ms", baseline=local_s.p99, baseline_name="local p99", target="≤100 ms")
        say(f"  local p50 {local_s.p50:.1f} ms p99 {local_s.p99:.1f} ms; fleet p50 {fleet_s.p50:.1f} ms p99 {fleet_s.p99:.1f} ms")
        report.notes.append("fleet: signed estop published on clove.cmd.all until every board's interlock.list shows it engaged (polled)")
    finally:
        hub.terminate()
        hub.wait(10)
        shutil.rmtree(store, ignore_errors=True)


async def _fleet_rounds(url: str, key: Ed25519PrivateKey, clients: list[Any]) -> list[float]:
    import nats

    async def quiet(err: Exception) -> None:
        pass

    nc = await nats.connect(url, allow_reconnect=False, error_cb=quiet)
    samples: list[float] = []
    try:
        for _ in range(ROUNDS):
            wire = sign(key, "estop", args={"reason": "bench"}).to_wire()
            t0 = time.perf_counter_ns()
            await nc.publish(NAMES.command_all, wire)
            await nc.flush()
            pending, deadline = list(clients), time.monotonic() + 10
            while pending:  # poll every board until each shows the interlock engaged
                pending = [c for c in pending if not _engaged(c)]
                if time.monotonic() > deadline:
                    raise SystemExit(f"fleet_estop: {len(pending)} boards did not engage within 10 s")
            samples.append(time.perf_counter_ns() - t0)
            _release_all(clients)
    finally:
        await nc.close()
    return samples


if __name__ == "__main__":
    raise SystemExit(main("fleet_estop", run))
