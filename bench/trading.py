"""Orders through Clove against the simulated FIX venue, with every risk check, the order journal
and the FIX sequence store on (fsync and the group commit), against a FIX session driven directly
that makes the same records durable one fsync at a time, in the same run.

* ``fdatasync``: one 200-byte append synced, on this disk, now (what every figure below pays);
* ``submit → ack``: from submitting a resting limit order until its ExecutionReport New is back.
  Directly: a FixSession in this process on its own credential, journaling like the driver (the
  order before it leaves, each report as it arrives) and fsyncing each record and each sequence
  number as it is written: 4 fsyncs per order, none shared. Through Clove: a sandboxed agent's
  ``submit_order`` and its execution-report stream (agent → kernel → exchange driver host: risk
  engine, journal, group commit → venue → host → kernel → agent);
* ``sustained orders/s``: 1 agent, then 4 agents at once, each submitting back to back (one call
  at a time each; every check and fsync on), then the same with 16 calls in flight per agent (the
  agent sends the next request before the last reply is back), measured from the driver's own
  counters between 10 % and 90 % of the orders; the driver's commits in that window give the
  orders per commit. The driver host takes further calls while a reply waits for its commit, so
  the orders in flight at once share one fsync;
* ``driver alone``: the exchange driver in its own process (this script, ``--driver``), called by
  4 and by 16 threads at once, against the same venue: the group commit without the kernel;
* ``kill switch``: 50 more resting orders (on top of the rate runs', which rest too), then
  ``set_state HALTED``; the time until the venue shows none open (the command's round trip plus a
  cancel and its report for each).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from common import CpuMeter, Report, agent_script, bench_kernel, main, poll_for, stats_dict, summarize

N = 1000
WARMUP = 100
RATE_N = 2000
AGENTS = 4
PIPELINE = 16  # calls in flight per pipelining agent (the kernel allows 32 per caller and device)
DRIVER_N = 4000
SYMBOLS = {"ACME": 100.0, "SLOW": 10.0}
RISK = {"max_order_qty": 100, "max_notional": 100000, "price_collar_pct": 60, "max_open_orders": 100000, "order_rate_per_s": 100000, "cancel_rate_per_s": 100000}
CONFIG = """
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
call_timeout = 30             # the kill switch cancels every order the rate runs left resting in one call
risk = {{ {risk} }}
"""


def _config(port: int, *, fsync: bool) -> str:
    return CONFIG.format(port=port, fsync=str(fsync).lower(), risk=", ".join(f"{k} = {v}" for k, v in RISK.items()))


def _fdatasync_us(directory: str, n: int = 300) -> list[int]:
    fd, path = tempfile.mkstemp(dir=directory)
    try:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            os.write(fd, b"x" * 199 + b"\n")
            os.fdatasync(fd)
            samples.append(time.perf_counter_ns() - t0)
        return samples
    finally:
        os.close(fd)
        os.unlink(path)


def _direct(port: int, directory: str, *, fsync: bool) -> list[int]:
    """Submit → New over a FIX session in this process that journals like the driver, each record
    synced on its own (``fsync``): the order, its NewOrderSingle, the report's sequence number and
    the report."""
    from clove_driver_exchange.fix import FixSession, SeqStore, connect
    from clove_driver_exchange.fix import messages as fix
    from clove_driver_exchange.fix.messages import MsgType, Tag
    from clove_driver_exchange.journal import OrderJournal

    journal = OrderJournal(os.path.join(directory, f"direct-{fsync}.jsonl"), fsync=fsync)
    acked: dict[str, threading.Event] = {}

    def on_app(msg: Any) -> None:
        if msg.msg_type != MsgType.EXECUTION_REPORT:
            return
        cid = msg.get(Tag.CL_ORD_ID) or ""
        journal.append("exec", client_id=cid, exec_id=msg.get(Tag.EXEC_ID), exec_type=msg.get(Tag.EXEC_TYPE), order_id=msg.get(Tag.ORDER_ID))
        event = acked.get(cid)
        if event is not None and msg.get(Tag.EXEC_TYPE) == "0":
            event.set()

    store = SeqStore(os.path.join(directory, f"direct-{fsync}.seq"), fsync=fsync)
    session = FixSession("initiator", "DIRECT", "VENUE", store, heartbeat_s=5, on_app_message=on_app, username="DIRECT", password="d", reset_on_logon=True)
    conn = connect(session, "127.0.0.1", port)
    poll_for(lambda: session.state == "active", timeout=10, message="direct logon")
    samples = []
    for i in range(N + WARMUP):
        cid, price = f"d{int(fsync)}-{i}", round(50.0 + i * 0.01, 2)  # ids the venue has not seen
        acked[cid] = threading.Event()
        t0 = time.perf_counter_ns()
        journal.append("order", client_id=cid, agent="direct", symbol="ACME", side="buy", qty=1, price=price, type="limit", tif="day")
        session.send_app(*fix.new_order_single(cid, "ACME", "buy", 1, price=price, account="direct"))
        if not acked[cid].wait(5):
            raise RuntimeError("no ack")
        if i >= WARMUP:
            samples.append(time.perf_counter_ns() - t0)
        journal.append("cancel", client_id=cid, cancel_id=f"c{cid}")
        session.send_app(*fix.order_cancel_request(f"c{cid}", cid, "ACME", "buy"))
    conn.close("done")
    journal.close()
    return samples


def _spawn(client: Any, name: str, args: list[str]) -> None:
    grant = {"ops": ["submit_order", "cancel", "executions"], "symbols": ["ACME", "SLOW"]}
    client.spawn(name, agent_script("order_rtt.py"), args=args, devices={"exchange": grant})


def _result(client: Any, name: str, timeout: float = 150) -> dict[str, Any]:
    poll_for(lambda: client.logs(name, offset=0, max_bytes=1)["state"] in ("exited", "failed"), timeout=timeout, interval=0.1, message=name)
    data = client.logs(name, offset=0, max_bytes=8 << 20)["data"]
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"no result in {name}'s log: {data[-2000:]!r}")


def _sustained(client: Any, names: list[str], total: int, in_flight: int = 1, pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Agents ``names`` each submit ``total // len(names)`` orders back to back (``in_flight`` > 1:
    that many calls in flight at once each); the rate is read from the driver's counters between
    10 % and 90 % of ``total`` orders (the steady part). ``pids``: processes whose CPU time per
    order over the whole run is reported (``cpu_us_per_order``)."""
    ex = client.device("exchange")
    start = ex.call("status")
    base = start["counters"]["orders"]
    meters = {name: CpuMeter(pid).__enter__() for name, pid in (pids or {}).items()}
    for name in names:
        mode = ["rate", str(total // len(names))] if in_flight == 1 else ["pipe", str(total // len(names)), str(in_flight)]
        _spawn(client, name, mode)
    samples: list[tuple[float, int, int, int, int]] = []
    while True:
        status = ex.call("status")
        done = status["counters"]["orders"] - base
        samples.append((time.perf_counter(), done, status["counters"]["reports"], status["commit"]["commits"], status["commit"]["records"]))
        if done >= total or all(client.logs(n, offset=0, max_bytes=1)["state"] in ("exited", "failed") for n in names):
            break
        time.sleep(0.1)  # a sampling period, not a wait for a condition
    results = [_result(client, name) for name in names]
    for meter in meters.values():
        meter.__exit__()
    submitted = max(ex.call("status")["counters"]["orders"] - base, 1)
    window = [s for s in samples if 0.1 * total <= s[1] <= 0.9 * total] or samples
    first, last = window[0], window[-1]
    span = max(last[0] - first[0], 1e-9)
    orders, commits = last[1] - first[1], last[3] - first[3]
    return {
        "orders_per_s": orders / span if orders else total / max(r["all_acked_s"] for r in results),
        "acks_per_s": (last[2] - first[2]) / span if orders else total / max(r["all_acked_s"] for r in results),
        "orders_per_commit": orders / commits if commits else None,
        "records_per_commit": (last[4] - first[4]) / commits if commits else None,
        "window_s": round(span, 2), "agents": results, "acked": sum(r["acked"] for r in results),
        "errors": sum(sum(r.get("errors", {}).values()) for r in results),
        "cpu_us_per_order": {name: meter.total * 1e6 / submitted for name, meter in meters.items()},
    }  # fmt: skip


def _driver_alone(port: int, threads: int, n: int) -> dict[str, Any]:
    """The driver in a process of its own (``--driver``), ``threads`` callers at once."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--driver", str(port), str(threads), str(n)], capture_output=True, text=True, timeout=150)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"driver run failed: {out.stderr[-2000:]}")


def run_driver(port: int, threads: int, n: int) -> None:
    """``--driver``: open the exchange driver (fsync on) and submit ``n`` orders from ``threads``
    threads at once; read the stream as the host would; print one JSON line."""
    from clove_driver_exchange.driver import ExchangeDriver

    config = ExchangeDriver.parse_config({"port": port, "sender_comp_id": "CLOVE", "target_comp_id": "VENUE", "username": "CLOVE", "password": "secret", "symbols": list(SYMBOLS), "fsync": True, "reset_on_logon": True, "risk": RISK})
    driver = ExchangeDriver(config)
    driver.state_dir = tempfile.mkdtemp(prefix="clove-bench-exchange-")
    driver.open()
    poll_for(lambda: driver.call("status")["references"].get("SLOW"), timeout=10, message="market data")
    acked = 0

    def read() -> None:
        nonlocal acked
        while acked < n:
            acked += sum(1 for item in driver.read(0.5) if item["type"] == "exec" and item["status"] == "new")

    def submit(worker: int) -> None:
        for i in range(worker, n, threads):
            driver.call("submit_order", {"symbol": "SLOW", "side": "buy", "qty": 1 + i % 50, "price": round(5.0 + (i // 50) * 0.01, 2), "client_id": f"t{threads}-{i}"})

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    before = driver.call("status")["commit"]
    t0 = time.perf_counter()
    workers = [threading.Thread(target=submit, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    submitted = time.perf_counter() - t0
    reader.join(60)
    all_acked = time.perf_counter() - t0
    after = driver.call("status")["commit"]
    driver.close()
    shutil.rmtree(driver.state_dir, ignore_errors=True)
    commits = after["commits"] - before["commits"]
    print(json.dumps({"threads": threads, "n": n, "orders_per_s": n / submitted, "acks_per_s": acked / all_acked, "acked": acked, "orders_per_commit": n / commits if commits else None}), flush=True)


def run(report: Report, say: Callable[[str], None]) -> None:
    from hil.exchange.venue import SimVenue

    tmp = tempfile.mkdtemp(prefix="clove-bench-trading-")
    disk = summarize(_fdatasync_us(tmp))
    venue = SimVenue(symbols=SYMBOLS, credentials={"CLOVE": "secret", "DIRECT": "d"}, seed=3).start()
    try:
        say(f"trading: fdatasync p50 {disk.p50:.0f} µs; {N} direct FIX round trips with and without fsync, the same through Clove, "
            f"{RATE_N} orders from 1 and from {AGENTS} agents, the driver alone with {AGENTS} and {4 * AGENTS} threads, a kill switch")  # fmt: skip
        direct_sync = _direct(venue.port, tmp, fsync=True)
        direct_plain = _direct(venue.port, tmp, fsync=False)
        with bench_kernel(_config(venue.port, fsync=False)) as kernel, kernel.client() as client:
            poll_for(lambda: client.device("exchange").info()["state"] == "ready", timeout=30, message="exchange")
            poll_for(lambda: client.device("exchange").call("status")["references"].get("ACME"), timeout=10, message="market data")
            _spawn(client, "rtt", ["rtt", str(N // 2), str(WARMUP)])
            unsynced = _result(client, "rtt")["rtt"]
        with bench_kernel(_config(venue.port, fsync=True)) as kernel, kernel.client() as client:
            poll_for(lambda: client.device("exchange").info()["state"] == "ready", timeout=30, message="exchange")
            for symbol, price in SYMBOLS.items():
                venue.set_reference(symbol, price)  # publishes a snapshot: the risk engine's reference
            poll_for(lambda: client.device("exchange").call("status")["references"].get("ACME"), timeout=10, message="market data")
            _spawn(client, "rtt", ["rtt", str(N), str(WARMUP)])
            mediated = _result(client, "rtt")["rtt"]
            one = _sustained(client, ["rate"], RATE_N)
            many = _sustained(client, [f"rate{i}" for i in range(AGENTS)], RATE_N * 2)
            piped = _sustained(client, ["pipe"], RATE_N * 2, in_flight=PIPELINE)
            pids = {"kernel": kernel.pid, "driver host": client.device("exchange").info()["host_pid"]}
            piped_many = _sustained(client, [f"pipe{i}" for i in range(AGENTS)], RATE_N * 2, in_flight=PIPELINE, pids=pids)
            ex = client.device("exchange")
            resting = len(venue.orders("CLOVE", open_only=True))  # the rate runs' orders rest too
            for i in range(50):
                ex.submit_order("ACME", "buy", 1, price=60.0 + i * 0.01)
            poll_for(lambda: len(venue.orders("CLOVE", open_only=True)) >= resting + 50, timeout=10, message="50 more resting orders")
            open_before = len(venue.orders("CLOVE", open_only=True))
            t0 = time.perf_counter()
            ex.call("set_state", state="HALTED", reason="bench")
            # Every rate run's order rests (~14,000): a scan of the venue's book takes ms and runs in the
            # venue's own process, so poll every 5 ms rather than hog the venue's GIL.
            poll_for(lambda: not venue.orders("CLOVE", open_only=True), timeout=120, interval=0.005, message="all cancelled")
            kill_ms = (time.perf_counter() - t0) * 1000
        alone = {threads: _driver_alone(venue.port, threads, DRIVER_N) for threads in (AGENTS, 4 * AGENTS)}
    finally:
        venue.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    d, p, m, u = summarize(direct_sync), summarize(direct_plain), summarize(mediated), summarize(unsynced)
    report.add("fdatasync of one 200-byte append (this disk, now) p50", disk.p50, "µs")
    report.add("direct FIX submit→ack p50 (4 records, each fsynced)", d.p50, "µs")
    report.add("direct FIX submit→ack p99 (4 records, each fsynced)", d.p99, "µs")
    report.add("through Clove submit→ack p50 (group commit)", m.p50, "µs", baseline=d.p50, baseline_name="direct p50", target="≤ 2x")
    report.add("through Clove submit→ack p99 (group commit)", m.p99, "µs", baseline=d.p99, baseline_name="direct p99")
    report.add("direct FIX submit→ack p50, nothing fsynced", p.p50, "µs")
    report.add("through Clove, fsync off, p50", u.p50, "µs", baseline=p.p50, baseline_name="direct unsynced")
    report.add("sustained orders/s, 1 agent back to back", one["orders_per_s"], "orders/s", target="≥ 3000")
    report.add(f"sustained orders/s, {AGENTS} agents at once", many["orders_per_s"], "orders/s", target="≥ 3000")
    report.add(f"acknowledgements/s, {AGENTS} agents", many["acks_per_s"], "orders/s")
    report.add(f"orders per commit, {AGENTS} agents", many["orders_per_commit"] or 0.0, "orders")
    report.add(f"sustained orders/s, 1 agent, {PIPELINE} calls in flight", piped["orders_per_s"], "orders/s", target="≥ 3000")
    report.add(f"orders per commit, 1 agent, {PIPELINE} in flight", piped["orders_per_commit"] or 0.0, "orders")
    report.add(f"sustained orders/s, {AGENTS} agents, {PIPELINE} in flight each", piped_many["orders_per_s"], "orders/s", target="≥ 3000")
    report.add(f"acknowledgements/s, {AGENTS} agents, {PIPELINE} in flight each", piped_many["acks_per_s"], "orders/s")
    report.add(f"orders per commit, {AGENTS} agents, {PIPELINE} in flight each", piped_many["orders_per_commit"] or 0.0, "orders")
    report.add("pipelined orders refused (any error)", float(piped["errors"] + piped_many["errors"]), "orders", target="0")
    for name, us in piped_many["cpu_us_per_order"].items():
        report.add(f"{name} CPU per order, {AGENTS} agents, {PIPELINE} in flight each", us, "µs")
    for threads, result in alone.items():
        report.add(f"driver alone, {threads} threads: orders/s", result["orders_per_s"], "orders/s", target="≥ 3000")
        report.add(f"driver alone, {threads} threads: orders per commit", result["orders_per_commit"] or 0.0, "orders")
    report.add(f"kill switch: command → {open_before} orders cancelled", kill_ms, "ms")
    report.details.update(
        stats_us={"fdatasync": stats_dict(disk), "direct_fsync": stats_dict(d), "direct_plain": stats_dict(p), "clove": stats_dict(m), "clove_no_fsync": stats_dict(u)},
        sustained={"one_agent": one, f"{AGENTS}_agents": many, "one_agent_pipelined": piped, f"{AGENTS}_agents_pipelined": piped_many},
        driver_alone=alone,
    )  # fmt: skip
    report.notes.append("fsync on: the driver writes the journal and the sequence store at once and fsyncs both in one commit per group; an order's reply, its NewOrderSingle and each report's stream item wait for it")
    report.notes.append("the driver host takes the next calls while an order's reply waits for its commit (it replies in call order once durable), so orders from callers in flight at once share one fsync; a caller that waits for each reply has one order in flight, a pipelining one (CloveClient.call_many in the agent) up to 16")
    for label, s in (("fdatasync", disk), ("direct", d), ("clove", m)):
        say(f"  {label:9s} {s.fmt()}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--driver":
        run_driver(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        raise SystemExit(0)
    raise SystemExit(main("trading", run))
