"""CanGrant and the receive filters: the code the kernel runs for every send and every frame."""

from __future__ import annotations

from typing import Any

import pytest

from clove.drivers import FieldError, TokenBucket
from clove.drivers.schema import build
from clove.errors import InvalidArguments, PermissionDenied
from clove_driver_can import CanDriver, CanGrant, SendArgs


def grant(**table: Any) -> CanGrant:
    """A grant built from a TOML-like table, the way the kernel builds it."""
    built = build(CanDriver.Grant, {"ops": ["send", "recv", "status"], **table})
    assert isinstance(built, CanGrant)
    return built


def frame(ident: int, *, ext: bool = False, err: bool = False) -> dict[str, Any]:
    return {
        "id": ident,
        "data": b"",
        "ext": ext,
        "rtr": False,
        "err": err,
        "fd": False,
        "brs": False,
        "dlc": 0,
        "ts": 0.0,
    }


def test_send_ids_allow_the_range_and_its_ends() -> None:
    g = grant(send_ids=["0x100-0x10F", "0x7DF"])
    for ident in (0x100, 0x105, 0x10F, 0x7DF):
        g.check("send", SendArgs(id=ident))


@pytest.mark.parametrize("ident", [0x0FF, 0x110, 0x7DE, 0x1FFFFFFF])
def test_send_ids_deny_outside_and_name_the_id(ident: int) -> None:
    g = grant(send_ids=["0x100-0x10F", "0x7DF"])
    with pytest.raises(PermissionDenied) as caught:
        g.check("send", SendArgs(id=ident))
    assert caught.value.message == f"CAN id 0x{ident:X} is outside this agent's send_ids [0x100-0x10F, 0x7DF]"
    assert caught.value.details == {"can_id": ident, "granted": ["0x100-0x10F", "0x7DF"]}


def test_no_send_ids_grants_nothing() -> None:
    with pytest.raises(PermissionDenied, match=r"send_ids \[\]"):
        grant().check("send", SendArgs(id=0))


def test_other_operations_pass_check() -> None:
    grant().check("status", None)


def test_admits_only_recv_ids() -> None:
    g = grant(recv_ids=["0x180-0x18F", "0x18FEF100"])
    assert g.admits(frame(0x180))
    assert g.admits(frame(0x18F))
    assert g.admits(frame(0x18FEF100, ext=True))
    assert not g.admits(frame(0x17F))
    assert not g.admits(frame(0x190))
    assert not grant().admits(frame(0x180))  # fail closed


def test_error_frames_need_recv_error_frames() -> None:
    assert not grant(recv_ids=["0-0x1FFFFFFF"]).admits(frame(0x4, err=True))
    assert grant(recv_error_frames=True).admits(frame(0x4, err=True))


def test_send_rate_bucket_and_costs() -> None:
    g = grant(send_ids=["0x100"], max_send_rate_hz=100.0, max_rate_hz=1000.0)
    assert g.rates() == {"calls": 1000.0, "send": 100.0}
    assert g.cost("send", SendArgs(id=0x100)) == {"calls": 1.0, "send": 1.0}
    assert g.cost("status", None) == {"calls": 1.0}
    only_send = grant(max_send_rate_hz=50.0)
    assert only_send.rates() == {"send": 50.0}
    assert only_send.cost("send", SendArgs(id=1)) == {"send": 1.0}
    assert grant().rates() == {}
    assert grant().cost("send", SendArgs(id=1)) == {}


def test_send_bucket_limits_a_burst() -> None:
    # The kernel keeps one TokenBucket per name in rates() and takes cost() per call.
    now = [0.0]
    g = grant(send_ids=["0x100"], max_send_rate_hz=100.0)
    bucket = TokenBucket(g.rates()["send"], clock=lambda: now[0])
    cost = g.cost("send", SendArgs(id=0x100))["send"]
    taken = sum(bucket.take(cost) for _ in range(50))
    assert taken == 10  # the default burst: a tenth of a second's worth
    now[0] += 0.05
    assert sum(bucket.take(cost) for _ in range(50)) == 5


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"send_ids": ["0x10F-0x100"]}, "send_ids"),
        ({"send_ids": ["fast"]}, "send_ids"),
        ({"recv_ids": ["0x20000000"]}, "recv_ids"),
        ({"max_send_rate_hz": 0}, "max_send_rate_hz"),
        ({"max_rate_hz": -1}, "max_rate_hz"),
        ({"_send": ["0x1"]}, "_send"),  # the parsed ranges are not a config key
        ({"send_ids": "0x100"}, "send_ids"),
    ],
)
def test_bad_grants_name_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(FieldError) as caught:
        grant(**table)
    assert caught.value.key == key


def test_grants_compare_by_their_fields() -> None:
    assert grant(send_ids=["0x1"]) == grant(send_ids=["0x1"])
    assert grant(send_ids=["0x1"]) != grant(send_ids=["0x2"])
    assert hash(grant(send_ids=["0x1"])) == hash(grant(send_ids=["0x1"]))


# ---- receive filters ---------------------------------------------------------------------------


def test_no_filters_accept_everything() -> None:
    accept = CanDriver.compile_filter([])
    assert accept(frame(0x123))
    assert accept(frame(0x4, err=True))


def test_filters_match_like_python_can() -> None:
    accept = CanDriver.compile_filter(
        [{"can_id": 0x180, "can_mask": 0x7F0}, {"can_id": 0x7DF, "can_mask": 0x7FF, "extended": False}]
    )
    assert accept(frame(0x180))
    assert accept(frame(0x18F))
    assert accept(frame(0x18F, ext=True))
    assert not accept(frame(0x190))
    assert accept(frame(0x7DF))
    assert not accept(frame(0x7DF, ext=True))
    assert not accept(frame(0x7DE))
    assert not accept({"data": b""})  # no id: nothing to match


def test_filters_agree_with_python_can_matches_filters() -> None:
    import can

    filters = [{"can_id": 0x100, "can_mask": 0x700, "extended": True}, {"can_id": 0x3, "can_mask": 0x3}]
    accept = CanDriver.compile_filter(filters)
    with can.Bus(interface="virtual", channel="clove-filter-oracle", can_filters=filters) as oracle:
        for ident in (0x0, 0x3, 0x7, 0x100, 0x1FF, 0x200, 0x10000103):
            for ext in (False, True):
                msg = can.Message(arbitration_id=ident, is_extended_id=ext)
                assert accept(frame(ident, ext=ext)) == oracle._matches_filters(msg), (hex(ident), ext)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ("0x100", "must be a list"),
        ([0x100], "filter 0: expected a table"),
        ([{"can_id": 1}], "filter 0: can_mask is required"),
        ([{"can_id": 1, "can_mask": 1}, {"can_mask": 1}], "filter 1: can_id is required"),
        ([{"can_id": "1", "can_mask": 1}], "can_id must be an int"),
        ([{"can_id": True, "can_mask": 1}], "can_id must be an int"),
        ([{"can_id": -1, "can_mask": 1}], "between 0 and 0xFFFFFFFF"),
        ([{"can_id": 1, "can_mask": 1 << 32}], "can_mask must be between"),
        ([{"can_id": 1, "can_mask": 1, "extended": 1}], "extended must be true or false"),
        ([{"can_id": 1, "can_mask": 1, "ext": True}], "unknown key 'ext'"),
    ],
)
def test_bad_filters_are_invalid_arguments(filters: Any, message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        CanDriver.compile_filter(filters)
