"""The exchange driver acknowledges nothing before it is durable: with a fake fdatasync that
blocks until the test lets it go, an order's reply, its NewOrderSingle, a report's stream item and
the kill switch's cancels all wait for the sync that covers their records; what arrives during a
sync shares the next one; a failed sync acknowledges nothing and fails the stream.

The driver runs in this process against the simulated venue (``hil.exchange``), as in a host.
Run: ``.venv/bin/python -m pytest -q plugins/exchange/tests/test_durability.py``.
"""

from __future__ import annotations

import errno
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PLUGIN = Path(__file__).resolve().parents[1]
if str(PLUGIN) not in sys.path:  # until the plugin is installed (pip install -e plugins/exchange)
    sys.path.insert(0, str(PLUGIN))

from fake_disk import Disk  # noqa: E402

from clove.drivers import Later  # noqa: E402
from clove.errors import CloveError, DeviceBroken, DeviceUnavailable  # noqa: E402
from clove.testing.kernel import poll_for  # noqa: E402
from clove_driver_exchange.driver import ExchangeDriver  # noqa: E402
from clove_driver_exchange.fix import FixSession, SeqStore, connect  # noqa: E402
from clove_driver_exchange.fix import messages as fix  # noqa: E402
from clove_driver_exchange.fix.messages import MsgType, Tag  # noqa: E402

venue_module = pytest.importorskip("hil.exchange.venue")



@pytest.fixture
def venue() -> Iterator[Any]:
    v = venue_module.SimVenue(seed=7, liquidity=False, credentials={"CLOVE": "secret", "OTHER": "other"}).start()
    v.set_reference("ACME", 100.0)
    yield v
    v.stop()


@pytest.fixture
def driver(venue: Any, disk: Disk, tmp_path: Path) -> Iterator[ExchangeDriver]:
    config = ExchangeDriver.parse_config({
        "port": venue.port, "sender_comp_id": "CLOVE", "target_comp_id": "VENUE", "username": "CLOVE",
        "password": "secret", "symbols": ["ACME"], "heartbeat_s": 30, "fsync": True, "cancel_on_disconnect": False,
        "risk": {"max_order_qty": 100, "max_notional": 1_000_000, "order_rate_per_s": 1000},
    })  # fmt: skip
    d = ExchangeDriver(config)
    d.state_dir = str(tmp_path)
    d.sync_file = disk
    d.open()  # no liquidity: nothing trades but what a test sends (a limit order needs no reference)
    warm_up = Stream(d)
    _buy(d, "w0", 90.0).join(10)  # its acknowledgement is released by a commit covering all of the logon's
    poll_for(lambda: warm_up.execs("w0") == ["new"], message="the warm-up order acknowledged")
    yield d
    disk.release()
    d.close()


class Stream:
    """What the driver streamed so far (the host would forward it to the kernel)."""

    def __init__(self, driver: ExchangeDriver) -> None:
        self.driver = driver
        self.items: list[dict[str, Any]] = []

    def execs(self, client_id: str) -> list[str]:
        self.items.extend(self.driver.read(0))
        return [i["status"] for i in self.items if i["type"] == "exec" and i["client_id"] == client_id]

    def states(self) -> list[str]:
        self.items.extend(self.driver.read(0))
        return [i["state"] for i in self.items if i["type"] == "state"]


class Call(threading.Thread):
    """One operation on its own thread, as the host would run it; ``result`` is its reply."""

    def __init__(self, driver: ExchangeDriver, op: str, **args: Any) -> None:
        super().__init__(daemon=True)
        self.driver, self.op, self.args = driver, op, args
        self.result: Any = None
        self.error: CloveError | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.driver.call(self.op, self.args)
        except CloveError as err:
            self.error = err

    @property
    def replied(self) -> bool:
        return not self.is_alive()


def _journal(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "orders.jsonl").read_text().splitlines()]


