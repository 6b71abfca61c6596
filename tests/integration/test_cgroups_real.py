"""Real cgroups with real child processes: v1 where mounted (this machine), v2 where delegated.

Each test creates its backend under this process's own cgroups with the tag
``clove-test-<pid>`` and the fixture removes everything again, even when the test fails. Children
start with ``python -c`` and block reading stdin, so they are attached before they do anything.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clove.errors import SandboxError
from clove.sandbox.backends import detect_backend
from clove.sandbox.cgroupfs import parse_proc_cgroup
from clove.sandbox.cgroups import AgentCgroup, CgroupBackend
from clove.sandbox.limits import Limits
from clove.sandbox.reaper import remove_stale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TAG = f"clove-test-{os.getpid()}"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def poll_for(cond: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """True as soon as ``cond()`` is truthy; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def gone_or_zombie(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie (``Z`` in ``/proc/<pid>/stat``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@functools.cache
def v1_skip_reason() -> str | None:
    """Why real cgroup v1 tests cannot run here, or ``None`` (probed once, when first needed)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to create cgroups"
    try:
        probe = detect_backend("cgroup1", kernel_tag=f"clove-probe-{os.getpid()}")
    except SandboxError as err:
        return f"no usable cgroup v1 here: {err.message}"
    if probe is not None:
        probe.close()
    return None


@functools.cache
def v2_skip_reason() -> str | None:
    """Why the real cgroup v2 test cannot run here, or ``None``."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to create cgroups"
    try:
        entries = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError as err:
        return f"cannot read /proc/self/cgroup: {err}"
    own = next((e.path for e in entries if e.is_v2), None)
    offered: list[str] = []
    for mount in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        controllers = mount / own.lstrip("/") / "cgroup.controllers" if own else None
        if controllers is not None and controllers.exists():
            have = controllers.read_text().split()
            if {"memory", "cpu", "pids"} <= set(have):
                return None
            offered.append(f"{mount}: {' '.join(have) or 'none'}")
    return (
        "no cgroup2 hierarchy with memory, cpu and pids controllers "
        f"({'; '.join(offered) or 'no cgroup2 mount'}); they are bound to cgroup v1 here"
    )


class Harness:
    """Creates agent cgroups and child processes, and tears all of them down."""

    def __init__(self, backend: CgroupBackend) -> None:
        self.backend = backend
        self.agents: list[AgentCgroup] = []
        self.procs: list[subprocess.Popen[str]] = []

    def create(self, name: str, limits: Limits) -> AgentCgroup:
        agent = self.backend.create(name, limits)
        self.agents.append(agent)
        return agent

    def spawn(self, agent: AgentCgroup, body: str) -> subprocess.Popen[str]:
        """Start ``python -c`` that waits for a line on stdin, attach it, then let it run ``body``."""
        script = "import os, signal, sys, time\nsys.stdin.readline()\n" + body
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        agent.attach(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return proc

    def teardown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        for agent in self.agents:

            def dead(agent: AgentCgroup = agent) -> bool:
                return agent.kill_all() == 0 and not agent.pids()

            poll_for(dead, timeout=5)
            poll_for(agent.remove, timeout=5)
        dirs = [d for a in self.agents for d in a.dirs]
        self.backend.close()
        leftovers = [str(d) for d in dirs if d.exists()]
        leftovers += [str(b / TAG) for b in self.backend.base_dirs if (b / TAG).exists()]
        assert not leftovers, f"cgroups left behind: {leftovers}"


@pytest.fixture
def v1() -> Iterator[Harness]:
    reason = v1_skip_reason()
    if reason:
        pytest.skip(reason)
    backend = detect_backend("cgroup1", kernel_tag=TAG)
    assert backend is not None
    assert backend.name == "cgroup1"
    remove_stale(backend)
    harness = Harness(backend)
    try:
        yield harness
    finally:
        harness.teardown()


def test_auto_detects_v1_here() -> None:
    if v1_skip_reason() or not v2_skip_reason():
        pytest.skip("this test describes a hybrid v1 machine")
    backend = detect_backend("auto", kernel_tag=TAG)
    assert backend is not None
    try:
        assert backend.name == "cgroup1"
        with pytest.raises(SandboxError, match="cgroup2 backend unavailable"):
            detect_backend("cgroup2", kernel_tag=TAG)
    finally:
        backend.close()
    assert not any((b / TAG).exists() for b in backend.base_dirs)


def test_memory_limit_oom_kills_the_hog(v1: Harness) -> None:
    agent = v1.create("mem", Limits(memory_bytes=64 << 20))
    assert agent.report()["memory"].enforced
    hog = v1.spawn(
        agent,
        "chunks = []\n"
        "for _ in range(1024):\n"
        "    chunks.append(b'x' * (1 << 20))\n"
        "print('survived', flush=True)\n",
    )
    assert hog.wait(timeout=15) == -9
    assert poll_for(lambda: agent.oom_kills() >= 1, timeout=2)
    stats = agent.stats()
    assert stats["oom_kills"] >= 1
    assert stats["memory_peak"] <= (64 << 20) + (1 << 20)


def test_cpu_quota_throttles_to_about_20_percent(v1: Harness) -> None:
    agent = v1.create("cpu", Limits.from_percent(20))
    before = agent.stats()["cpu_usage_us"]
    start = time.monotonic()
    busy = v1.spawn(agent, "end = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n    pass\n")
    assert busy.wait(timeout=10) == 0
    wall = time.monotonic() - start
    stats = agent.stats()
    share = (stats["cpu_usage_us"] - before) / 1e6 / wall
    assert 0.05 < share <= 0.25, f"cpu share {share:.3f} over {wall:.2f}s"
    assert stats["nr_throttled"] > 0


def test_pids_limit_makes_fork_fail(v1: Harness) -> None:
    agent = v1.create("pids", Limits(pids=16))
    forker = v1.spawn(
        agent,
        "r, w = os.pipe()\n"
        "kids, error = [], 'none'\n"
        "for _ in range(64):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as err:\n"
        "        error = type(err).__name__\n"
        "        break\n"
        "    if pid == 0:\n"
        "        os.close(w)\n"
        "        os.read(r, 1)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(len(kids), error, flush=True)\n"
        "os.close(w)\n"
        "for pid in kids:\n"
        "    os.waitpid(pid, 0)\n",
    )
    assert forker.stdout is not None
    forked, error = forker.stdout.readline().split()
    assert forker.wait(timeout=10) == 0
    assert error == "BlockingIOError"
    assert int(forked) < 16


def test_freeze_and_thaw_stop_and_resume_a_busy_process(v1: Harness) -> None:
    agent = v1.create("frz", Limits())
    assert agent.can_freeze
    v1.spawn(agent, "while True:\n    pass\n")
    assert poll_for(lambda: agent.stats()["cpu_usage_us"] > 10_000)
    assert agent.freeze()
    assert poll_for(agent.is_frozen), "freeze did not complete"
    frozen_at = agent.stats()["cpu_usage_us"]
    time.sleep(0.2)  # must observe that no CPU is used while frozen
    assert agent.stats()["cpu_usage_us"] - frozen_at < 5_000
    assert agent.thaw()
    assert not agent.is_frozen()
    assert poll_for(lambda: agent.stats()["cpu_usage_us"] > frozen_at + 20_000)


def test_kill_all_kills_a_process_tree(v1: Harness) -> None:
    agent = v1.create("tree", Limits(pids=32))
    parent = v1.spawn(
        agent,
        "kids = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        signal.pause()\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(*kids, flush=True)\n"
        "signal.pause()\n",
    )
    assert parent.stdout is not None
    kids = [int(p) for p in parent.stdout.readline().split()]
    assert poll_for(lambda: set(agent.pids()) == {parent.pid, *kids})
    assert agent.kill_all() == 4
    assert poll_for(lambda: agent.kill_all() == 0 and not agent.pids())
    assert parent.wait(timeout=5) == -9
    for kid in kids:  # orphans: gone, or zombies of whoever adopted them
        assert poll_for(functools.partial(gone_or_zombie, kid)), f"grandchild {kid} still running"
    assert agent.kill_all() == 0  # safe to repeat


def test_remove_busy_then_close_leaves_nothing(v1: Harness) -> None:
    agent = v1.create("rm", Limits(memory_bytes=128 << 20))
    sleeper = v1.spawn(agent, "signal.pause()\n")
    assert agent.remove() is False
    assert all(d.is_dir() for d in agent.dirs)
    agent.kill_all()
    sleeper.wait(timeout=5)
    assert poll_for(agent.remove)
    assert not any(d.exists() for d in agent.dirs)
    v1.backend.close()
    assert not any((b / TAG).exists() for b in v1.backend.base_dirs)


def test_real_cgroup_v2() -> None:
    reason = v2_skip_reason()
    if reason:
        pytest.skip(reason)
    backend = detect_backend("cgroup2", kernel_tag=TAG)
    assert backend is not None
    harness = Harness(backend)
    try:
        agent = harness.create("v2", Limits(memory_bytes=64 << 20, cpu_quota_us=20_000, pids=16))
        d = agent.dirs[0]
        assert (d / "memory.max").read_text().strip() == str(64 << 20)
        assert (d / "cpu.max").read_text().split() == ["20000", "100000"]
        assert (d / "pids.max").read_text().strip() == "16"
        hog = harness.spawn(agent, "x = [b'x' * (1 << 20) for _ in range(1024)]\n")
        assert hog.wait(timeout=15) == -9
        assert poll_for(lambda: agent.oom_kills() >= 1, timeout=2)
        sleeper = harness.spawn(agent, "signal.pause()\n")
        assert agent.freeze()
        assert poll_for(agent.is_frozen)
        assert agent.kill_all() == 1
        assert sleeper.wait(timeout=5) == -9
    finally:
        harness.teardown()
