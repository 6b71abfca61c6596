"""The simulated exchange: the order book on its own, then the venue over real TCP on 127.0.0.1
with clients built from the same FIX engine the exchange driver uses.

Run: ``.venv/bin/python -m pytest -q hil/tests/test_exchange_sim.py``. ``-s`` shows the
throughput report (``EXCHANGE_BENCH_ORDERS`` sets its order count).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "plugins" / "exchange"):  # the plugin may not be installed yet
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from clove_driver_exchange.fix import messages as m  # noqa: E402
from clove_driver_exchange.fix.messages import Message, MsgType, Tag  # noqa: E402
from clove_driver_exchange.fix.session import FixSession  # noqa: E402
from clove_driver_exchange.fix.store import SeqStore  # noqa: E402
from clove_driver_exchange.fix.transport import FixConnection, connect  # noqa: E402
from hil.exchange import BookError, Order, OrderBook, SimVenue  # noqa: E402

CREDENTIALS = {"CLOVE": "secret", "BOB": "hunter2"}


# ---- helpers ------------------------------------------------------------------------------------


def wait_until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class Client:
    """A FIX initiator against the venue: the driver's side of the wire, minus the driver."""

    def __init__(
        self,
        venue: SimVenue,
        store_dir: Path,
        comp_id: str = "CLOVE",
        *,
        username: str | None = None,
        password: str | None = None,
        cancel_on_disconnect: bool = False,
    ) -> None:
        self.venue = venue
        self.messages: list[Message] = []
        self.disconnects: list[str] = []
        self.lock = threading.Lock()
        self.session = FixSession(
            "initiator", comp_id, venue.sender, SeqStore(store_dir / f"{comp_id}.seq", fsync=False), 30.0,
            on_app_message=self._on_message, username=username or comp_id,
            password=password if password is not None else CREDENTIALS.get(comp_id),
            cancel_on_disconnect=cancel_on_disconnect,
        )
        self.conn: FixConnection | None = None
        self.ids = 0

    def _on_message(self, msg: Message) -> None:
        with self.lock:
            self.messages.append(msg)

    def _on_disconnect(self, conn: FixConnection, reason: str) -> None:
        self.disconnects.append(reason)

    def connect(self, *, expect_active: bool = True) -> Client:
        self.conn = connect(self.session, "127.0.0.1", self.venue.port, on_disconnect=self._on_disconnect)
        if expect_active:
            wait_until(lambda: self.session.is_active, what=f"{self.session.sender} logged on")
        return self

    def close(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed:
            self.session.logout()
            if not conn.join(2.0):
                conn.close()
                conn.join(2.0)
        self.session.store.close()

    def next_id(self) -> str:
        self.ids += 1
        return f"{self.session.sender}-{self.ids}"

    def order(
        self,
        symbol: str,
        side: str,
        qty: float,
        price: float | None = None,
        *,
        cl_ord_id: str | None = None,
        tif: str = "day",
        account: str | None = "alice",
    ) -> str:
        cl_ord_id = cl_ord_id or self.next_id()
        self.session.send_app(*m.new_order_single(
            cl_ord_id, symbol, side, qty, ord_type="limit" if price is not None else "market", price=price,
            time_in_force=tif, account=account,
        ))
        return cl_ord_id

    def cancel(self, orig: str, symbol: str = "ACME", side: str = "buy") -> str:
        cl_ord_id = self.next_id()
        self.session.send_app(*m.order_cancel_request(cl_ord_id, orig, symbol, side))
        return cl_ord_id

    def received(self, pred: Callable[[Message], bool]) -> list[Message]:
        with self.lock:
            return [msg for msg in self.messages if pred(msg)]

    def reports(self, cl_ord_id: str) -> list[Message]:
        return self.received(
            lambda msg: msg.msg_type == MsgType.EXECUTION_REPORT and msg.get(Tag.CL_ORD_ID) == cl_ord_id
        )

    def wait_report(
        self, cl_ord_id: str, exec_type: str, count: int = 1, timeout: float = 5.0
    ) -> list[Message]:
        def found() -> list[Message]:
            hits = [r for r in self.reports(cl_ord_id) if r[Tag.EXEC_TYPE] == exec_type]
            return hits if len(hits) >= count else []
        hits: list[Message] = wait_until(found, timeout, f"{count} report(s) 150={exec_type} for {cl_ord_id}")
        return hits

    def wait_for(self, pred: Callable[[Message], bool], count: int = 1, timeout: float = 5.0,
                 what: str = "message") -> list[Message]:
        def found() -> list[Message]:
            hits = self.received(pred)
            return hits if len(hits) >= count else []

        result: list[Message] = wait_until(found, timeout, what)
        return result


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def venue_factory(tmp_path: Path) -> Iterator[Callable[..., SimVenue]]:
    venues: list[SimVenue] = []

    def make(**options: Any) -> SimVenue:
        options.setdefault("credentials", CREDENTIALS)
        options.setdefault("liquidity", False)
        options.setdefault("seed", 7)
        options.setdefault("store_dir", tmp_path / f"venue{len(venues)}")
        venue = SimVenue(**options).start()
        venues.append(venue)
        return venue

    yield make
    for venue in venues:
        venue.stop()


@pytest.fixture
def venue(venue_factory: Callable[..., SimVenue]) -> SimVenue:
    return venue_factory()


@pytest.fixture
def client_factory(venue: SimVenue, tmp_path: Path) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(comp_id: str = "CLOVE", **options: Any) -> Client:
        client = Client(venue, tmp_path / "clients", comp_id, **options)
        clients.append(client)
        return client.connect(expect_active=options.get("password") is None)

    (tmp_path / "clients").mkdir()
    yield make
    for client in clients:
        client.close()


# ---- the book -----------------------------------------------------------------------------------


def _order(n: int, side: str, qty: float, price: float | None = None, tif: str = "day",
           owner: str = "a") -> Order:
    return Order(f"O{n}", f"C{n}", owner, "ACME", side, qty,  # type: ignore[arg-type]
                 "limit" if price is not None else "market", price, tif)  # type: ignore[arg-type]


def test_the_book_matches_by_price_then_time_at_the_resting_price() -> None:
    book = OrderBook("ACME")
    for n, price in ((1, 100.02), (2, 100.01), (3, 100.01), (4, 100.03)):
        book.submit(_order(n, "sell", 10, price, owner=f"s{n}"))
    assert book.best_ask() == (100.01, 20)
    result = book.submit(_order(9, "buy", 25, 100.02, owner="b"))
    fills = [(e.order.order_id, e.qty, e.price) for e in result.executions if e.order.owner != "b"]
    assert fills == [("O2", 10, 100.01), ("O3", 10, 100.01), ("O1", 5, 100.02)]  # price, then time
    assert result.order.status == "filled"
    assert not result.rested
    assert result.order.avg_px == pytest.approx((10 * 100.01 + 10 * 100.01 + 5 * 100.02) / 25)
    assert book.get("O1") is not None
    assert book.get("O1").leaves_qty == 5
    assert book.get("O1").status == "partially_filled"  # type: ignore[union-attr]
    assert book.best_ask() == (100.02, 5)
    assert book.last_trade is not None
    assert (book.last_trade.price, book.last_trade.qty) == (100.02, 5)
    assert book.depth() == ([], [(100.02, 5), (100.03, 10)])


def test_a_partly_filled_limit_order_rests_and_can_be_found_and_canceled() -> None:
    book = OrderBook("ACME")
    book.submit(_order(1, "sell", 10, 100.0))
    result = book.submit(_order(2, "buy", 30, 100.0, owner="b"))
    assert result.rested
    assert result.order.cum_qty == 10
    assert result.order.leaves_qty == 20
    assert book.best_bid() == (100.0, 20)
    assert book.best_ask() is None
    assert book.by_cl_ord_id("b", "C2") is result.order
    assert book.cancel("O2") is result.order
    assert result.order.status == "canceled"
    assert book.best_bid() is None
    assert book.cancel("O2") is None
    assert book.by_cl_ord_id("b", "C2") is None


def test_ioc_fills_what_it_can_and_expires_the_rest() -> None:
    book = OrderBook("ACME")
    book.submit(_order(1, "sell", 10, 100.0))
    book.submit(_order(2, "sell", 10, 100.5))
    result = book.submit(_order(3, "buy", 15, 100.2, tif="ioc"))
    assert [e.qty for e in result.executions if e.order is result.order] == [10]
    assert result.expired_qty == 5
    assert result.order.status == "expired"
    assert not result.rested
    assert book.best_bid() is None
    assert book.best_ask() == (100.5, 10)


def test_fok_fills_completely_or_not_at_all() -> None:
    book = OrderBook("ACME")
    book.submit(_order(1, "sell", 10, 100.0))
    book.submit(_order(2, "sell", 10, 100.1))
    refused = book.submit(_order(3, "buy", 25, 100.1, tif="fok"))
    assert refused.executions == []
    assert refused.expired_qty == 25
    assert refused.order.status == "expired"
    assert book.best_ask() == (100.0, 10)  # untouched
    filled = book.submit(_order(4, "buy", 20, 100.1, tif="fok"))
    assert filled.order.status == "filled"
    assert filled.order.cum_qty == 20
    assert book.best_ask() is None


def test_a_market_order_takes_any_price_and_expires_what_the_book_lacks() -> None:
    book = OrderBook("ACME")
    book.submit(_order(1, "buy", 5, 99.0))
    book.submit(_order(2, "buy", 5, 98.0))
    result = book.submit(_order(3, "sell", 12))
    assert [(e.price, e.qty) for e in result.executions if e.order is result.order] == [(99.0, 5), (98.0, 5)]
    assert result.expired_qty == 2
    assert result.order.status == "expired"


def test_the_book_refuses_off_tick_prices_and_bad_quantities() -> None:
    book = OrderBook("ACME", tick=0.01)
    with pytest.raises(BookError, match="tick"):
        book.submit(_order(1, "buy", 5, 100.005))
    with pytest.raises(BookError, match="positive"):
        book.submit(_order(2, "buy", 0, 100.0))
    assert book.best_bid() is None


# ---- orders over FIX ----------------------------------------------------------------------------


def test_an_order_lifecycle_over_fix(venue: SimVenue, client_factory: Callable[..., Client]) -> None:
    seller, buyer = client_factory("CLOVE"), client_factory("BOB")
    ask = seller.order("ACME", "sell", 100, 100.0, account="alice")
    new = seller.wait_report(ask, "0")[0]
    assert (new[Tag.ORD_STATUS], new[Tag.LEAVES_QTY], new[Tag.ACCOUNT]) == ("0", "100", "alice")
    bid = buyer.order("ACME", "buy", 60, 100.0, account="bob")
    buyer.wait_report(bid, "0")
    trade = buyer.wait_report(bid, "F")[0]
    fields = (Tag.ORD_STATUS, Tag.LAST_QTY, Tag.LAST_PX, Tag.CUM_QTY)
    assert [trade[t] for t in fields] == ["2", "60", "100", "60"]
    passive = seller.wait_report(ask, "F")[0]
    assert (passive[Tag.ORD_STATUS], passive[Tag.CUM_QTY], passive[Tag.LEAVES_QTY]) == ("1", "60", "40")
    assert passive[Tag.ORDER_ID] == new[Tag.ORDER_ID]
    assert passive[Tag.EXEC_ID] != new[Tag.EXEC_ID]
    assert venue.positions("CLOVE") == {"ACME": -60}
    assert venue.positions("BOB") == {"ACME": 60}
    assert venue.positions("CLOVE", account="alice") == {"ACME": -60}
    assert venue.positions("CLOVE", account="nobody") == {}
    assert sorted((f.session, f.aggressor) for f in venue.fills()) == [("BOB", True), ("CLOVE", False)]

    cancel = seller.cancel(ask, side="sell")
    canceled = seller.wait_report(cancel, "4")[0]
    assert [canceled[t] for t in (Tag.ORIG_CL_ORD_ID, Tag.ORD_STATUS, Tag.LEAVES_QTY)] == [ask, "4", "0"]
    assert [o.status for o in venue.orders("CLOVE")] == ["canceled"]
    assert venue.book("ACME").best_ask() is None

    too_late = seller.cancel(ask, side="sell")
    unknown = seller.cancel("no-such-order")
    rejects = seller.wait_for(lambda msg: msg.msg_type == MsgType.ORDER_CANCEL_REJECT, 2)
    by_id = {r[Tag.CL_ORD_ID]: r for r in rejects}
    assert (by_id[too_late][Tag.CXL_REJ_REASON], by_id[too_late][Tag.ORD_STATUS]) == ("0", "4")
    assert by_id[unknown][Tag.CXL_REJ_REASON] == "1"
    assert by_id[unknown][Tag.ORDER_ID] == "NONE"
    assert by_id[too_late][Tag.CXL_REJ_RESPONSE_TO] == "1"


def test_duplicate_clordid_and_unknown_symbol_are_rejected(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory()
    first = client.order("ACME", "buy", 10, 90.0, cl_ord_id="dup")
    client.wait_report(first, "0")
    client.order("ACME", "buy", 5, 91.0, cl_ord_id="dup")
    rejected = client.wait_report("dup", "8")[0]
    assert (rejected[Tag.ORD_STATUS], rejected[Tag.TEXT]) == ("8", "duplicate ClOrdID")
    odd = client.order("NOPE", "buy", 5, 1.0)
    assert client.wait_report(odd, "8")[0][Tag.TEXT] == "unknown symbol NOPE"
    off_tick = client.order("ACME", "buy", 5, 90.005)
    assert "tick" in client.wait_report(off_tick, "8")[0][Tag.TEXT]
    orders = venue.orders("CLOVE")
    assert [(o.cl_ord_id, o.status) for o in orders] == [
        ("dup", "new"), (odd, "rejected"), (off_tick, "rejected")
    ]
    assert venue.book("ACME").best_bid() == (90.0, 10)  # the duplicate never reached the book


def test_mass_status_after_a_reconnect_reports_the_open_orders(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory()
    ids = [client.order("ACME", "buy", 10, 95.0 + i) for i in range(2)]
    done = client.order("BOLT", "sell", 5, 20.0, tif="ioc")  # expires: not open
    for cl in ids:
        client.wait_report(cl, "0")
    client.wait_report(done, "C")
    client.session.logout()
    wait_until(lambda: client.conn is not None and client.conn.closed, what="logout")
    client.connect()
    client.session.send_app(*m.order_mass_status_request("ms-1"))
    reports = client.wait_for(lambda msg: msg.get(Tag.MASS_STATUS_REQ_ID) == "ms-1", 2)
    assert [r[Tag.CL_ORD_ID] for r in reports] == ids
    assert all(r[Tag.EXEC_TYPE] == "I" and r[Tag.ORD_STATUS] == "0" and r[Tag.TOT_NUM_REPORTS] == "2"
               for r in reports)
    assert [r.get(Tag.LAST_RPT_REQUESTED) for r in reports] == [None, "Y"]

    for cl in ids:
        client.wait_report(client.cancel(cl), "4")
    client.session.send_app(*m.order_mass_status_request("ms-2"))
    none = client.wait_for(lambda msg: msg.get(Tag.MASS_STATUS_REQ_ID) == "ms-2")[0]
    assert (none[Tag.ORDER_ID], none[Tag.TOT_NUM_REPORTS], none[Tag.LAST_RPT_REQUESTED]) == ("NONE", "0", "Y")


def test_cancel_on_disconnect_cancels_and_the_reports_arrive_by_resend(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory(cancel_on_disconnect=True)
    keeper = client_factory("BOB")  # no 8013: its order survives
    cl = client.order("ACME", "buy", 10, 99.0)
    kept = keeper.order("ACME", "buy", 10, 98.0)
    client.wait_report(cl, "0")
    keeper.wait_report(kept, "0")
    venue.disconnect("CLOVE")
    wait_until(lambda: client.disconnects, what="the client to see the drop")
    wait_until(lambda: [o.status for o in venue.orders("CLOVE")] == ["canceled"], what="cancel on disconnect")
    assert [o.status for o in venue.orders("BOB")] == ["new"]
    assert keeper.session.is_active
    assert venue.book("ACME").best_bid() == (98.0, 10)
    client.connect()
    canceled = client.wait_report(cl, "4")[0]
    assert canceled.poss_dup
    assert canceled[Tag.TEXT] == "canceled on disconnect"
    assert client.session.stats["resend_requests"] == 1


# ---- faults -------------------------------------------------------------------------------------


def test_reject_next_rejects_that_many_orders_with_the_text(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory()
    venue.reject_next(2, "venue says no")
    ids = [client.order("ACME", "buy", 1, 90.0) for _ in range(3)]
    assert [client.wait_report(cl, "8")[0][Tag.TEXT] for cl in ids[:2]] == ["venue says no"] * 2
    client.wait_report(ids[2], "0")


def test_throttle_rejects_orders_beyond_the_rate(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory()
    venue.throttle(5)
    ids = [client.order("ACME", "buy", 1, 90.0) for _ in range(8)]
    first = [wait_until(lambda cl=cl: client.reports(cl), what=cl)[0] for cl in ids]  # type: ignore[misc]
    assert [r[Tag.EXEC_TYPE] for r in first] == ["0"] * 5 + ["8"] * 3
    assert {r[Tag.TEXT] for r in first[5:]} == {"throttle"}
    venue.throttle(None)
    client.wait_report(client.order("ACME", "buy", 1, 90.0), "0")


def test_latency_delays_every_outbound_message(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory()
    venue.latency(0.3)
    start = time.monotonic()
    client.wait_report(client.order("ACME", "buy", 1, 90.0), "0")
    assert time.monotonic() - start >= 0.3
    venue.latency(0)
    start = time.monotonic()
    client.wait_report(client.order("ACME", "buy", 1, 90.0), "0")
    assert time.monotonic() - start < 0.25


def test_disconnect_drops_the_connection_and_the_client_can_log_on_again(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory()
    venue.disconnect()
    wait_until(lambda: client.disconnects and not client.session.connected, what="the drop")
    assert client.session.state == "disconnected"
    wait_until(lambda: venue.sessions() == {"CLOVE": "disconnected"}, what="the venue to notice")
    client.connect()
    client.wait_report(client.order("ACME", "buy", 1, 90.0), "0")


def test_a_skipped_sequence_number_is_repaired_by_resend(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory()
    venue.skip_seqnum("CLOVE")
    client.wait_report(client.order("ACME", "buy", 1, 90.0), "0")
    assert client.session.stats["resend_requests"] == 1
    assert any(msg.msg_type == MsgType.RESEND_REQUEST for msg in venue.messages_received("CLOVE"))
    session = venue.session("CLOVE")
    assert session is not None
    assert session.stats["gap_fills"] == 1
    assert client.session.next_target_seq == session.next_sender_seq


def test_wrong_credentials_are_refused_with_a_logout(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    client = client_factory(password="guess")
    wait_until(lambda: client.disconnects, what="the refusal")
    assert client.session.last_logout_text == "invalid username or password"
    assert venue.sessions()["CLOVE"] == "disconnected"


# ---- liquidity and market data ------------------------------------------------------------------


def _entries(msg: Message, kind: str) -> list[tuple[float, float]]:
    return [(float(e[Tag.MD_ENTRY_PX]), float(e[Tag.MD_ENTRY_SIZE]))
            for e in msg.groups.get(Tag.NO_MD_ENTRIES, []) if e[Tag.MD_ENTRY_TYPE] == kind]


def test_the_bot_provides_liquidity_and_snapshots_follow_the_book(
    venue_factory: Callable[..., SimVenue], tmp_path: Path
) -> None:
    venue = venue_factory(liquidity=True, bot_interval=3600.0)  # the market moves only when told
    client = Client(venue, tmp_path, "CLOVE").connect()
    try:
        client.session.send_app(*m.market_data_request("md-1", ["ACME"]))
        first = client.wait_for(lambda msg: msg.msg_type == MsgType.MARKET_DATA_SNAPSHOT)[0]
        assert first[Tag.MD_REQ_ID] == "md-1"
        assert first[Tag.SYMBOL] == "ACME"
        assert _entries(first, "0") == [(99.95, 100), (99.9, 100), (99.85, 100)]
        assert _entries(first, "1") == [(100.05, 100), (100.1, 100), (100.15, 100)]

        taker = client.order("ACME", "buy", 150, 100.1, tif="ioc")  # marketable: fills against the bot
        fills = client.wait_report(taker, "F", 2)
        assert [(r[Tag.LAST_PX], r[Tag.LAST_QTY]) for r in fills] == [("100.05", "100"), ("100.1", "50")]
        after = client.wait_for(lambda msg: msg.msg_type == MsgType.MARKET_DATA_SNAPSHOT
                                and _entries(msg, "2") == [(100.1, 50)])[0]
        assert _entries(after, "1")[0] == (100.1, 50)

        resting = client.order("ACME", "buy", 10, 99.99)  # inside the spread: rests
        client.wait_report(resting, "0")
        venue.set_reference("ACME", 99.5)  # the market drops through the bid
        hit = client.wait_report(resting, "F")[0]
        assert (hit[Tag.LAST_PX], hit[Tag.ORD_STATUS]) == ("99.99", "2")
        assert [f.aggressor for f in venue.fills("CLOVE")] == [True, True, False]
        assert venue.positions("CLOVE") == {"ACME": 160}

        client.session.send_app(*m.market_data_request("md-2", ["NOPE"]))
        reject = client.wait_for(lambda msg: msg.msg_type == MsgType.MARKET_DATA_REQUEST_REJECT)[0]
        assert reject[Tag.TEXT] == "unknown symbol NOPE"
    finally:
        client.close()


def test_the_reference_price_random_walks_and_subscribers_see_it(
    venue_factory: Callable[..., SimVenue], tmp_path: Path
) -> None:
    venue = venue_factory(liquidity=True, bot_interval=0.02, md_interval=0.02, bot_volatility=0.002)
    client = Client(venue, tmp_path, "CLOVE").connect()
    try:
        client.session.send_app(*m.market_data_request("md", ["BOLT"], depth=1))

        def best_bids() -> set[float]:
            snapshots = client.received(lambda msg: msg.msg_type == MsgType.MARKET_DATA_SNAPSHOT)
            assert all(len(_entries(s, "0")) == 1 == len(_entries(s, "1")) for s in snapshots)  # depth 1
            return {_entries(s, "0")[0][0] for s in snapshots}

        wait_until(lambda: len(best_bids()) >= 3, what="snapshots of a moving market")
        assert all(s.get(Tag.SYMBOL) == "BOLT" for s in client.received(lambda msg: msg.msg_type == "W"))
    finally:
        client.close()


# ---- lifecycle, the command line and throughput -------------------------------------------------


def test_start_and_stop_are_idempotent_and_free_the_port(tmp_path: Path) -> None:
    venue = SimVenue(store_dir=tmp_path, liquidity=False)
    assert venue.start() is venue.start()
    port = venue.port
    venue.stop()
    venue.stop()
    socket.create_server(("127.0.0.1", port)).close()  # the port is free again
    with pytest.raises(RuntimeError):
        venue.start()


def test_python_m_hil_exchange_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins" / "exchange")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.exchange", "--port", "0", "--symbol", "ACME=100", "--no-liquidity"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("venue ready on "), line
        port = int(line.split()[-1])
        session = FixSession("initiator", "CLOVE", "VENUE", SeqStore(tmp_path / "c.seq", fsync=False), 30.0,
                             username="CLOVE", password="secret")
        conn = connect(session, "127.0.0.1", port)
        wait_until(lambda: session.is_active, what="logon to the venue process")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert conn.join(5)
        assert session.last_logout_text == "the venue is shutting down"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_throughput_of_orders_through_the_venue(
    venue: SimVenue, client_factory: Callable[..., Client]
) -> None:
    count = int(os.environ.get("EXCHANGE_BENCH_ORDERS", "1000"))
    client = client_factory()
    start = time.perf_counter()
    last = ""
    for i in range(count):
        last = client.order("ACME", "buy" if i % 2 else "sell", 1, 100.0)  # alternate: half trade
    client.wait_report(last, "0", timeout=30)
    wait_until(lambda: len(client.received(lambda msg: msg[Tag.EXEC_TYPE] == "0")) == count, 30, "all acks")
    elapsed = time.perf_counter() - start
    print(f"\nexchange sim: {count} orders acknowledged in {elapsed:.2f} s = {count / elapsed:,.0f} orders/s "
          f"({len(client.received(lambda msg: True))} reports)")
    assert venue.positions("CLOVE") == {"ACME": 0}  # it traded with itself: net flat
    assert len(venue.fills("CLOVE")) == count  # every order traded against the one before it
