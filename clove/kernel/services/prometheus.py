"""``/metrics`` for Prometheus, served off the kernel's loop (docs/metrics.md, "Prometheus").

With ``[metrics] listen`` set, the kernel runs prometheus_client's HTTP server on its own
threads with one custom collector (:class:`~.prometheus_collector.SnapshotCollector`). The
threads share exactly one thing with the loop: a reference to the newest immutable
:class:`~.prometheus_snapshot.Snapshot`, which the loop replaces every ``interval`` seconds
(one attribute store; the threads only read it). A scrape therefore never waits for the loop
and the loop never waits for a scrape. Building a snapshot is spread over loop turns,
:data:`~.prometheus_snapshot.SWEEP_SLICE` agents a turn, so a thousand agents never stall the
loop for long.

Threads: the loop owns :class:`~.prometheus_exporter.PrometheusExporter` (its timer, the
builder and the tallies); the server's threads run only the collector.

A port that cannot be bound (in use, no such address) does not stop the kernel: the failure
is logged and journaled once, and binding is retried every
:data:`~.prometheus_exporter.RETRY_S` seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from clove import __version__
from clove.kernel.audit.journal import Category

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.services.host import ServiceRegistry
    from clove.kernel.services.prometheus_exporter import PrometheusExporter

__all__ = ["attach"]


def attach(kernel: ServiceRegistry, *, syscall_names: Iterable[str], kernel_time: Any) -> PrometheusExporter | None:
    """Start the exporter when ``[metrics] listen`` is set; ``None`` (nothing runs) otherwise.

    :param syscall_names: the syscall registry's names (the only ``syscall`` label values).
    :param kernel_time: ``Dispatcher.figures``: kernel time used per caller.
    """
    settings = kernel.config.metrics
    if settings.listen is None:
        return None
    # Only when serving: a kernel without [metrics] listen holds none of the exporter's modules.
    from clove.kernel.services.prometheus_exporter import RETRY_S, PrometheusExporter
    from clove.kernel.services.prometheus_snapshot import EXIT_REASONS, SWEEP_SLICE, SnapshotBuilder, Sources
    from clove.kernel.services.prometheus_tally import JournalTally

    tally = JournalTally(kernel.journal, syscall_names)

    def cgroup_dirs(agent: Agent) -> tuple[str, ...]:
        runtime = kernel.supervisor.runtime(agent)
        cgroup = getattr(runtime, "cgroup", None) if runtime is not None else None
        return tuple(str(d) for d in cgroup.dirs) if cgroup is not None else ()

    def llm() -> dict[str, Any] | None:
        service = getattr(kernel, "llm", None)
        return service.gateway.figures() if service is not None and service.enabled else None

    sources = Sources(
        agents=lambda: list(kernel.supervisor.table),
        cgroup_dirs=cgroup_dirs,
        kernel_time=kernel_time,
        devices=lambda: kernel.devices.views(None),
        interlocks=lambda: kernel.interlocks.views(),
        llm=llm,
        journal_figures=lambda: (kernel.journal.last_id, kernel.journal.write_errors),
        version=__version__,
        started_at=float(getattr(kernel, "started_at", 0.0)),
    )
    builder = SnapshotBuilder(settings, sources, tally, clock=kernel.loop.clock)

    def journal_note(event: str, details: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the journal is closed (shutdown)
            kernel.journal.append(Category.RESOURCE, event, decision="n/a", details=details)

    exporter = PrometheusExporter(settings, builder, journal_note=journal_note)
    fleet = getattr(kernel, "fleet", None)  # clove/fleet's service, when the kernel exposes one
    if fleet is not None and hasattr(fleet, "state"):
        exporter.fleet_connected = lambda: fleet.state == "connected"
    interlock_names = frozenset(spec.name for spec in kernel.config.interlocks)
    kernel.supervisor.listeners.append(lambda event, agent, details: tally.lifecycle(event, agent.id, details, EXIT_REASONS))
    kernel.events.watchers.append(
        lambda event: builder.interlock_engaged(str((event.get("data") or {}).get("interlock")), interlock_names)
        if event.get("type") == "INTERLOCK_ENGAGED" and isinstance(event.get("data"), dict)
        else None
    )
    closed = False

    def tick() -> None:
        """Every interval: start a sweep (unless the last one is still going)."""
        if closed:
            return
        kernel.loop.call_later(settings.interval, tick)  # first: a failing build must not end the ticks
        if not builder.sweeping:
            builder.begin()

    def housekeeping() -> None:
        """After every loop turn: count new journal records; go on with the sweep, a slice a turn."""
        tally.poll()
        if builder.sweeping and builder.advance(SWEEP_SLICE):
            exporter.snapshot = builder.finish()

    kernel.loop.housekeeping.append(housekeeping)

    def try_listen() -> None:
        if not closed and not exporter.listen():
            kernel.loop.call_later(RETRY_S, try_listen)

    def close() -> None:
        nonlocal closed
        closed = True
        exporter.close()

    exporter.publish()  # the first scrape already has figures
    kernel.loop.call_later(settings.interval, tick)
    try_listen()
    kernel.on_shutdown.append(close)
    return exporter
