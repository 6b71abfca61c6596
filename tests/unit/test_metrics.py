"""Metrics: /proc readers on fixture files, the delta tracker, cgroup reading and path checks on
FakeCgroupFS, warnings with a fake clock, and the syscalls' visibility rules on a FakeKernel."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clove.config import AgentConfig
from clove.errors import InvalidArguments, NotFound, PermissionDenied
from clove.kernel.core.agents import Agent, AgentState, AgentTable
from clove.kernel.core.channels import Caller
from clove.kernel.core.procfs import CLOCK_TICKS, PAGE_SIZE, CpuTimes, ProcessSample, ProcFS, Rate
from clove.kernel.services.metrics import MetricsService
from clove.kernel.services.metricscgroup import read_cgroup, resolve_cgroup_path
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.registry import SYSCALLS
from clove.policy import for_level
from clove.sandbox.limits import NOT_REQUESTED, LimitReport
from clove.testing import FakeCgroupFS

ROOT = Path("/sys/fs/cgroup")

# ---- /proc readers -------------------------------------------------------------------------------


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "stat").write_text(
        "cpu  100 10 50 800 40 0 0 0 0 0\ncpu0 50 5 25 400 20 0 0 0 0 0\ncpu1 50 5 25 400 20 0 0 0 0 0\nintr 1 2 3\n"
    )
    (tmp_path / "meminfo").write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\nHugePages_Total:   0\n")
    (tmp_path / "loadavg").write_text("0.50 0.25 0.10 1/100 4242\n")
    (tmp_path / "diskstats").write_text(
        "   7       0 loop0 9 0 9000 0 9 0 9000 0 0 0 0\n"
        " 254       0 vda 10 0 100 0 20 0 200 0 0 0 0 0\n"
        " 254       1 vda1 10 0 100 0 20 0 200 0 0 0 0 0\n"
    )
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "dev").write_text(
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
        "    lo:  5000  5 0 0 0 0 0 0  5000  5 0 0 0 0 0 0\n"
        "  eth0:  1000 10 0 0 0 0 0 0   300  3 0 0 0 0 0 0\n"
        "  eth1:    24  1 0 0 0 0 0 0     6  1 0 0 0 0 0 0\n"
    )
    (tmp_path / "42" / "fd").mkdir(parents=True)
    for fd in "012":
        (tmp_path / "42" / "fd" / fd).write_text("")
    # comm with a space and a ')' inside: fields are counted from the last ')'
    fields = ["S", "1"] + ["0"] * 9 + [str(3 * CLOCK_TICKS), str(CLOCK_TICKS)] + ["0"] * 4 + ["5", "0", "777", "123456789", "100"]
    (tmp_path / "42" / "stat").write_text(f"42 (my (odd) name) {' '.join(fields)} 0 0 0\n")
    return tmp_path


def test_proc_readers_parse_fixture_files(proc: Path) -> None:
    fs = ProcFS(proc, is_disk=lambda name: name == "vda")
    assert fs.cpu_times() == CpuTimes(busy=160, total=1000, count=2)
    assert fs.memory() == {"total": 1024_000, "available": 256_000, "used": 768_000, "percent": 75.0}
    assert fs.loadavg() == [0.5, 0.25, 0.1]
    assert fs.disk() == {"read_bytes": 100 * 512, "write_bytes": 200 * 512}  # no partition, no loop
    assert fs.network() == {"bytes_sent": 306, "bytes_recv": 1024}  # lo left out
    assert fs.process(42) == ProcessSample(cpu_seconds=4.0, threads=5, vms=123456789, rss=100 * PAGE_SIZE, fds=3, start_ticks=777)
    assert fs.process(43) is None


def test_proc_readers_give_zeros_when_files_are_missing(tmp_path: Path) -> None:
    fs = ProcFS(tmp_path, is_disk=lambda name: True)
    assert fs.memory() == {"total": 0, "available": 0, "used": 0, "percent": 0.0}
    assert fs.loadavg() == [0.0, 0.0, 0.0] and fs.disk() == {"read_bytes": 0, "write_bytes": 0}
    assert fs.cpu_times().count == (os.cpu_count() or 1)


def test_rate_measures_against_a_sample_old_enough() -> None:
    rate = Rate(min_span=0.25)
    assert rate.update(10.0, 0.0, 10.0) is None  # nothing earlier
    assert rate.update(11.0, 0.5, 11.0) == pytest.approx(50.0)
    for i in range(1, 20):  # a client polling every 10 ms cannot push the 11.0 sample out
        value = rate.update(11.0 + i * 0.01, 0.5 + i * 0.01, 11.0 + i * 0.01)
        assert value is not None
    # 11.0 is too recent (0.2 s): measured against 10.0, and 11.2 is not stored (too close to 11.0)
    assert rate.update(11.2, 0.7, 11.2) == pytest.approx(100.0 * 0.7 / 1.2)
    assert rate.update(12.0, 0.7, 12.0) == pytest.approx(100.0 * 0.2 / 1.0)  # against 11.0


# ---- cgroups -------------------------------------------------------------------------------------


@pytest.fixture
def cgfs() -> FakeCgroupFS:
    fs = FakeCgroupFS()
    for controller in ("memory", "cpu", "cpuacct", "pids"):
        fs.add_v1_hierarchy(ROOT / controller, [controller])
        fs.makedirs(ROOT / controller / "k" / "agent-1.1")
    a = "k/agent-1.1"
    fs.write_text(ROOT / "memory" / a / "memory.limit_in_bytes", str(64 << 20))
    fs.set_value(ROOT / "memory" / a / "memory.usage_in_bytes", str(10 << 20))
    fs.write_text(ROOT / "cpu" / a / "cpu.cfs_quota_us", "20000")
    fs.set_value(ROOT / "cpu" / a / "cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 5000000\n")
    fs.set_value(ROOT / "cpuacct" / a / "cpuacct.usage", "7000000")
    for pid in (501, 502, 503):
        fs.add_process(pid, cgroups=[ROOT / c / a for c in ("memory", "cpu", "cpuacct", "pids")])
    return fs


def test_read_cgroup_merges_v1_hierarchies_and_leaves_out_no_limit(cgfs: FakeCgroupFS) -> None:
    dirs = resolve_cgroup_path("/k/agent-1.1", fs=cgfs, realpath=lambda p: p)
    assert sorted(map(str, dirs)) == sorted(str(ROOT / c / "k/agent-1.1") for c in ("cpu", "cpuacct", "memory", "pids"))
    figures = read_cgroup(cgfs, dirs)
    assert figures == {
        "memory_current": 10 << 20, "memory_peak": 0, "memory_limit": 64 << 20, "oom_kills": 0,
        "cpu_usage_us": 7000, "cpu_quota_us": 20000, "cpu_period_us": 100000, "nr_periods": 10,
        "nr_throttled": 4, "throttled_us": 5000, "pids_current": 3, "procs": 3,
    }  # fmt: skip
    parent = read_cgroup(cgfs, resolve_cgroup_path("/k", fs=cgfs, realpath=lambda p: p))
    assert "memory_limit" not in parent and "cpu_quota_us" not in parent and "pids_limit" not in parent


def test_read_cgroup_v2(tmp_path: Path) -> None:
    fs = FakeCgroupFS()
    fs.add_v2_hierarchy(ROOT)
    fs.makedirs(ROOT / "a")
    for name, text in (("memory.current", "100"), ("memory.max", "4096"), ("cpu.max", "50000 100000"),
                       ("cpu.stat", "usage_usec 9\nnr_periods 2\nnr_throttled 1\nthrottled_usec 7\n"),
                       ("memory.events", "oom 0\noom_kill 2\n"), ("pids.max", "max")):  # fmt: skip
        fs.add_file(ROOT / "a" / name, text)
    dirs = resolve_cgroup_path("a", fs=fs, realpath=lambda p: p)
    assert dirs == [ROOT / "a"]
    got = read_cgroup(fs, dirs)
    assert {k: got[k] for k in ("memory_current", "memory_limit", "cpu_quota_us", "cpu_usage_us", "throttled_us", "oom_kills")} == {
        "memory_current": 100, "memory_limit": 4096, "cpu_quota_us": 50000, "cpu_usage_us": 9, "throttled_us": 7, "oom_kills": 2,
    }  # fmt: skip
    assert "pids_limit" not in got


def test_cgroup_paths_cannot_escape(cgfs: FakeCgroupFS) -> None:
    same = {"fs": cgfs, "realpath": lambda p: p}
    assert resolve_cgroup_path(str(ROOT / "memory" / "k"), **same) == [ROOT / "memory" / "k"]
    for bad in ("/sys/fs/cgroup/memory/../../../etc", "../k", "k/../../x"):
        with pytest.raises(PermissionDenied):
            resolve_cgroup_path(bad, **same)
    for missing in ("/etc", "/k/nope", "/sys/fs/cgroupX"):
        with pytest.raises(NotFound):
            resolve_cgroup_path(missing, **same)
    with pytest.raises(InvalidArguments):
        resolve_cgroup_path("", **same)
    with pytest.raises(PermissionDenied):  # a symlink out of the cgroup filesystem
        resolve_cgroup_path("/k", fs=cgfs, realpath=lambda p: "/etc/k")


# ---- the service: agents, sampling and warnings -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProc:
    def __init__(self) -> None:
        self.cpu = CpuTimes(busy=0, total=0, count=2)
        self.processes: dict[int, ProcessSample] = {}
        self.reads = 0

    def cpu_times(self) -> CpuTimes:
        return self.cpu

    def loadavg(self) -> list[float]:
        return [1.0, 0.5, 0.25]

    def memory(self) -> dict[str, float]:
        return {"total": 100, "available": 40, "used": 60, "percent": 60.0}

    def disk(self) -> dict[str, int]:
        return {"read_bytes": 1, "write_bytes": 2}

    def network(self) -> dict[str, int]:
        return {"bytes_sent": 3, "bytes_recv": 4}

    def process(self, pid: int) -> ProcessSample | None:
        self.reads += 1
        return self.processes.get(pid)


class FakeCgroup:
    def __init__(self, name: str, *, memory: int | None = None, cpu: int | None = None) -> None:
        self.name = name
        self.dirs = (ROOT / "memory" / name,)
        self.figures: dict[str, int] = {"memory_current": 0, "cpu_usage_us": 0, "nr_throttled": 0, "throttled_us": 0}
        self._report = {
            "memory": LimitReport(memory, memory is not None, "test" if memory else NOT_REQUESTED),
            "cpu": LimitReport(cpu, cpu is not None, "test" if cpu else NOT_REQUESTED),
            "pids": LimitReport(None, False, NOT_REQUESTED),
        }
        self.stats_calls = 0

    def stats(self) -> dict[str, int]:
        self.stats_calls += 1
        return dict(self.figures)

    def report(self) -> dict[str, LimitReport]:
        return dict(self._report)


class FakeSupervisor:
    def __init__(self) -> None:
        self.table = AgentTable(max_exited=10)
        self.cgroups: dict[int, FakeCgroup | None] = {}

    def add(self, agent_id: int, name: str, *, cgroup: FakeCgroup | None = None, parent: int | None = None, memory: int | None = None) -> Agent:
        self.table._next_id = agent_id
        agent = Agent(id=self.table.new_id(), spec=AgentConfig(name=name, script="/x.py", memory_bytes=memory), uid=None,
                      state=AgentState.RUNNING, pid=10_000 + agent_id, parent_id=parent)  # fmt: skip
        agent.started_mono = 0.0
        self.table.add(agent)
        self.cgroups[agent.id] = cgroup
        return agent

    def runtime(self, agent: Agent) -> Any:
        return SimpleNamespace(cgroup=self.cgroups.get(agent.id))


@pytest.fixture
def env() -> SimpleNamespace:
    sup, proc, clock = FakeSupervisor(), FakeProc(), Clock()
    events: list[tuple[str, dict[str, Any], int]] = []
    journaled: list[dict[str, Any]] = []
    service = MetricsService(
        sup, emit=lambda kind, data, source_agent_id: events.append((kind, data, source_agent_id)),
        journal_warning=lambda agent, data: journaled.append(data), procfs=proc, clock=clock,  # type: ignore[arg-type]
    )  # fmt: skip
    return SimpleNamespace(sup=sup, proc=proc, clock=clock, events=events, journaled=journaled, svc=service)


def _numbers_only(value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _numbers_only(v)
    elif isinstance(value, list):
        for v in value:
            _numbers_only(v)
    else:
        assert value is not None


def test_system_cpu_percent_is_a_delta_between_samples(env) -> None:
    env.proc.cpu = CpuTimes(busy=250, total=1000, count=2)
    first = env.svc.system()
    assert first["cpu"] == {"percent": 25.0, "count": 2, "load_avg": [1.0, 0.5, 0.25]}  # since boot
    env.clock.now += 1
    env.proc.cpu = CpuTimes(busy=250 + 180, total=1000 + 200, count=2)
    second = env.svc.system()
    assert second["cpu"]["percent"] == 90.0
    assert second["memory"]["percent"] == 60.0 and second["disk"]["write_bytes"] == 2 and second["network"]["bytes_recv"] == 4


def test_agent_metrics_process_and_cgroup(env) -> None:
    cgroup = FakeCgroup("agent-1.1", memory=100 << 20, cpu=20_000)
    agent = env.sup.add(1, "worker", cgroup=cgroup)
    env.proc.processes[agent.pid] = ProcessSample(1.0, 3, 5000, 2000, 7, 0)
    cgroup.figures.update(memory_current=50 << 20, cpu_usage_us=1_000_000)
    first = env.svc.agent(agent)
    assert first["process"] == {"pid": agent.pid, "cpu": {"percent": pytest.approx(first["process"]["cpu"]["percent"]), "seconds": 1.0},
                                "memory": {"rss": 2000, "vms": 5000}, "threads": 3, "fds": 7}  # fmt: skip
    assert first["cgroup"]["memory_limit"] == 100 << 20 and first["cgroup"]["cpu_quota_us"] == 20_000
    assert first["cgroup"]["memory_percent"] == 50.0 and "pids_limit" not in first["cgroup"]
    env.clock.now += 2
    env.proc.processes[agent.pid] = ProcessSample(1.4, 3, 5000, 2000, 7, 0)
    cgroup.figures["cpu_usage_us"] = 1_500_000
    second = env.svc.agent(agent)
    assert second["process"]["cpu"]["percent"] == 20.0 and second["cgroup"]["cpu_percent"] == 25.0
    assert {k: second[k] for k in ("agent_id", "name", "status", "restarts", "parent_id")} == {
        "agent_id": 1, "name": "worker", "status": "running", "restarts": 0, "parent_id": 0,
    }  # fmt: skip
    _numbers_only(second)


def test_a_stopped_agent_reads_as_zeros(env) -> None:
    agent = env.sup.add(1, "gone")
    agent.pid = None
    result = env.svc.agent(agent)
    assert result["process"] == {"pid": 0, "cpu": {"percent": 0.0, "seconds": 0.0}, "memory": {"rss": 0, "vms": 0}, "threads": 0, "fds": 0}
    assert result["cgroup"] == {}
    _numbers_only(result)


def test_memory_warning_once_per_crossing(env) -> None:
    cgroup = FakeCgroup("agent-1.1", memory=100)
    agent = env.sup.add(1, "hungry", cgroup=cgroup)
    env.proc.processes[agent.pid] = ProcessSample(0.0, 1, 0, 0, 0, 0)

    def tick(usage: int) -> list[str]:
        cgroup.figures["memory_current"] = usage
        env.clock.now += 1.0
        env.svc.housekeeping()
        return [e[1]["kind"] for e in env.events]

    assert tick(50) == []
    assert tick(85) == ["memory"]
    assert env.events[0] == ("RESOURCE_WARNING", {"agent_id": 1, "name": "hungry", "kind": "memory", "memory_current": 85,
                                                  "memory_limit": 100, "percent": 85.0}, 1)  # fmt: skip
    assert tick(95) == ["memory"] and tick(78) == ["memory"]  # still high (hysteresis down to 75 %)
    assert tick(70) == ["memory"]  # re-armed
    assert tick(81) == ["memory", "memory"]
    assert env.journaled == [e[1] for e in env.events]


def test_throttle_warning_when_throttling_starts_and_again_after_it_stopped(env) -> None:
    cgroup = FakeCgroup("agent-1.1", cpu=20_000)
    agent = env.sup.add(1, "hog", cgroup=cgroup)
    env.proc.processes[agent.pid] = ProcessSample(0.0, 1, 0, 0, 0, 0)
    kinds = []
    for throttled in (0, 0, 10, 20, 30, 30, 35, 40):
        cgroup.figures["nr_throttled"] = throttled
        env.clock.now += 1.0
        env.svc.housekeeping()
        kinds.append(len(env.events))
    assert kinds == [0, 0, 1, 1, 1, 1, 2, 2]
    assert env.events[0][1]["kind"] == "cpu_throttled" and env.events[0][1]["new_throttled"] == 10
    # A restart: a new cgroup whose counters start at zero is not "rising" from the old count.
    env.sup.cgroups[1] = fresh = FakeCgroup("agent-1.2", cpu=20_000)
    fresh.figures["nr_throttled"] = 3
    env.clock.now += 1.0
    env.svc.housekeeping()
    assert len(env.events) == 2


def test_housekeeping_samples_once_a_second_in_slices(env) -> None:
    cgroups = [FakeCgroup(f"agent-{i}.1", memory=100) for i in range(1, 101)]
    for i, cgroup in enumerate(cgroups, start=1):
        env.sup.add(i, f"a{i}", cgroup=cgroup)
    unlimited = FakeCgroup("agent-101.1")
    env.sup.add(101, "free", cgroup=unlimited)
    env.svc.housekeeping()
    assert sum(c.stats_calls for c in cgroups) == 64
    env.svc.housekeeping()
    assert sum(c.stats_calls for c in cgroups) == 100 and unlimited.stats_calls == 0  # no limit: no cgroup reads
    env.svc.housekeeping()
    env.clock.now += 0.5
    env.svc.housekeeping()
    assert sum(c.stats_calls for c in cgroups) == 100  # not again within the second
    env.clock.now += 0.6
    env.svc.housekeeping()
    assert sum(c.stats_calls for c in cgroups) == 164


def test_rlimit_fallback_warns_from_rss(env) -> None:
    agent = env.sup.add(1, "plain", memory=1000)
    env.proc.processes[agent.pid] = ProcessSample(0.0, 1, 0, 900, 0, 0)
    env.clock.now += 1
    env.svc.housekeeping()
    assert [e[1]["kind"] for e in env.events] == ["memory"] and env.events[0][1]["memory_current"] == 900


# ---- the syscalls --------------------------------------------------------------------------------


def ctx(env: SimpleNamespace, caller: Caller, agent: Agent | None = None) -> SyscallContext:
    kernel = SimpleNamespace(metrics=env.svc, supervisor=env.sup)
    return SyscallContext(kernel, caller, agent, for_level("standard"), None)  # type: ignore[arg-type]


def run(name: str, context: SyscallContext, body: dict[str, Any] | None = None) -> Any:
    syscall = SYSCALLS[name]
    return syscall.execute(context, syscall.parse(body or {}))


def test_agents_see_themselves_and_their_children_operators_everyone(env) -> None:
    parent = env.sup.add(1, "parent", cgroup=FakeCgroup("agent-1.1"))
    child = env.sup.add(2, "child", parent=1)
    stranger = env.sup.add(3, "stranger")
    as_parent = ctx(env, Caller("agent", agent_id=1), parent)
    assert run("metrics.agent", as_parent)["agent_id"] == 1
    assert run("metrics.agent", as_parent, {"agent_id": 2})["parent_id"] == 1
    with pytest.raises(PermissionDenied):
        run("metrics.agent", as_parent, {"agent_id": 3})
    with pytest.raises(PermissionDenied):
        run("metrics.agent", ctx(env, Caller("agent", agent_id=2), child), {"agent_id": 1})
    assert [a["agent_id"] for a in run("metrics.agents", as_parent)["agents"]] == [1, 2]
    op = ctx(env, Caller("operator", session_id=9))
    assert [a["agent_id"] for a in run("metrics.agents", op)["agents"]] == [1, 2, 3]
    assert run("metrics.agent", op, {"agent_id": stranger.id})["name"] == "stranger"
    with pytest.raises(NotFound):
        run("metrics.agent", op)
    with pytest.raises(NotFound):
        run("metrics.agent", op, {"agent_id": 77})
    assert run("metrics.system", op)["cpu"]["count"] == 2


def test_agents_read_only_their_own_cgroup(env, cgfs: FakeCgroupFS) -> None:
    env.svc.cgroupfs, env.svc.realpath = cgfs, lambda p: p
    own = FakeCgroup("agent-1.1")
    own.dirs = tuple(ROOT / c / "k/agent-1.1" for c in ("memory", "cpu"))
    agent = env.sup.add(1, "a", cgroup=own)
    me = ctx(env, Caller("agent", agent_id=1), agent)
    mine = run("metrics.cgroup", me)
    assert mine["cgroup_path"] == "agent-1.1" and mine["cgroup"]["memory_limit"] == 64 << 20 and mine["cgroup"]["cpu_quota_us"] == 20000
    assert run("metrics.cgroup", me, {"cgroup_path": "agent-1.1"})["paths"] == mine["paths"]
    assert run("metrics.cgroup", me, {"cgroup_path": str(ROOT / "memory/k/agent-1.1")})["success"]
    for foreign in ("/k", "/", "/nope", "/sys/fs/cgroup/memory/k/agent-1.1/../.."):
        with pytest.raises(PermissionDenied):
            run("metrics.cgroup", me, {"cgroup_path": foreign})
    op = ctx(env, Caller("operator", session_id=9))
    with pytest.raises(NotFound):
        run("metrics.cgroup", op)  # no backend: no default
    env.svc.default_cgroups = lambda: [ROOT / "memory" / "k"]
    assert run("metrics.cgroup", op)["cgroup_path"] == "k"
    assert run("metrics.cgroup", op, {"cgroup_path": "/k/agent-1.1"})["cgroup"]["pids_current"] == 3
