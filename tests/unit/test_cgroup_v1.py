"""cgroup v1 backend and backend detection, against the in-memory FakeCgroupFS."""

from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path

import pytest

from clove.errors import SandboxError
from clove.sandbox.backends import detect_backend
from clove.sandbox.cgroup_v1 import CgroupV1Agent, CgroupV1Backend
from clove.sandbox.cgroupfs import CgroupFS, parse_proc_cgroup
from clove.sandbox.limits import Limits
from clove.sandbox.reaper import remove_stale
from clove.testing import FakeCgroupFS

ROOT = Path("/sys/fs/cgroup")
TAG = "clove-100"
MEM_OWN = ROOT / "memory/process_api/abc"
ME = os.getpid()


def hybrid(
    *, comount: bool = False, memsw: bool = True, skip: tuple[str, ...] = (), unified: bool = True
) -> FakeCgroupFS:
    """This machine's layout: v1 controllers, a nested own memory cgroup, an empty cgroup2."""
    fs = FakeCgroupFS()
    lines = []
    hid = 1
    mounts = [("cpu,cpuacct",)] if comount else [("cpu",), ("cpuacct",)]
    mounts += [("memory",), ("pids",), ("freezer",)]
    for (ctrls,) in mounts:
        if ctrls in skip:
            continue
        fs.add_v1_hierarchy(ROOT / ctrls, ctrls.split(","), memsw=memsw)
        own = "/process_api/abc" if ctrls == "memory" else "/"
        lines.append(f"{hid}:{ctrls}:{own}")
        hid += 1
    fs.add_v1_hierarchy(ROOT / "systemd", ["name=systemd"])
    lines.append(f"{hid}:name=systemd:/")
    if unified:
        fs.add_v2_hierarchy(ROOT / "unified", ["hugetlb"])
        lines.append("0::/")
    if "memory" not in skip:
        fs.makedirs(MEM_OWN)
        fs.add_process(ME, cgroups=[MEM_OWN])
    else:
        fs.add_process(ME)
    fs.add_file("/proc/self/cgroup", "\n".join(reversed(lines)) + "\n")
    return fs


def backend_for(fs: FakeCgroupFS, preference: str = "auto") -> CgroupV1Backend:
    b = detect_backend(preference, kernel_tag=TAG, fs=fs, kill=fs.kill)
    assert isinstance(b, CgroupV1Backend)
    return b


def read(fs: CgroupFS, path: Path) -> str:
    return fs.read_text(path).strip()


@pytest.fixture
def fs() -> FakeCgroupFS:
    return hybrid()


@pytest.fixture
def backend(fs: FakeCgroupFS) -> CgroupV1Backend:
    return backend_for(fs)


# -- detection -------------------------------------------------------------------------------


def test_parse_proc_cgroup() -> None:
    entries = parse_proc_cgroup("4:memory:/process_api/x\n2:cpu,cpuacct:/\n0::/user.slice\nbogus\n")
    assert [(e.hierarchy, e.controllers, e.path, e.is_v2) for e in entries] == [
        (4, ("memory",), "/process_api/x", False),
        (2, ("cpu", "cpuacct"), "/", False),
        (0, (), "/user.slice", True),
    ]


def test_auto_picks_v1_on_hybrid_and_parents_go_under_own_cgroups(fs: FakeCgroupFS) -> None:
    b = backend_for(fs)
    assert b.name == "cgroup1"
    assert fs.exists(MEM_OWN / TAG)  # nested own memory cgroup, not the hierarchy root
    for ctrl in ("cpu", "cpuacct", "pids", "freezer"):
        assert fs.exists(ROOT / ctrl / TAG)
    info = b.describe()
    assert info["backend"] == "cgroup1"
    assert info["controllers"] == ["cpu", "cpuacct", "freezer", "memory", "pids"]
    assert info["parents"] == {
        "memory": str(MEM_OWN / TAG),
        "cpu": str(ROOT / "cpu" / TAG),
        "cpuacct": str(ROOT / "cpuacct" / TAG),
        "pids": str(ROOT / "pids" / TAG),
        "freezer": str(ROOT / "freezer" / TAG),
    }


def test_auto_without_required_controller_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    fs = hybrid(skip=("pids",))
    with caplog.at_level(logging.WARNING):
        assert detect_backend("auto", kernel_tag=TAG, fs=fs) is None
    assert "no pids hierarchy" in caplog.text
    assert fs.cgroup_dirs() == [str(MEM_OWN.parent), str(MEM_OWN)]  # nothing created


