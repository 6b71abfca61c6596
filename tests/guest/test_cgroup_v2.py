"""cgroup v2 for real: a kernel started in a delegated service cgroup limits, freezes, kills and
reports its agents through the unified hierarchy of a stock Linux kernel (the test guest)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script
from tests.guest.support import CGROUP_ROOT, SLOW, guest_only, record_figure, remove_service

pytestmark = [guest_only]


def own_cgroup(pid: int) -> Path:
    line = next(x for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if x.startswith("0::"))
    return CGROUP_ROOT / line[3:].lstrip("/")


def agent_pid(k, name: str) -> int:
    return int(poll_for(lambda: agent_row(k, name).get("pid"), 10 * SLOW, message=f"{name}'s pid"))


def test_delegation_moves_the_kernel_into_a_leaf_and_limits_are_real_files(service_kernel):
    k = service_kernel()
    service = k.cgroup
    assert service is not None
    root_before = {p.name for p in CGROUP_ROOT.iterdir() if p.is_dir()}
    leaf = own_cgroup(k.pid)
    assert leaf.parent == service and leaf.name.endswith("-kernel"), leaf
    assert set(("memory", "cpu", "pids")) <= set((service / "cgroup.subtree_control").read_text().split())
    with k.client(timeout=30 * SLOW) as c:
        info = c.kernel_info()
        r = c.spawn("bounded", agent_script("healthy.py"), limits={"memory": "96M", "cpu": "30%", "pids": 32})
        limits = r["isolation"]["limits"]
        assert limits["memory"]["enforced"] and limits["memory"]["via"].startswith("memory.max"), limits
        assert limits["cpu"]["via"] == "cpu.max" and limits["pids"]["via"] == "pids.max", limits
        pid = agent_pid(k, "bounded")
        cg = own_cgroup(pid)
        assert cg.is_relative_to(service) and cg != leaf
        assert (cg / "memory.max").read_text().strip() == str(96 << 20)
        assert (cg / "cpu.max").read_text().split()[0] == "30000"
        assert (cg / "pids.max").read_text().strip() == "32"
        assert info["sandbox_backend"] == "cgroup2", info
    root_after = {p.name for p in CGROUP_ROOT.iterdir() if p.is_dir()}
    assert root_after == root_before, "the kernel created cgroups at the hierarchy root"


def test_memory_limit_oom_kill_is_reported_from_memory_events(service_kernel):
    k = service_kernel()
    with k.client(timeout=30 * SLOW) as c:
        c.spawn("steady", agent_script("healthy.py"))
        c.spawn("leak", agent_script("mem_hog.py"), limits={"memory": "64M"})
        row = poll_for(lambda: (a := agent_row(k, "leak"))["state"] == "exited" and a, 30 * SLOW, message="OOM kill")
        assert row["exit_reason"] == "oom_killed", row
        assert agent_row(k, "steady")["state"] == "running"
        assert c.noop("alive") == "alive"


def test_cpu_quota_of_20_percent_holds_within_two_points(service_kernel):
    k = service_kernel()
    with k.client(timeout=30 * SLOW) as c:
        c.spawn("hog", agent_script("cpu_hog.py"), limits={"cpu": "20%"})
        cg = own_cgroup(agent_pid(k, "hog"))

        def usage() -> int:
            return int(next(x for x in (cg / "cpu.stat").read_text().splitlines() if x.startswith("usage_usec")).split()[1])

        poll_for(lambda: usage() > 200_000, 10 * SLOW, message="the hog on CPU")
        before, t0 = usage(), time.monotonic()
        time.sleep(10)  # the measurement window itself, not a wait for a condition
        share = (usage() - before) / 1e6 / (time.monotonic() - t0)
        record_figure("cgroup2 cpu.max 20% measured share of a core", round(share, 4))
        assert 0.18 <= share <= 0.22, f"hog used {share:.1%} of a core under a 20% quota"


def test_pids_max_stops_a_fork_bomb(service_kernel):
    k = service_kernel()
    with k.client(timeout=30 * SLOW) as c:
        c.spawn("bomb", agent_script("fork_bomb.py"), limits={"pids": 24})
        log = poll_for(lambda: (d := c.logs(name="bomb")["data"].decode()) and "done" in d and d, 60 * SLOW, message="the bomb to give up")
        children = int(log.split("children=")[1].split()[0])
        assert 0 < children < 24
        cg = own_cgroup(agent_pid(k, "bomb"))
        assert int((cg / "pids.current").read_text()) <= 24
        assert int(dict(x.split() for x in (cg / "pids.events").read_text().splitlines())["max"]) > 0


def test_pause_freezes_the_cgroup_and_kill_empties_the_whole_tree(service_kernel):
    k = service_kernel()
    with k.client(timeout=30 * SLOW) as c:
        c.spawn("tree", agent_script("fork_bomb.py"), limits={"pids": 12})
        poll_for(lambda: "done" in c.logs(name="tree")["data"].decode(), 60 * SLOW, message="the tree to grow")
        cg = own_cgroup(agent_pid(k, "tree"))
        pids = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
        assert len(pids) > 3
        assert c.pause(name="tree")
        assert (cg / "cgroup.freeze").read_text().strip() == "1"
        poll_for(lambda: "frozen 1" in (cg / "cgroup.events").read_text(), 10 * SLOW, message="frozen")
        assert c.resume(name="tree")
        poll_for(lambda: "frozen 0" in (cg / "cgroup.events").read_text(), 10 * SLOW, message="thawed")
        assert c.kill(name="tree")
        for pid in pids:
            poll_for(lambda p=pid: not Path(f"/proc/{p}").exists(), 10 * SLOW, message=f"pid {pid} to go")


def test_require_isolation_is_honoured(service_kernel):
    k = service_kernel(sandbox="require_isolation = true")
    with k.client(timeout=30 * SLOW) as c:
        r = c.spawn("ok", agent_script("healthy.py"), limits={"memory": "64M", "cpu": "50%", "pids": 16})
        assert all(v["enforced"] for v in r["isolation"]["limits"].values() if v.get("requested")), r
    # The same host with limits left to rlimits cannot hold a CPU share: refused, with the reason.
    k2 = service_kernel(sandbox='require_isolation = true\nbackend = "rlimit"')
    with k2.client(timeout=30 * SLOW) as c:
        r = c.spawn("refused", agent_script("healthy.py"), limits={"cpu": "20%"})
    assert r["success"] is False and r["code"] == "sandbox.unenforceable" and "cpu" in r["error"], r


def test_a_sigkilled_kernel_leaves_nothing_running_so_the_service_can_restart(service_kernel):
    k = service_kernel()
    service = k.cgroup
    assert service is not None
    with k.client(timeout=30 * SLOW) as c:
        c.spawn("a", agent_script("healthy.py"), limits={"memory": "64M"})
        c.spawn("b", agent_script("fork_bomb.py"), limits={"pids": 8})
        pids = [agent_pid(k, "a"), agent_pid(k, "b")]
    os.kill(k.pid, signal.SIGKILL)
    k.proc.wait()

    def procs_under(top: Path) -> list[int]:
        found = []
        # os.walk skips directories that vanish under it: the warden removes the dead kernel's
        # emptied cgroups as we look (ENOENT, or ENODEV on a cgroup already being removed).
        for root, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    found += [int(p) for p in (Path(root) / "cgroup.procs").read_text().split()]
                except OSError:
                    pass
        return found

    poll_for(lambda: not procs_under(service), 30 * SLOW, message="the dead kernel's agents to end")
    assert all(not Path(f"/proc/{p}").exists() for p in pids)
    # Nothing of the dead kernel runs on, so the service manager's stop succeeds: systemd kills
    # what is left (KillMode=control-group) and removes the emptied tree, then starts the unit
    # again in a fresh cgroup. A v2 cgroup whose controllers are enabled for children cannot take
    # a new process, so this trim, not the next kernel, is what clears a dead kernel's tree.
    assert remove_service(service) == []
    service.mkdir()
    k2 = service_kernel(service=service)
    with k2.client(timeout=30 * SLOW) as c:
        assert c.noop("again") == "again"
        assert c.spawn("c", agent_script("healthy.py"), limits={"memory": "64M"})["success"] is not False
