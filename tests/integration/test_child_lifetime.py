"""Children die with their parent: when an agent exits (cleanly, by a crash, or killed), every
child it spawned, and their children, are stopped and journaled as ``parent_exited``; a child
spawned ``detached`` by a parent with the ``can_detach`` grant lives on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

FAMILY = agent_script("family.py")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _spawn_family(k: KernelProcess, name: str, mode: str, *, can_detach: bool = False) -> tuple[int, dict[str, int]]:
    """Start NAME (the parent) and wait for its grandchild: the parent's id, the pids of kid
    and grandkid. The parent ends (``mode``) once it is sent a message."""
    grants = {"can_spawn": True, "max_children": 4, **({"can_detach": True} if can_detach else {})}
    with k.client() as op:
        parent = op.call("agent.spawn", name=name, script=FAMILY, args=["parent", name, mode], permissions=grants)
    read_report(k, name, timeout=30)
    return parent["id"], {who: agent_row(k, f"{name}-{who}")["pid"] for who in ("kid", "grandkid")}


def _end_parent(k: KernelProcess, name: str, parent: int, how: str) -> None:
    with k.client() as op:
        op.send_message({"go": how}, to=parent)
        if how == "kill":
            assert op.kill(name=name) is True


def _exited(k: KernelProcess, name: str) -> dict:
    return poll_for(lambda: (row := agent_row(k, name))["state"] == "exited" and row, 15, message=f"{name} exited")


@pytest.mark.parametrize("how", ["exit", "crash", "kill"])
def test_the_whole_tree_dies_with_its_parent(kernel, how):
    parent, pids = _spawn_family(kernel, "p", "stay" if how == "kill" else how)
    assert all(_alive(pid) for pid in pids.values())
    _end_parent(kernel, "p", parent, how)
    for who, pid in pids.items():
        poll_for(lambda pid=pid: not _alive(pid), 15, message=f"p-{who} (pid {pid}) to be gone")
    kid = _exited(kernel, "p-kid")
    assert (kid["exit_reason"], kid["exit_message"]) == ("parent_exited", f"parent 'p' (id {parent}) exited")
    grandkid = _exited(kernel, "p-grandkid")
    assert (grandkid["exit_reason"], grandkid["exit_message"]) == ("parent_exited", f"parent 'p-kid' (id {kid['id']}) exited")

    # Why, in the journal and in `clove ps`.
    with kernel.client() as op:
        entries = op.get_audit_log(category="AGENT_LIFECYCLE", limit=2000)["entries"]
    stopping = [e["details"] for e in entries if e["agent_name"] == "p-kid" and e["details"].get("state") == "stopping"]
    assert stopping and stopping[0]["by"] == "kernel" and stopping[0]["cause"] == kid["exit_message"]
    exited = [e["details"] for e in entries if e["agent_name"] == "p-kid" and e["event_type"] == "agent.exited"]
    assert exited[-1]["reason"] == "parent_exited"
    ps = subprocess.run([sys.executable, "-m", "clove", "ps", "--socket", kernel.socket], capture_output=True, text=True, timeout=30, check=True).stdout
    kid_line = next(line for line in ps.splitlines() if " p-kid " in f" {line} ")
    assert "parent_exited" in kid_line, ps


def test_a_detached_child_outlives_its_parent(kernel):
    parent, pids = _spawn_family(kernel, "d", "exit", can_detach=True)
    report = read_report(kernel, "d")
    assert report["free"]["success"] is True and report["free"]["status"] == "running"
    free = agent_row(kernel, "d-free")
    assert free["detached"] is True and _alive(free["pid"])
    _end_parent(kernel, "d", parent, "exit")
    assert _exited(kernel, "d-kid")["exit_reason"] == "parent_exited"
    poll_for(lambda: not _alive(pids["grandkid"]), 15, message="d-grandkid to be gone")
    assert agent_row(kernel, "d")["state"] == "exited"
    assert agent_row(kernel, "d-free")["state"] == "running" and _alive(free["pid"])


def test_detached_needs_the_can_detach_grant(kernel):
    _spawn_family(kernel, "q", "stay")
    report = read_report(kernel, "q")
    assert report["free"]["code"] == "perm.denied" and "detached" in report["free"]["message"]
    with kernel.client() as op:
        assert not any(a["name"] == "q-free" for a in op.list_agents())
        security = op.get_audit_log(category="SECURITY", limit=1000)["entries"]
    assert any(e["agent_name"] == "q" and e["syscall"] == "agent.spawn" and e["decision"] == "denied" for e in security)
