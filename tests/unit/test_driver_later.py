"""``clove.drivers.Later``: settled once, from any thread; the host's callback runs exactly once."""

from __future__ import annotations

import threading

import pytest

from clove.drivers import DeviceBroken, Later


def test_the_first_settlement_wins() -> None:
    later = Later()
    assert not later.settled
    later.resolve(1)
    later.resolve(2)
    later.reject(DeviceBroken("too late"))
    assert later.settled
    assert later.outcome() == (1, None)
    assert later.wait(0) == 1


def test_a_rejection_is_raised_by_wait() -> None:
    later = Later()
    later.reject(DeviceBroken("sync failed"))
    with pytest.raises(DeviceBroken, match="sync failed"):
        later.wait(0)
    assert later.outcome()[0] is None


def test_the_callback_runs_once_whether_registered_before_or_after() -> None:
    seen: list[object] = []
    before = Later()
    before.on_settled(lambda later: seen.append(later.outcome()))
    assert seen == []
    before.resolve("a")
    before.resolve("again")
    after = Later()
    after.reject(DeviceBroken("b"))
    after.on_settled(lambda later: seen.append(type(later.outcome()[1]).__name__))
    assert seen == [("a", None), "DeviceBroken"]


def test_wait_blocks_until_another_thread_settles_and_times_out_otherwise() -> None:
    later = Later()
    with pytest.raises(TimeoutError):
        later.wait(0.01)
    started = threading.Event()

    def settle() -> None:
        started.wait(5)
        later.resolve({"ok": True})

    thread = threading.Thread(target=settle, daemon=True)
    thread.start()
    started.set()
    assert later.wait(5) == {"ok": True}
    thread.join(5)


def test_a_none_result_is_a_settled_result() -> None:
    later = Later()
    later.resolve(None)
    assert later.settled
    assert later.wait(0) is None
