"""The relay loop G runs for an agent's relays, without a sandbox: socketpairs for one
connection's pumping, real loopback TCP and Unix sockets for accepting, the bound and a Unix side
that is absent. The loop runs in a thread of its own here (in G it is the only thread)."""

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clove.sandbox import loopback
from clove.sandbox.relayloop import Connection, RelayLoop, dispatch
from clove.sandbox.relays import Relay
from clove.testing.kernel import poll_for

MIB = 1 << 20


class LoopThread:
    """Runs :func:`dispatch` on ``selector`` until stopped; ``call`` runs a function on it."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                dispatch(self.selector, 0.02)
        except BaseException as err:  # the test reports it
            self.error = err

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        assert self.error is None, self.error


def pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


def pair() -> tuple[socket.socket, socket.socket]:
    """An end the test uses (blocking, with a timeout) and an end the relay uses (non-blocking)."""
    ours, relays = socket.socketpair()
    ours.settimeout(10)
    relays.setblocking(False)
    return ours, relays


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket, Connection, LoopThread]]:
    """(the agent's end, the service's end, the connection between them, its loop)."""
    agent, relay_tcp = pair()
    service, relay_unix = pair()
    selector = selectors.DefaultSelector()
    conn = Connection(relay_tcp, relay_unix, selector, buffer_bytes=16 << 10)
    with LoopThread(selector) as loop:
        yield agent, service, conn, loop
    agent.close()
    service.close()
    conn.abort()


def test_a_large_payload_crosses_both_ways_at_once(connection) -> None:
    agent, service, conn, _ = connection
    up, down = pattern(3 * MIB), pattern(2 * MIB)[::-1]
    got: dict[str, bytes] = {}

    def serve() -> None:
        sender = threading.Thread(target=lambda: (service.sendall(down), service.shutdown(socket.SHUT_WR)))
        sender.start()
        got["service"] = recv_all(service)
        sender.join()

    server = threading.Thread(target=serve)
    server.start()
    agent.sendall(up)
    agent.shutdown(socket.SHUT_WR)
    got["agent"] = recv_all(agent)
    server.join(10)
    assert got["service"] == up and got["agent"] == down
    poll_for(lambda: conn.closed, 5, message="the connection to close once both ways ended")


def test_half_close_passes_eof_on_and_keeps_the_answer_coming(connection) -> None:
    agent, service, conn, _ = connection
    agent.sendall(b"GET / HTTP/1.0\r\n\r\n")
    agent.shutdown(socket.SHUT_WR)  # request done; the answer must still arrive
    assert recv_all(service) == b"GET / HTTP/1.0\r\n\r\n"  # EOF reached the service
    assert not conn.closed
    service.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
    service.close()
    assert recv_all(agent) == b"HTTP/1.0 200 OK\r\n\r\nhello"
    poll_for(lambda: conn.closed, 5, message="the connection to close")


def test_a_slow_reader_stops_the_relay_reading_at_the_buffer_bound(connection) -> None:
    agent, service, conn, _ = connection
    agent.setblocking(False)
    sent = 0
    # The service reads nothing: the socket buffers and the relay's fill, then the agent blocks.
    stalled = 0
    while stalled < 20:
        try:
            sent += agent.send(b"x" * 65536)
            stalled = 0
        except BlockingIOError:
            stalled += 1
            threading.Event().wait(0.01)
    assert sent > conn.buffer_bytes * 2  # the kernel's buffers hold the rest, not the relay
    assert len(conn.up.buf) <= conn.buffer_bytes
    service.setblocking(True)
    received = 0
    while received < sent:
        received += len(service.recv(1 << 16))
    assert received == sent  # backpressure lost nothing


def test_the_service_going_away_mid_stream_resets_the_agent(connection) -> None:
    agent, service, conn, _ = connection
    agent.sendall(b"start")
    assert service.recv(16) == b"start"
    service.close()
    agent.settimeout(5)
    # EOF is passed on as a shutdown; the relay's next write to the service fails and resets us.
    assert isinstance(send_until_error(agent), (BrokenPipeError, ConnectionResetError))
    poll_for(lambda: conn.closed, 5, message="the connection to be torn down")


# ---- accepting: real TCP on the host's loopback, a real Unix server ---------------------------


@pytest.fixture
def unix_echo(tmp_path: Path) -> Iterator[str]:
    """An echo server on a Unix socket: echoes until EOF, then half-closes."""
    path = str(tmp_path / "svc.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    server.settimeout(0.1)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            worker = threading.Thread(target=echo, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    server.close()


def relay_loop(path: str, **kw: int) -> tuple[RelayLoop, int, selectors.BaseSelector]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    selector = selectors.DefaultSelector()
    return RelayLoop(selector, [Relay(port, path)], [listener], **kw), port, selector


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def send_until_error(sock: socket.socket) -> OSError | None:
    try:
        for _ in range(1000):
            sock.sendall(b"y" * 65536)
    except OSError as err:
        return err
    return None


def is_reset(port: int) -> bool:
    """Whether a connection to ``port`` is reset (at connect, send or receive)."""
    try:
        with connect(port) as sock:
            sock.sendall(b"ping")
            sock.recv(16)
    except ConnectionResetError:
        return True
    return False


def echoes(sock: socket.socket, payload: bytes = b"ping") -> bool:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        data = sock.recv(1 << 16)
        if not data:
            return False
        got += data
    return got == payload


def test_accepted_connections_reach_the_unix_service(unix_echo: str) -> None:
    loop, port, selector = relay_loop(unix_echo)
    with LoopThread(selector):
        socks = [connect(port) for _ in range(5)]
        assert all(echoes(s, pattern(100_000)) for s in socks)
        for s in socks:
            s.close()
        poll_for(lambda: loop.connections == 0, 5, message="the relayed connections to end")
    assert loop.counts["relayed"] == 5
    loop.close()


def test_an_absent_unix_side_resets_the_agents_connection(tmp_path: Path) -> None:
    loop, port, selector = relay_loop(str(tmp_path / "nobody.sock"))
    with LoopThread(selector):
        assert is_reset(port)  # the handshake completes in the kernel's backlog; then the reset
    assert loop.counts == {"relayed": 0, "over_bound": 0, "unreachable": 1}
    loop.close()


def test_the_connection_bound_resets_the_extra_one_and_frees_its_slot(unix_echo: str) -> None:
    loop, port, selector = relay_loop(unix_echo, max_connections=3)
    with LoopThread(selector):
        held = [connect(port) for _ in range(3)]
        assert all(echoes(s) for s in held)
        assert is_reset(port)
        assert all(echoes(s) for s in held)  # the others are untouched
        held.pop().close()
        poll_for(lambda: loop.connections == 2, 5, message="the slot to be freed")
        again = connect(port)
        assert echoes(again)
        for s in [*held, again]:
            s.close()
    assert loop.counts["over_bound"] == 1 and loop.counts["relayed"] == 4
    loop.close()


def test_listen_refuses_a_port_in_use_and_closes_what_it_opened() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    free = socket.create_server(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="in use"):
        loopback.listen([Relay(free_port, "/x"), Relay(port, "/y")])
    assert len(os.listdir("/proc/self/fd")) == before
    taken.close()


def test_relays_round_trip_the_wire_and_refuse_bad_ones() -> None:
    relay = Relay(3128, "/state/agents/1/ipc/egress.sock")
    assert Relay.from_wire(relay.to_wire()) == relay
    for bad in ({"port": 0, "path": "/x"}, {"port": 70000, "path": "/x"}, {"port": True, "path": "/x"},
                {"port": 80, "path": "rel"}, {"port": 80}, [80, "/x"]):  # fmt: skip
        with pytest.raises(ValueError, match="relay"):
            Relay.from_wire(bad)

