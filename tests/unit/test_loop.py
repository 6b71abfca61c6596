"""The kernel loop: timers on a fake clock, readers on a raw pipe, and callbacks that fail."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from clove.kernel.core.loop import HOUSEKEEPING_INTERVAL_S, EpollPoller, Loop, Timer, zmq_readable


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakePoller:
    """Stands in for zmq.Poller: records each timeout and lets the clock run through it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timeouts: list[int] = []
        self.ready: list[Any] = []
        self.registered: list[Any] = []

    def register(self, source: Any, flags: int) -> None:
        assert flags == zmq.POLLIN
        self.registered.append(source)

    def unregister(self, source: Any) -> None:
        self.registered.remove(source)

    def poll(self, timeout: int) -> list[tuple[Any, int]]:
        self.timeouts.append(timeout)
        ready, self.ready = self.ready, []
        if not ready:
            self.clock.now += timeout / 1000
        return [(source, zmq.POLLIN) for source in ready]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop(clock: FakeClock) -> Loop:
    loop = Loop(tick=0.1, clock=clock)
    loop.poller = FakePoller(clock)  # type: ignore[assignment]
    return loop


def fake_poller(loop: Loop) -> FakePoller:
    assert isinstance(loop.poller, FakePoller)
    return loop.poller


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(fd)


# -- timers ------------------------------------------------------------------------------------


def test_timers_fire_in_order(loop: Loop, clock: FakeClock) -> None:
    fired: list[str] = []
    loop.call_later(0.3, lambda: fired.append("c"))
    loop.call_later(0.1, lambda: fired.append("a"))
    loop.call_later(0.2, lambda: fired.append("b1"))
    loop.call_later(0.2, lambda: fired.append("b2"))  # same time: first scheduled, first fired
    loop.call_later(0.0, lambda: fired.append("now"))
    clock.now += 1
    loop.run_once()
    assert fired == ["now", "a", "b1", "b2", "c"]
    loop.run_once()
    assert fired == ["now", "a", "b1", "b2", "c"], "each timer fires once"


def test_timers_fire_when_due_not_before(loop: Loop, clock: FakeClock) -> None:
    fired: list[float] = []
    start = clock.now
    loop.call_later(0.25, lambda: fired.append(clock.now))
    loop.run_once()  # polls 100 ms
    loop.run_once()  # polls 100 ms
    assert fired == []
    loop.run_once()  # polls the remaining 50 ms, then the timer is due
    assert fired == [pytest.approx(start + 0.25)]
    assert fake_poller(loop).timeouts == [100, 100, 50]


def test_negative_delay_means_now(loop: Loop, clock: FakeClock) -> None:
    timer = loop.call_later(-5, lambda: None)
    assert timer.when == clock.now
    assert loop._timeout_ms() == 0


def test_cancelled_timers_do_not_fire(loop: Loop, clock: FakeClock) -> None:
    fired: list[str] = []
    keep = loop.call_later(0.1, lambda: fired.append("keep"))
    drop = loop.call_later(0.05, lambda: fired.append("drop"))
    assert isinstance(drop, Timer)
    drop.cancel()
    drop.cancel()  # twice is harmless
    clock.now += 1
    loop.run_once()
    assert fired == ["keep"]
    assert not keep.cancelled
    assert drop.cancelled


def test_a_timer_can_cancel_a_later_one_due_in_the_same_pass(loop: Loop, clock: FakeClock) -> None:
    fired: list[str] = []
    later: list[Timer] = []
    loop.call_later(0.1, lambda: later[0].cancel())
    later.append(loop.call_later(0.2, lambda: fired.append("cancelled")))
    clock.now += 1
    loop.run_once()
    assert fired == []


def test_a_timer_scheduled_by_a_timer_waits_for_its_time(loop: Loop, clock: FakeClock) -> None:
    fired: list[str] = []
    loop.call_later(0.1, lambda: loop.call_later(0.5, lambda: fired.append("second")))
    clock.now += 0.1
    loop.run_once()
    assert fired == []
    assert fake_poller(loop).timeouts == [0]
    loop.run_once()
    assert fake_poller(loop).timeouts[-1] == 100
    clock.now += 0.4
    loop.run_once()
    assert fired == ["second"]


# -- poll timeout ------------------------------------------------------------------------------


