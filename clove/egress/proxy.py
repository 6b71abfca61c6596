"""The egress proxy: one Unix socket per agent (``<channel dir>/egress.sock``), HTTP CONNECT
tunnels, plain HTTP forwarding and SOCKS5 CONNECT (:mod:`~clove.egress.socks`), each connection
checked against the agent's policy and limits and recorded once.

A connection's path: accept (concurrency bound, a record reserved) → read the head (at most
``header_bytes``) → parse → rule check → new-connection rate → byte budget → resolve (static
``resolve`` names first) → address check on every resolved address → connect to a checked
address → pump bytes both ways under the agent's byte rate, until both sides are done or it is
idle for ``idle_timeout``. Every refusal is an HTTP answer the agent's model can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from clove.egress import socks
from clove.egress.httphead import TUNNEL_OK, BadRequest, RequestHead, parse_head, refusal
from clove.egress.link import Link
from clove.egress.rules import IPAddress, Policy, normalize_host
from clove.ratelimit import TokenBucket

__all__ = ["AgentEntry", "EgressProxy", "Limits"]

log = logging.getLogger(__name__)

_CHUNK = 64 << 10


class Refused(Exception):
    """The proxy answers the client itself: ``status`` and ``code`` (``X-Clove-Egress-Refused``);
    a SOCKS client gets ``socks_reply`` instead (``None``: nothing more)."""

    def __init__(self, status: int, code: str, reason: str, socks_reply: int | None = -1) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason
        self.socks_reply = socks.reply_code(code) if socks_reply == -1 else socks_reply


@dataclass(frozen=True, slots=True)
class Limits:
    """One agent's limits as the kernel sends them: every field, always. The defaults and their
    meaning are the config's (:class:`clove.config.egress.EgressLimits`), written in one place."""

    connections: int
    connect_rate: float
    connect_burst: int
    bytes_per_second: int
    bytes_burst: int
    bytes_budget: int | None
    header_bytes: int
    idle_timeout: float
    connect_timeout: float

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Limits:
        """:raises ValueError: a field is missing (the kernel and the proxy disagree)."""
        missing = sorted(set(cls.__dataclass_fields__) - set(data))
        if missing:
            raise ValueError(f"egress limits without {', '.join(missing)}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(eq=False)
class Connection:
    task: asyncio.Task[None] | None
    started: float
    last: float
    ended: str | None = None
    up: int = 0
    down: int = 0


@dataclass(eq=False)
class AgentEntry:
    agent_id: int
    name: str
    policy: Policy
    limits: Limits
    used: int = 0
    listener: socket.socket | None = None
    acceptor: asyncio.Task[None] | None = None
    open: set[Connection] = field(default_factory=set)
    #: Set when a connection ends: an acceptor paused at the limit looks again.
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)
    connects: TokenBucket = field(init=False)
    #: Refusals answered at once; past them each costs the agent time (see ``_serve``).
    refusals: TokenBucket = field(init=False)
    bytes: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.connects = TokenBucket(self.limits.connect_rate, self.limits.connect_burst)
        self.refusals = TokenBucket(self.limits.connect_rate, self.limits.connect_burst)
        self.bytes = TokenBucket(self.limits.bytes_per_second, self.limits.bytes_burst)


