"""The codec's own split of a frame gives exactly what simplefix's parser gives, and leaves to
simplefix every frame it cannot take whole (raw-data fields, empty values, bad tags).

Run: ``.venv/bin/python -m pytest -q plugins/exchange/tests/test_codec_split.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1]
if str(PLUGIN) not in sys.path:  # until the plugin is installed (pip install -e plugins/exchange)
    sys.path.insert(0, str(PLUGIN))

from clove_driver_exchange.fix import messages as m  # noqa: E402
from clove_driver_exchange.fix.codec import _simplefix_pairs, _split, encode, parse  # noqa: E402
from clove_driver_exchange.fix.messages import FixError, Outgoing  # noqa: E402

BODIES: list[Outgoing] = [
    m.logon(30, reset_seq_num=True, username="CLOVE", password="s=cr=t", cancel_on_disconnect=True),
    m.heartbeat("t-1"),
    m.new_order_single("c1", "ACME", "buy", 10, price=99.5, account="mm", transact_time=1_700_000_000.0),
    m.order_cancel_request("cx-1", "c1", "ACME", "sell", qty=3, account="mm"),
    m.execution_report(order_id="O1", cl_ord_id="c1", exec_id="E1", exec_type="F", ord_status="1", symbol="ACME", side="buy",
                       qty=10, cum_qty=4, leaves_qty=6, avg_px=99.5, last_qty=4, last_px=99.5, text="fill a=b; naïve ✓"),
    m.market_data_snapshot("md-1", "ACME", bids=[(99.0 - i / 100, 100 + i) for i in range(10)], offers=[(101.0, 5)], trade=(100.0, 3)),
    m.reject(7, "Required tag missing", reason=1, ref_tag=55, ref_msg_type="D"),
    m.logout("bye"),
]  # fmt: skip


def _raw(out: Outgoing, seq: int = 9) -> bytes:
    return encode(out.msg_type, out.fields, sender="VENUE", target="CLOVE", seq_num=seq, sending_time=1_700_000_000.25)


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.msg_type)
def test_the_split_matches_simplefix(body: Outgoing) -> None:
    raw = _raw(body)
    assert _split(raw) == _simplefix_pairs(raw)
    assert parse(raw).pairs == tuple(_simplefix_pairs(raw))


def _frame(fields: list[tuple[int, bytes]]) -> bytes:
    """A frame with a correct BodyLength and CheckSum around ``fields`` (header from 35 on)."""
    body = b"".join(b"%d=%s\x01" % (tag, value) for tag, value in fields)
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    return head + body + b"10=%03d\x01" % (sum(head + body) % 256)


def test_a_raw_data_field_is_left_to_simplefix() -> None:
    secure = b"a\x01b=c"  # raw data may hold SOH and "="
    raw = _frame([(35, b"A"), (49, b"VENUE"), (56, b"CLOVE"), (34, b"1"), (52, b"20231114-22:13:20.250"), (95, b"%d" % len(secure)), (96, secure)])
    assert _split(raw) is None
    assert parse(raw).get(96) == "a\x01b=c"


@pytest.mark.parametrize("field", [(58, b""), (0, b"x")], ids=["empty value", "tag 0 is still a number"])
def test_odd_fields_go_the_same_way_as_with_simplefix(field: tuple[int, bytes]) -> None:
    raw = _frame([(35, b"0"), (49, b"VENUE"), (56, b"CLOVE"), (34, b"2"), field])
    try:
        expected: object = tuple(_simplefix_pairs(raw))
    except FixError:
        expected = FixError
    try:
        got: object = parse(raw).pairs
    except FixError:
        got = FixError
    assert got == expected


def test_a_bad_tag_is_refused_as_before() -> None:
    raw = _frame([(35, b"0"), (49, b"VENUE")]).replace(b"49=", b"4x=")
    assert _split(raw) is None
    with pytest.raises(FixError):
        parse(raw, verify=False)
