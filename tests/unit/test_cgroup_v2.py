"""cgroup v2 backend and its detection, against the in-memory FakeCgroupFS."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from clove.errors import SandboxError
from clove.sandbox.backends import detect_backend
from clove.sandbox.cgroup_v1 import CgroupV1Backend
from clove.sandbox.cgroup_v2 import CgroupV2Agent, CgroupV2Backend
from clove.sandbox.cgroupfs import CgroupFS
from clove.sandbox.limits import Limits
from clove.sandbox.reaper import remove_stale
from clove.testing import FakeCgroupFS

ROOT = Path("/sys/fs/cgroup")
TAG = "clove-100"
OWN = ROOT / "system.slice/clove.service"
ME = os.getpid()


def pure_v2(
    *,
    delegated: tuple[str, ...] = ("memory", "cpu", "pids"),
    own: Path | None = OWN,
    others: tuple[int, ...] = (),
    **options: bool,
) -> FakeCgroupFS:
    """A pure cgroup2 system; this process sits alone (plus ``others``) in ``own``."""
    fs = FakeCgroupFS()
    fs.add_v2_hierarchy(ROOT, ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"], **options)
    if own is None:
        fs.add_process(ME)
        fs.add_file("/proc/self/cgroup", "0::/\n")
        return fs
    enable = " ".join(f"+{c}" for c in delegated)
    fs.write_text(ROOT / "cgroup.subtree_control", enable)
    fs.makedirs(OWN.parent)
    fs.write_text(OWN.parent / "cgroup.subtree_control", enable)
    fs.makedirs(OWN)
    for pid in (ME, *others):
        fs.add_process(pid, cgroups=[OWN])
    fs.add_file("/proc/self/cgroup", f"0::/{OWN.relative_to(ROOT)}\n")
    fs.writes.clear()
    return fs


def backend_for(fs: FakeCgroupFS, preference: str = "auto") -> CgroupV2Backend:
    b = detect_backend(preference, kernel_tag=TAG, fs=fs, kill=fs.kill)
    assert isinstance(b, CgroupV2Backend)
    return b


def read(fs: CgroupFS, path: Path) -> str:
    return fs.read_text(path).strip()


@pytest.fixture
def fs() -> FakeCgroupFS:
    return pure_v2()


@pytest.fixture
def backend(fs: FakeCgroupFS) -> CgroupV2Backend:
    return backend_for(fs)


# -- detection and delegation ----------------------------------------------------------------


def test_auto_picks_v2_and_moves_kernel_into_leaf(fs: FakeCgroupFS) -> None:
    b = backend_for(fs)
    leaf = OWN / f"{TAG}-kernel"
    assert read(fs, leaf / "cgroup.procs") == str(ME)
    assert read(fs, OWN / "cgroup.procs") == ""
    assert read(fs, OWN / "cgroup.subtree_control") == "memory cpu pids"
    assert read(fs, OWN / TAG / "cgroup.subtree_control") == "memory cpu pids"
    info = b.describe()
    assert info["backend"] == "cgroup2"
    assert info["parents"] == {"unified": str(OWN / TAG)}
    assert info["controllers"] == ["memory", "cpu", "pids"]
    assert info["kernel_leaf"] == str(leaf)


def test_own_cgroup_is_root_no_move_needed() -> None:
    fs = pure_v2(own=None)
    b = backend_for(fs)
    assert read(fs, ROOT / "cgroup.subtree_control") == "memory cpu pids"
    assert b.describe()["kernel_leaf"] is None
    assert read(fs, ROOT / "cgroup.procs") == str(ME)


def test_other_processes_in_own_cgroup() -> None:
    fs = pure_v2(others=(4242,))
    with pytest.raises(SandboxError, match=r"holds other processes \(4242\)"):
        detect_backend("cgroup2", kernel_tag=TAG, fs=fs)
    assert fs.cgroup_dirs() == [str(OWN.parent), str(OWN)]  # nothing left, nothing moved
    assert sorted(map(int, read(fs, OWN / "cgroup.procs").split())) == sorted([ME, 4242])
    assert detect_backend("auto", kernel_tag=TAG, fs=fs) is None


def test_hybrid_without_v2_controllers_auto_picks_v1() -> None:
    fs = FakeCgroupFS()
    for ctrl in ("memory", "cpu", "pids"):
        fs.add_v1_hierarchy(ROOT / ctrl, [ctrl])
    fs.add_v2_hierarchy(ROOT / "unified", ["hugetlb"])
    fs.add_process(ME)
    fs.add_file("/proc/self/cgroup", "3:memory:/\n2:cpu:/\n1:pids:/\n0::/\n")
    assert isinstance(detect_backend("auto", kernel_tag=TAG, fs=fs), CgroupV1Backend)
    with pytest.raises(SandboxError, match=r"lacks memory, cpu, pids \(offers: hugetlb\)"):
        detect_backend("cgroup2", kernel_tag=TAG, fs=fs)


def test_hybrid_with_v2_controllers_prefers_v2() -> None:
    fs = FakeCgroupFS()
    fs.add_v1_hierarchy(ROOT / "freezer", ["freezer"])
    fs.add_v2_hierarchy(ROOT / "unified", ["memory", "cpu", "pids"])
    fs.add_process(ME)
    fs.add_file("/proc/self/cgroup", "1:freezer:/\n0::/\n")
    b = backend_for(fs)
    assert b.describe()["mount"] == str(ROOT / "unified")
    assert fs.exists(ROOT / "unified" / TAG)


def test_no_cgroups_at_all() -> None:
    fs = FakeCgroupFS()
    fs.add_file("/proc/self/cgroup", "")
    assert detect_backend("auto", kernel_tag=TAG, fs=fs) is None
    with pytest.raises(SandboxError, match="no cgroup2"):
        detect_backend("cgroup2", kernel_tag=TAG, fs=fs)


def test_partial_delegation_explicit_reports_missing_controller() -> None:
    fs = pure_v2(delegated=("memory", "pids"))
    assert detect_backend("auto", kernel_tag=TAG, fs=fs) is None  # auto needs all three
    b = backend_for(fs, "cgroup2")
    agent = b.create("a", Limits(memory_bytes=1 << 28, cpu_quota_us=20_000, pids=8))
    report = agent.report()
    assert (report["cpu"].requested, report["cpu"].enforced, report["cpu"].via) == (
        20_000,
        False,
        "no cpu controller",
    )
    assert report["memory"].enforced
    assert report["pids"].enforced
    assert not fs.exists(OWN / TAG / "a" / "cpu.max")


def test_prepare_failure_restores_kernel_cgroup() -> None:
    fs = pure_v2()
    fs.fail("mkdir", OWN / TAG, errno.EACCES)
    with pytest.raises(SandboxError, match=f"cannot create cgroup {OWN / TAG}"):
        detect_backend("cgroup2", kernel_tag=TAG, fs=fs)
    assert read(fs, OWN / "cgroup.procs") == str(ME)
    assert read(fs, OWN / "cgroup.subtree_control") == ""
    assert fs.cgroup_dirs() == [str(OWN.parent), str(OWN)]


# -- limits ----------------------------------------------------------------------------------


def test_limits_written_in_v2_format(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    agent = backend.create("agent-7", Limits(memory_bytes=64 << 20, cpu_quota_us=20_000, pids=16))
    d = OWN / TAG / "agent-7"
    assert agent.attach_paths == (str(d / "cgroup.procs"),)
    assert read(fs, d / "memory.max") == str(64 << 20)
    assert read(fs, d / "memory.swap.max") == "0"
    assert read(fs, d / "cpu.max") == "20000 100000"
    assert read(fs, d / "pids.max") == "16"
    assert {k: v.to_dict() for k, v in agent.report().items()} == {
        "memory": {"requested": 64 << 20, "enforced": True, "via": "memory.max+memory.swap.max"},
        "cpu": {"requested": 20_000, "enforced": True, "via": "cpu.max"},
        "pids": {"requested": 16, "enforced": True, "via": "pids.max"},
    }


def test_percent_to_cpu_max(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    backend.create("a", Limits.from_percent(25))
    backend.create("b", Limits.from_percent(250, cpu_period_us=10_000))
    assert read(fs, OWN / TAG / "a" / "cpu.max") == "25000 100000"
    assert read(fs, OWN / TAG / "b" / "cpu.max") == "25000 10000"


def test_no_limits_leaves_defaults() -> None:
    fs = pure_v2(swap=False)
    agent = backend_for(fs).create("a", Limits())
    d = OWN / TAG / "a"
    assert (read(fs, d / "memory.max"), read(fs, d / "cpu.max"), read(fs, d / "pids.max")) == (
        "max",
        "max 100000",
        "max",
    )
    assert all(not r.enforced and r.via == "not requested" for r in agent.report().values())


def test_without_swap_file_only_memory_max() -> None:
    fs = pure_v2(swap=False)
    agent = backend_for(fs).create("a", Limits(memory_bytes=1 << 30))
    assert agent.report()["memory"].via == "memory.max"


def test_refused_write_raises_naming_file_and_removes_dir(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    pids_max = OWN / TAG / "a" / "pids.max"
    fs.fail("write", pids_max, errno.EPERM)
    with pytest.raises(SandboxError, match=f"cannot write '5' to {pids_max}"):
        backend.create("a", Limits(pids=5))
    assert not fs.exists(OWN / TAG / "a")


# -- agent operations ------------------------------------------------------------------------


def test_attach_and_pids(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    agent = backend.create("a", Limits())
    fs.add_process(700)
    fs.add_process(701)
    agent.attach(700)
    agent.attach(701)
    assert agent.pids() == [700, 701]
    assert isinstance(agent, CgroupV2Agent)


def test_freeze_thaw_uses_cgroup_freeze_and_events(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    agent = backend.create("a", Limits())
    assert agent.can_freeze
    assert agent.freeze()
    assert agent.is_frozen()
    assert read(fs, OWN / TAG / "a" / "cgroup.freeze") == "1"
    assert agent.thaw()
    assert not agent.is_frozen()


def test_kill_all_uses_cgroup_kill(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    agent = backend.create("a", Limits())
    for pid in (700, 701, 702):
        fs.add_process(pid)
        agent.attach(pid)
    agent.freeze()
    assert agent.kill_all() == 3
    assert fs.signals == []  # one write, no per-pid signals
    assert fs.killed == {700, 701, 702}
    assert agent.pids() == []
    assert agent.kill_all() == 0


def test_kill_all_without_cgroup_kill_falls_back() -> None:
    fs = pure_v2(kill=False)
    agent = backend_for(fs).create("a", Limits())
    fs.add_process(700)
    agent.attach(700)
    assert agent.kill_all() == 1
    assert fs.signals == [(700, signal.SIGKILL)]
    assert [t for p, t in fs.writes if p.endswith("cgroup.freeze")] == ["1", "0"]
    assert agent.pids() == []


def test_no_freezer() -> None:
    fs = pure_v2(freeze=False)
    agent = backend_for(fs).create("a", Limits())
    assert not agent.can_freeze
    assert agent.freeze() is False
    assert agent.thaw() is False
    assert agent.is_frozen() is False


def test_oom_kills_and_stats(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    agent = backend.create("a", Limits(memory_bytes=1 << 26))
    d = OWN / TAG / "a"
    fs.set_value(d / "memory.events", "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\n")
    fs.set_value(d / "memory.current", "65536\n")
    fs.set_value(d / "memory.peak", "1048576\n")
    fs.set_value(d / "cpu.stat", "usage_usec 900\nuser_usec 800\nsystem_usec 100\n"
                 "nr_periods 9\nnr_throttled 4\nthrottled_usec 321\n")  # fmt: skip
    fs.add_process(700)
    agent.attach(700)
    assert agent.oom_kills() == 2
    assert agent.stats() == {
        "memory_current": 65536,
        "memory_peak": 1048576,
        "pids_current": 1,
        "cpu_usage_us": 900,
        "nr_periods": 9,
        "nr_throttled": 4,
        "throttled_us": 321,
        "oom_kills": 2,
    }


def test_remove_busy_then_gone(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    agent = backend.create("a", Limits())
    fs.add_process(700)
    agent.attach(700)
    assert agent.remove() is False
    assert fs.exists(OWN / TAG / "a")
    agent.kill_all()
    assert agent.remove() is True
    assert agent.remove() is True
    assert not fs.exists(OWN / TAG / "a")


def test_close_restores_everything(fs: FakeCgroupFS) -> None:
    before = fs.cgroup_dirs()
    with backend_for(fs) as backend:
        backend.create("a", Limits(pids=3))
        backend.create("b", Limits())
    assert fs.cgroup_dirs() == before
    assert read(fs, OWN / "cgroup.procs") == str(ME)
    assert read(fs, OWN / "cgroup.subtree_control") == ""


def test_close_keeps_leaf_when_own_has_other_children(fs: FakeCgroupFS) -> None:
    backend = backend_for(fs)
    fs.mkdir(OWN / "someone-else")
    backend.close()
    assert not fs.exists(OWN / TAG)
    assert fs.exists(OWN / f"{TAG}-kernel")  # still holds the kernel; nothing else disturbed
    assert read(fs, OWN / "cgroup.subtree_control") == "memory cpu pids"


def test_remove_stale_removes_dead_kernel_leaf_and_parent(fs: FakeCgroupFS, backend: CgroupV2Backend) -> None:
    fs.mkdir(OWN / "clove-55")
    fs.mkdir(OWN / "clove-55-kernel")
    removed = remove_stale(backend, pid_alive=lambda pid: False)
    assert set(removed) == {OWN / "clove-55", OWN / "clove-55-kernel"}
    assert fs.exists(OWN / TAG)
    assert fs.exists(OWN / f"{TAG}-kernel")
