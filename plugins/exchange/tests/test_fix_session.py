"""The FIX session engine: two sessions wired back to back in memory (with a fake clock, so
timers are exact and nothing sleeps), then the same over a real TCP connection.

Run: ``.venv/bin/python -m pytest -q plugins/exchange/tests/test_fix_session.py``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1]
if str(PLUGIN) not in sys.path:  # until the plugin is installed (pip install -e plugins/exchange)
    sys.path.insert(0, str(PLUGIN))

from clove_driver_exchange.fix import messages as m  # noqa: E402
from clove_driver_exchange.fix.messages import Framer, Message, MsgType, Tag  # noqa: E402
from clove_driver_exchange.fix.session import FixSession  # noqa: E402
from clove_driver_exchange.fix.store import SeqStore  # noqa: E402
from clove_driver_exchange.fix.transport import FixConnection, connect  # noqa: E402

HB = 10.0


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Side:
    """One end of the in-memory link: a session and what it received."""

    def __init__(self, session: FixSession) -> None:
        self.session = session
        self.app: list[Message] = []
        self.inbound: list[Message] = []
        self.closed = 0
        session.on_app_message = self.app.append
        session.on_inbound = self.inbound.append

    def app_ids(self) -> list[str | None]:
        return [msg.get(Tag.CL_ORD_ID) for msg in self.app]

    def inbound_types(self) -> list[str]:
        return [msg.msg_type for msg in self.inbound]


class Link:
    """Two sessions back to back: what one sends is queued for the other until :meth:`pump`.

    ``tamper(direction, raw)`` sees every message in flight and returns what arrives instead
    (``None``: it is lost).
    """

    def __init__(self, a: Side, b: Side) -> None:
        self.a, self.b = a, b
        self.to_a: list[bytes] = []
        self.to_b: list[bytes] = []
        self.tamper: Callable[[str, bytes], bytes | None] | None = None
        self.wire_a_to_b: list[bytes] = []
        self.wire_b_to_a: list[bytes] = []
        a.session.connection_made(self.to_b.append, lambda: self._closed(a), owner=self)
        b.session.connection_made(self.to_a.append, lambda: self._closed(b), owner=self)

    @staticmethod
    def _closed(side: Side) -> None:
        side.closed += 1

    def pump(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            if not self.to_a and not self.to_b:
                return
            for direction, box, dest, wire in (("a>b", self.to_b, self.b, self.wire_a_to_b),
                                               ("b>a", self.to_a, self.a, self.wire_b_to_a)):
                batch, box[:] = list(box), []
                for raw in batch:
                    wire.append(raw)
                    delivered = self.tamper(direction, raw) if self.tamper else raw
                    if delivered is not None:
                        dest.session.feed(delivered)
        raise AssertionError("the sessions never went quiet")

    def disconnect(self) -> None:
        self.a.session.connection_lost(owner=self)
        self.b.session.connection_lost(owner=self)


def make_pair(
    tmp_path: Path,
    clock: Clock | None = None,
    *,
    password: str = "secret",
    a_store: SeqStore | None = None,
    b_store: SeqStore | None = None,
    **initiator_options: object,
) -> tuple[Side, Side]:
    clock = clock or Clock()
    a = FixSession(
        "initiator", "CLOVE", "VENUE", a_store or SeqStore(tmp_path / "a.seq", fsync=False), HB,
        clock=clock, username="CLOVE", password=password, cancel_on_disconnect=True,
        **initiator_options,  # type: ignore[arg-type]
    )
    b = FixSession(
        "acceptor", "VENUE", "CLOVE", b_store or SeqStore(tmp_path / "b.seq", fsync=False), HB,
        clock=clock, authenticate=lambda user, pw: (user, pw) == ("CLOVE", "secret"),
    )
    return Side(a), Side(b)


def logged_on(tmp_path: Path, clock: Clock | None = None, **kw: object) -> tuple[Side, Side, Link]:
    a, b = make_pair(tmp_path, clock, **kw)  # type: ignore[arg-type]
    link = Link(a, b)
    a.session.logon()
    link.pump()
    assert a.session.state == b.session.state == "active"
    return a, b, link


def order(n: int) -> m.Outgoing:
    return m.new_order_single(f"ORD-{n}", "ACME", "buy", 10, price=100.0, account="alice")


def ids(*ns: int) -> list[str | None]:
    return [f"ORD-{n}" for n in ns]


# ---- messages and framing -------------------------------------------------------------------------


def test_a_built_message_parses_back_with_header_groups_and_a_valid_checksum() -> None:
    body = m.market_data_snapshot("md1", "ACME", bids=[(99.99, 100), (99.98, 50)], offers=[(100.01, 75)],
                                  trade=(100.0, 5))
    raw = m.encode(*body, sender="VENUE", target="CLOVE", seq_num=7, sending_time=1_700_000_000.25)
    msg = m.parse(raw)
    assert msg.msg_type == MsgType.MARKET_DATA_SNAPSHOT
    assert (msg[Tag.SENDER_COMP_ID], msg[Tag.TARGET_COMP_ID], msg.seq_num) == ("VENUE", "CLOVE", 7)
    assert msg[Tag.SENDING_TIME] == "20231114-22:13:20.250"
    assert msg[Tag.SYMBOL] == "ACME"
    assert msg.groups[Tag.NO_MD_ENTRIES] == [
        {269: "0", 270: "99.99", 271: "100"},
        {269: "0", 270: "99.98", 271: "50"},
        {269: "1", 270: "100.01", 271: "75"},
        {269: "2", 270: "100", 271: "5"},
    ]
    request = m.parse(m.encode(*m.market_data_request("r1", ["ACME", "BOLT"]), sender="C", target="V",
                               seq_num=1, sending_time=0.0))
    assert [e[Tag.SYMBOL] for e in request.groups[Tag.NO_RELATED_SYM]] == ["ACME", "BOLT"]
    assert [e[Tag.MD_ENTRY_TYPE] for e in request.groups[Tag.NO_MD_ENTRY_TYPES]] == ["0", "1", "2"]


def test_the_framer_reassembles_messages_split_anywhere_and_skips_leading_junk() -> None:
    raws = [m.encode(*order(n), sender="A", target="B", seq_num=n, sending_time=0.0) for n in range(1, 4)]
    stream = b"junk\x01" + b"".join(raws)
    framer = Framer()
    frames = [f for i in range(len(stream)) for f in framer.feed(stream[i : i + 1])]
    assert [f.raw for f in frames] == raws
    assert all(f.error is None for f in frames)
    assert framer.buffered == 0


def test_a_bad_checksum_or_body_length_is_reported_and_the_framer_resyncs() -> None:
    good = m.encode(*order(1), sender="A", target="B", seq_num=1, sending_time=0.0)
    bad_sum = good[:-4] + (b"000" if not good.endswith(b"000\x01") else b"001") + b"\x01"
    length_at = good.index(b"\x019=") + 3
    length_end = good.index(b"\x01", length_at)
    bad_len = good[:length_at] + b"20" + good[length_end:]  # BodyLength(9) that misses the trailer
    frames = Framer().feed(bad_sum + bad_len + good)
    assert [f.error is None for f in frames] == [False, False, True]
    assert "CheckSum" in (frames[0].error or "")
    assert "BodyLength" in (frames[1].error or "")
    assert frames[2].raw == good
    with pytest.raises(m.FixError, match="CheckSum"):
        m.parse(bad_sum)


# ---- the store ------------------------------------------------------------------------------------


def test_the_store_survives_reopening_and_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "s.seq"
    store = SeqStore(path)
    store.store_message(1, b"one")
    store.set_next_sender_seq(3)  # an admin message took 2
    store.store_message(3, b"three")
    store.set_next_target_seq(9)
    store.close()
    with open(path, "a") as f:
        f.write('{"s": 99')  # the machine died mid-write
    again = SeqStore(path)
    assert (again.next_sender_seq, again.next_target_seq) == (4, 9)
    assert again.get_messages(1) == [(1, b"one"), (3, b"three")]
    assert again.get_messages(2, 2) == []
    again.set_next_target_seq(10)  # appends cleanly after the torn line was compacted away
    again.close()
    assert all(json.loads(line) for line in path.read_text().splitlines())
    third = SeqStore(path)
    assert third.next_target_seq == 10
    third.reset()
    assert (third.next_sender_seq, third.next_target_seq, len(third)) == (1, 1, 0)
    third.close()
    assert (SeqStore(path).next_sender_seq, len(SeqStore(path))) == (1, 0)


# ---- logon --------------------------------------------------------------------------------------


def test_logon_activates_both_sides_and_carries_credentials_and_cancel_on_disconnect(tmp_path: Path) -> None:
    a, b, _ = logged_on(tmp_path)
    logon = b.session.peer_logon
    assert logon is not None
    assert logon[Tag.USERNAME] == "CLOVE"
    assert logon[Tag.PASSWORD] == "secret"
    assert logon[Tag.CANCEL_ON_DISCONNECT] == "Y"
    assert logon[Tag.HEART_BT_INT] == "10"
    assert "554=***" in repr(logon)
    assert "secret" not in repr(logon)
    assert (a.session.next_sender_seq, a.session.next_target_seq) == (2, 2)
    assert (b.session.next_sender_seq, b.session.next_target_seq) == (2, 2)


def test_wrong_credentials_get_a_logout_with_the_reason_and_the_connection_closed(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, password="wrong")
    link = Link(a, b)
    a.session.logon()
    link.pump()
    assert b.session.state == "disconnected"
    assert b.closed == 1
    assert a.session.state == "disconnected"
    assert a.closed == 1
    assert a.session.last_logout_text == "invalid username or password"
    assert b.session.next_target_seq == 1  # the refused Logon consumed nothing


def test_a_logout_is_answered_and_both_sides_close(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.logout("done for the day")
    assert a.session.state == "logout_sent"
    link.pump()
    assert (a.session.state, b.session.state) == ("disconnected", "disconnected")
    assert (a.closed, b.closed) == (1, 1)
    assert b.session.last_logout_text == "done for the day"


# ---- liveness -----------------------------------------------------------------------------------


def test_silence_brings_a_heartbeat_then_a_test_request_then_a_disconnect(tmp_path: Path) -> None:
    clock = Clock()
    a, b, link = logged_on(tmp_path, clock)
    clock.now += HB
    a.session.tick()
    b.session.tick()  # B heard nothing for HB too, but the test request waits for 1.2 x HB
    link.pump()
    assert a.inbound_types()[-1] == MsgType.HEARTBEAT
    assert b.inbound_types()[-1] == MsgType.HEARTBEAT

    link.tamper = lambda d, raw: None if d == "b>a" else raw  # B goes silent toward A
    clock.now += HB * 1.2
    a.session.tick()
    link.pump()
    test_req = b.inbound[-1]
    assert test_req.msg_type == MsgType.TEST_REQUEST
    answer = m.parse(link.wire_b_to_a[-1])  # B answered; the answer was lost
    assert (answer.msg_type, answer[Tag.TEST_REQ_ID]) == (MsgType.HEARTBEAT, test_req[Tag.TEST_REQ_ID])
    clock.now += HB * 0.5
    a.session.tick()
    assert a.session.state == "active"
    clock.now += HB * 0.5
    a.session.tick()
    assert a.session.state == "disconnected"
    assert a.closed == 1
    assert "TestRequest" in (a.session.last_logout_text or "")


def test_an_answered_test_request_keeps_the_session_up(tmp_path: Path) -> None:
    clock = Clock()
    a, b, link = logged_on(tmp_path, clock)
    clock.now += HB * 1.2
    a.session.tick()
    link.pump()
    clock.now += HB
    a.session.tick()
    assert a.session.state == "active"


# ---- sequencing ---------------------------------------------------------------------------------


def test_application_messages_arrive_in_order(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    for n in range(1, 51):
        a.session.send_app(*order(n))
        if n % 7 == 0:
            link.pump()
    link.pump()
    assert b.app_ids() == ids(*range(1, 51))
    assert not any(msg.poss_dup for msg in b.app)
    assert b.session.next_target_seq == a.session.next_sender_seq


def test_a_lost_message_is_resent_with_poss_dup_and_delivered_in_order(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.send_app(*order(1))
    link.pump()
    lost = a.session.send_app(*order(2))
    link.tamper = lambda d, raw: None if m.parse(raw).seq_num == lost and not m.parse(raw).poss_dup else raw
    link.pump()
    assert b.app_ids() == ids(1)
    a.session.send_app(*order(3))
    link.pump()
    assert b.app_ids() == ids(1, 2, 3)
    resent = b.app[1]
    assert resent.poss_dup
    assert resent.seq_num == lost
    assert Tag.ORIG_SENDING_TIME in resent
    assert MsgType.RESEND_REQUEST in a.inbound_types()
    assert b.session.stats["resend_requests"] == 1
    assert a.session.stats["resent"] == 1


def test_admin_messages_are_gap_filled_not_resent(tmp_path: Path) -> None:
    clock = Clock()
    a, b, link = logged_on(tmp_path, clock)
    link.tamper = lambda d, raw: None if d == "a>b" else raw  # the line drops everything A sends
    a.session.send_app(*order(1))
    clock.now += HB
    a.session.tick()  # a Heartbeat: admin, so it will be gap-filled
    a.session.send_app(*order(2))
    link.pump()
    link.tamper = None
    a.session.send_app(*order(3))
    link.pump()
    assert b.app_ids() == ids(1, 2, 3)
    gap_fills = [msg for msg in b.inbound if msg.msg_type == MsgType.SEQUENCE_RESET]
    assert len(gap_fills) == 1
    fill = gap_fills[0]
    assert fill[Tag.GAP_FILL_FLAG] == "Y"
    assert fill.poss_dup
    assert int(fill[Tag.NEW_SEQ_NO]) == fill.seq_num + 1
    assert b.session.next_target_seq == a.session.next_sender_seq


def test_should_resend_turns_a_stale_order_into_a_gap_fill(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.should_resend = lambda msg: msg[Tag.CL_ORD_ID] != "ORD-2"
    link.tamper = lambda d, raw: None if d == "a>b" else raw
    for n in (1, 2, 3):
        a.session.send_app(*order(n))
    link.pump()
    link.tamper = None
    a.session.send_app(*order(4))
    link.pump()
    assert b.app_ids() == ids(1, 3, 4)
    assert (a.session.stats["resent"], a.session.stats["gap_fills"]) == (2, 1)
    assert b.session.next_target_seq == a.session.next_sender_seq


def test_a_skipped_sequence_number_is_repaired_by_a_gap_fill(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.skip_seqnum()
    a.session.send_app(*order(1))
    link.pump()
    assert b.app_ids() == ids(1)
    assert b.session.stats["resend_requests"] == 1
    assert a.session.stats["gap_fills"] == 1
    assert b.session.next_target_seq == a.session.next_sender_seq


def test_a_corrupted_message_is_ignored_then_recovered_by_resend(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    corrupted = []

    def flip(direction: str, raw: bytes) -> bytes | None:
        if direction == "a>b" and b"ORD-1" in raw and not corrupted:
            corrupted.append(raw)
            return raw.replace(b"ORD-1", b"ORD-X")  # same length: only the checksum catches it
        return raw

    link.tamper = flip
    a.session.send_app(*order(1))
    link.pump()
    assert b.session.stats["garbled"] == 1
    assert b.app == []
    assert b.session.next_target_seq == 2  # a garbled message consumes no sequence number
    a.session.send_app(*order(2))
    link.pump()
    assert b.app_ids() == ids(1, 2)


def test_a_duplicate_with_poss_dup_is_dropped(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.send_app(*order(1))
    link.pump()
    old = m.parse(link.wire_a_to_b[-1])
    b.session.feed(m.encode(old.msg_type, old.body(), sender="CLOVE", target="VENUE", seq_num=old.seq_num,
                            sending_time=0.0, poss_dup=True, orig_sending_time=old[Tag.SENDING_TIME]))
    assert b.app_ids() == ids(1)
    assert b.session.stats["duplicates"] == 1
    assert b.session.state == "active"


def test_a_sequence_number_too_low_without_poss_dup_ends_the_session(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.send_app(*order(1))
    link.pump()
    b.session.feed(m.encode(*order(9), sender="CLOVE", target="VENUE", seq_num=1, sending_time=0.0))
    link.pump()
    text = "MsgSeqNum too low, expecting 3 but received 1"
    assert b.session.state == "disconnected"
    assert b.closed == 1
    assert a.session.last_logout_text == text
    assert b.app_ids() == ids(1)


def test_a_wrong_comp_id_ends_the_session(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    b.session.feed(m.encode(*order(1), sender="MALLORY", target="VENUE", seq_num=2, sending_time=0.0))
    assert b.session.state == "disconnected"
    assert "CompID" in (b.session.last_logout_text or "")


# ---- reconnects and restarts --------------------------------------------------------------------


def test_a_restarted_acceptor_continues_the_sequence_and_gets_what_it_missed(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    for n in (1, 2):
        a.session.send_app(*order(n))
    link.pump()
    b_out, b_in = b.session.next_sender_seq, b.session.next_target_seq
    link.disconnect()
    b.session.store.close()  # the venue process dies

    a.session.send_app(*order(3))  # while disconnected: stored, not sent
    assert a.session.state == "disconnected"

    b2 = Side(FixSession("acceptor", "VENUE", "CLOVE", SeqStore(tmp_path / "b.seq", fsync=False), HB,
                         clock=a.session.clock))
    assert (b2.session.next_sender_seq, b2.session.next_target_seq) == (b_out, b_in)
    link2 = Link(a, b2)
    a.session.logon()
    link2.pump()
    assert a.session.state == b2.session.state == "active"
    assert b2.app_ids() == ids(3)  # asked for by resend after the Logon showed the gap
    assert b2.app[0].poss_dup
    a.session.send_app(*order(4))
    link2.pump()
    assert b2.app_ids() == ids(3, 4)
    assert b2.session.next_target_seq == a.session.next_sender_seq


def test_a_restarted_initiator_continues_its_numbering(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.send_app(*order(1))
    link.pump()
    out_seq = a.session.next_sender_seq
    link.disconnect()
    a.session.store.close()
    a2, _ = make_pair(tmp_path / "unused", a_store=SeqStore(tmp_path / "a.seq", fsync=False))
    assert a2.session.next_sender_seq == out_seq
    link2 = Link(a2, b)
    a2.session.logon()
    link2.pump()
    assert a2.session.state == b.session.state == "active"
    assert b.session.stats["resend_requests"] == 0  # no gap, nothing to repair
    a2.session.send_app(*order(2))
    link2.pump()
    assert b.app_ids() == ids(1, 2)


def test_reset_on_logon_starts_both_sides_at_one(tmp_path: Path) -> None:
    a, b, link = logged_on(tmp_path)
    a.session.send_app(*order(1))
    link.pump()
    link.disconnect()
    a.session.reset_on_logon = True
    link2 = Link(a, b)
    a.session.logon()
    link2.pump()
    assert a.session.state == b.session.state == "active"
    assert (a.session.next_sender_seq, b.session.next_target_seq) == (2, 2)
    assert b.session.peer_logon is not None
    assert b.session.peer_logon[Tag.RESET_SEQ_NUM_FLAG] == "Y"


# ---- over TCP -----------------------------------------------------------------------------------


def wait_until(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def test_fix_connections_carry_a_session_over_tcp_and_report_disconnects(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.session.clock = b.session.clock = time.time
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[FixConnection] = []
    reasons: dict[str, str] = {}
    ended = threading.Event()

    def on_disconnect(name: str) -> Callable[[FixConnection, str], None]:
        def record(conn: FixConnection, reason: str) -> None:
            reasons[name] = reason
            if len(reasons) == 2:
                ended.set()
        return record

    def accept() -> None:
        sock, _ = listener.accept()
        accepted.append(FixConnection(b.session, sock, on_disconnect=on_disconnect("b")).start())

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    conn = connect(a.session, "127.0.0.1", port, on_disconnect=on_disconnect("a"))
    acceptor.join(5)
    listener.close()
    wait_until(lambda: a.session.is_active and b.session.is_active, what="logon over TCP")
    for n in range(1, 101):
        a.session.send_app(*order(n))
    wait_until(lambda: len(b.app) == 100, what="100 orders")
    assert b.app_ids() == ids(*range(1, 101))
    a.session.logout()
    assert ended.wait(5), reasons
    assert conn.join(5)
    assert accepted[0].join(5)
    assert a.session.state == b.session.state == "disconnected"
    assert not a.session.connected
    assert not b.session.connected

    # an abrupt drop is visible too, and the session reconnects on a new socket
    a.session.clock = time.time
    left, right = socket.socketpair()
    ended.clear()
    reasons.clear()
    ca = FixConnection(a.session, left, on_disconnect=on_disconnect("a")).start()
    FixConnection(b.session, right, on_disconnect=on_disconnect("b")).start()
    a.session.logon()
    wait_until(lambda: a.session.is_active and b.session.is_active, what="second logon")
    ca.close("pulled the cable")
    assert ended.wait(5), reasons
    assert reasons["a"] == "pulled the cable"
    assert b.session.state == "disconnected"
