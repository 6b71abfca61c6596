"""Prepared spares with a real kernel: bursts are served by them, the pool follows demand within
its bounds and shrinks back when idle, one agent's spawn flood cannot inflate it, and nothing of
one agent reaches the next one a spare becomes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def spares(kernel: KernelProcess) -> dict[str, Any]:
    return dict(kernel.call("kernel.info")["spares"])


def test_a_burst_is_served_by_spares_and_the_pool_shrinks_back(make_kernel) -> None:
    kernel = make_kernel(sandbox="spares_max = 4\nspares_min = 1\n")
    poll_for(lambda: spares(kernel)["ready"] == 1, 30, message="the first spare")
    before = spares(kernel)
    seen: list[dict[str, Any]] = []
    ids = []
    with kernel.client(timeout=30) as c:
        for i in range(12):
            ids.append(c.spawn(f"burst{i}", agent_script("exit_code.py"), args=["0", "120"])["id"])
            seen.append(spares(kernel))
        poll_for(lambda: all(agent_row(kernel, f"burst{i}")["state"] == "running" for i in range(12)), 30, message="the burst")
        after = spares(kernel)
        assert after["served"] + after["fresh"] - before["served"] - before["fresh"] == 12
        # A spawn forks anew only when its spare died or the host's mounts changed meanwhile
        # (which, on a shared machine, something else may do once: a pool's worth).
        assert after["served"] - before["served"] >= 12 - 4, after
        assert max(s["pool"] for s in seen) <= 4 and max(s["target"] for s in seen) <= 4
        assert max(s["target"] for s in seen) > 1, seen  # the pool followed the burst
        for agent_id in ids:
            c.kill(agent_id=agent_id)
    idle = poll_for(lambda: (s := spares(kernel))["pool"] == 1 and s["target"] == 1 and s, 30, message="the pool back at its floor")
    assert idle["dropped"] >= 1


def test_one_agents_spawn_flood_does_not_inflate_the_pool(make_kernel) -> None:
    kernel = make_kernel(sandbox="spares_max = 6\nspares_min = 1\nspares_per_agent = 2\n")
    with kernel.client() as c:
        c.call(
            "agent.spawn",
            name="flooder",
            script=agent_script("spawn_flood.py"),
            args=["40"],
            permissions={"can_spawn": True, "max_children": 100},
        )
    samples = []

    def done() -> dict[str, Any] | None:
        samples.append(spares(kernel))
        data = kernel.call("agent.logs", name="flooder", offset=0, max_bytes=1 << 16)["data"].decode()
        return read_report(kernel, "flooder") if "REPORT " in data else None

    report = poll_for(done, 120, interval=0.05, message="the flood")
    assert report["started"] >= 30, report
    # Its share (2 a window) and the operator's spawn of the flooder itself; unbounded, 40
    # spawns as fast as they go would have taken the pool to its ceiling (6).
    assert max(s["target"] for s in samples) <= 3, samples
    assert max(s["pool"] for s in samples) <= 3, samples


def test_nothing_of_one_agent_reaches_the_next_spare(kernel) -> None:
    host_net = os.readlink("/proc/self/ns/net")
    before = spares(kernel)["served"]
    reports = []
    with kernel.client() as c:
        for name in ("first", "second"):
            poll_for(lambda: spares(kernel)["ready"] >= 1, 30, message="a made spare")
            c.spawn(name, agent_script("fresh_probe.py"))
            reports.append(read_report(kernel, name))
            c.kill(name=name)
        c.spawn("networked", agent_script("fresh_probe.py"), network="full")
        networked = read_report(kernel, "networked")
    assert spares(kernel)["served"] - before == 3
    first, second = reports
    for name in ("mnt", "uts", "ipc", "net", "pid"):
        assert first["ns"][name] != second["ns"][name], name
    assert first["cgroup"] != second["cgroup"] and first["uid"] != second["uid"]
    for report in (first, second, networked):
        assert report["work"] == [] and "mark" not in report["tmp"] and report["shm"] == []
        assert report["work_owner"] == report["uid"] and report["work_mode"] == 0o700
        assert report["nice"] == 0
        # one loop device, at its own work dir (mounted, then bound there as an exposure): no staging left
        assert {point for point, _ in report["loop_mounts"]} == {report["cwd"]}
        assert len({device for _, device in report["loop_mounts"]}) == 1
    assert first["ns"]["net"] != host_net and second["ns"]["net"] != host_net
    assert networked["ns"]["net"] == host_net  # a spare gives an agent with full network the host's back
    isolation = agent_row(kernel, "networked")["isolation"]
    assert "net" not in isolation["namespaces"] and isolation["storage"]["workdir"]["enforced"]


def _members(kernel_pid: int, slot: str) -> list[int]:
    """The processes in a spare's cgroup."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = open(f"/proc/{entry}/cgroup").read()
            except OSError:
                continue
            if f"/clove-{kernel_pid}/{slot}\n" in text:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_spare_that_dies_is_replaced_and_spawns_go_on(kernel) -> None:
    ready = poll_for(lambda: (s := spares(kernel))["ready"] == 1 and s, 30, message="a made spare")
    slot = ready["slots"][0]
    members = poll_for(lambda: len(m := _members(kernel.pid, slot)) == 2 and m, 10, message="the spare's two processes")
    for pid in members:
        os.kill(pid, signal.SIGKILL)
    poll_for(lambda: (s := spares(kernel))["died"] == 1 and s["ready"] == 1 and slot not in s["slots"], 30, message="a new spare")
    with kernel.client() as c:
        assert c.spawn("after", agent_script("exit_code.py"), args=["0", "30"])["success"]
    assert spares(kernel)["served"] == 1


def test_a_spare_made_before_a_host_mount_is_not_used(kernel, tmp_path) -> None:
    poll_for(lambda: spares(kernel)["ready"] == 1, 30, message="a made spare")
    target = tmp_path / "mnt"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], check=True)
    try:
        (target / "agent.py").write_text((Path(agent_script("exit_code.py"))).read_text())
        os.chmod(target, 0o755)
        with kernel.client() as c:
            r = c.spawn("on-new-mount", str(target / "agent.py"), args=["0", "30"])
            assert r["success"], r
        counts = spares(kernel)
        assert (counts["served"], counts["fresh"]) == (0, 1)  # its view would have missed the mount
        with kernel.client() as c:
            c.kill(name="on-new-mount")
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def test_spares_die_with_the_zygote_and_come_back_with_the_next(kernel) -> None:
    first = poll_for(lambda: (s := spares(kernel))["ready"] == 1 and s, 30, message="a made spare")
    old = kernel.call("kernel.info")["zygote_pid"]
    members = poll_for(lambda: len(m := _members(kernel.pid, first["slots"][0])) == 2 and m, 10, message="the spare's processes")
    os.kill(old, signal.SIGKILL)
    poll_for(lambda: not any(_alive(pid) for pid in members), 10, message="the spare to die with its zygote")
    again = poll_for(lambda: (s := spares(kernel))["ready"] == 1 and first["slots"][0] not in s["slots"] and s, 30, message="a spare from the new zygote")
    assert kernel.call("kernel.info")["zygote_pid"] != old
    with kernel.client() as c:
        assert c.spawn("after", agent_script("exit_code.py"), args=["0", "30"])["success"]
    assert spares(kernel)["served"] == again["served"] + 1