def test_explicit_v1_missing_raises_with_reason() -> None:
    fs = FakeCgroupFS()
    fs.add_v2_hierarchy(ROOT)
    fs.add_process(ME)
    fs.add_file("/proc/self/cgroup", "0::/\n")
    with pytest.raises(SandboxError, match="cgroup1 backend unavailable: no memory hierarchy"):
        detect_backend("cgroup1", kernel_tag=TAG, fs=fs)


def test_explicit_v2_on_hybrid_without_controllers_raises(fs: FakeCgroupFS) -> None:
    with pytest.raises(SandboxError, match=r"cgroup2 backend unavailable: .*lacks memory, cpu, pids"):
        detect_backend("cgroup2", kernel_tag=TAG, fs=fs)


@pytest.mark.parametrize("pref", ["rlimit", "none"])
def test_rlimit_and_none_return_none_without_touching_fs(pref: str) -> None:
    fs = hybrid()
    assert detect_backend(pref, kernel_tag=TAG, fs=fs) is None
    assert not fs.writes
    assert not fs.exists(MEM_OWN / TAG)


@pytest.mark.parametrize(("pref", "tag"), [("cgroups", TAG), ("auto", "../evil"), ("auto", "")])
def test_bad_preference_or_tag_raises(pref: str, tag: str) -> None:
    with pytest.raises(SandboxError):
        detect_backend(pref, kernel_tag=tag, fs=hybrid())


def test_prepare_refused_auto_falls_back_explicit_raises(caplog: pytest.LogCaptureFixture) -> None:
    fs = hybrid()
    fs.fail("mkdir", ROOT / "pids" / TAG, errno.EACCES)
    assert detect_backend("auto", kernel_tag=TAG, fs=fs) is None
    assert not fs.exists(MEM_OWN / TAG)
    assert not fs.exists(ROOT / "cpu" / TAG)
    fs.fail("mkdir", ROOT / "pids" / TAG, errno.EACCES)
    with pytest.raises(SandboxError, match=str(ROOT / "pids" / TAG)):
        detect_backend("cgroup1", kernel_tag=TAG, fs=fs)


def test_own_cgroup_found_when_mount_root_is_a_sub_cgroup() -> None:
    """A container without a cgroup namespace: /proc/self/cgroup shows more than is mounted."""
    fs = FakeCgroupFS()
    for ctrl in ("memory", "cpu", "pids"):
        fs.add_v1_hierarchy(ROOT / ctrl, [ctrl])
        fs.makedirs(ROOT / ctrl / "inner")
    fs.add_process(ME, cgroups=[ROOT / c / "inner" for c in ("memory", "cpu", "pids")])
    fs.add_file(
        "/proc/self/cgroup", "3:memory:/docker/x/inner\n2:cpu:/docker/x/inner\n1:pids:/docker/x/inner\n"
    )
    b = backend_for(fs)
    assert fs.exists(ROOT / "memory/inner" / TAG)
    assert b.describe()["missing"] == {
        "cpuacct": "no cpuacct hierarchy in /proc/self/cgroup",
        "freezer": "no freezer hierarchy in /proc/self/cgroup",
    }


# -- limits ----------------------------------------------------------------------------------


