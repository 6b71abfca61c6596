"""A loopback HTTP server for tests: runs in threads on ``127.0.0.1`` and a free port.

Built-in endpoints, driven by the URL so that a test in another process (an agent) can use them::

    /echo                  200, JSON {method, path, query, headers, body, encoding} of the request
    /status/<code>         that status with the body "status <code>"
    /delay/<seconds>       waits, then 200 "slept <seconds>" (close() cuts the wait short)
    /bytes/<n>             n bytes of "x" with a Content-Length; ?chunked=1 streams them chunked
    /binary                a body that is not UTF-8
    /redirect?to=<url>     302 (or ?status=) with Location: <url>
    /trickle?chunks=<n>&interval=<s>   n one-byte chunks, s seconds apart
    /headers?<name>=<value>...         200 with those response headers

and any path configured with :meth:`HttpTestServer.route`. Every request is recorded in
:attr:`HttpTestServer.requests`.

Example::

    with HttpTestServer() as server:
        server.route("/hello", status=201, headers={"X-Kind": "greeting"}, body=b"hi")
        urllib.request.urlopen(server.url("/hello"))
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clove.testing.serving import BackgroundServer

__all__ = ["HttpTestServer", "RecordedRequest", "Route"]

BINARY_BODY = bytes(range(128, 256)) + b"\x00\xff\xfe"


@dataclass(frozen=True)
class Route:
    """A canned response: ``delay`` seconds before the status line."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "CloveTestHTTP/1.0"
    timeout = 30  # an idle keep-alive connection's thread ends after this
    owner: HttpTestServer  # set on the subclass each server makes

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        record = RecordedRequest(self.command, split.path, query, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
        self.owner._record(record)
        route = self.owner._routes.get(split.path)
        try:
            if route is not None:
                self._wait(route.delay)
                self._reply(route.status, route.body, route.headers)
            else:
                self._builtin(split.path, query, record)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.owner._stopping.wait(seconds)

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _builtin(self, path: str, query: dict[str, str], record: RecordedRequest) -> None:
        parts = path.strip("/").split("/")
        if path == "/echo":
            try:
                text, encoding = record.body.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                text, encoding = base64.b64encode(record.body).decode(), "base64"
            echo = {"method": record.method, "path": path, "query": query, "headers": record.headers, "body": text, "encoding": encoding}
            self._reply(200, json.dumps(echo).encode(), {"Content-Type": "application/json"})
        elif parts[0] == "status" and len(parts) == 2 and parts[1].isdigit():
            self._reply(int(parts[1]), f"status {parts[1]}".encode(), {"Content-Type": "text/plain"})
        elif parts[0] == "delay" and len(parts) == 2:
            self._wait(float(parts[1]))
            self._reply(200, f"slept {parts[1]}".encode(), {"Content-Type": "text/plain"})
        elif parts[0] == "bytes" and len(parts) == 2 and parts[1].isdigit():
            self._bytes(int(parts[1]), chunked=query.get("chunked") == "1")
        elif path == "/binary":
            self._reply(200, BINARY_BODY, {"Content-Type": "application/octet-stream"})
        elif path == "/redirect":
            self._reply(int(query.get("status", "302")), b"", {"Location": query.get("to", "/")})
        elif path == "/trickle":
            self._trickle(int(query.get("chunks", "5")), float(query.get("interval", "0.5")))
        elif path == "/headers":
            self._reply(200, b"ok", query)
        else:
            self._reply(404, b"no such endpoint", {"Content-Type": "text/plain"})

    def _bytes(self, size: int, *, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        block = b"x" * 65536
        left = size
        while left > 0:
            piece = block[: min(left, len(block))]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            left -= len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _trickle(self, chunks: int, interval: float) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(chunks))
        self.end_headers()
        for _ in range(chunks):
            self.wfile.write(b".")
            self.wfile.flush()
            if self.owner._stopping.wait(interval):
                break


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client gone is no error
            super().handle_error(request, client_address)


class HttpTestServer(BackgroundServer):
    """The server; a context manager (or :meth:`start` and :meth:`close`)."""

    _thread_name = "http-test-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path if path.startswith('/') else '/' + path}"

    def route(self, path: str, *, status: int = 200, headers: dict[str, str] | None = None, body: bytes | str = b"", delay: float = 0.0) -> str:
        """Answer ``path`` (any method) with this response; returns its URL."""
        data = body.encode() if isinstance(body, str) else body
        self._routes[path] = Route(status, dict(headers or {}), data, delay)
        return self.url(path)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
