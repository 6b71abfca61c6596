"""One HTTP connection of the LLM endpoint (clove.kernel.services.llmhttpconn) on the kernel's real
loop and a real Unix socket pair: answers larger than the socket buffer leave the loop free,
pipelined requests are answered in order, and a client that stops reading is dropped."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from clove.kernel.core.loop import Loop
from clove.kernel.services.llmhttpconn import (
    RECV_BYTES,
    ConnectionLimits,
    HttpConnection,
    HttpRequest,
    Writers,
)

BIG = 8 * 1024 * 1024


class Served:
    def __init__(self, body_for: Callable[[HttpRequest], bytes]) -> None:
        self.loop = Loop(tick=0.01)
        self.writers = Writers(self.loop)
        self.requests: list[HttpRequest] = []
        self.errors: list[tuple[int, str]] = []
        self.closed = False
        self.body_for = body_for
        self.client, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.client.setblocking(False)
        self.connection = HttpConnection(theirs, loop=self.loop, writers=self.writers, limits=ConnectionLimits(1 << 20, 4096, 0.5),
                                         on_request=self.answer, on_error=self.error, on_closed=self.gone)  # fmt: skip

    def answer(self, connection: HttpConnection, request: HttpRequest) -> None:
        self.requests.append(request)
        body = self.body_for(request)
        connection.respond(200, [("content-length", str(len(body)))], [body])

    def error(self, connection: HttpConnection, status: int, message: str) -> None:
        self.errors.append((status, message))
        connection.respond(status, [("content-length", "0")], [], close=True)

    def gone(self, connection: HttpConnection) -> None:
        self.closed = True

    def turn_until(self, condition: Callable[[], bool], turns: int = 5000) -> None:
        for _ in range(turns):
            if condition():
                return
            self.loop.run_once()
        raise AssertionError("the condition never held")

    def read_available(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self.client.recv(1 << 20)
            except BlockingIOError:
                return out
            if not chunk:
                return out
            out += chunk


@pytest.fixture
def served() -> Iterator[Callable[[Callable[[HttpRequest], bytes]], Served]]:
    made: list[Served] = []

    def make(body_for: Callable[[HttpRequest], bytes]) -> Served:
        made.append(Served(body_for))
        return made[-1]

    yield make
    for s in made:
        s.connection.close()
        s.client.close()
        s.writers.close()


def test_an_answer_larger_than_the_socket_buffer_never_blocks_the_loop(served):
    s = served(lambda r: b"x" * BIG)
    ticks = []
    s.client.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    s.turn_until(lambda: bool(s.requests))
    s.loop.call_later(0.0, lambda: ticks.append(1))
    s.loop.run_once()  # the loop turns while most of the answer waits for the client to read
    assert ticks == [1] and s.connection.describe()["out_bytes"] > 0
    box = bytearray()

    def drained() -> bool:
        box.extend(s.read_available())
        return box.endswith(b"x" * 16) and len(box) > BIG

    s.turn_until(drained, turns=100_000)
    head, _, body = bytes(box).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"x" * BIG and not s.closed


def test_pipelined_requests_are_answered_one_at_a_time_in_order(served):
    """A long pipeline (more requests than Python's recursion limit) is served turn by turn."""
    s = served(lambda r: r.target.encode())
    count = 4000
    pipeline = memoryview(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(count)))
    box = bytearray()
    buffered = [0]

    def all_answered() -> bool:
        nonlocal pipeline
        if pipeline:
            try:
                pipeline = pipeline[s.client.send(pipeline) :]
            except BlockingIOError:
                pass
        box.extend(s.read_available())
        buffered[0] = max(buffered[0], s.connection.describe()["buffered"])
        return box.count(b"HTTP/1.1 200") == count

    s.turn_until(all_answered, turns=200_000)
    assert [r.target for r in s.requests] == [f"/{i}" for i in range(count)]
    assert buffered[0] <= RECV_BYTES  # read only when h11 needs data: one read's worth at most
    assert box.index(b"\r\n\r\n/1HTTP") < box.index(b"\r\n\r\n/2HTTP") and not s.closed


def test_a_client_that_stops_reading_is_dropped_after_the_idle_time(served):
    s = served(lambda r: b"y" * BIG)
    s.client.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    s.turn_until(lambda: s.closed, turns=100_000)  # never read: closed once idle_timeout passes without progress
    assert s.requests and s.connection.describe()["out_bytes"] == 0


def test_a_body_larger_than_allowed_is_refused_from_content_length(served):
    s = served(lambda r: b"")
    s.client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\n\r\n")
    box = bytearray()

    def answered() -> bool:
        box.extend(s.read_available())
        return b"\r\n\r\n" in box

    s.turn_until(answered)
    assert box.startswith(b"HTTP/1.1 413") and b"connection: close" in box and s.errors[0][0] == 413 and not s.requests
