"""Boot-time removal of what dead kernels left: on the first try, frozen tasks included, and never
a live kernel's cgroups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clove.sandbox.backends import detect_backend
from clove.sandbox.cgroupfs import is_live_kernel
from clove.sandbox.reaper import reap_dirs, reap_stale
from clove.testing import FakeCgroupFS
from clove.testing.kernel import poll_for

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "memory", "pids", "freezer")


def _fs() -> FakeCgroupFS:
    fs = FakeCgroupFS()
    for ctrl in CONTROLLERS:
        fs.add_v1_hierarchy(ROOT / ctrl, [ctrl])
    fs.add_file(Path("/proc/self/cgroup"), "".join(f"{h}:{c}:/\n" for h, c in enumerate(CONTROLLERS, 1)))
    return fs


def _agent(fs: FakeCgroupFS, pid: int, parent: str, name: str) -> None:
    for ctrl in CONTROLLERS:
        fs.makedirs(ROOT / ctrl / parent / name)
    fs.add_process(pid, cgroups=[ROOT / ctrl / parent / name for ctrl in CONTROLLERS])


def test_a_dead_kernels_frozen_agents_die_and_every_cgroup_goes_in_one_call() -> None:
    fs = _fs()
    backend = detect_backend("cgroup1", kernel_tag="clove-100", fs=fs, kill=fs.kill)
    assert backend is not None
    _agent(fs, 501, "clove-7", "agent-1.1")
    _agent(fs, 502, "clove-7", "agent-2.1")
    fs.write_text(ROOT / "freezer/clove-7/agent-2.1/freezer.state", "FROZEN")  # a paused agent
    _agent(fs, 601, "clove-8", "agent-1.1")  # kernel 8 is alive
    _agent(fs, 701, "clove-100", "agent-3.1")  # a dead kernel that had our pid

    removed = reap_stale(backend, pid_alive=lambda pid: pid == 8, kill=fs.kill, sleep=lambda _: None)

    assert {501, 502, 701} <= fs.killed
    assert 601 not in fs.killed
    for ctrl in CONTROLLERS:
        assert not fs.exists(ROOT / ctrl / "clove-7")
        assert not fs.exists(ROOT / ctrl / "clove-100/agent-3.1")
        assert fs.exists(ROOT / ctrl / "clove-100")  # our own parent stays
        assert fs.exists(ROOT / ctrl / "clove-8/agent-1.1")  # a live kernel's: untouched
    children_first = [p for p in removed if p.parent.name == "clove-7"]
    assert all(removed.index(c) < removed.index(c.parent) for c in children_first)


def test_reap_dirs_gives_up_after_its_timeout_on_a_cgroup_that_stays_busy() -> None:
    fs = _fs()
    _agent(fs, 801, "clove-9", "agent-1.1")
    survivors: list[int] = []
    removed = reap_dirs(fs, [ROOT / "pids/clove-9"], kill=lambda pid, _: survivors.append(pid), timeout=0.05)
    assert removed == []
    assert fs.exists(ROOT / "pids/clove-9/agent-1.1")
    assert 801 in survivors


def test_is_live_kernel_knows_a_kernel_from_a_reused_pid() -> None:
    assert not is_live_kernel(os.getpid())  # pytest, not a kernel
    kernelish = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "clove", "kernel"])
    try:
        poll_for(lambda: is_live_kernel(kernelish.pid), 10, message="the exec")  # before it, argv is ours
        kernelish.kill()
        os.waitid(os.P_PID, kernelish.pid, os.WEXITED | os.WNOWAIT)  # a zombie now, not yet reaped
        assert not is_live_kernel(kernelish.pid)
    finally:
        kernelish.kill()
        kernelish.wait()
    assert not is_live_kernel(kernelish.pid)