def test_limits_written_in_the_right_files_and_order(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("agent-7", Limits(memory_bytes=64 << 20, cpu_quota_us=20_000, pids=16))
    mem = MEM_OWN / TAG / "agent-7"
    assert read(fs, mem / "memory.limit_in_bytes") == str(64 << 20)
    assert read(fs, mem / "memory.memsw.limit_in_bytes") == str(64 << 20)
    cpu = ROOT / "cpu" / TAG / "agent-7"
    assert read(fs, cpu / "cpu.cfs_period_us") == "100000"
    assert read(fs, cpu / "cpu.cfs_quota_us") == "20000"
    assert read(fs, ROOT / "pids" / TAG / "agent-7" / "pids.max") == "16"
    written = [p for p, _ in fs.writes]
    assert written.index(str(mem / "memory.limit_in_bytes")) < written.index(
        str(mem / "memory.memsw.limit_in_bytes")
    )
    assert {k: v.to_dict() for k, v in agent.report().items()} == {
        "memory": {
            "requested": 64 << 20,
            "enforced": True,
            "via": "memory.limit_in_bytes+memory.memsw.limit_in_bytes",
        },
        "cpu": {"requested": 20_000, "enforced": True, "via": "cpu.cfs_quota_us"},
        "pids": {"requested": 16, "enforced": True, "via": "pids.max"},
    }


def test_percent_becomes_quota(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    backend.create("a", Limits.from_percent(150, cpu_period_us=50_000))
    cpu = ROOT / "cpu" / TAG / "a"
    assert (read(fs, cpu / "cpu.cfs_period_us"), read(fs, cpu / "cpu.cfs_quota_us")) == ("50000", "75000")


def test_without_memsw_only_memory_limit() -> None:
    fs = hybrid(memsw=False)
    agent = backend_for(fs).create("a", Limits(memory_bytes=1 << 30))
    assert agent.report()["memory"].via == "memory.limit_in_bytes"
    assert not any("memsw" in p for p, _ in fs.writes)


def test_every_controller_dir_created_even_without_limits(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("idle", Limits())
    assert len(agent.dirs) == 5
    assert all(fs.exists(d) for d in agent.dirs)
    assert agent.can_freeze
    assert {k: (r.requested, r.enforced, r.via) for k, r in agent.report().items()} == {
        k: (None, False, "not requested") for k in ("memory", "cpu", "pids")
    }
    assert read(fs, MEM_OWN / TAG / "idle" / "memory.limit_in_bytes") == "9223372036854771712"


def test_comounted_cpu_cpuacct_share_one_dir() -> None:
    fs = hybrid(comount=True)
    agent = backend_for(fs).create("a", Limits(cpu_quota_us=10_000))
    cpu = ROOT / "cpu,cpuacct" / TAG / "a"
    assert len(agent.dirs) == 4
    assert cpu in agent.dirs
    assert read(fs, cpu / "cpu.cfs_quota_us") == "10000"
    fs.set_value(cpu / "cpuacct.usage", "2500000\n")
    assert agent.stats()["cpu_usage_us"] == 2500


def test_report_is_truthful_when_a_controller_is_missing() -> None:
    fs = hybrid(skip=("pids", "freezer"))
    agent = backend_for(fs, "cgroup1").create("a", Limits(memory_bytes=1 << 28, pids=16))
    report = agent.report()
    assert (report["pids"].requested, report["pids"].enforced, report["pids"].via) == (
        16,
        False,
        "no pids controller",
    )
    assert report["memory"].enforced
    assert not agent.can_freeze
    assert agent.freeze() is False
    assert agent.thaw() is False


def test_refused_limit_raises_naming_file_and_leaves_nothing(
    fs: FakeCgroupFS, backend: CgroupV1Backend
) -> None:
    quota = ROOT / "cpu" / TAG / "a" / "cpu.cfs_quota_us"
    fs.fail("write", quota, errno.EACCES)
    with pytest.raises(SandboxError, match=f"cannot write '20000' to {quota}") as info:
        backend.create("a", Limits(memory_bytes=1 << 28, cpu_quota_us=20_000))
    assert info.value.details["path"] == str(quota)
    assert not any(p.endswith("/a") for p in fs.cgroup_dirs())


def test_duplicate_and_invalid_names(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    first = backend.create("a", Limits())
    with pytest.raises(SandboxError, match="already exists"):
        backend.create("a", Limits())
    assert all(fs.exists(d) for d in first.dirs)  # the failed duplicate did not remove the original
    for bad in ("../a", "a/b", ".hidden", ""):
        with pytest.raises(SandboxError, match="invalid cgroup name"):
            backend.create(bad, Limits())


# -- agent operations ------------------------------------------------------------------------


def test_attach_moves_pid_into_every_hierarchy(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    fs.add_process(501)
    assert all(p.endswith("/cgroup.procs") and p.startswith("/") for p in agent.attach_paths)
    agent.attach(501)
    assert agent.pids() == [501]
    for d in agent.dirs:
        assert read(fs, d / "cgroup.procs") == "501"
    with pytest.raises(SandboxError, match="No such process"):
        agent.attach(999_999)


def test_freeze_thaw(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    state = ROOT / "freezer" / TAG / "a" / "freezer.state"
    assert agent.freeze() is True
    assert read(fs, state) == "FROZEN"
    assert agent.is_frozen()
    assert agent.thaw() is True
    assert read(fs, state) == "THAWED"
    assert not agent.is_frozen()
    fs.v1_freeze_result = "FREEZING"
    agent.freeze()
    assert not agent.is_frozen()  # requested but not complete


def test_kill_all_freezes_kills_each_then_thaws(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    for pid in (501, 502):
        fs.add_process(pid)
        agent.attach(pid)
    assert agent.kill_all() == 2
    assert fs.signals == [(501, signal.SIGKILL), (502, signal.SIGKILL)]
    states = [t for p, t in fs.writes if p.endswith("freezer.state")]
    assert states == ["FROZEN", "THAWED"]
    assert fs.killed == {501, 502}  # delivered on thaw
    assert agent.pids() == []
    assert agent.kill_all() == 0


def test_kill_all_after_remove_is_safe(backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    assert agent.remove()
    assert agent.kill_all() == 0
    assert agent.pids() == []


def test_oom_kills_and_stats(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    mem = MEM_OWN / TAG / "a"
    assert agent.oom_kills() == 0
    fs.set_value(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    fs.set_value(mem / "memory.usage_in_bytes", "4096\n")
    fs.set_value(mem / "memory.max_usage_in_bytes", "8192\n")
    fs.set_value(ROOT / "cpuacct" / TAG / "a" / "cpuacct.usage", "7000123\n")
    fs.set_value(
        ROOT / "cpu" / TAG / "a" / "cpu.stat", "nr_periods 40\nnr_throttled 30\nthrottled_time 5000000\n"
    )
    fs.add_process(501)
    agent.attach(501)
    assert agent.oom_kills() == 3
    assert agent.stats() == {
        "memory_current": 4096,
        "memory_peak": 8192,
        "oom_kills": 3,
        "cpu_usage_us": 7000,
        "nr_periods": 40,
        "nr_throttled": 30,
        "throttled_us": 5000,
        "pids_current": 1,
    }


def test_remove_busy_returns_false_then_true(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    fs.add_process(501)
    agent.attach(501)
    assert agent.remove() is False
    assert all(fs.exists(d) for d in agent.dirs)
    agent.kill_all()
    assert agent.remove() is True
    assert not any(fs.exists(d) for d in agent.dirs)
    assert agent.remove() is True  # already gone


def test_removed_cgroups_are_not_tracked_forever(backend: CgroupV1Backend) -> None:
    """A long-lived kernel creates a cgroup per incarnation; removed ones must be let go."""
    for i in range(50):
        assert backend.create(f"agent-{i}", Limits(pids=8)).remove() is True
    kept = backend.create("alive", Limits())
    assert list(backend._agents) == ["alive"]
    assert kept.remove() and backend._agents == {}


def test_remove_other_error_raises(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    fs.fail("rmdir", agent.dirs[0], errno.EACCES)
    with pytest.raises(SandboxError, match="cannot remove cgroup"):
        agent.remove()


def test_close_removes_agents_and_parents(fs: FakeCgroupFS) -> None:
    before = fs.cgroup_dirs()
    backend = backend_for(fs)
    agent = backend.create("a", Limits(pids=4))
    fs.add_process(501)
    agent.attach(501)
    backend.close()  # busy: agent and parents stay, with a warning
    assert fs.exists(MEM_OWN / TAG / "a")
    agent.kill_all()
    backend.close()
    assert fs.cgroup_dirs() == before
    with pytest.raises(SandboxError, match="closed"):
        backend.create("b", Limits())


def test_remove_stale_parents_of_dead_kernels(fs: FakeCgroupFS, backend: CgroupV1Backend) -> None:
    for tag in ("clove-7", "clove-8"):
        fs.makedirs(ROOT / "pids" / tag / "agent-1")
    fs.makedirs(ROOT / "pids" / "other-9")
    removed = remove_stale(backend, pid_alive=lambda pid: pid == 8)
    assert removed == [ROOT / "pids/clove-7/agent-1", ROOT / "pids/clove-7"]
    assert fs.exists(ROOT / "pids/clove-8")
    assert fs.exists(ROOT / "pids/other-9")
    assert fs.exists(ROOT / "pids" / TAG)  # our own parent is never touched


def test_agent_repr_and_type(backend: CgroupV1Backend) -> None:
    agent = backend.create("a", Limits())
    assert isinstance(agent, CgroupV1Agent)
    assert "'a'" in repr(agent)