def _sent_to_venue(venue: Any, client_id: str) -> bool:
    return any(m.msg_type == MsgType.NEW_ORDER_SINGLE and m.get(Tag.CL_ORD_ID) == client_id for m in venue.messages_received("CLOVE"))


def _at_venue(venue: Any, open_only: bool = False) -> list[str]:
    return [o.cl_ord_id for o in venue.orders("CLOVE", open_only=open_only)]


def _buy(driver: ExchangeDriver, client_id: str, price: float = 99.0) -> Call:
    return Call(driver, "submit_order", symbol="ACME", side="buy", qty=1, price=price, client_id=client_id)


def test_an_order_is_neither_sent_nor_acknowledged_before_its_records_are_durable(driver: ExchangeDriver, venue: Any, disk: Disk, tmp_path: Path) -> None:
    stream, base = Stream(driver), disk.started
    disk.hold()
    call = _buy(driver, "o1")
    poll_for(lambda: disk.started > base, message="the sync of the order's records")
    poll_for(lambda: any(r.get("client_id") == "o1" for r in _journal(tmp_path)), message="the order journaled (written)")
    assert not call.replied, "the reply went out before the order was durable"
    assert not _sent_to_venue(venue, "o1") and _at_venue(venue) == ["w0"]
    assert stream.execs("o1") == []
    disk.release()
    call.join(10)
    assert call.result == {"client_id": "o1", "status": "sent"}
    poll_for(lambda: stream.execs("o1") == ["new"], message="the acknowledgement")
    assert _at_venue(venue) == ["w0", "o1"]


def test_a_report_reaches_the_stream_only_once_durable(driver: ExchangeDriver, venue: Any, disk: Disk, tmp_path: Path) -> None:
    stream = Stream(driver)
    _buy(driver, "o1").join(10)
    poll_for(lambda: stream.execs("o1") == ["new"], message="the acknowledgement")
    other = FixSession("initiator", "OTHER", "VENUE", SeqStore(tmp_path / "other.seq", fsync=False), heartbeat_s=30, username="OTHER", password="other")
    conn = connect(other, "127.0.0.1", venue.port)
    try:
        poll_for(lambda: other.state == "active", message="the other firm's logon")
        base = disk.started
        disk.hold()
        other.send_app(*fix.new_order_single("x1", "ACME", "sell", 1, price=99.0))
        poll_for(lambda: any(r.get("status") == "filled" for r in _journal(tmp_path)), message="the fill journaled (written)")
        poll_for(lambda: disk.started > base, message="the sync of the fill's record")
        assert stream.execs("o1") == ["new"], "the fill streamed before it was durable"
        disk.release()
        poll_for(lambda: stream.execs("o1") == ["new", "filled"], message="the fill on the stream")
    finally:
        conn.close("done")


def test_orders_that_arrive_during_a_sync_share_the_next_one(driver: ExchangeDriver, disk: Disk, tmp_path: Path) -> None:
    base = disk.started
    disk.hold()
    first = _buy(driver, "o1", 95.0)
    poll_for(lambda: disk.started == base + 2, message="commit 1: the journal and the sequence store")
    rest = [_buy(driver, f"o{i}", 95.0 + i) for i in range(2, 6)]  # the host would queue these
    poll_for(lambda: sum(r["kind"] == "order" for r in _journal(tmp_path)) == 6, message="four more orders written")
    assert not first.replied and not any(c.replied for c in rest)
    disk.step()
    disk.step()
    poll_for(lambda: first.replied and disk.started == base + 4, message="order 1 acknowledged, commit 2 started")
    assert not any(c.replied for c in rest)
    disk.step()
    disk.step()
    poll_for(lambda: all(c.replied for c in rest), message="orders 2-5 acknowledged")
    assert [c.result["status"] for c in (first, *rest)] == ["sent"] * 5
    commit = driver.call("status")["commit"]
    assert commit["records"] >= 10 and commit["commits"] <= commit["records"] / 2  # ≥ 8 writes in commit 2


