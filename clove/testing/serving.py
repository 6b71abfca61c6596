"""What the loopback test servers share: serving in a daemon thread, and stopping at once."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import TypeVar

S = TypeVar("S", bound="BackgroundServer")


class BackgroundServer:
    """Serves ``self._server`` from a daemon thread. Subclasses create ``_server`` and
    ``_stopping`` (set on close, so handlers that delay or hang end at once)."""

    _thread_name = "test-server"
    _server: ThreadingHTTPServer
    _stopping: threading.Event
    _thread: threading.Thread | None = None

    def start(self: S) -> S:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self._thread_name, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; delayed, trickling and hung responses end at once."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
