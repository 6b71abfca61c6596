"""``python -m clove.egress FD``: the egress proxy process, started by the kernel's egress
service (:mod:`clove.kernel.services.egress`).

The start spec (msgpack) arrives on ``FD``: the kernel's endpoint, this incarnation's identity,
the ``[egress]`` static names and limits, the record bound, and ``control``: the fd of a
``SOCK_SEQPACKET`` socket on which the kernel sends its orders, one per packet: ``agent`` (with
the agent's listening ``egress.sock`` attached as SCM_RIGHTS), ``gone``, ``stop``. Records,
``ready`` and a heartbeat every second (a hung proxy is noticed and killed) go back over ZeroMQ.
The control socket closing means the kernel is gone: the proxy exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from typing import Any

import msgpack

from clove.egress.link import Link
from clove.egress.proxy import EgressProxy, Limits
from clove.helperproc import harden, read_spec

log = logging.getLogger("clove.egress")

HEARTBEAT_S = 1.0


async def _run(spec: dict[str, Any]) -> None:
    link = Link(str(spec["endpoint"]), str(spec["identity"]).encode(), int(spec.get("records") or 10_000))
    limits = Limits.from_wire(dict(spec.get("limits") or {}))
    proxy = EgressProxy(link, resolve=dict(spec.get("resolve") or {}), limits=limits)
    control = socket.socket(fileno=int(spec["control"]))
    control.setblocking(False)
    orders: asyncio.Queue[tuple[dict[str, Any], list[int]] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.add_reader(control.fileno(), _read_orders, control, orders)
    background = [asyncio.create_task(t) for t in (link.sender(), proxy.watchdog(), _beat(link))]
    link.send({"t": "ready", "pid": os.getpid()})
    try:
        while (item := await orders.get()) is not None:
            order, fds = item
            kind = order.get("t")
            try:
                if kind == "agent" and fds:
                    await proxy.add_agent(order, socket.socket(fileno=fds.pop(0)))
                elif kind == "gone":
                    await proxy.remove_agent(int(order["id"]))
                elif kind == "stop":
                    break
            except (KeyError, TypeError, ValueError) as err:  # a kernel bug: say so, keep serving others
                log.error("egress: bad order %r: %s", kind, err)
            finally:
                for fd in fds:  # never keep an fd nobody asked for
                    os.close(fd)
    finally:
        loop.remove_reader(control.fileno())
        await proxy.close()
        await link.flush(2.0)
        for task in background:
            task.cancel()
        link.close()
        control.close()


def _read_orders(control: socket.socket, orders: asyncio.Queue[tuple[dict[str, Any], list[int]] | None]) -> None:
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, 65536, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:  # the kernel is gone
            asyncio.get_running_loop().remove_reader(control.fileno())
            orders.put_nowait(None)
            return
        try:
            order = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.ExtraData):
            order = None
        if isinstance(order, dict):
            orders.put_nowait((order, list(fds)))
        else:
            log.error("egress: undecodable order from the kernel")
            for fd in fds:
                os.close(fd)


async def _beat(link: Link) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        link.send({"t": "hb"})


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s egress %(levelname)s %(message)s")
    spec = read_spec(int(argv[1]), "clove egress")
    harden(0)
    os.umask(0o077)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