def test_the_kill_switch_cancels_only_once_its_records_are_durable(driver: ExchangeDriver, venue: Any, disk: Disk) -> None:
    stream, base = Stream(driver), disk.started
    disk.hold()
    halt = Call(driver, "set_state", state="HALTED", reason="test")
    poll_for(lambda: disk.started > base, message="the sync of the state and cancel records")
    assert not halt.replied and stream.states() == []
    assert _at_venue(venue, open_only=True) == ["w0"]  # no cancel has left yet
    disk.release()
    halt.join(10)
    assert halt.result["cancelling"] == ["w0"] and stream.states() == ["HALTED"]
    poll_for(lambda: venue.orders("CLOVE", open_only=True) == [], message="the cancel at the venue")


def test_a_failed_sync_acknowledges_nothing_and_fails_the_stream(driver: ExchangeDriver, venue: Any, disk: Disk) -> None:
    disk.fail = OSError(errno.EIO, "Input/output error")
    call = _buy(driver, "o1")
    call.join(10)
    assert isinstance(call.error, DeviceBroken) and "Input/output error" in call.error.message
    with pytest.raises(DeviceBroken, match="sync failed"):
        poll_for(lambda: driver.read(0) and False, timeout=5, message="the stream to fail")
    assert not _sent_to_venue(venue, "o1") and _at_venue(venue) == ["w0"]


# ---- as the host calls it: begin_call returns at once, a Later settles the reply ----------------


def _begin_buy(driver: ExchangeDriver, client_id: str, price: float) -> Later:
    later = driver.begin_call("submit_order", {"symbol": "ACME", "side": "buy", "qty": 1, "price": price, "client_id": client_id})
    assert isinstance(later, Later)
    return later


def test_the_host_takes_the_next_orders_while_a_commit_runs_and_they_share_the_next(driver: ExchangeDriver, venue: Any, disk: Disk, tmp_path: Path) -> None:
    base = disk.started
    disk.hold()
    first = _begin_buy(driver, "p1", 95.0)  # returns at once: the host's main thread is free
    poll_for(lambda: disk.started == base + 2, message="commit 1: the journal and the sequence store")
    rest = [_begin_buy(driver, f"p{i}", 95.0 + i) for i in range(2, 6)]  # taken during commit 1
    assert sum(r["kind"] == "order" for r in _journal(tmp_path)) == 6  # w0 and p1-p5, written
    assert not first.settled and not any(later.settled for later in rest)
    assert not any(_sent_to_venue(venue, f"p{i}") for i in range(1, 6))
    disk.step()
    disk.step()
    poll_for(lambda: first.settled and disk.started == base + 4, message="p1 durable, commit 2 started")
    assert first.wait(0) == {"client_id": "p1", "status": "sent"}
    assert not any(later.settled for later in rest)
    disk.step()
    disk.step()
    poll_for(lambda: all(later.settled for later in rest), message="p2-p5 durable, in one commit")
    assert [later.wait(0)["client_id"] for later in rest] == ["p2", "p3", "p4", "p5"]  # four syncs let through: two commits


def test_a_failed_sync_rejects_every_pending_reply(driver: ExchangeDriver, venue: Any, disk: Disk) -> None:
    disk.hold()
    disk.fail = OSError(errno.EIO, "Input/output error")
    pending = [_begin_buy(driver, f"f{i}", 80.0 + i) for i in range(3)]
    disk.release()
    poll_for(lambda: all(later.settled for later in pending), message="every reply settled")
    for later in pending:
        with pytest.raises(DeviceBroken, match="Input/output error"):
            later.wait(0)
    assert not any(_sent_to_venue(venue, f"f{i}") for i in range(3))
    with pytest.raises(DeviceUnavailable, match="sync failed"):  # nothing new is taken on a journal that failed
        driver.begin_call("submit_order", {"symbol": "ACME", "side": "buy", "qty": 1, "price": 85.0, "client_id": "f9"})
