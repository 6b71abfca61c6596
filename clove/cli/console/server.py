"""The console's web app and the socket it is served on (bound here, so ``--listen
127.0.0.1:0`` can report its port)."""

from __future__ import annotations

import ipaddress
import os
import socket

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from clove.cli.console.guard import Console
from clove.cli.console.listen import Listen
from clove.cli.console.routes import STATIC, routes


def bind(listen: Listen) -> socket.socket:
    """A listening TCP socket on ``listen`` (IPv6 when the host is an IPv6 address).

    :raises OSError: the address is in use or not ours.
    """
    try:
        family = socket.AF_INET6 if isinstance(ipaddress.ip_address(listen.host), ipaddress.IPv6Address) else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a name such as localhost
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def build_app(console: Console) -> Starlette:
    return Starlette(routes=[*routes(console), Mount("/static", StaticFiles(directory=str(STATIC)), name="static")])


def socket_group(path: str) -> int | None:
    try:
        return os.stat(path).st_gid
    except OSError:
        return None
