"""The Prometheus exposition of a snapshot: odd and hostile values still make valid text that
Prometheus's own parser reads back, counters never go negative, labels stay escaped."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clove.kernel.core.procfs import ProcFS
from clove.kernel.services.prometheus_collector import SnapshotCollector
from clove.kernel.services.prometheus_snapshot import AgentRow, DeviceRow, InterlockRow, Snapshot


def snapshot(**changes: object) -> Snapshot:
    base: dict[str, object] = dict(
        monotonic=100.0, version="0.1.0", started_at=1_700_000_000.0,
        agent_states=(("running", 2), ("exited", 0)), agents=(), agents_dropped=0,
        exits=(("oom_killed", 1), ("exited", 3)), syscalls=(("noop", "ok", 5),), denials=(),
        operator_kernel_time_us=1500, devices=(), interlocks=(), llm_enabled=False, llm_queued=0,
        llm_running=0, llm_tokens=(("prompt", 0), ("completion", 0)), llm_requests=(("ok", 0),),
        llm_wait_bounds=(0.1, 1.0), llm_wait_counts=(1, 2, 3), llm_wait_sum=4.5,
        journal_last_id=42, journal_write_errors=0, journal_unobserved=0, fleet_connected=0,
    )  # fmt: skip
    base.update(changes)
    return Snapshot(**base)  # type: ignore[arg-type]


def scrape(snap: Snapshot | None, tmp_path: Path | None = None) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Render ``snap`` as Prometheus would fetch it and parse it back with Prometheus's parser."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap, procfs=ProcFS(), clock=lambda: 101.0))
    text = generate_latest(registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples: dict[str, list[tuple[dict[str, str], float]]], metric: str, **labels: str) -> float:
    for got, v in samples[metric]:
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    raise KeyError(f"{metric}{labels}")


def test_before_the_first_snapshot_only_readiness_is_served() -> None:
    samples = scrape(None)
    assert samples == {"clove_metrics_snapshot_ready": [({}, 0.0)], "clove_metrics_refused_connections_total": [({}, 0.0)]}


def test_ordinary_values_round_trip() -> None:
    samples = scrape(snapshot())
    assert value(samples, "clove_metrics_snapshot_ready") == 1.0
    assert value(samples, "clove_agents", state="running") == 2.0
    assert value(samples, "clove_agent_exits_total", reason="oom_killed") == 1.0
    assert value(samples, "clove_syscalls_total", syscall="noop", result="ok") == 5.0
    assert value(samples, "clove_operator_kernel_time_seconds_total") == pytest.approx(0.0015)
    assert value(samples, "clove_metrics_snapshot_age_seconds") == 1.0
    assert value(samples, "clove_fleet_connected") == 0.0
    # The histogram is cumulative and ends in +Inf.
    assert value(samples, "clove_llm_queue_wait_seconds_bucket", le="0.1") == 1.0
    assert value(samples, "clove_llm_queue_wait_seconds_bucket", le="1.0") == 3.0
    assert value(samples, "clove_llm_queue_wait_seconds_bucket", le="+Inf") == 6.0
    assert value(samples, "clove_llm_queue_wait_seconds_count") == 6.0


def test_bad_counters_read_zero_and_bad_gauges_unknown() -> None:
    agent = AgentRow(id=7, name="a", live=False, restarts=-3, pid=None, cgroup_dirs=(), syscalls=2**70,
                     denials=-1, kernel_time_us=-5, oom_kills=True)  # type: ignore[arg-type]  # fmt: skip
    samples = scrape(snapshot(
        agents=(agent,), agent_states=(("running", -1),), exits=(("exited", math.nan),),
        syscalls=(("noop", "ok", math.inf),), operator_kernel_time_us=-10, started_at=math.inf,
        journal_last_id="many", llm_wait_sum=-math.inf, fleet_connected=7,
    ))  # fmt: skip
    assert value(samples, "clove_agents", state="running") == 0.0
    assert value(samples, "clove_agent_exits_total", reason="exited") == 0.0
    assert value(samples, "clove_syscalls_total", syscall="noop") == 0.0
    assert value(samples, "clove_operator_kernel_time_seconds_total") == 0.0
    assert value(samples, "clove_journal_records_total") == 0.0
    assert value(samples, "clove_llm_queue_wait_seconds_sum") == 0.0
    assert value(samples, "clove_fleet_connected") == 0.0  # only exactly 1 means connected
    assert math.isnan(value(samples, "clove_kernel_start_time_seconds"))
    assert value(samples, "clove_agent_restarts_total", agent_id="7") == 0.0
    assert value(samples, "clove_agent_denials_total", agent_id="7") == 0.0
    assert value(samples, "clove_agent_oom_kills_total", agent_id="7") == 0.0  # a bool is not a count
    assert value(samples, "clove_agent_syscalls_total", agent_id="7") == float(2**70)
    assert all(v >= 0 for name, rows in samples.items() if name.endswith("_total") for _, v in rows)


def test_a_histogram_with_odd_buckets_still_ends_in_inf() -> None:
    samples = scrape(snapshot(llm_wait_bounds=(1.0, 0.5, math.nan), llm_wait_counts=(2,)))
    buckets = samples["clove_llm_queue_wait_seconds_bucket"]
    assert [labels["le"] for labels, _ in buckets] == ["1.0", "+Inf"]
    assert [v for _, v in buckets] == [2.0, 2.0]


def test_label_values_are_escaped_not_broken() -> None:
    odd = 'dev"ice\\with\nnewline and ünïcode'
    samples = scrape(snapshot(
        devices=(DeviceRow(odd, "loop\"back", "ready", 1, 2, 0, 0, 3, 4),),
        interlocks=(InterlockRow(odd, True, 2),),
    ))  # fmt: skip
    assert value(samples, "clove_device_state", device=odd, driver='loop"back', state="ready") == 1.0
    assert value(samples, "clove_device_dropped_total", device=odd) == 3.0
    assert value(samples, "clove_interlock_engaged", interlock=odd) == 1.0
    assert value(samples, "clove_interlock_engagements_total", interlock=odd) == 2.0


def test_live_agent_figures_come_from_its_cgroup_files(tmp_path: Path) -> None:
    cg = tmp_path / "agent-1"
    cg.mkdir()
    for name, text in {"memory.usage_in_bytes": "1048576\n", "memory.limit_in_bytes": "67108864\n",
                       "cpuacct.usage": "2500000000\n", "cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 3000000000\n",
                       "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "cgroup.procs": "123\n"}.items():  # fmt: skip
        (cg / name).write_text(text)
    row = AgentRow(id=1, name="w", live=True, restarts=0, pid=None, cgroup_dirs=(str(cg),))
    samples = scrape(snapshot(agents=(row,)))
    assert value(samples, "clove_agent_memory_bytes", agent_id="1", name="w") == 1048576.0
    assert value(samples, "clove_agent_memory_limit_bytes", agent_id="1") == 67108864.0
    assert value(samples, "clove_agent_cpu_seconds_total", agent_id="1") == 2.5
    assert value(samples, "clove_agent_cpu_throttled_periods_total", agent_id="1") == 4.0
    assert value(samples, "clove_agent_cpu_throttled_seconds_total", agent_id="1") == 3.0


def test_garbage_or_vanished_cgroup_files_leave_the_figures_out(tmp_path: Path) -> None:
    cg = tmp_path / "agent-2"
    cg.mkdir()
    (cg / "memory.usage_in_bytes").write_text("lots\n")
    (cg / "cpu.stat").write_text("nr_throttled -4\nnonsense\n")
    rows = (
        AgentRow(id=2, name="odd", live=True, restarts=0, pid=None, cgroup_dirs=(str(cg),)),
        AgentRow(id=3, name="gone", live=True, restarts=0, pid=None, cgroup_dirs=(str(tmp_path / "removed"),)),
    )
    samples = scrape(snapshot(agents=rows))
    assert value(samples, "clove_agent_live", agent_id="2") == 1.0 and value(samples, "clove_agent_live", agent_id="3") == 1.0
    assert all(labels["agent_id"] not in ("2", "3") for labels, _ in samples.get("clove_agent_memory_bytes", []))
    assert all(labels["agent_id"] not in ("2", "3") for labels, _ in samples.get("clove_agent_cpu_throttled_periods_total", []))


def test_rlimit_fallback_reads_the_process(tmp_path: Path) -> None:
    import os

    row = AgentRow(id=4, name="me", live=True, restarts=0, pid=os.getpid(), cgroup_dirs=())
    samples = scrape(snapshot(agents=(row,)))
    assert value(samples, "clove_agent_memory_bytes", agent_id="4") > 1 << 20
    dead = AgentRow(id=5, name="ghost", live=True, restarts=0, pid=2**22 + 1, cgroup_dirs=())  # no such pid
    samples = scrape(snapshot(agents=(dead,)))
    assert "clove_agent_memory_bytes" not in samples


def test_cgroup_v2_files_and_no_limit(tmp_path: Path) -> None:
    cg = tmp_path / "v2"
    cg.mkdir()
    (cg / "memory.current").write_text("4096\n")
    (cg / "memory.max").write_text("max\n")
    (cg / "cpu.stat").write_text("usage_usec 1500000\nnr_periods 9\nnr_throttled 2\nthrottled_usec 250000\n")
    samples = scrape(snapshot(agents=(AgentRow(id=6, name="v2", live=True, restarts=0, pid=None, cgroup_dirs=(str(cg),)),)))
    assert value(samples, "clove_agent_memory_bytes", agent_id="6") == 4096.0
    assert "clove_agent_memory_limit_bytes" not in samples  # "max": no limit to report
    assert value(samples, "clove_agent_cpu_seconds_total", agent_id="6") == 1.5
    assert value(samples, "clove_agent_cpu_throttled_periods_total", agent_id="6") == 2.0
    assert value(samples, "clove_agent_cpu_throttled_seconds_total", agent_id="6") == 0.25
