"""Trading through Clove against the simulated FIX venue (hil.exchange): grants, the risk
engine outside the agent, the kill switch, sequence gaps, a driver host killed with orders
open, and one killed in the middle of a burst with fsync and the group commit on."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import pytest

from clove.errors import CloveError, DeviceBroken, DeviceUnavailable, PermissionDenied
from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

venue_module = pytest.importorskip("hil.exchange.venue")

CONFIG = """
[devices.exchange]
driver = "exchange"
port = {port}
sender_comp_id = "CLOVE"
target_comp_id = "VENUE"
username = "CLOVE"
password = "secret"
symbols = ["ACME", "BOLT", "GHOST"]
heartbeat_s = 2
cancel_on_disconnect = false
fsync = false
backoff_initial = 0.1
backoff_max = 0.5
risk = {{ max_order_qty = 100, max_notional = 1000000, order_rate_per_s = {rate} }}
"""
GRANT = {"ops": ["submit_order", "cancel", "orders", "positions", "executions"], "symbols": ["ACME"], "max_position": 50, "max_open_orders": 5}


@pytest.fixture
def venue():  # noqa: ANN201
    v = venue_module.SimVenue(seed=7, liquidity=False, credentials={"CLOVE": "secret", "OTHER": "other"}).start()
    yield v
    v.stop()


def _kernel(make_kernel, venue, rate: float = 1000, fsync: bool = False) -> Any:  # noqa: ANN001
    config = CONFIG.format(port=venue.port, rate=rate)
    k = make_kernel(config.replace("fsync = false", "fsync = true") if fsync else config)
    poll_for(lambda: k.call("device.info", device="exchange")["device"]["state"] == "ready", 20, message="exchange ready")
    return k


def _reports(dev: Any, want: int, *, status: str | None = None, timeout: float = 10) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    poll_for(lambda: got.extend(i for i in dev.executions(timeout=0.2) if i["type"] == "exec" and (status is None or i["status"] == status)) or len(got) >= want, timeout, message=f"{want} reports")
    return got


def test_an_order_is_acknowledged_and_filled_and_the_position_follows(make_kernel, venue):
    venue.set_reference("ACME", 100.0)
    venue_module_book = venue.book("ACME")
    k = _kernel(make_kernel, venue)
    with k.client() as op:
        ex = op.device("exchange")
        ex.subscribe()
        resting = ex.submit_order("ACME", "sell", 10, price=101.0)
        assert resting["status"] == "sent"
        assert [r["status"] for r in _reports(ex, 1)] == ["new"]
        ex.submit_order("ACME", "buy", 4, price=101.0)
        fills = _reports(ex, 3)
        assert {r["status"] for r in fills} >= {"filled", "partially_filled"}
        assert ex.positions().get("ACME", 0.0) == 0.0  # the operator sees the account: +4 and -4
        assert [o["client_id"] for o in ex.orders()] == [resting["client_id"]]
    assert venue_module_book is not None


def test_an_agent_trades_only_within_its_grant_and_the_risk_limits(make_kernel, venue):
    venue.set_reference("ACME", 100.0)
    k = _kernel(make_kernel, venue)
    with k.client() as op:
        trader_grant = {**GRANT, "max_order_qty": 50}  # below the global 100: the kernel's check refuses
        op.spawn("trader", agent_script("exchange_user.py"), args=["limits"], devices={"exchange": trader_grant})
        op.spawn("nogrant", agent_script("exchange_user.py"), args=["nogrant"])
        trader, nogrant = read_report(k, "trader"), read_report(k, "nogrant")
    assert trader["first"]["status"] == "sent"
    assert trader["bolt"] == ["perm.denied", "symbol"]  # not granted: refused by the kernel
    # Every limit is risk.denied, wherever it is checked; only what is outside the grant is perm.denied.
    assert trader["big"] == ["risk.denied", "max_order_qty"]  # the grant's, checked by the kernel
    assert trader["dup"] == ["risk.denied", "bad_order"]  # a client id used already, checked by the driver
    assert trader["position"] == ["risk.denied", "max_position"]
    assert trader["collar_or_ok"] in (["ok", None], ["risk.denied", "price_collar"])
    assert trader["own_orders"] >= 1
    assert nogrant == {"submit": "perm.denied"}


def test_the_venue_rate_is_shared_by_agents_on_one_credential(make_kernel, venue):
    venue.set_reference("ACME", 100.0)
    k = _kernel(make_kernel, venue, rate=5)
    grant = {**GRANT, "max_position": 1000, "max_open_orders": 100}
    with k.client() as op:
        op.spawn("a", agent_script("exchange_user.py"), args=["burst", "5"], devices={"exchange": grant})
        first = read_report(k, "a")
        op.spawn("b", agent_script("exchange_user.py"), args=["burst", "5"], devices={"exchange": grant})
        second = read_report(k, "b")
    assert first["sent"] >= 1
    assert "venue_order_rate" in second["reasons"]  # a's burst spent the shared bucket


def test_kill_switch_cancels_every_open_order_and_blocks_new_ones(make_kernel, venue):
    venue.set_reference("ACME", 100.0)
    k = _kernel(make_kernel, venue)
    with k.client() as op:
        ex = op.device("exchange")
        ex.subscribe()
        for price in (95.0, 96.0, 97.0):
            ex.submit_order("ACME", "buy", 1, price=price)
        _reports(ex, 3, status="new")
        assert len(venue.orders("CLOVE", open_only=True)) == 3
        halted = ex.call("set_state", state="HALTED", reason="test")
        assert halted["state"] == "HALTED" and len(halted["cancelling"]) == 3
        _reports(ex, 3, status="canceled")
        assert venue.orders("CLOVE", open_only=True) == []
        with pytest.raises(PermissionDenied) as denied:
            ex.submit_order("ACME", "buy", 1, price=99.0)
        assert denied.value.details["reason"] == "state_halted"
        ex.call("set_state", state="REDUCING")
        with pytest.raises(PermissionDenied) as reducing:
            ex.submit_order("ACME", "buy", 1, price=99.0)  # flat: nothing to reduce
        assert reducing.value.details["reason"] == "state_reducing"
        ex.call("set_state", state="ACTIVE")
        assert ex.submit_order("ACME", "buy", 1, price=99.0)["status"] == "sent"


def test_fail_closed_without_a_reference_price(make_kernel, venue):
    k = _kernel(make_kernel, venue)
    with k.client() as op:
        ex = op.device("exchange")
        with pytest.raises(PermissionDenied) as denied:
            ex.submit_order("GHOST", "buy", 1, type="market")  # the venue never quotes GHOST
        assert denied.value.details["reason"] in ("no_reference_price", "unknown_instrument")


def test_a_sequence_gap_is_repaired_by_resend(make_kernel, venue):
    venue.set_reference("ACME", 100.0)
    k = _kernel(make_kernel, venue)
    with k.client() as op:
        ex = op.device("exchange")
        ex.subscribe()
        venue.skip_seqnum("CLOVE")
        ex.submit_order("ACME", "buy", 1, price=90.0)
        ex.submit_order("ACME", "buy", 1, price=91.0)
        assert [r["status"] for r in _reports(ex, 2)] == ["new", "new"]
        status = ex.call("status")
        assert status["session"] == "active" and status["open_orders"] == 2


def test_a_killed_driver_host_reconciles_with_nothing_lost_or_duplicated(make_kernel, venue):
    from clove_driver_exchange.fix import FixSession, SeqStore, connect
    from clove_driver_exchange.fix import messages as fix

    venue.set_reference("ACME", 100.0)
    k = _kernel(make_kernel, venue)
    with k.client() as op:
        ex = op.device("exchange")
        ex.subscribe()
        a = ex.submit_order("ACME", "sell", 5, price=102.0)["client_id"]
        b = ex.submit_order("ACME", "sell", 5, price=103.0)["client_id"]
        _reports(ex, 2, status="new")
        before = op.device("exchange").info()
        os.kill(before["host_pid"], 9)
        # While the gateway is down another firm lifts order a at the venue.
        other = FixSession("initiator", "OTHER", "VENUE", SeqStore(os.path.join(k.dir, "other.json"), fsync=False), heartbeat_s=5, username="OTHER", password="other")
        conn = connect(other, "127.0.0.1", venue.port)
        poll_for(lambda: other.state == "active", 10, message="the other firm's logon")
        other.send_app(*fix.new_order_single("x1", "ACME", "buy", 5, price=102.0))
        poll_for(lambda: any(f for f in venue.fills("CLOVE")), 10, message="the fill at the venue")
        conn.close("done")
        poll_for(lambda: (d := op.device("exchange").info())["state"] == "ready" and d["incarnation"] > before["incarnation"], 20, message="the host back")
        poll_for(lambda: ex.positions().get("ACME") == -5.0, 10, message="the fill recovered from the venue's resend")
        assert [o["client_id"] for o in ex.orders()] == [b]
        journal = [line for line in (k.state_dir / "devices" / "exchange" / "state" / "orders.jsonl").read_text().splitlines() if '"exec"' in line]
        exec_ids = [line.split('"exec_id":"')[1].split('"')[0] for line in journal if '"exec_id":"' in line]
        assert len(exec_ids) == len(set(exec_ids)), "an execution applied twice"
        assert a not in [o["client_id"] for o in ex.orders()]


def _burst(k: Any, acked: list[str], stop: threading.Event, worker: int) -> None:
    """Submit distinct orders back to back until ``stop``; keep the ids of those acknowledged."""
    with k.client() as op:
        ex = op.device("exchange")
        i = 0
        while not stop.is_set():
            client_id = f"b{worker}-{i}"
            try:
                ex.submit_order("ACME", "buy", 1 + i // 100, price=round(95.0 + worker + (i % 100) * 0.01, 2), client_id=client_id)
            except CloveError:
                return  # the host died under this call: its outcome is unknown, never acknowledged
            acked.append(client_id)
            i += 1


def test_a_host_killed_mid_burst_keeps_every_acknowledged_order(make_kernel, venue):
    venue.set_reference("ACME", 100.0)
    k = _kernel(make_kernel, venue, rate=100_000, fsync=True)
    state = k.state_dir / "devices" / "exchange" / "state"
    acked: list[str] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_burst, args=(k, acked, stop, w), daemon=True) for w in range(3)]
    for worker in workers:
        worker.start()
    with k.client() as op:
        poll_for(lambda: len(acked) >= 60, 30, message="a burst under way")
        before = op.device("exchange").info()
        os.kill(before["host_pid"], signal.SIGKILL)
        stop.set()
        for worker in workers:
            worker.join(30)
        poll_for(lambda: (d := op.device("exchange").info())["state"] == "ready" and d["incarnation"] > before["incarnation"], 20, message="the host back")
        records = [json.loads(line) for line in (state / "orders.jsonl").read_text().splitlines()]  # every line parses
        assert [r["n"] for r in records] == list(range(1, len(records) + 1)), "journal records lost or reordered"
        journaled = {r["client_id"] for r in records if r["kind"] == "order"}
        assert set(acked) <= journaled, f"acknowledged but not journaled: {sorted(set(acked) - journaled)}"
        stored = [json.loads(line) for line in (state / "fix-session.json").read_text().splitlines()]
        sent = [r for r in stored if "m" in r]
        assert [r["m"] for r in sent] == sorted({r["m"] for r in sent}), "the sequence store lost or reordered messages"
        in_store = {field[3:] for r in sent for field in r["raw"].split("\x01") if field.startswith("11=")}
        assert set(acked) <= in_store, f"acknowledged but not in the FIX store: {sorted(set(acked) - in_store)}"
        ex = op.device("exchange")
        poll_for(lambda: venue.session("CLOVE").next_target_seq == ex.call("status")["next_out_seq"], 10, message="the venue caught up on our sequence numbers")
        at_venue = {o.cl_ord_id for o in venue.orders("CLOVE")}
        assert set(acked) <= at_venue, f"acknowledged but never reached the venue: {sorted(set(acked) - at_venue)}"


def test_errors_while_the_venue_is_unreachable_are_clear(make_kernel, venue):
    k = _kernel(make_kernel, venue)
    venue.stop()
    with k.client() as op:
        def refused() -> bool:
            try:
                op.device("exchange").submit_order("ACME", "buy", 1, price=100.0)
            except (DeviceUnavailable, DeviceBroken):
                return True
            except CloveError:
                return False
            return False

        poll_for(refused, 20, message="device.unavailable while the venue is gone")
