"""CAN through Clove: the mediated send round trip, against a bare pyzmq round trip over two
hops measured in the same run.

* ``mediated send``: a sandboxed agent's ``device("bus").send(...)`` until its acknowledgement
  returns: agent → kernel (identity, grant check on the id range and send rate bucket, journal)
  → driver host (python-can ``virtual`` bus, ``bus.send``) → kernel → agent;
* baseline ``bare 2-hop round trip``: a DEALER in this process → a relay process (ROUTER/DEALER
  proxy) → an echo process (REP) and back: the same two process hops each way, with nothing
  of Clove in them.

Targets (issue 4): p50 ≤ 250 µs and p99 ≤ 1 ms.
Run as a script with ``relay FRONT BACK`` or ``echo BACK`` it is one of the baseline processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

N = 3000
WARMUP = 300

CONFIG = """
[devices.bus]
driver = "can"
interface = "virtual"
channel = "bench"
"""


def _relay(front: str, back: str) -> None:
    import zmq

    ctx = zmq.Context(io_threads=1)
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    router.bind(front)
    dealer.bind(back)
    print("ready", flush=True)
    zmq.proxy(router, dealer)


def _echo(back: str) -> None:
    import zmq

    ctx = zmq.Context(io_threads=1)
    rep = ctx.socket(zmq.REP)
    rep.connect(back)
    while True:
        rep.send(rep.recv())


def bare_two_hop_rtt(n: int) -> list[int]:
    import zmq

    tmp = tempfile.mkdtemp(prefix="clvcan")
    front, back = f"ipc://{tmp}/front.sock", f"ipc://{tmp}/back.sock"
    relay = subprocess.Popen([sys.executable, __file__, "relay", front, back], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    echo = None
    try:
        if relay.stdout is None or relay.stdout.readline().strip() != "ready":
            raise RuntimeError("the relay did not start")
        echo = subprocess.Popen([sys.executable, __file__, "echo", back], stdin=subprocess.DEVNULL)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(front)
        payload = b"x" * 64
        samples = []
        for i in range(n + WARMUP):
            t0 = time.perf_counter_ns()
            sock.send_multipart([b"", payload])
            sock.recv_multipart()
            if i >= WARMUP:
                samples.append(time.perf_counter_ns() - t0)
        sock.close(linger=0)
        return samples
    finally:
        for proc in (relay, echo):
            if proc is not None:
                proc.kill()
                proc.wait(5)
        for name in ("front.sock", "back.sock"):
            Path(tmp, name).unlink(missing_ok=True)
        Path(tmp).rmdir()


def _agent_rtt(client: Any) -> list[int]:
    grant = {"ops": ["send"], "send_ids": ["0x100-0x10F"], "max_send_rate_hz": 1e6}
    reply = client.spawn("sender", agent_script("can_rtt.py"), args=[str(N), str(WARMUP)], devices={"bus": grant})
    if not reply.get("success"):
        raise RuntimeError(f"spawn failed: {reply}")

    def done() -> bool:
        return client.logs("sender", offset=0, max_bytes=1)["state"] in ("exited", "failed")

    poll_for(done, timeout=150, interval=0.1, message="the sender to finish")
    for line in client.logs("sender", offset=0, max_bytes=8 << 20)["data"].decode(errors="replace").splitlines():
        if line.startswith("{"):
            return list(json.loads(line)["rtt"])
    raise RuntimeError("no samples in the sender's log")


def run(report: Report, say: Callable[[str], None]) -> None:
    say(f"device_can: bare 2-hop round trips x {N}, {N} mediated sends from an agent, bare again")
    bare = bare_two_hop_rtt(N // 2)
    with bench_kernel(CONFIG) as kernel, kernel.client() as client:
        poll_for(lambda: client.device("bus").info()["state"] == "ready", timeout=20, message="the bus")
        mediated = _agent_rtt(client)
    bare += bare_two_hop_rtt(N // 2)
    b, m = summarize(bare), summarize(mediated)
    report.add("bare 2-hop round trip p50", b.p50, "µs")
    report.add("bare 2-hop round trip p99", b.p99, "µs")
    report.add("mediated CAN send p50", m.p50, "µs", baseline=b.p50, baseline_name="bare 2-hop p50", target="≤2x")
    report.add("mediated CAN send p99", m.p99, "µs", baseline=b.p99, baseline_name="bare 2-hop p99", target="≤3x")
    report.details["stats_us"] = {"bare": stats_dict(b), "mediated": stats_dict(m)}
    report.notes.append("mediated: agent → kernel (grant, rate bucket, journal) → driver host → python-can virtual bus → ack")
    for label, s in (("bare", b), ("mediated", m)):
        say(f"  {label:9s} {s.fmt()}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        _relay(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "echo":
        _echo(sys.argv[2])
    else:
        raise SystemExit(main("device_can", run))
