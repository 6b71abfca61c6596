"""SOCKS5 (RFC 1928) on the same socket as HTTP: a connection whose first byte is ``0x05``. Only
``CONNECT`` without authentication; IPv4, IPv6 and domain-name targets (``socks5h://``, so the
proxy resolves the name and checks the address, as for HTTP).

SOCKS has no room for a reason: a refusal is a reply code (``2``, not allowed by the ruleset, for
every policy refusal); the journal record carries the full reason as for HTTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Final

__all__ = ["VERSION", "SocksError", "read_request", "reply", "reply_code"]

VERSION: Final = 0x05
_NO_AUTH, _NO_METHOD = 0x00, 0xFF
_CONNECT = 0x01
_SUCCEEDED, _FAILURE, _NOT_ALLOWED, _UNREACHABLE, _REFUSED, _TIMEOUT, _BAD_COMMAND, _BAD_ADDRESS = 0, 1, 2, 4, 5, 6, 7, 8
#: The proxy's refusal codes → SOCKS reply codes (anything else: general failure).
_CODES: Final = {
    "not_allowed": _NOT_ALLOWED,
    "private_address": _NOT_ALLOWED,
    "rate_limited": _NOT_ALLOWED,
    "bytes_exhausted": _NOT_ALLOWED,
    "too_many_connections": _NOT_ALLOWED,
    "resolve_failed": _UNREACHABLE,
    "connect_failed": _REFUSED,
    "connect_timeout": _TIMEOUT,
}


class SocksError(ValueError):
    """A request the proxy cannot serve: ``reply`` is the SOCKS code to send (``None``: the
    method negotiation failed and its answer was sent already)."""

    def __init__(self, message: str, reply: int | None = _FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


def reply(code: int) -> bytes:
    """A reply with an unspecified bound address (clients ignore it for CONNECT)."""
    return bytes([VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0])


def reply_code(refusal: str) -> int:
    return _SUCCEEDED if refusal == "ok" else _CODES.get(refusal, _FAILURE)


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int]:
    """The method negotiation and the request, after the version byte: ``(host, port)``.

    :raises SocksError: a malformed request, a command other than CONNECT, no usable method.
    :raises asyncio.IncompleteReadError: the client closed early.
    """
    methods = await reader.readexactly((await reader.readexactly(1))[0])
    if _NO_AUTH not in methods:
        writer.write(bytes([VERSION, _NO_METHOD]))
        raise SocksError("socks5: the client offers no method without authentication", reply=None)
    writer.write(bytes([VERSION, _NO_AUTH]))
    version, command, _reserved, kind = await reader.readexactly(4)
    if version != VERSION:
        raise SocksError(f"socks5: bad version {version} in the request")
    if command != _CONNECT:
        raise SocksError(f"socks5: only CONNECT is offered, not command {command}", reply=_BAD_COMMAND)
    if kind == 1:
        host = ipaddress.IPv4Address(await reader.readexactly(4)).compressed
    elif kind == 4:
        host = ipaddress.IPv6Address(await reader.readexactly(16)).compressed
    elif kind == 3:
        host = (await reader.readexactly((await reader.readexactly(1))[0])).decode("latin-1")
    else:
        raise SocksError(f"socks5: unknown address type {kind}", reply=_BAD_ADDRESS)
    port = int.from_bytes(await reader.readexactly(2), "big")
    if port == 0 or not host:
        raise SocksError("socks5: no host or port 0", reply=_BAD_ADDRESS)
    return host, port