def test_poll_timeout_is_the_tick_without_timers(loop: Loop) -> None:
    loop.run_once()
    assert fake_poller(loop).timeouts == [100]


@pytest.mark.parametrize("delay", [0.0, 0.0004, 0.001, 0.03, 0.0305, 0.07, 0.0999])
def test_poll_timeout_respects_the_next_timer(loop: Loop, clock: FakeClock, delay: float) -> None:
    """The poll sleeps until the timer is due, never more than a millisecond past it, and
    never wakes up before it (which would cost a spin of 0 ms polls)."""
    fired: list[bool] = []
    loop.call_later(5.0, lambda: None)
    timer = loop.call_later(delay, lambda: fired.append(True))
    start = clock.now
    loop.run_once()
    (timeout,) = fake_poller(loop).timeouts
    assert start + timeout / 1000 >= timer.when
    assert timeout <= math.ceil(delay * 1000) + 1
    assert fired == [True], "due after one poll"


@pytest.mark.parametrize("delay", [0.1, 0.5, 5.0])
def test_poll_timeout_is_capped_by_the_tick(loop: Loop, delay: float) -> None:
    loop.call_later(delay, lambda: None)
    loop.run_once()
    assert fake_poller(loop).timeouts == [100]


def test_poll_timeout_skips_cancelled_timers(loop: Loop) -> None:
    loop.call_later(0.01, lambda: None).cancel()
    loop.call_later(0.04, lambda: None)
    loop.run_once()
    assert fake_poller(loop).timeouts == [40]


def test_overdue_timer_polls_without_waiting(loop: Loop, clock: FakeClock) -> None:
    loop.call_later(0.02, lambda: None)
    clock.now += 3
    loop.run_once()
    assert fake_poller(loop).timeouts == [0]


def test_custom_tick(clock: FakeClock) -> None:
    loop = Loop(tick=2.5, clock=clock)
    loop.poller = FakePoller(clock)  # type: ignore[assignment]
    loop.run_once()
    assert fake_poller(loop).timeouts == [2500]


# -- housekeeping and failures -----------------------------------------------------------------


def test_housekeeping_runs_after_every_poll(loop: Loop) -> None:
    runs: list[int] = []
    loop.housekeeping.append(lambda: runs.append(1))
    loop.housekeeping.append(lambda: runs.append(2))
    loop.run_once()
    loop.run_once()
    assert runs == [1, 2, 1, 2]


def test_run_until(loop: Loop) -> None:
    count = [0]
    loop.housekeeping.append(lambda: count.__setitem__(0, count[0] + 1))
    loop.run(until=lambda: count[0] >= 3)
    assert count == [3]
    assert len(fake_poller(loop).timeouts) == 3


def boom() -> None:
    raise RuntimeError("handler bug")


