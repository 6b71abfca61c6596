"""Defaults that contain: a spawn that names no limits still gets the kernel's ``[limits]`` (memory,
CPU, PIDs, work-dir bytes, /tmp bytes and inodes), overridable per agent, never above the
ceilings, and the isolation report says where each value came from."""

from __future__ import annotations

import errno
import os
import time

import pytest

from clove.errors import InvalidArguments
from clove.sandbox import workdir
from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

MiB = 1 << 20


def cgroup(c, agent_id: int) -> dict:
    return c.get_agent_metrics(agent_id)["cgroup"]


def test_a_spawn_without_limits_cannot_fork_or_allocate_past_the_defaults(make_kernel):
    k = make_kernel('[limits]\npids = 16\nmemory_bytes = "64M"\n')
    with k.client() as c:
        started = time.monotonic()
        quick = c.spawn("quick", agent_script("healthy.py"))
        took = time.monotonic() - started
        bomb = c.spawn("bomb", agent_script("fork_bomb.py"))
        leak = c.spawn("leak", agent_script("mem_hog.py"))

        # Under the default CPU cap (half a core) a warm-zygote spawn stays quick.
        assert quick["success"] and took < 2.0, f"spawn took {took:.2f} s"
        cpu = quick["isolation"]["limits"]["cpu"]
        assert cpu == {"requested": 50_000, "enforced": True, "via": cpu["via"], "source": "default", "ceiling": 200_000}
        assert cgroup(c, quick["id"])["cpu_quota_us"] == 50_000

        assert bomb["isolation"]["limits"]["pids"] == {"requested": 16, "enforced": True, "via": "pids.max", "source": "default", "ceiling": 1024}
        log = poll_for(lambda: (d := c.logs(name="bomb")["data"].decode()) and "done" in d and d, timeout=30, message="the bomb to give up")
        children = int(log.split("children=")[1].split()[0])
        assert 0 < children < 16 and "Resource temporarily unavailable" in log
        figures = cgroup(c, bomb["id"])
        assert figures["pids_limit"] == 16 and figures["pids_current"] <= 16

        assert leak["isolation"]["limits"]["memory"]["requested"] == 64 * MiB
        assert leak["isolation"]["limits"]["memory"]["source"] == "default"
        row = poll_for(lambda: (a := agent_row(k, "leak"))["state"] == "exited" and a, timeout=30, message="OOM kill")
        assert row["exit_reason"] == "oom_killed", row
        peak = max(int(line.split()[1]) for line in c.logs(name="leak")["data"].decode().splitlines() if line.startswith("allocated"))
        assert peak <= 64, f"{peak} MiB under a 64 MiB default"
        assert c.noop("alive") == "alive"


CEILINGS = """
[limits]
max_memory_bytes = "512M"
max_pids = 100

[limits.agents.big]
memory_bytes = "384M"
pids = 80
max_pids = 300

[agents.fat]
script = "{script}"
memory = "1G"
"""


def test_ceilings_refuse_and_per_agent_tables_override(make_kernel):
    k = make_kernel(CEILINGS.format(script=agent_script("healthy.py")), sandbox="require_isolation = true")
    with k.client() as c:
        with pytest.raises(InvalidArguments) as greedy:
            c.call("agent.spawn", name="greedy", script=agent_script("healthy.py"), limits={"memory": "1G"})
        assert greedy.value.code == "proto.invalid_args"
        assert greedy.value.message == "memory_bytes 1073741824 is above its ceiling max_memory_bytes = 536870912 ([limits])"
        assert greedy.value.details == {"agent": "greedy", "limit": "memory_bytes", "requested": 1 << 30, "ceiling": 512 * MiB, "ceiling_key": "max_memory_bytes"}
        with pytest.raises(InvalidArguments) as hungry:
            c.call("agent.spawn", name="hungry", script=agent_script("healthy.py"), limits={"cpu": "300%"})
        assert hungry.value.details["ceiling_key"] == "max_cpu_quota_us" and hungry.value.details["ceiling"] == 200_000
        with pytest.raises(InvalidArguments) as forky:
            c.call("agent.spawn", name="forky", script=agent_script("healthy.py"), limits={"pids": 150})
        assert forky.value.details["ceiling_key"] == "max_pids" and forky.value.details["ceiling"] == 100
        names = {a["name"] for a in c.list_agents()}
        assert not names & {"greedy", "hungry", "forky"}  # refused before anything existed
        # A boot agent asking above the ceiling is refused too, and the log says why.
        assert "fat" not in names and "agent fat: memory_bytes 1073741824 is above its ceiling" in k.log()

        # [limits.agents.big] sets big's defaults and its own PIDs ceiling; CPU stays [limits]'.
        big = c.spawn("big", agent_script("healthy.py"))
        limits = big["isolation"]["limits"]
        assert {key: (v["requested"], v["source"], v["ceiling"]) for key, v in limits.items()} == {
            "memory": (384 * MiB, "agent_default", 512 * MiB),
            "cpu": (50_000, "default", 200_000),
            "pids": (80, "agent_default", 300),
        }
        assert all(v["enforced"] for v in limits.values())  # require_isolation: it had to be
        figures = cgroup(c, big["id"])
        assert (figures["memory_limit"], figures["pids_limit"], figures["cpu_quota_us"]) == (384 * MiB, 80, 50_000)
        assert c.kill(name="big")
        big = c.spawn("big", agent_script("healthy.py"), limits={"pids": 250, "memory": "512M"})
        assert big["success"] and big["isolation"]["limits"]["pids"]["source"] == "request"
        assert cgroup(c, big["id"])["pids_limit"] == 250
        other = c.spawn("other", agent_script("healthy.py"))
        assert other["isolation"]["limits"]["memory"] == {**other["isolation"]["limits"]["memory"], "requested": 256 * MiB, "source": "default"}


