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
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT_S", "BoundedServer", "serve"]

MAX_CONNECTIONS: Final = 4
REQUEST_TIMEOUT_S: Final = 10.0


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


def serve(host: str, port: int, registry: CollectorRegistry) -> tuple[BoundedServer, threading.Thread]:
    """Bind ``host:port`` (IPv4 or IPv6) and serve ``registry`` from a daemon thread.

    :raises OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(BoundedServer):
        address_family = family

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_until_stopped, name="clove-metrics", daemon=True)
    thread.start()
    return server, thread
