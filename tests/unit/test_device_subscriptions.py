"""clove.kernel.services.devices.subscriptions: bounded queues with counted drops, grant and filter
admission, and parked reads answered by data, by their timeout or by a newer read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from clove.errors import CloveError
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.devices.subscriptions import ReadWant, Subscription
from clove.testing.loopback import LoopbackGrant


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``call_later`` only; the test moves time and fires what is due."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted((t for t in self.timers if t.when <= self.now and not t.cancelled), key=lambda t: t.when)
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()

    def live(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


class Reply:
    """A Deferred and what it was settled with."""

    def __init__(self) -> None:
        self.deferred = Deferred()
        self.outcomes: list[tuple[Any, CloveError | None]] = []
        self.deferred.bind(lambda result, error: self.outcomes.append((result, error)))

    @property
    def done(self) -> bool:
        return bool(self.outcomes)

    @property
    def result(self) -> dict[str, Any]:
        assert len(self.outcomes) == 1, self.outcomes
        result, error = self.outcomes[0]
        assert error is None
        assert isinstance(result, dict)
        return result


def items_sub(
    limit: int = 100, grant: Any = None, wants: Callable[[Any], bool] | None = None
) -> Subscription:
    return Subscription(7, kind="items", limit=limit, grant=grant, wants=wants)


def bytes_sub(limit: int = 1024) -> Subscription:
    return Subscription(7, kind="bytes", limit=limit, grant=None, wants=None)


def frames(*tags: str) -> list[dict[str, Any]]:
    return [{"tag": tag, "seq": i} for i, tag in enumerate(tags, 1)]


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


# -- filling: items ------------------------------------------------------------------------------


def test_without_grant_or_filter_everything_is_queued() -> None:
    sub = items_sub()
    sub.offer_items(frames("a", "b"))
    assert list(sub.items) == frames("a", "b")
    assert sub.queued() == 2
    assert sub.admits is None
    assert sub.principal_id == 7


def test_items_pass_only_through_the_grant_and_the_filter() -> None:
    sub = items_sub(grant=LoopbackGrant(tags=("a", "b")), wants=lambda item: item["seq"] % 2 == 1)
    sub.offer_items(frames("a", "a", "b", "c", "a", "z"))  # seq 1..6
    assert [(i["tag"], i["seq"]) for i in sub.items] == [("a", 1), ("b", 3), ("a", 5)]  # not a2, c4, z6
    assert sub.dropped == 0  # filtered items are not drops


def test_the_grant_alone_filters() -> None:
    sub = items_sub(grant=LoopbackGrant(tags=("b",)))
    sub.offer_items(frames("a", "b", "c"))
    assert [i["tag"] for i in sub.items] == ["b"]


def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    sub = items_sub(limit=3)
    sub.offer_items(frames("a", "b", "c", "d", "e"))
    assert [i["tag"] for i in sub.items] == ["c", "d", "e"]
    assert sub.dropped == 2
    sub.offer_items([{"tag": "f"}, {"tag": "g"}])
    assert [i["tag"] for i in sub.items] == ["e", "f", "g"]
    assert sub.dropped == 4
    assert sub.take(ReadWant())["dropped"] == 4


def test_take_items_up_to_max_items() -> None:
    sub = items_sub()
    sub.offer_items(frames("a", "b", "c"))
    reply = sub.take(ReadWant(max_items=2))
    assert reply == {"success": True, "items": frames("a", "b"), "count": 2, "dropped": 0}
    assert sub.delivered == 2
    assert sub.take(ReadWant(max_items=2))["items"] == [{"tag": "c", "seq": 3}]
    assert sub.take(ReadWant()) == {"success": True, "items": [], "count": 0, "dropped": 0}
    assert sub.delivered == 3


# -- filling: bytes ------------------------------------------------------------------------------


def test_bytes_are_buffered_up_to_the_limit_dropping_the_oldest() -> None:
    sub = bytes_sub(limit=8)
    sub.offer_bytes(b"0123")
    assert (bytes(sub.buf), sub.dropped) == (b"0123", 0)
    sub.offer_bytes(b"456789")
    assert (bytes(sub.buf), sub.dropped) == (b"23456789", 2)
    sub.offer_bytes(b"abcdefghijk")  # more than the whole buffer at once
    assert (bytes(sub.buf), sub.dropped) == (b"defghijk", 2 + 11)
    assert sub.queued() == 8


def test_take_bytes_up_to_max_bytes() -> None:
    sub = bytes_sub()
    sub.offer_bytes(b"hello world")
    assert sub.take(ReadWant(max_bytes=5)) == {"success": True, "data": b"hello", "count": 5, "dropped": 0}
    assert sub.take(ReadWant(max_bytes=100))["data"] == b" world"
    assert sub.take(ReadWant())["data"] == b""
    assert sub.delivered == 11


def test_take_until_a_terminator() -> None:
    sub = bytes_sub()
    sub.offer_bytes(b"$GPGGA,1\r\n$GPRMC,2\r\nrest")
    want = ReadWant(until=b"\r\n")
    assert sub.take(want)["data"] == b"$GPGGA,1\r\n"
    assert sub.take(want)["data"] == b"$GPRMC,2\r\n"
    assert sub.take(want)["data"] == b"rest"  # no terminator: what there is
    assert sub.queued() == 0


def test_take_until_stops_at_max_bytes() -> None:
    sub = bytes_sub()
    sub.offer_bytes(b"abcdefgh\n")
    reply = sub.take(ReadWant(max_bytes=4, until=b"\n"))
    assert (reply["data"], reply["count"]) == (b"abcd", 4)
    assert sub.take(ReadWant(max_bytes=100, until=b"\n"))["data"] == b"efgh\n"


def test_a_terminator_straddling_max_bytes_is_not_split_off() -> None:
    sub = bytes_sub()
    sub.offer_bytes(b"abc\r\n")
    assert sub.take(ReadWant(max_bytes=4, until=b"\r\n"))["data"] == b"abc\r"
    assert sub.take(ReadWant(max_bytes=4, until=b"\r\n"))["data"] == b"\n"


# -- reads ---------------------------------------------------------------------------------------


def test_a_read_with_data_ready_is_answered_at_once(loop: FakeLoop) -> None:
    sub = items_sub()
    sub.offer_items(frames("a"))
    reply = Reply()
    sub.read(loop, ReadWant(), 5.0, reply.deferred)  # type: ignore[arg-type]
    assert reply.result["items"] == frames("a")
    assert loop.timers == []


@pytest.mark.parametrize("timeout", [None, 0, 0.0, -1.0])
def test_a_read_without_timeout_is_answered_at_once_even_empty(loop: FakeLoop, timeout: float | None) -> None:
    sub = items_sub()
    reply = Reply()
    sub.read(loop, ReadWant(), timeout, reply.deferred)  # type: ignore[arg-type]
    assert reply.result == {"success": True, "items": [], "count": 0, "dropped": 0}
    assert loop.timers == []


def test_a_parked_read_is_answered_when_data_arrives(loop: FakeLoop) -> None:
    sub = items_sub()
    reply = Reply()
    sub.read(loop, ReadWant(), 5.0, reply.deferred)  # type: ignore[arg-type]
    assert not reply.done
    (timer,) = loop.timers
    assert timer.when == 5.0
    sub.offer_items(frames("a", "b"))
    assert reply.result["items"] == frames("a", "b")
    assert timer.cancelled
    assert sub.queued() == 0
    sub.offer_items(frames("c"))  # nobody waits now: it queues
    assert sub.queued() == 1
    assert len(reply.outcomes) == 1


def test_items_the_grant_refuses_do_not_wake_a_read(loop: FakeLoop) -> None:
    sub = items_sub(grant=LoopbackGrant(tags=("a",)))
    reply = Reply()
    sub.read(loop, ReadWant(), 5.0, reply.deferred)  # type: ignore[arg-type]
    sub.offer_items(frames("x", "y"))
    assert not reply.done
    sub.offer_items(frames("a"))
    assert reply.result["items"] == [{"tag": "a", "seq": 1}]


def test_a_parked_read_times_out_empty(loop: FakeLoop) -> None:
    sub = items_sub()
    reply = Reply()
    sub.read(loop, ReadWant(), 2.0, reply.deferred)  # type: ignore[arg-type]
    loop.advance(1.5)
    assert not reply.done
    loop.advance(0.5)
    assert reply.result == {"success": True, "items": [], "count": 0, "dropped": 0}
    sub.offer_items(frames("late"))
    assert len(reply.outcomes) == 1
    assert sub.queued() == 1


def test_a_bytes_read_waits_for_the_terminator(loop: FakeLoop) -> None:
    sub = bytes_sub()
    reply = Reply()
    sub.read(loop, ReadWant(until=b"\n"), 5.0, reply.deferred)  # type: ignore[arg-type]
    sub.offer_bytes(b"ab")
    assert not reply.done
    sub.offer_bytes(b"c\nxy")
    assert reply.result["data"] == b"abc\n"
    assert bytes(sub.buf) == b"xy"
    assert loop.live() == []


def test_a_bytes_read_without_terminator_takes_any_data(loop: FakeLoop) -> None:
    sub = bytes_sub()
    reply = Reply()
    sub.read(loop, ReadWant(), 5.0, reply.deferred)  # type: ignore[arg-type]
    sub.offer_bytes(b"x")
    assert reply.result["data"] == b"x"


def test_a_bytes_read_until_is_answered_when_max_bytes_fill_up(loop: FakeLoop) -> None:
    sub = bytes_sub()
    reply = Reply()
    sub.read(loop, ReadWant(max_bytes=4, until=b"\n"), 5.0, reply.deferred)  # type: ignore[arg-type]
    sub.offer_bytes(b"abc")
    assert not reply.done
    sub.offer_bytes(b"defg")
    assert reply.result["data"] == b"abcd"
    assert bytes(sub.buf) == b"efg"


def test_a_bytes_read_until_times_out_with_the_partial_line(loop: FakeLoop) -> None:
    sub = bytes_sub()
    reply = Reply()
    sub.read(loop, ReadWant(until=b"\n"), 1.0, reply.deferred)  # type: ignore[arg-type]
    sub.offer_bytes(b"par")
    assert not reply.done
    loop.advance(1.0)
    assert reply.result == {"success": True, "data": b"par", "count": 3, "dropped": 0}


def test_a_ready_terminator_answers_a_read_at_once(loop: FakeLoop) -> None:
    sub = bytes_sub()
    sub.offer_bytes(b"line\nmore")
    reply = Reply()
    sub.read(loop, ReadWant(until=b"\n"), 5.0, reply.deferred)  # type: ignore[arg-type]
    assert reply.result["data"] == b"line\n"
    assert loop.timers == []


def test_a_newer_read_answers_the_older_one(loop: FakeLoop) -> None:
    sub = items_sub()
    first, second = Reply(), Reply()
    sub.read(loop, ReadWant(), 5.0, first.deferred)  # type: ignore[arg-type]
    old_timer = loop.timers[0]
    sub.read(loop, ReadWant(), 5.0, second.deferred)  # type: ignore[arg-type]
    assert first.result["items"] == []
    assert old_timer.cancelled
    assert not second.done
    old_timer.callback()  # a stale timer firing anyway must not touch the newer read
    assert not second.done
    sub.offer_items(frames("a"))
    assert second.result["items"] == frames("a")
    assert len(first.outcomes) == 1


def test_a_newer_bytes_read_gives_the_older_one_the_partial_data(loop: FakeLoop) -> None:
    sub = bytes_sub()
    first, second = Reply(), Reply()
    sub.read(loop, ReadWant(until=b"\n"), 5.0, first.deferred)  # type: ignore[arg-type]
    sub.offer_bytes(b"half")
    sub.read(loop, ReadWant(until=b"\n"), 5.0, second.deferred)  # type: ignore[arg-type]
    assert first.result["data"] == b"half"
    assert not second.done


def test_cancel_answers_a_parked_read_with_what_is_queued(loop: FakeLoop) -> None:
    sub = bytes_sub()
    reply = Reply()
    sub.read(loop, ReadWant(until=b"\n"), 5.0, reply.deferred)  # type: ignore[arg-type]
    sub.offer_bytes(b"abc")
    sub.cancel()
    assert reply.result["data"] == b"abc"
    assert loop.live() == []
    sub.cancel()  # nothing parked: nothing happens
    assert len(reply.outcomes) == 1
    loop.advance(10)
    assert len(reply.outcomes) == 1


def test_cancel_without_a_parked_read_keeps_the_queue() -> None:
    sub = items_sub()
    sub.offer_items(frames("a"))
    sub.cancel()
    assert sub.queued() == 1


def test_drops_are_reported_to_a_parked_read(loop: FakeLoop) -> None:
    sub = items_sub(limit=2)
    reply = Reply()
    sub.read(loop, ReadWant(), 5.0, reply.deferred)  # type: ignore[arg-type]
    sub.offer_items(frames("a", "b", "c"))
    assert reply.result == {"success": True, "items": frames("a", "b", "c")[1:], "count": 2, "dropped": 1}


def test_items_addressed_to_an_agent_reach_only_it_and_operators() -> None:
    mine = Subscription(1, kind="items", limit=10, grant=None, wants=None, owner="alice")
    other = Subscription(2, kind="items", limit=10, grant=None, wants=None, owner="bob")
    operator = Subscription(3, kind="items", limit=10, grant=None, wants=None)
    items = [{"to": "alice", "n": 1}, {"n": 2}, {"to": "bob", "n": 3}]
    for sub in (mine, other, operator):
        sub.offer_items(items)
    assert [i["n"] for i in mine.items] == [1, 2]
    assert [i["n"] for i in other.items] == [2, 3]
    assert [i["n"] for i in operator.items] == [1, 2, 3]
