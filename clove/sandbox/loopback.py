"""The loopback side of an agent's relays, set up by its sandbox's init (G) before the agent
starts: ``lo`` up in the new network namespace, and a listening socket on ``127.0.0.1`` for each
relay. The listeners exist before the agent's first instruction, so its first connection never
races them (it is queued in the backlog until G's loop accepts it).

A new network namespace has only ``lo``, and it is down: without it up, even ``127.0.0.1`` is
unreachable. ``ip link set lo up`` is one ioctl, done here without the ``ip`` binary (which a
board's root filesystem may lack).
"""

from __future__ import annotations

import fcntl
import socket
import struct
from collections.abc import Sequence
from typing import Final

from clove.sandbox.relays import BACKLOG, Relay

_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1
#: ``struct ifreq``: the name (16 bytes), then a union whose first member, for these two
#: ioctls, is ``short ifr_flags``; 40 bytes in all on 64-bit Linux.
_IFREQ: Final = struct.Struct("16sh22x")


def bring_up_loopback() -> None:
    """Set ``IFF_UP`` on ``lo`` in the caller's network namespace (needs ``CAP_NET_ADMIN``
    there). Raises ``OSError`` on failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        current = fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
        flags = _IFREQ.unpack(current)[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def listen(relays: Sequence[Relay], host: str = "127.0.0.1") -> list[socket.socket]:
    """A non-blocking listening TCP socket on ``host:port`` for each relay, in order. Raises
    ``OSError`` (and closes what it opened) when one cannot be bound."""
    listeners: list[socket.socket] = []
    try:
        for relay in relays:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, relay.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in listeners:
            sock.close()
        raise
    return listeners
