"""Agent-to-agent message latency through the kernel vs two hops of a bare pyzmq PUSH/PULL.

* ``agent→agent one-way``: a sandboxed agent's ``send_message`` until another sandboxed agent's
  blocking ``recv_messages`` returns with it, in a back-to-back ping-pong; only samples where
  the receiver was already waiting when the send began count (see bench/agents/msg_pingpong.py);
* ``agent round trip``: ping's send until pong's answer is back in ping's hands (a hop each
  way, plus pong's own send round trip);
* baseline ``bare 2 hops``: this process PUSHes to a relay process that PULLs and PUSHes it on
  to a PULL in this process, back to back: the two process hops a message takes through the
  kernel (sender → kernel → receiver), without kernel, SDK, envelope, sandbox or mailbox.
  Measured in the same run, before and after the agents, so machine noise hits both. Target
  (issue 15): one-way p50 at most twice the bare two hops.

Run as a script with ``relay IN OUT`` it is the baseline's relay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

N = 2000
WARMUP = 200
BARE_N = 6000


def _relay(pull_endpoint: str, push_endpoint: str) -> None:
    import zmq

    ctx = zmq.Context(io_threads=1)
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind(pull_endpoint)
    push.connect(push_endpoint)
    print("ready", flush=True)
    while True:  # until SIGKILL: nothing to clean up
        push.send(pull.recv())


def _bare_two_hops(n: int) -> list[int]:
    """One-way latency of PUSH → relay process → PULL, each message sent after the last arrived."""
    import zmq

    tmp = tempfile.mkdtemp(prefix="clvmsg")
    to_relay, from_relay = f"ipc://{tmp}/in.sock", f"ipc://{tmp}/out.sock"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, 10_000)
    pull.bind(from_relay)
    relay = subprocess.Popen(
        [sys.executable, __file__, "relay", to_relay, from_relay],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        if relay.stdout is None or relay.stdout.readline().strip() != "ready":
            raise RuntimeError("the relay did not start")
        push = ctx.socket(zmq.PUSH)
        push.connect(to_relay)
        payload = b"x" * 64
        samples = []
        for i in range(n + WARMUP):
            t0 = time.perf_counter_ns()
            push.send(payload)
            pull.recv()
            if i >= WARMUP:
                samples.append(time.perf_counter_ns() - t0)
        push.close(linger=0)
        return samples
    finally:
        relay.kill()
        relay.wait(5)
        pull.close(linger=0)
        for name in ("in.sock", "out.sock"):
            Path(tmp, name).unlink(missing_ok=True)
        os.rmdir(tmp)


def _results(client: Any, name: str) -> dict[str, Any]:
    def done() -> bool:
        return client.logs(name, offset=0, max_bytes=1)["state"] in ("exited", "failed")

    poll_for(done, timeout=120, interval=0.1, message=f"{name} to finish")
    logs = client.logs(name, offset=0, max_bytes=4 << 20)
    for line in logs["data"].decode(errors="replace").splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"no results in {name}'s log: {logs['data'][-2000:]!r}")


def _agents(client: Any) -> tuple[list[int], list[int]]:
    """One-way samples (both directions, receiver already waiting) and ping's round trips."""
    script = agent_script("msg_pingpong.py")
    for name, args in (("pong", ["pong", str(WARMUP)]), ("ping", ["ping", str(N), str(WARMUP)])):
        reply = client.spawn(name, script, args=args)
        if not reply.get("success"):
            raise RuntimeError(f"spawn {name} failed: {reply}")
        if name == "pong":
            poll_for(lambda: b"READY" in client.logs("pong")["data"], timeout=20, message="pong ready")
    ping, pong = _results(client, "ping"), _results(client, "pong")
    return ping["one_way"] + pong["one_way"], ping["rtt"]


def run(report: Report, say: Callable[[str], None]) -> None:
    say(f"messaging: bare 2-hop PUSH/PULL x {BARE_N}, then {N} agent ping-pongs, then bare again")
    bare = _bare_two_hops(BARE_N // 2)
    with bench_kernel() as kernel, kernel.client() as client:
        one_way, rtt = _agents(client)
    bare += _bare_two_hops(BARE_N // 2)
    b, o, r = summarize(bare), summarize(one_way), summarize(rtt)
    report.add("bare 2 hops p50", b.p50, "µs")
    report.add("bare 2 hops p99", b.p99, "µs")
    report.add("agent→agent one-way p50", o.p50, "µs", baseline=b.p50, baseline_name="bare 2 hops p50", target="≤2x")
    report.add("agent→agent one-way p99", o.p99, "µs", baseline=b.p99, baseline_name="bare 2 hops p99")
    report.add("agent round trip p50", r.p50, "µs", baseline=2 * b.p50, baseline_name="2 x bare p50")
    report.add("agent round trip p99", r.p99, "µs")
    report.details["stats_us"] = {"bare": stats_dict(b), "one_way": stats_dict(o), "rtt": stats_dict(r)}
    report.details["one_way_samples"] = {"kept": len(one_way), "exchanges": 2 * N}
    report.notes.append(
        "one-way: from just before send_message() in one sandboxed agent until recv_messages(timeout=...)"
        " returns in the other, already waiting: the request hop, the kernel's dispatch and delivery,"
        " the reply hop; samples where the receiver was still busy are left out"
    )
    for label, s in (("bare 2 hops", b), ("one-way", o), ("round trip", r)):
        say(f"  {label:12s} {s.fmt()}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        _relay(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(main("messaging", run))
