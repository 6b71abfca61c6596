"""SOCKS5 request parsing on a real socket pair: what is accepted, and the reply code of each
refusal."""

from __future__ import annotations

import asyncio
import socket

import pytest

from clove.egress import socks


def _ask(client_bytes: bytes) -> tuple[tuple[str, int] | socks.SocksError | None, bytes]:
    """Feed ``client_bytes`` (after the version byte) to read_request: its result, and what it
    wrote back."""

    async def run() -> tuple[tuple[str, int] | socks.SocksError | None, bytes]:
        ours, theirs = socket.socketpair()
        theirs.sendall(client_bytes)
        theirs.shutdown(socket.SHUT_WR)
        reader, writer = await asyncio.open_connection(sock=ours)
        result: tuple[str, int] | socks.SocksError | None
        try:
            result = await socks.read_request(reader, writer)
        except socks.SocksError as err:
            result = err
        except asyncio.IncompleteReadError:
            result = None
        await writer.drain()
        writer.close()
        await writer.wait_closed()  # before the blocking reads below
        theirs.settimeout(5)
        answer = b""
        while chunk := theirs.recv(100):
            answer += chunk
        theirs.close()
        return result, answer

    return asyncio.run(run())


def test_connect_by_name_ipv4_and_ipv6() -> None:
    assert _ask(b"\x01\x00" + b"\x05\x01\x00\x03\x08web.test\x1f\x90") == (("web.test", 8080), b"\x05\x00")
    assert _ask(b"\x01\x00" + b"\x05\x01\x00\x01\xc6\x33\x64\x07\x01\xbb")[0] == ("198.51.100.7", 443)
    v6 = bytes.fromhex("20010db8000000000000000000000001")
    assert _ask(b"\x02\x02\x00" + b"\x05\x01\x00\x04" + v6 + b"\x00\x50")[0] == ("2001:db8::1", 80)


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (b"\x01\x02", None),  # only username/password offered: refused in the negotiation
        (b"\x01\x00" + b"\x05\x02\x00\x03\x01a\x00\x50", 7),  # BIND
        (b"\x01\x00" + b"\x05\x01\x00\x09", 8),  # unknown address type
        (b"\x01\x00" + b"\x04\x01\x00\x01", 1),  # wrong version in the request
        (b"\x01\x00" + b"\x05\x01\x00\x03\x01a\x00\x00", 8),  # port 0
    ],
)
def test_refusals_carry_their_reply_code(request_bytes: bytes, reply: int | None) -> None:
    result, answer = _ask(request_bytes)
    assert isinstance(result, socks.SocksError) and result.reply == reply
    assert answer == (b"\x05\xff" if reply is None else b"\x05\x00")


def test_a_short_request_is_an_incomplete_read() -> None:
    assert _ask(b"\x01\x00\x05\x01")[0] is None


def test_reply_codes() -> None:
    assert socks.reply(socks.reply_code("ok")) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert [socks.reply_code(c) for c in ("not_allowed", "private_address", "connect_failed", "resolve_failed", "other")] == [2, 2, 5, 4, 1]