def test_a_raising_callback_is_logged_and_the_loop_goes_on(
    loop: Loop, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fired: list[str] = []
    loop.call_later(0.1, boom)
    loop.call_later(0.2, lambda: fired.append("timer"))
    loop.housekeeping.append(boom)
    loop.housekeeping.append(lambda: fired.append("housekeeping"))
    loop.add_reader("sock", boom)
    fake_poller(loop).ready = ["sock"]
    clock.now += 1
    with caplog.at_level(logging.ERROR, logger="clove.kernel.core.loop"):
        loop.run_once()
    assert fired == ["timer", "housekeeping"]
    failures = [r for r in caplog.records if r.name == "clove.kernel.core.loop"]
    assert len(failures) == 3, "the reader, the timer and the housekeeping job"
    for record in failures:
        assert record.levelno == logging.ERROR
        assert re.fullmatch(r"loop callback .* failed", record.getMessage())
        assert record.exc_info is not None
        assert record.exc_info[0] is RuntimeError
    loop.run_once()
    assert fired == ["timer", "housekeeping", "housekeeping"]


def test_base_exceptions_are_not_swallowed(loop: Loop) -> None:
    def stop() -> None:
        raise KeyboardInterrupt

    loop.housekeeping.append(stop)
    with pytest.raises(KeyboardInterrupt):
        loop.run_once()


# -- readers -----------------------------------------------------------------------------------


def test_reader_registration(loop: Loop) -> None:
    poller = fake_poller(loop)
    first: list[str] = []
    loop.add_reader(7, lambda: first.append("old"))
    loop.add_reader(7, lambda: first.append("new"))  # replaces the callback, registers once
    assert poller.registered == [7]
    assert loop.readers() == [7]
    poller.ready = [7]
    loop.run_once()
    assert first == ["new"]
    loop.remove_reader(7)
    loop.remove_reader(7)  # twice is harmless
    assert poller.registered == []
    assert loop.readers() == []


def test_ready_source_without_a_reader_is_ignored(loop: Loop) -> None:
    fake_poller(loop).ready = [99]
    loop.run_once()  # must not raise


def test_reader_on_a_raw_pipe(pipe: tuple[int, int]) -> None:
    r, w = pipe
    loop = Loop(tick=0.01)
    got: list[bytes] = []
    loop.add_reader(r, lambda: got.append(os.read(r, 100)))
    loop.run_once()
    assert got == [], "nothing to read: the poll times out"
    os.write(w, b"ping")
    loop.run_once()
    assert got == [b"ping"]
    os.write(w, b"again")
    loop.remove_reader(r)
    loop.run_once()
    assert got == [b"ping"], "a removed reader does not fire"
    assert os.read(r, 100) == b"again"


def test_pipe_reader_sees_eof(pipe: tuple[int, int]) -> None:
    r, w = pipe
    loop = Loop(tick=0.01)
    got: list[bytes] = []

    def on_readable() -> None:
        data = os.read(r, 100)
        got.append(data)
        if not data:
            loop.remove_reader(r)

    loop.add_reader(r, on_readable)
    os.close(w)
    loop.run(until=lambda: bool(got))
    assert got == [b""]
    assert loop.readers() == []


# -- a busy loop: housekeeping paced, ZeroMQ sockets checked once per turn ---------------------------


def test_housekeeping_is_paced_while_the_loop_is_busy_and_runs_when_it_is_quiet(loop: Loop, clock: FakeClock) -> None:
    poller = fake_poller(loop)
    loop.add_reader(7, lambda: None)
    house: list[float] = []
    turns: list[float] = []
    loop.housekeeping.append(lambda: house.append(clock.now))
    loop.each_turn.append(lambda: turns.append(clock.now))
    for _ in range(3):  # busy turns within one interval: housekeeping once
        poller.ready = [7]
        loop.run_once()
    assert len(turns) == 3 and len(house) == 1
    clock.now += HOUSEKEEPING_INTERVAL_S
    poller.ready = [7]
    loop.run_once()
    assert len(house) == 2, "busy, but an interval has passed"
    loop.run_once()  # a quiet turn (nothing ready): always
    assert len(house) == 3 and len(turns) == 5


@pytest.fixture
def router_pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    router.close(linger=0)
    dealer.close(linger=0)


def test_a_handler_that_leaves_messages_queued_is_served_again_without_a_wait(router_pair: Any) -> None:
    router, dealer = router_pair
    loop = Loop(tick=5.0)
    got: list[list[bytes]] = []
    loop.add_reader(router, lambda: got.append(router.recv_multipart(zmq.NOBLOCK)))  # one per turn
    for n in range(3):
        dealer.send(str(n).encode())
    while len(got) < 3:
        started = time.monotonic()
        loop.run_once()
        assert time.monotonic() - started < 2.0, "a socket with messages left is polled, not waited on"
    assert [frames[1] for frames in got] == [b"0", b"1", b"2"]


def test_a_settled_socket_is_not_checked_again_and_wakes_on_new_input(router_pair: Any) -> None:
    router, dealer = router_pair
    loop = Loop(tick=0.05)
    poller = loop.poller
    assert isinstance(poller, EpollPoller)
    got: list[list[bytes]] = []

    def drain() -> None:
        while zmq_readable(router):
            got.append(router.recv_multipart(zmq.NOBLOCK))
        loop.settled(router)

    loop.add_reader(router, drain)
    dealer.send(b"a")
    loop.run(until=lambda: bool(got))
    assert not poller._touched, "its handler checked it last"
    loop.recheck(router)  # used again (a reply sent): owed a check
    assert poller._touched
    dealer.send(b"b")
    loop.run(until=lambda: len(got) == 2)
    assert [frames[1] for frames in got] == [b"a", b"b"]
