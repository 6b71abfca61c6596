"""The exporter's HTTP server and the snapshot reference it serves (see :mod:`.prometheus`).

Imported only when ``[metrics] listen`` is set: prometheus_client and its HTTP server cost a
kernel that serves no metrics nothing (about 80 ms and 12 MB at import).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from clove.kernel.services.prometheus_collector import SnapshotCollector
from clove.kernel.services.prometheus_http import BoundedServer, serve

if TYPE_CHECKING:
    from clove.config.prometheus import MetricsSection
    from clove.kernel.services.prometheus_snapshot import Snapshot, SnapshotBuilder

__all__ = ["RETRY_S", "PrometheusExporter"]

log = logging.getLogger(__name__)

#: Seconds between attempts to bind an address that could not be bound.
RETRY_S: Final = 5.0


class PrometheusExporter:
    """The loop's side of the exporter: publishes snapshots and owns the HTTP server.

    :param settings: the ``[metrics]`` table (``listen`` must be set).
    :param builder: builds each snapshot on the loop.
    :param journal_note: records ``metrics.listening`` / ``metrics.unavailable``.
    """

    def __init__(
        self, settings: MetricsSection, builder: SnapshotBuilder, *, journal_note: Callable[[str, dict[str, Any]], None] | None = None
    ) -> None:
        if settings.listen is None:
            raise ValueError("the exporter needs [metrics].listen")
        self.settings = settings
        self.builder = builder
        self.journal_note: Callable[[str, dict[str, Any]], None] = journal_note or (lambda *_: None)
        #: The newest snapshot: replaced by the loop, read by the server's threads.
        self.snapshot: Snapshot | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(lambda: self.snapshot, refused=lambda: self.server.refused if self.server else 0))
        ProcessCollector(namespace="clove_kernel", registry=self.registry)  # the kernel process's own CPU, memory, fds
        self.server: BoundedServer | None = None
        self.thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None
        self._failed_once = False

    @property
    def fleet_connected(self) -> Callable[[], bool] | None:
        """The fleet's hook (see :attr:`SnapshotBuilder.fleet_connected`): a callable run on
        the loop, ``True`` while this board's fleet link is up."""
        return self.builder.fleet_connected

    @fleet_connected.setter
    def fleet_connected(self, hook: Callable[[], bool] | None) -> None:
        self.builder.fleet_connected = hook

    def publish(self) -> None:
        """Build a snapshot and hand it to the server's threads (loop thread)."""
        self.snapshot = self.builder.build()

    def listen(self) -> bool:
        """Bind and start serving; ``False`` (logged, journaled once) when the address cannot be bound."""
        assert self.settings.listen is not None  # noqa: S101 - checked in __init__
        host, port = self.settings.listen
        try:
            self.server, self.thread = serve(host, port, self.registry, min_interval=self.settings.interval)
        except OSError as err:
            if not self._failed_once:
                self._failed_once = True
                log.error("metrics: cannot listen on %s:%d (%s); retrying every %g s", host, port, err.strerror or err, RETRY_S)
                self.journal_note("metrics.unavailable", {"listen": f"{host}:{port}", "error": str(err.strerror or err), "retry_s": RETRY_S})
            return False
        self.address = (host, int(self.server.server_port))
        log.info("metrics: serving Prometheus /metrics on %s:%d", host, self.address[1])
        self.journal_note("metrics.listening", {"listen": f"{host}:{self.address[1]}"})
        return True

    def close(self) -> None:
        """Stop the server (a scrape still running finishes on its daemon thread)."""
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        if self.thread is not None:
            self.thread.join(timeout=2.0)  # returns at once: the thread only waits in select
            self.thread = None
        if server is not None:
            server.server_close()
