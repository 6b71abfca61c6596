"""clove.drivers.grants: id ranges, token buckets on a fake clock, and the base grant."""

from __future__ import annotations

import dataclasses
import math

import pytest

from clove.drivers.grants import DeviceGrant, IdRanges, TokenBucket, deny
from clove.drivers.schema import FieldError, build
from clove.errors import PermissionDenied
from clove.testing.loopback import LoopbackGrant, WriteArgs


class FakeClock:
    """A monotonic clock the test moves by hand (binary fractions keep the arithmetic exact)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- IdRanges ------------------------------------------------------------------------------------


def test_hex_range_is_inclusive_at_both_ends() -> None:
    ids = IdRanges(("0x100-0x10F",), key="send_ids")
    assert 0x100 in ids
    assert 0x108 in ids
    assert 0x10F in ids
    assert 0xFF not in ids
    assert 0x110 not in ids


def test_single_ids_hex_and_decimal() -> None:
    ids = IdRanges(("0x7DF", "256", "1000-1002"), key="k")
    assert 0x7DF in ids
    assert 0x7DE not in ids
    assert 0x7E0 not in ids
    assert 256 in ids
    assert 255 not in ids
    assert 257 not in ids
    assert all(i in ids for i in (1000, 1001, 1002))
    assert 999 not in ids
    assert 1003 not in ids


def test_whitespace_around_bounds_is_allowed() -> None:
    ids = IdRanges((" 0x10 - 0x20 ",), key="k")
    assert 0x10 in ids
    assert 0x20 in ids
    assert 0x21 not in ids


def test_overlapping_adjacent_and_unsorted_ranges_merge() -> None:
    ids = IdRanges(("0x40-0x50", "0x15-0x30", "0x10-0x20", "0x31", "0x18-0x19"), key="k")
    assert (ids._starts, ids._ends) == ([0x10, 0x40], [0x31, 0x50])
    for inside in (0x10, 0x20, 0x25, 0x30, 0x31, 0x40, 0x50):
        assert inside in ids
    for outside in (0x0F, 0x32, 0x3F, 0x51):
        assert outside not in ids


def test_disjoint_ranges_stay_apart() -> None:
    ids = IdRanges(("1-2", "4-5"), key="k")
    assert (ids._starts, ids._ends) == ([1, 4], [2, 5])
    assert 3 not in ids


def test_zero_and_the_maximum_are_allowed() -> None:
    ids = IdRanges(("0-0x7FF",), key="k", maximum=0x7FF)
    assert 0 in ids
    assert 0x7FF in ids
    assert 0x800 not in ids
    assert -1 not in ids
    default = IdRanges(("0x1FFFFFFF",), key="k")  # the 29-bit extended CAN maximum
    assert (1 << 29) - 1 in default


@pytest.mark.parametrize(
    ("spec", "maximum"), [("0x800", 0x7FF), ("0x700-0x800", 0x7FF), ("0x20000000", (1 << 29) - 1)]
)
def test_ids_above_the_maximum_are_refused(spec: str, maximum: int) -> None:
    with pytest.raises(FieldError) as info:
        IdRanges((spec,), key="recv_ids", maximum=maximum)
    assert info.value.key == "recv_ids"
    assert repr(spec) in info.value.message
    assert f"{maximum:#x}" in info.value.message


@pytest.mark.parametrize("spec", ["abc", "", "-5", "1-2-3", "0x1G", "1.5", "0x10-zz", "ten"])
def test_bad_specs_name_the_key(spec: str) -> None:
    with pytest.raises(FieldError) as info:
        IdRanges(("0x1", spec), key="send_ids")
    assert info.value.key == "send_ids"
    assert str(info.value).startswith("send_ids: ")
    assert repr(spec) in info.value.message


def test_reversed_range_is_refused() -> None:
    with pytest.raises(FieldError, match=r"send_ids: range '0x20-0x10' must satisfy 0 <= low <= high"):
        IdRanges(("0x20-0x10",), key="send_ids")


def test_a_dangling_dash_is_refused() -> None:
    with pytest.raises(FieldError):
        IdRanges(("0x100-",), key="send_ids")


def test_empty_ranges_hold_nothing_and_are_falsy() -> None:
    ids = IdRanges((), key="k")
    assert not ids
    assert 0 not in ids
    assert IdRanges(("0",), key="k")


@pytest.mark.parametrize("value", ["0x10", 16.0, None, (16,)])
def test_non_ints_are_never_members(value: object) -> None:
    assert 16 in IdRanges(("0x10",), key="k")
    assert value not in IdRanges(("0x10",), key="k")


def test_repr_and_spec() -> None:
    ids = IdRanges(("0x10", "1-2"), key="k")
    assert ids.spec == ("0x10", "1-2")
    assert repr(ids) == "IdRanges(['0x10', '1-2'])"


# -- TokenBucket ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "burst"), [(100.0, 10.0), (5.0, 1.0), (0.5, 1.0), (1000.0, 100.0)])
def test_default_burst_is_a_tenth_of_a_second_at_least_one(rate: float, burst: float) -> None:
    bucket = TokenBucket(rate, clock=FakeClock())
    assert bucket.burst == burst
    assert bucket.available() == burst  # starts full


def test_burst_then_refused_until_refilled() -> None:
    clock = FakeClock()
    bucket = TokenBucket(8.0, burst=4.0, clock=clock)
    assert [bucket.take(1) for _ in range(5)] == [True, True, True, True, False]
    assert bucket.available() == 0
    clock.advance(0.125)  # one token at 8/s
    assert bucket.take(1) is True
    assert bucket.take(1) is False


def test_refill_is_capped_at_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(8.0, burst=4.0, clock=clock)
    bucket.take(4)
    clock.advance(0.25)
    assert bucket.available() == 2.0
    clock.advance(1000)
    assert bucket.available() == 4.0


def test_a_refused_take_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(8.0, burst=2.0, clock=clock)
    assert bucket.take(1.5)
    assert bucket.take(1) is False
    assert bucket.available() == 0.5


def test_oversize_cost_is_refused_unless_the_bucket_is_full() -> None:
    clock = FakeClock()
    bucket = TokenBucket(8.0, burst=2.0, clock=clock)
    bucket.take(1)
    assert bucket.take(10) is False  # 1 token, not full: refused
    assert bucket.available() == 1.0
    clock.advance(0.125)  # full again
    assert bucket.take(10) is True  # admitted, then owed
    assert bucket.available() == -8.0


def test_owed_tokens_delay_the_next_call() -> None:
    clock = FakeClock()
    bucket = TokenBucket(8.0, burst=2.0, clock=clock)
    assert bucket.take(10)
    assert bucket.retry_after(1) == 1.125  # (1 - -8) / 8
    clock.advance(1.0)
    assert bucket.available() == 0.0
    assert bucket.take(1) is False
    assert bucket.retry_after(1) == 0.125
    clock.advance(0.125)
    assert bucket.take(1) is True


def test_retry_after() -> None:
    clock = FakeClock()
    bucket = TokenBucket(8.0, burst=2.0, clock=clock)
    assert bucket.retry_after(1) == 0.0  # available now
    assert bucket.retry_after(100) == 0.0  # oversize: only needs a full bucket, which it is
    bucket.take(1.5)
    assert bucket.retry_after(1) == 0.0625  # 0.5 missing at 8/s
    assert bucket.retry_after(100) == 0.1875  # needs the full burst of 2: 1.5 missing
    clock.advance(0.0625)
    assert bucket.take(1) is True


def test_bucket_uses_the_real_clock_by_default() -> None:
    bucket = TokenBucket(1.0)
    assert bucket.take(1) is True
    assert bucket.take(1) is False
    assert 0 < bucket.retry_after(1) <= 1.0


# -- DeviceGrant ---------------------------------------------------------------------------------


def test_base_grant_defaults_grant_nothing_and_limit_nothing() -> None:
    grant = DeviceGrant()
    assert grant.ops == ()
    assert grant.max_rate_hz is None
    assert grant.rates() == {}
    assert grant.cost("anything", None) == {}
    grant.check("anything", None)  # refuses nothing
    assert grant.admits({"any": "item"}) is True


def test_max_rate_gives_a_calls_bucket_costing_one() -> None:
    grant = DeviceGrant(ops=("write",), max_rate_hz=5)
    assert grant.rates() == {"calls": 5}
    assert grant.cost("write", None) == {"calls": 1.0}


@pytest.mark.parametrize("rate", [0, 0.0, -1, -0.5, math.nan])
def test_max_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(FieldError) as info:
        DeviceGrant(max_rate_hz=rate)
    assert info.value.key == "max_rate_hz"
    assert "must be positive" in info.value.message


def test_max_rate_through_build() -> None:
    grant = build(DeviceGrant, {"ops": ["a"], "max_rate_hz": 20})
    assert grant == DeviceGrant(ops=("a",), max_rate_hz=20.0)
    assert type(grant.max_rate_hz) is float
    with pytest.raises(FieldError) as info:
        build(DeviceGrant, {"max_rate_hz": 0})
    assert str(info.value) == "max_rate_hz: must be positive, got 0.0"
    with pytest.raises(FieldError, match="max_rate_hz: expected number, got bool True"):
        build(DeviceGrant, {"max_rate_hz": True})
    with pytest.raises(FieldError, match=r"ops: expected array of string"):
        build(DeviceGrant, {"ops": "write"})


def test_grants_are_frozen_and_keyword_only() -> None:
    grant = DeviceGrant(ops=("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        grant.ops = ("b",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        DeviceGrant(("a",))  # type: ignore[call-arg]


def test_subclass_keeps_the_base_validation() -> None:
    with pytest.raises(FieldError) as info:
        LoopbackGrant(tags=("a",), max_rate_hz=-2)
    assert info.value.key == "max_rate_hz"
    assert LoopbackGrant(max_rate_hz=3).rates() == {"calls": 3}


def test_deny_builds_a_permission_denied_with_details() -> None:
    err = deny("tag 'x' is not granted", tag="x", granted=["a"])
    assert isinstance(err, PermissionDenied)
    assert err.code == "perm.denied"
    assert err.message == "tag 'x' is not granted"
    assert err.details == {"tag": "x", "granted": ["a"]}


def test_a_driver_grant_checks_and_admits() -> None:
    grant = LoopbackGrant(ops=("write", "recv"), tags=("a", "b"))
    grant.check("write", WriteArgs(tag="a"))
    with pytest.raises(PermissionDenied) as info:
        grant.check("write", WriteArgs(tag="z"))
    assert info.value.details == {"tag": "z", "granted": ["a", "b"]}
    assert grant.admits({"tag": "b"}) is True
    assert grant.admits({"tag": "z"}) is False
    assert grant.admits({}) is False
    everything = LoopbackGrant(tags=("*",))
    assert everything.admits({"tag": "anything"}) is True
    everything.check("write", WriteArgs(tag="anything"))
    assert LoopbackGrant().admits({"tag": "a"}) is False  # fails closed
