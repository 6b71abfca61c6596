"""The exporter's HTTP server: prometheus_client's WSGI app behind a server that holds at most
:data:`MAX_CONNECTIONS` connections at once.

prometheus_client's own server starts a thread per connection, without bound. An agent that
shares the host's network (``network = "full"``) could open thousands and make the kernel
process hold a thread for each. Here a connection beyond the bound is closed at once (counted
in :attr:`BoundedServer.refused`, served as ``clove_metrics_refused_connections_total``), and a
client silent for :data:`REQUEST_TIMEOUT_S` loses its connection: a flood can delay a scrape,
never grow the kernel.

The serving thread sleeps in ``select`` until a connection or :meth:`BoundedServer.stop`
arrives: no periodic wake-ups (socketserver's ``serve_forever`` polls twice a second, each time
taking the interpreter lock from the kernel's loop, and an idle board should stay idle).

The page is rendered at most once per ``[metrics] interval`` and served at most every
:data:`MIN_GAP_S` (:class:`RenderedOnce`): a client scraping back to back gets the same bytes,
slowly, rather than the kernel's CPU.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

__all__ = ["MAX_CONNECTIONS", "MIN_GAP_S", "REQUEST_TIMEOUT_S", "BoundedServer", "RenderedOnce", "serve"]

MAX_CONNECTIONS: Final = 4
REQUEST_TIMEOUT_S: Final = 10.0
#: Pages are served at least this far apart (seconds), to all clients together.
MIN_GAP_S: Final = 0.05


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S  # per read and write: a silent client lets go of its slot

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Requests are not logged (the kernel's log is for the kernel)."""


class BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most :data:`MAX_CONNECTIONS` at once."""

    daemon_threads = True
    request_queue_size = 64  # the listen backlog: a burst is accepted (and refused) fast, not left in SYN retries
    timeout = 1.0  # handle_request()'s wait, should a ready connection vanish before accept

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0  # written by the serving thread only
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        super().__init__(*args, **kwargs)

    def serve_until_stopped(self) -> None:
        """Accept connections until :meth:`stop` (the serving thread's body)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = [key.fd for key, _ in selector.select()]
                if self._wake_r in ready:
                    return
                self.handle_request()  # ready: accepts at once (at most `timeout` if the peer vanished)

    def stop(self) -> None:
        """Wake the serving thread and make it return (any thread)."""
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already woken

    def server_close(self) -> None:
        super().server_close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)  # busy: close it rather than start another thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class RenderedOnce:
    """A WSGI app's page rendered at most once per ``min_interval`` seconds for each format
    (plain or OpenMetrics, gzipped or not), whoever asks and however often.

    Rendering holds the interpreter lock for milliseconds (about 11 ms with 40 agents: their
    series and cgroup files), and the kernel's loop needs that lock for every request it
    serves; a client scraping back to back (an agent with the host's network can reach the
    port) kept the loop waiting behind it. A scrape within ``min_interval`` of the last render
    gets its bytes: the snapshot behind the page changes only every ``[metrics] interval``
    anyway. One render runs at a time; scrapes that arrive meanwhile wait for it and share it.
    Query filters (``name[]``) are ignored: the whole page, always.

    Even a cached page costs the HTTP exchange around it (about 0.5 ms of Python), so pages
    leave at least ``min_gap`` seconds apart, to all clients together: a client asking back to
    back waits (without the interpreter lock) instead of taking a share of the loop's.
    """

    def __init__(
        self, app: WsgiApp, min_interval: float, *, min_gap: float = MIN_GAP_S,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self._app = app
        self._min_interval = min_interval
        self._min_gap = min_gap
        self._clock = clock
        self._sleep = sleep
        self._next = -float("inf")  # when the next page may leave
        self._lock = threading.Lock()
        self._pages: dict[tuple[bool, bool], tuple[float, str, list[tuple[str, str]], bytes]] = {}
        self.renders = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO") == "/favicon.ico":
            return self._app(environ, start_response)  # an error or an empty page: nothing to render
        key = ("openmetrics" in environ.get("HTTP_ACCEPT", ""), "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""))
        with self._lock:  # one scrape at a time: the others wait here, off the interpreter lock
            wait = self._next - self._clock()
            if wait > 0:
                self._sleep(wait)
            page = self._pages.get(key)
            if page is None or self._clock() - page[0] >= self._min_interval:
                page = self._pages[key] = self._render({**environ, "QUERY_STRING": ""})
            self._next = self._clock() + self._min_gap
        _, status, headers, body = page
        start_response(status, list(headers))
        return [body]

    def _render(self, environ: dict[str, Any]) -> tuple[float, str, list[tuple[str, str]], bytes]:
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            answer["status"], answer["headers"] = status, list(headers)

        body = b"".join(self._app(environ, capture))
        self.renders += 1
        return self._clock(), answer["status"], answer["headers"], body


def serve(host: str, port: int, registry: CollectorRegistry, *, min_interval: float = 1.0) -> tuple[BoundedServer, threading.Thread]:
    """Bind ``host:port`` (IPv4 or IPv6) and serve ``registry`` from a daemon thread, the page
    rendered at most once per ``min_interval`` seconds (:class:`RenderedOnce`).

    :raises OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(BoundedServer):
        address_family = family

    server = make_server(host, port, RenderedOnce(make_wsgi_app(registry), min_interval), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_until_stopped, name="clove-metrics", daemon=True)
    thread.start()
    return server, thread