class EgressProxy:
    def __init__(self, link: Link, *, resolve: dict[str, str], limits: Limits) -> None:
        self.link = link
        self.resolve = {name: ipaddress.ip_address(ip) for name, ip in resolve.items()}
        self.limits = limits
        self.agents: dict[int, AgentEntry] = {}
        #: Every connection's task (the loop keeps only weak references to tasks).
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- agents -------------------------------------------------------------------------------------

    async def add_agent(self, order: dict[str, Any], listener: socket.socket) -> None:
        """Serve the agent on ``listener``: its ``egress.sock``, bound (owned 0:uid, mode 0660)
        and listening already, handed over by the kernel, so a connection made while this
        process (re)starts waits in the backlog instead of being refused."""
        agent_id = int(order["id"])
        await self.remove_agent(agent_id, "replaced")
        entry = AgentEntry(
            agent_id=agent_id,
            name=str(order["name"]),
            policy=Policy(order.get("rules") or (), order.get("private") or ()),
            limits=Limits.from_wire({**_wire(self.limits), **(order.get("limits") or {})}),
            used=int(order.get("used") or 0),
        )
        try:
            listener.setblocking(False)
        except OSError as err:
            listener.close()
            self.link.send({"t": "serve_failed", "id": agent_id, "error": str(err)})
            return
        entry.listener = listener
        entry.acceptor = asyncio.create_task(self._accept(entry, listener))
        self.agents[agent_id] = entry

    async def remove_agent(self, agent_id: int, why: str = "agent_gone") -> None:
        entry = self.agents.pop(agent_id, None)
        if entry is None:
            return
        if entry.acceptor is not None:
            entry.acceptor.cancel()
        if entry.listener is not None:
            entry.listener.close()  # this process's copy; the kernel owns the path
        for conn in list(entry.open):
            self._end(conn, why)

    async def close(self) -> None:
        """End every connection and wait until each has queued its record."""
        for agent_id in list(self.agents):
            await self.remove_agent(agent_id, "proxy_stopping")
        for task in list(self._tasks):  # those still before their agent's bookkeeping too
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- idle connections ---------------------------------------------------------------------------

    async def watchdog(self) -> None:
        """Close connections with no byte either way for their agent's ``idle_timeout``."""
        while True:
            shortest = min((a.limits.idle_timeout for a in self.agents.values()), default=self.limits.idle_timeout)
            await asyncio.sleep(min(1.0, shortest / 4))
            now = time.monotonic()
            for entry in list(self.agents.values()):
                for conn in list(entry.open):
                    if now - conn.last > entry.limits.idle_timeout:
                        self._end(conn, "idle_timeout")

    @staticmethod
    def _end(conn: Connection, why: str) -> None:
        if conn.ended is None:
            conn.ended = why
        if conn.task is not None:
            conn.task.cancel()

    # ---- one connection -----------------------------------------------------------------------------

    async def _accept(self, entry: AgentEntry, listener: socket.socket) -> None:
        """Accept while the agent is under its connection limit, or has refusals left to spend;
        otherwise leave new connections in the listener's backlog until one of its connections
        ends. An agent that keeps opening connections past its limit costs this process (shared
        by every agent) nothing beyond its refusal rate."""
        loop = asyncio.get_running_loop()
        while True:
            if len(entry.open) >= entry.limits.connections and entry.refusals.available() < 1:
                entry.slot_freed.clear()
                await entry.slot_freed.wait()
                continue
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as err:  # EMFILE and the like: wait a little rather than spin
                log.warning("egress: accept for agent %s failed: %s", entry.name, err)
                await asyncio.sleep(0.1)
                continue
            try:
                reader, writer = await asyncio.open_unix_connection(sock=sock, limit=entry.limits.header_bytes)
            except OSError:
                sock.close()
                continue
            task = asyncio.create_task(self._serve(entry, reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, entry: AgentEntry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        if not self.link.reserve():
            await _answer(writer, Refused(503, "backlog", "clove egress: the kernel is not taking connection records; try again later"), as_socks=False)
            return
        conn = Connection(asyncio.current_task(), now, now)
        record: dict[str, Any] = {"t": "conn", "id": entry.agent_id, "agent": entry.name, "host": "", "port": 0, "method": ""}
        upstream: asyncio.StreamWriter | None = None
        is_socks = False
        try:
            if len(entry.open) >= entry.limits.connections:
                raise Refused(403, "too_many_connections", f'clove egress: agent "{entry.name}" already has {entry.limits.connections} connections open (the limit)')
            entry.open.add(conn)
            first = await _first_byte(reader)
            is_socks = first[0] == socks.VERSION
            head = await (self._read_socks(reader, writer) if is_socks else self._read_head(reader, entry, first))
            record.update(host=head.host, port=head.port, method=head.method)
            address = await self._admit(entry, head)
            record["address"] = address.compressed
            up_reader, upstream = await self._connect(entry, head, address)
            if head.tunnel:
                writer.write(socks.reply(0) if is_socks else TUNNEL_OK)
            else:
                upstream.write(head.forward)
                conn.up += len(head.forward)
            record["decision"], record["code"] = "allowed", "ok"
            await self._pump(entry, conn, reader, writer, up_reader, upstream, tunnel=head.tunnel)
        except Refused as refused:
            record.update(decision="denied", code=refused.code, reason=refused.reason)
            if not entry.refusals.take(1) and refused.code != "too_many_connections":
                # Past its burst of refusals an agent waits for each, holding one of its
                # connection places: a refusal flood is bounded by its own limits.
                delay = min(1.0, entry.refusals.retry_after(1))
                record["slowed_ms"] = round(delay * 1000)
                await asyncio.sleep(delay)
            await _answer(writer, refused, as_socks=is_socks)
        except asyncio.CancelledError:
            record.setdefault("decision", "denied")
            record["code"] = conn.ended or "cancelled"
            if record["decision"] == "denied":
                record["reason"] = f"closed while {'connecting' if record['host'] else 'reading the request'}: {record['code']}"
        except (ConnectionError, OSError) as err:
            record.setdefault("decision", "allowed")
            record["code"] = conn.ended or "reset"
            record["reason"] = str(err)[:200]
        finally:
            entry.open.discard(conn)
            entry.slot_freed.set()
            entry.used += conn.up + conn.down
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            record.update(up=conn.up, down=conn.down, duration_ms=round((time.monotonic() - conn.started) * 1000, 1))
            if conn.ended and record.get("code") == "ok":
                record["code"] = conn.ended
            self.link.record(record)

    async def _read_socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RequestHead:
        try:
            host, port = await socks.read_request(reader, writer)
        except socks.SocksError as err:
            raise Refused(400, "bad_request", f"clove egress: {err}", socks_reply=err.reply) from None
        except asyncio.IncompleteReadError:
            raise Refused(400, "bad_request", "clove egress: the connection closed before a complete SOCKS request", socks_reply=None) from None
        return RequestHead("SOCKS5", host, port, b"")

    async def _read_head(self, reader: asyncio.StreamReader, entry: AgentEntry, first: bytes) -> RequestHead:
        try:
            raw = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise Refused(431, "header_too_large", f"clove egress: the request head is longer than {entry.limits.header_bytes} bytes") from None
        except asyncio.IncompleteReadError:
            raise Refused(400, "bad_request", "clove egress: the connection closed before a complete request head") from None
        try:
            return parse_head(raw)
        except BadRequest as bad:
            raise Refused(bad.status, bad.code, f"clove egress: {bad}") from None

    async def _admit(self, entry: AgentEntry, head: RequestHead) -> IPAddress:
        """Rule, rate, budget, then the resolved address; the address to connect to."""
        host, port = normalize_host(head.host), head.port
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not entry.policy.admits(host, port):
            raise Refused(403, "not_allowed", f'clove egress: {target} is not in the allowed domains of agent "{entry.name}" (allowed: {entry.policy.describe()})')
        if not entry.connects.take(1):
            raise Refused(403, "rate_limited", f'clove egress: agent "{entry.name}" opens new connections faster than {entry.limits.connect_rate:g}/s (burst {entry.limits.connect_burst}); retry in {entry.connects.retry_after(1):.1f} s')
        budget = entry.limits.bytes_budget
        if budget is not None and entry.used + _live_bytes(entry) >= budget:
            raise Refused(403, "bytes_exhausted", f'clove egress: agent "{entry.name}" has used its egress budget of {budget} bytes')
        addresses = await self._resolve(entry, host, port)
        refused: list[str] = []
        for address in addresses:
            why = entry.policy.address_allowed(address)
            if why is None:
                return address
            refused.append(f"{address.compressed} ({why})")
        ranges = ", ".join(str(n) for n in entry.policy.private) or "none"
        raise Refused(403, "private_address", f'clove egress: {target} resolves to {", ".join(refused)}, which agent "{entry.name}" may not reach (egress_private: {ranges})')

    async def _resolve(self, entry: AgentEntry, host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if host in self.resolve:
            return [self.resolve[host]]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), entry.limits.connect_timeout)
        except (OSError, asyncio.TimeoutError) as err:
            raise Refused(502, "resolve_failed", f"clove egress: cannot resolve {host}: {err}") from None
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))

    async def _connect(self, entry: AgentEntry, head: RequestHead, address: IPAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_connection(address.compressed, head.port, limit=_CHUNK), entry.limits.connect_timeout)
        except asyncio.TimeoutError:
            raise Refused(504, "connect_timeout", f"clove egress: {head.host}:{head.port} ({address}) did not answer within {entry.limits.connect_timeout:g} s") from None
        except OSError as err:
            raise Refused(502, "connect_failed", f"clove egress: cannot connect to {head.host}:{head.port} ({address}): {err.strerror or err}") from None

    async def _pump(
        self, entry: AgentEntry, conn: Connection,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, *, tunnel: bool,
    ) -> None:  # fmt: skip
        """Both directions until both are done (a tunnel half-closes); plain HTTP ends when the
        upstream closes (it was asked to, after one response)."""
        up = asyncio.create_task(self._copy(entry, conn, reader, upstream, "up"))
        down = asyncio.create_task(self._copy(entry, conn, up_reader, writer, "down"))
        try:
            if tunnel:
                await asyncio.gather(up, down)
            else:
                await down
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)

    async def _copy(self, entry: AgentEntry, conn: Connection, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str) -> None:
        budget = entry.limits.bytes_budget
        while True:
            data = await src.read(_CHUNK)
            if not data:
                if dst.can_write_eof():
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                return
            n = len(data)
            conn.last = time.monotonic()
            if direction == "up":
                conn.up += n
            else:
                conn.down += n
            while not entry.bytes.take(n):
                await asyncio.sleep(entry.bytes.retry_after(n))
            if budget is not None and entry.used + _live_bytes(entry) > budget:
                conn.ended = "bytes_exhausted"
                raise ConnectionAbortedError(f"agent {entry.name} used its egress budget of {budget} bytes")
            dst.write(data)
            await dst.drain()
            conn.last = time.monotonic()


def _live_bytes(entry: AgentEntry) -> int:
    return sum(c.up + c.down for c in entry.open)


def _wire(limits: Limits) -> dict[str, Any]:
    return {name: getattr(limits, name) for name in limits.__dataclass_fields__}


async def _first_byte(reader: asyncio.StreamReader) -> bytes:
    """``0x05`` starts SOCKS5; anything else is HTTP."""
    try:
        return await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        raise Refused(400, "bad_request", "clove egress: the connection closed before a request", socks_reply=None) from None


async def _answer(writer: asyncio.StreamWriter, refused: Refused, *, as_socks: bool) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        if not as_socks:
            writer.write(refusal(refused.status, refused.code, refused.reason))
        elif refused.socks_reply is not None:
            writer.write(socks.reply(refused.socks_reply))
        await writer.drain()
    writer.close()
