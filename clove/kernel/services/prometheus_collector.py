"""The exporter's thread side: a prometheus_client Collector that turns the newest
:class:`~.prometheus_snapshot.Snapshot` into metric families.

It runs on the HTTP server's threads and reads only the snapshot (immutable) and files: each
live agent's cgroup counters (memory, CPU, throttling, OOM kills) from the cgroup filesystem,
or its process's from ``/proc`` on the rlimit fallback. It never touches kernel state, so a
slow or frequent scrape costs the kernel's loop nothing.

Values are made safe for the exposition format here: counters are finite and never negative
(a bad figure reads 0), and an agent whose cgroup vanished mid-scrape simply has no resource
series in that scrape.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from clove.kernel.core.procfs import ProcFS
from clove.kernel.services.prometheus_cgroup import CgroupFigures
from clove.kernel.services.prometheus_snapshot import AgentRow, Snapshot

__all__ = ["AGENT_LABELS", "SnapshotCollector"]

AGENT_LABELS = ["agent_id", "name"]


def _count(value: Any) -> float:
    """A counter's value: finite and non-negative, else 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) and number > 0 else 0.0


def _gauge(value: Any) -> float:
    """A gauge's value: any finite number, else NaN (Prometheus's 'unknown')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


class SnapshotCollector(Collector):
    """:param snapshot: returns the newest snapshot (``None`` before the first).
    :param cgroups: reads an agent's cgroup figures (a cache of which file holds what).
    :param procfs: where process figures are read on the rlimit fallback.
    :param refused: how many connections the HTTP server refused (its bound).
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot | None],
        *,
        cgroups: CgroupFigures | None = None,
        procfs: ProcFS | None = None,
        clock: Callable[[], float] = time.monotonic,
        refused: Callable[[], int] = lambda: 0,
    ) -> None:
        self.snapshot = snapshot
        self.refused = refused
        self.cgroups = cgroups or CgroupFigures()
        self.procfs = procfs or ProcFS()
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot; describing would run a scrape at register

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        up = GaugeMetricFamily("clove_metrics_snapshot_ready", "1 once the kernel has published a snapshot")
        up.add_metric([], 1.0 if snap is not None else 0.0)
        yield up
        yield _single(CounterMetricFamily, "clove_metrics_refused_connections", "Connections to this page closed at once: too many open", _count(self.refused()))
        if snap is None:
            return
        yield from self._kernel(snap)
        yield from self._agents(snap)
        yield from self._syscalls(snap)
        yield from self._devices(snap)
        yield from self._llm(snap)
        yield from self._interlocks(snap)

    # ---- families ------------------------------------------------------------------------------

    def _kernel(self, s: Snapshot) -> Iterator[Metric]:
        info = GaugeMetricFamily("clove_kernel_info", "The kernel's version", labels=["version"])
        info.add_metric([s.version], 1.0)
        yield info
        yield _single(GaugeMetricFamily, "clove_kernel_start_time_seconds", "When the kernel started (Unix time)", _gauge(s.started_at))
        yield _single(GaugeMetricFamily, "clove_metrics_snapshot_age_seconds", "How old the served snapshot is",
                      max(0.0, self.clock() - s.monotonic))  # fmt: skip
        yield _single(CounterMetricFamily, "clove_metrics_agents_dropped", "Agents whose series were dropped at max_agent_series", _count(s.agents_dropped))
        yield _single(CounterMetricFamily, "clove_metrics_journal_unobserved", "Journal records that left the ring before the exporter read them", _count(s.journal_unobserved))
        yield _single(CounterMetricFamily, "clove_journal_records", "Journal records appended (the newest id)", _count(s.journal_last_id))
        yield _single(CounterMetricFamily, "clove_journal_write_errors", "Journal disk writes or syncs that failed", _count(s.journal_write_errors))
        yield _single(GaugeMetricFamily, "clove_fleet_connected", "1 while this board's fleet link is up (0: down, or no fleet)", float(s.fleet_connected == 1))

    def _agents(self, s: Snapshot) -> Iterator[Metric]:
        states = GaugeMetricFamily("clove_agents", "Agents in the table by state", labels=["state"])
        for state, n in s.agent_states:
            states.add_metric([state], _count(n))
        yield states
        exits = CounterMetricFamily("clove_agent_exits", "Agent incarnations ended, by exit reason", labels=["reason"])
        for reason, n in s.exits:
            exits.add_metric([reason], _count(n))
        yield exits
        families: dict[str, Metric] = {}
        self.cgroups.keep(row.cgroup_dirs for row in s.agents if row.live and row.cgroup_dirs)

        def add(kind: type[Metric], name: str, doc: str, row: AgentRow, value: float) -> None:
            family = families.get(name)
            if family is None:
                family = families[name] = kind(name, doc, labels=AGENT_LABELS)  # type: ignore[call-arg]
            family.add_metric([str(row.id), row.name], value)  # type: ignore[attr-defined]

        C, G = CounterMetricFamily, GaugeMetricFamily
        for row in s.agents:
            add(G, "clove_agent_live", "1 while the agent is not exited or failed (its series stay a while after)", row, float(row.live))
            add(C, "clove_agent_restarts", "Restarts by the restart policy", row, _count(row.restarts))
            add(C, "clove_agent_oom_kills", "Incarnations ended by the OOM killer", row, _count(row.oom_kills))
            add(C, "clove_agent_syscalls", "Syscalls made (allowed or not)", row, _count(row.syscalls))
            add(C, "clove_agent_denials", "Syscalls denied", row, _count(row.denials))
            add(C, "clove_agent_kernel_time_seconds", "Kernel time spent serving the agent (this incarnation's channel)", row, _count(row.kernel_time_us) / 1e6)
            add(C, "clove_agent_rate_throttled", "Times its syscall rate was throttled", row, _count(row.rate_throttled))
            add(C, "clove_agent_llm_prompt_tokens", "LLM prompt tokens billed", row, _count(row.llm_prompt_tokens))
            add(C, "clove_agent_llm_completion_tokens", "LLM completion tokens billed", row, _count(row.llm_completion_tokens))
            if row.live:
                for name, doc, kind, value in self._resources(row):
                    add(kind, name, doc, row, value)
        yield from families.values()

    def _resources(self, row: AgentRow) -> list[tuple[str, str, type[Metric], float]]:
        """The agent's live figures from its cgroup (or its process on the rlimit fallback)."""
        C, G = CounterMetricFamily, GaugeMetricFamily
        out: list[tuple[str, str, type[Metric], float]] = []
        if row.cgroup_dirs:
            cg = self.cgroups.read(row.cgroup_dirs)
            for key, name, doc, kind in _CGROUP_FAMILIES:
                if key in cg:
                    out.append((name, doc, kind, _gauge(cg[key]) if kind is G else _count(cg[key])))
            return out
        if row.pid:
            sample = self.procfs.process(row.pid)
            if sample is not None:
                out.append(("clove_agent_memory_bytes", "Memory in use (the cgroup's, else the process RSS)", G, _gauge(sample.rss)))
                out.append(("clove_agent_cpu_seconds", "CPU time used (this incarnation)", C, _count(sample.cpu_seconds)))
        return out

    def _syscalls(self, s: Snapshot) -> Iterator[Metric]:
        calls = CounterMetricFamily("clove_syscalls", "Syscalls by name and result code (from the journal)", labels=["syscall", "result"])
        for name, code, n in s.syscalls:
            calls.add_metric([name, code], _count(n))
        yield calls
        denials = CounterMetricFamily("clove_syscall_denials", "Denied syscalls by name and code", labels=["syscall", "code"])
        for name, code, n in s.denials:
            denials.add_metric([name, code], _count(n))
        yield denials
        yield _single(CounterMetricFamily, "clove_operator_kernel_time_seconds", "Kernel time spent serving operators", _count(s.operator_kernel_time_us) / 1e6)

    def _devices(self, s: Snapshot) -> Iterator[Metric]:
        state = GaugeMetricFamily("clove_device_state", "1 for the device's current state", labels=["device", "driver", "state"])
        families = {
            "calls": CounterMetricFamily("clove_device_calls", "Device operations performed", labels=["device"]),
            "errors": CounterMetricFamily("clove_device_errors", "Device operations that failed", labels=["device"]),
            "denied": CounterMetricFamily("clove_device_denied", "Device operations refused by a grant", labels=["device"]),
            "dropped": CounterMetricFamily("clove_device_dropped", "Stream items dropped from full subscriber queues", labels=["device"]),
            "delivered": CounterMetricFamily("clove_device_delivered", "Stream items delivered", labels=["device"]),
            "host_restarts": CounterMetricFamily("clove_device_host_restarts", "Driver host restarts", labels=["device"]),
        }
        for d in s.devices:
            state.add_metric([d.name, d.driver, d.state], 1.0)
            for key, family in families.items():
                family.add_metric([d.name], _count(getattr(d, key)))
        yield state
        yield from families.values()

    def _llm(self, s: Snapshot) -> Iterator[Metric]:
        yield _single(GaugeMetricFamily, "clove_llm_enabled", "1 when the config has an [llm] table", float(s.llm_enabled))
        yield _single(GaugeMetricFamily, "clove_llm_queued", "LLM requests waiting in the fair queue", _count(s.llm_queued))
        yield _single(GaugeMetricFamily, "clove_llm_running", "LLM requests at a provider now", _count(s.llm_running))
        tokens = CounterMetricFamily("clove_llm_tokens", "LLM tokens billed, by kind", labels=["kind"])
        for kind, n in s.llm_tokens:
            tokens.add_metric([kind], _count(n))
        yield tokens
        requests = CounterMetricFamily("clove_llm_requests", "LLM requests finished, by outcome", labels=["outcome"])
        for outcome, n in s.llm_requests:
            requests.add_metric([outcome], _count(n))
        yield requests
        # Cumulative, finite bounds rising, ending in +Inf whatever the snapshot holds.
        buckets: list[tuple[str, float]] = []
        cumulative, previous = 0.0, -math.inf
        counts = list(s.llm_wait_counts)
        for i, bound in enumerate(s.llm_wait_bounds):
            if not math.isfinite(bound) or bound <= previous:
                break
            previous = bound
            cumulative += _count(counts[i]) if i < len(counts) else 0.0
            buckets.append((repr(float(bound)), cumulative))
        buckets.append(("+Inf", cumulative + sum(_count(n) for n in counts[len(buckets):])))
        wait = HistogramMetricFamily("clove_llm_queue_wait_seconds", "Time LLM requests waited in the fair queue")
        wait.add_metric([], buckets, sum_value=_count(s.llm_wait_sum))
        yield wait

    def _interlocks(self, s: Snapshot) -> Iterator[Metric]:
        engaged = GaugeMetricFamily("clove_interlock_engaged", "1 while the interlock is engaged", labels=["interlock"])
        total = CounterMetricFamily("clove_interlock_engagements", "Times the interlock engaged since the kernel started", labels=["interlock"])
        for i in s.interlocks:
            engaged.add_metric([i.name], float(i.engaged))
            total.add_metric([i.name], _count(i.engagements))
        yield engaged
        yield total


# (CgroupFigures key, family, help, kind)
_CGROUP_FAMILIES: tuple[tuple[str, str, str, type[Metric]], ...] = (
    ("memory_bytes", "clove_agent_memory_bytes", "Memory in use (the cgroup's, else the process RSS)", GaugeMetricFamily),
    ("memory_limit_bytes", "clove_agent_memory_limit_bytes", "The enforced memory limit", GaugeMetricFamily),
    ("cpu_seconds", "clove_agent_cpu_seconds", "CPU time used (this incarnation)", CounterMetricFamily),
    ("throttled_periods", "clove_agent_cpu_throttled_periods", "CPU periods throttled at the quota (this incarnation)", CounterMetricFamily),
    ("throttled_seconds", "clove_agent_cpu_throttled_seconds", "Time throttled at the CPU quota (this incarnation)", CounterMetricFamily),
)


def _single(kind: type[Metric], name: str, doc: str, value: float) -> Metric:
    family = kind(name, doc)  # type: ignore[call-arg]
    family.add_metric([], value)  # type: ignore[attr-defined]
    return family
