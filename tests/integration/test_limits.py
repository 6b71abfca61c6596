"""Hard limits hold for real (cgroup v1 on the development machine), and neighbours carry on."""

from __future__ import annotations

import time

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def _noop_latencies(c, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        assert c.noop("n") == "n"
        out.append(time.perf_counter() - t)
        time.sleep(0.005)
    return out


def test_cpu_hog_is_held_to_its_quota_while_a_neighbour_answers(kernel):
    with kernel.client() as c:
        c.spawn("steady", agent_script("healthy.py"))
        r = c.spawn("hog", agent_script("cpu_hog.py"), limits={"cpu": "20%"})
        stats = lambda: next(a for a in c.list_agents() if a["name"] == "hog")["stats"]  # noqa: E731
        poll_for(lambda: stats().get("cpu_usage_us", 0) > 0, message="hog on CPU")
        before, t0 = stats()["cpu_usage_us"], time.monotonic()
        latencies = _noop_latencies(c, 5.0)
        used = (stats()["cpu_usage_us"] - before) / 1e6 / (time.monotonic() - t0)
        assert used <= 0.22 + 0.01, f"hog used {used:.1%} of a core"
        assert used >= 0.10, f"hog barely ran ({used:.1%}): the quota test measured nothing"
        assert stats()["nr_throttled"] > 0
        assert max(latencies) < 1.0 and sorted(latencies)[len(latencies) // 2] < 0.05
        assert agent_row(kernel, "steady")["state"] == "running"
        assert r["isolation"]["limits"]["cpu"] == {"requested": 20000, "enforced": True, "via": "cpu.cfs_quota_us", "source": "request", "ceiling": 200_000}


def test_memory_hog_is_oom_killed_at_its_limit_alone(kernel):
    with kernel.client() as c:
        c.spawn("steady", agent_script("healthy.py"))
        c.spawn("leak", agent_script("mem_hog.py"), limits={"memory": "64M"})
        row = poll_for(lambda: (a := agent_row(kernel, "leak"))["state"] == "exited" and a, timeout=30, message="OOM kill")
        assert row["exit_reason"] == "oom_killed", row
        assert row["exit_signal"] == 9
        log = c.logs(name="leak")["data"].decode()
        peak = max(int(line.split()[1]) for line in log.splitlines() if line.startswith("allocated"))
        assert peak <= 64, f"hog reported {peak} MiB under a 64 MiB limit"
        assert agent_row(kernel, "steady")["state"] == "running"
        assert c.noop("alive") == "alive"
        exited = [e for e in c.get_audit_log(category="AGENT_LIFECYCLE", limit=1000)["entries"] if e["event_type"] == "agent.exited"]
        assert exited[-1]["details"]["reason"] == "oom_killed"


def test_fork_bomb_stops_at_its_pids_limit(kernel):
    with kernel.client() as c:
        c.spawn("bomb", agent_script("fork_bomb.py"), limits={"pids": 24})
        log = poll_for(lambda: (d := c.logs(name="bomb")["data"].decode()) and "done" in d and d, timeout=30, message="the bomb to give up")
        children = int(log.split("children=")[1].split()[0])
        assert 0 < children < 24
        assert "Resource temporarily unavailable" in log
        stats = next(a for a in c.list_agents() if a["name"] == "bomb")["stats"]
        assert stats["pids_current"] <= 24
        assert c.noop("ok") == "ok"
        assert c.kill(name="bomb")