STORAGE = '[limits]\ntmp_inodes = 64\ntmp_bytes = "8M"\nworkdir_bytes = "16M"\n'


def _loops_holding(path: str) -> list[str]:
    held = []
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                if f.read().strip().startswith(path):
                    held.append(name)
        except OSError:
            continue
    return held


def test_private_tmp_caps_bytes_and_inodes(make_kernel):
    k = make_kernel(STORAGE)
    with k.client() as c:
        files = c.spawn("files", agent_script("storage_hog.py"), args=["tmp_files"])
        c.spawn("bytes", agent_script("storage_hog.py"), args=["tmp_bytes"])
    storage = files["isolation"]["storage"]
    assert storage["tmp_inodes"] == {"requested": 64, "enforced": True, "via": storage["tmp_inodes"]["via"], "source": "default", "ceiling": None}
    assert "nr_inodes" in storage["tmp_inodes"]["via"] and storage["tmp"]["requested"] == 8 * MiB
    report = read_report(k, "files")
    assert report["errno"] == errno.ENOSPC and 32 < report["files"] < 64, report  # the mount points of exposures count too
    report = read_report(k, "bytes")
    assert report["errno"] == errno.ENOSPC and 4 * MiB <= report["bytes"] <= 8 * MiB, report


@pytest.mark.skipif(workdir.unsupported() is not None, reason=f"no size-bounded work dir here: {workdir.unsupported()}")
def test_the_work_dir_is_bounded_and_outlives_a_restart(make_kernel):
    k = make_kernel(STORAGE)
    with k.client() as c:
        r = c.spawn("filler", agent_script("storage_hog.py"), args=["work_bytes"], restart_policy="on-failure", max_restarts=3)
        loose = c.spawn("loose", agent_script("healthy.py"), sandboxed=False)
        storage = r["isolation"]["storage"]["workdir"]
        assert (storage["requested"], storage["enforced"], storage["source"]) == (16 * MiB, True, "default")
        image = f"{k.state_dir}/agents/{r['id']}/work.img"
        assert storage["via"].startswith(f"ext4 image {image} on a loop device")
        report = read_report(k, "filler")
        assert report["errno"] == errno.ENOSPC and 8 * MiB <= report["bytes"] <= 16 * MiB, report
        # The first incarnation exited 3; the restarted one finds what it wrote.
        log = poll_for(lambda: (d := c.logs(name="filler")["data"].decode()) and "PERSISTED" in d and d, timeout=30, message="the restart")
        assert int(log.split("PERSISTED ")[1].split()[0]) == report["bytes"]
        assert os.path.getsize(image) == 16 * MiB and os.stat(image).st_blocks * 512 <= 17 * MiB
        assert os.listdir(f"{k.state_dir}/agents/{r['id']}/work") == []  # the host sees the mount point only
        # Unsandboxed: no private mounts, and the report says so; the cgroup limits still hold.
        loose_storage = loose["isolation"]["storage"]
        assert [loose_storage[key]["enforced"] for key in ("workdir", "tmp", "tmp_inodes")] == [False, False, False]
        assert "unsandboxed" in loose_storage["workdir"]["via"] and loose["isolation"]["limits"]["pids"]["enforced"]
        assert c.kill(name="filler")
    # The record and its image are gone, and the loop device with the agent's mount namespace.
    assert not os.path.exists(image)
    poll_for(lambda: not _loops_holding(image), timeout=10, message="the loop device to detach")
