"""The kernel's book of device calls in flight: bounded per caller and per device, the kernel's
own calls never refused, counts returned as calls are answered, failed or timed out."""

from __future__ import annotations

from typing import Any

import pytest

from clove.errors import DeviceBroken, DeviceBusy, QuotaExceeded
from clove.kernel.services.devices.calls import CallBook, Pending


class Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Deferred:
    def __init__(self) -> None:
        self.error: Exception | None = None

    def reject(self, error: Exception) -> None:
        self.error = error


def _book(book: CallBook, principal: int | None, op: str = "send") -> tuple[int, Any]:
    book.admit(principal, op)
    call_id, deferred, timer = book.next_id(), Deferred(), Timer()
    book.add(call_id, Pending(deferred, op, principal, timer))  # type: ignore[arg-type]
    return call_id, (deferred, timer)


def test_a_caller_past_its_bound_gets_quota_exceeded_naming_it() -> None:
    book = CallBook("can0", per_caller=3, per_device=100)
    ids = [_book(book, 7)[0] for _ in range(3)]
    with pytest.raises(QuotaExceeded) as err:
        _book(book, 7)
    assert err.value.details == {"device": "can0", "op": "send", "in_flight": 3, "max_in_flight": 3}
    assert book.of(7) == 3 and len(book) == 3
    _book(book, 8)  # another caller is not held up by it
    book.settle(ids[0])
    _book(book, 7)  # one answered: room for one more
    assert book.of(7) == 3


def test_the_device_bound_is_device_busy_and_the_kernels_own_calls_pass() -> None:
    book = CallBook("can0", per_caller=10, per_device=4)
    for principal in (1, 2, 3, 4):
        _book(book, principal)
    with pytest.raises(DeviceBusy) as err:
        _book(book, 5)
    assert err.value.details["max_in_flight"] == 4
    _book(book, None)  # an interlock's action
    assert len(book) == 5


def test_settling_cancels_the_timer_once_and_failing_rejects() -> None:
    book = CallBook("can0")
    call_id, (deferred, timer) = _book(book, 1)
    assert book.fail(call_id, DeviceBroken("host died"))
    assert timer.cancelled and isinstance(deferred.error, DeviceBroken)
    assert book.settle(call_id) is None  # answered already: a late reply is ignored
    assert not book.fail(call_id, DeviceBroken("again"))
    assert book.of(1) == 0 and len(book) == 0
