"""Orders through Clove against the simulated FIX venue, with every risk check and the order
journal on, against the same FIX session driven directly, in the same run.

* ``submit → ack``: from submitting a resting limit order until its ExecutionReport New is back.
  Directly: a FixSession in this process on its own credential. Through Clove: a sandboxed
  agent's ``submit_order`` and its execution-report stream (agent → kernel → exchange driver
  host: risk engine, journal → venue → host → kernel → agent);
* ``orders per second``: an agent submitting back to back, all checks on (the journal with
  fsync, as deployed), and the time until every order is acknowledged;
* ``kill switch``: 50 resting orders, then ``set_state HALTED``; the time until the venue shows
  none open (the command's round trip plus 50 cancels and their reports).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from common import Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

N = 1000
WARMUP = 100
RATE_N = 2000


def _direct(port: int) -> list[int]:
    from clove_driver_exchange.fix import FixSession, SeqStore, connect
    from clove_driver_exchange.fix import messages as fix
    from clove_driver_exchange.fix.messages import MsgType, Tag

    acked: dict[str, threading.Event] = {}

    def on_app(msg: Any) -> None:
        if msg.msg_type == MsgType.EXECUTION_REPORT and msg.get(Tag.EXEC_TYPE) == "0":
            event = acked.get(msg.get(Tag.CL_ORD_ID) or "")
            if event is not None:
                event.set()

    store = SeqStore(os.path.join(tempfile.mkdtemp(prefix="clvfix"), "s.json"), fsync=False)
    session = FixSession("initiator", "DIRECT", "VENUE", store, heartbeat_s=5, on_app_message=on_app, username="DIRECT", password="d")
    conn = connect(session, "127.0.0.1", port)
    poll_for(lambda: session.state == "active", timeout=10, message="direct logon")
    samples = []
    for i in range(N + WARMUP):
        cid = f"d{i}"
        acked[cid] = threading.Event()
        t0 = time.perf_counter_ns()
        session.send_app(*fix.new_order_single(cid, "ACME", "buy", 1, price=50.0 + i * 0.01))
        if not acked[cid].wait(5):
            raise RuntimeError("no ack")
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t0)
        session.send_app(*fix.order_cancel_request(f"c{i}", cid, "ACME", "buy"))
    conn.close("done")
    return samples


def _agent(client: Any, name: str, args: list[str], timeout: float = 150) -> dict[str, Any]:
    grant = {"ops": ["submit_order", "cancel", "executions"], "symbols": ["ACME", "SLOW"]}
    client.spawn(name, agent_script("order_rtt.py"), args=args, devices={"exchange": grant})
    poll_for(lambda: client.logs(name, offset=0, max_bytes=1)["state"] in ("exited", "failed"), timeout=timeout, interval=0.1, message=name)
    for line in client.logs(name, offset=0, max_bytes=8 << 20)["data"].decode(errors="replace").splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    tail = client.logs(name, offset=0, max_bytes=8 << 20)["data"][-2000:]
    raise RuntimeError(f"no result in {name}'s log: {tail!r}")


def run(report: Report, say: Callable[[str], None]) -> None:
    from hil.exchange.venue import SimVenue

    venue = SimVenue(symbols={"ACME": 100.0, "SLOW": 10.0}, credentials={"CLOVE": "secret", "DIRECT": "d"}, seed=3).start()
    try:
        say(f"trading: {N} direct FIX round trips, the same through Clove, {RATE_N} orders back to back, a kill switch over 50 orders")
        direct = _direct(venue.port)
        config = """
[devices.exchange]
driver = "exchange"
port = {port}
sender_comp_id = "CLOVE"
target_comp_id = "VENUE"
username = "CLOVE"
password = "secret"
symbols = ["ACME", "SLOW"]
fsync = {fsync}
reset_on_logon = true
risk = {{ max_order_qty = 100, max_notional = 100000, price_collar_pct = 60, max_open_orders = 10000, order_rate_per_s = 100000, cancel_rate_per_s = 100000 }}
"""
        with bench_kernel(config.format(port=venue.port, fsync="false")) as kernel, kernel.client() as client:
            poll_for(lambda: client.device("exchange").info()["state"] == "ready", timeout=30, message="exchange")
            poll_for(lambda: client.device("exchange").call("status")["references"].get("ACME"), timeout=10, message="market data")
            unsynced = _agent(client, "rtt", ["rtt", str(N // 2), str(WARMUP)])["rtt"]
        with bench_kernel(config.format(port=venue.port, fsync="true")) as kernel, kernel.client() as client:
            poll_for(lambda: client.device("exchange").info()["state"] == "ready", timeout=30, message="exchange")
            for symbol, price in (("ACME", 100.0), ("SLOW", 10.0)):
                venue.set_reference(symbol, price)  # publishes a snapshot: the risk engine's reference
            poll_for(lambda: client.device("exchange").call("status")["references"].get("ACME"), timeout=10, message="market data")
            mediated = _agent(client, "rtt", ["rtt", str(N), str(WARMUP)])["rtt"]
            rate = _agent(client, "rate", ["rate", str(RATE_N)])
            ex = client.device("exchange")
            for i in range(50):
                ex.submit_order("ACME", "buy", 1, price=60.0 + i * 0.01)
            poll_for(lambda: len(venue.orders("CLOVE", open_only=True)) >= 50 + 0, timeout=10, message="50 resting orders")
            open_before = len(venue.orders("CLOVE", open_only=True))
            t0 = time.perf_counter()
            ex.call("set_state", state="HALTED", reason="bench")
            poll_for(lambda: not venue.orders("CLOVE", open_only=True), timeout=20, interval=0.0005, message="all cancelled")
            kill_ms = (time.perf_counter() - t0) * 1000
    finally:
        venue.stop()
    d, m, u = summarize(direct), summarize(mediated), summarize(unsynced)
    report.add("direct FIX submit→ack p50", d.p50, "µs")
    report.add("direct FIX submit→ack p99", d.p99, "µs")
    report.add("through Clove submit→ack p50", m.p50, "µs", baseline=d.p50, baseline_name="direct p50")
    report.add("through Clove submit→ack p99", m.p99, "µs", baseline=d.p99, baseline_name="direct p99")
    report.add("through Clove, journal not fsynced, p50", u.p50, "µs", baseline=d.p50, baseline_name="direct p50")
    report.add("orders submitted per second (all checks on)", rate["n"] / rate["submit_s"], "orders/s")
    report.add("orders acknowledged per second", rate["acked"] / rate["all_acked_s"], "orders/s")
    report.add(f"kill switch: command → {open_before} orders cancelled", kill_ms, "ms")
    report.details.update(stats_us={"direct": stats_dict(d), "clove": stats_dict(m), "clove_no_fsync": stats_dict(u)}, rate=rate)
    report.notes.append("the deployed default fsyncs the order journal and the FIX sequence store on every order and report; the direct session fsyncs nothing")
    for label, s in (("direct", d), ("clove", m)):
        say(f"  {label:7s} {s.fmt()}")


if __name__ == "__main__":
    raise SystemExit(main("trading", run))
