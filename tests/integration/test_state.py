"""The state store through the SDK on a real kernel: scopes, privacy, operator access, TTL,
STATE_CHANGED events, errors, denials, and what survives a kernel restart or crash."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator

import pytest

from clove.errors import InvalidArguments
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import TEST_CONFIG, agent_script, cgroup_leftovers, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

RUNNER = agent_script("state_runner.py")


def run_agent(
    k: KernelProcess, name: str, ops: list[list[object]], *, stay: bool = False, **spawn: object
) -> dict:
    """Spawn the state runner with ``ops`` and return its report."""
    args = [json.dumps(ops), *(["stay"] if stay else [])]
    reply = k.call("agent.spawn", name=name, script=RUNNER, args=args, **spawn)
    assert reply["success"], reply
    return read_report(k, name)


def wait_exited(k: KernelProcess, name: str) -> None:
    def exited() -> bool:
        rows = [a for a in k.call("agent.list")["agents"] if a["name"] == name]
        return bool(rows) and all(a["state"] == "exited" for a in rows)

    poll_for(exited, 15, message=f"{name} to exit")


@pytest.fixture
def state_dir() -> Iterator[str]:
    """A state dir that outlives one kernel (short: socket paths live beside it)."""
    path = tempfile.mkdtemp(prefix="clv", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_agent_stores_and_fetches_in_every_scope(kernel: KernelProcess) -> None:
    report = run_agent(
        kernel,
        "alice",
        [
            ["store", "color", "red"],
            ["store", "mine", {"n": 1}, "agent"],
            ["store", "temp", [1, 2], "session"],
            ["store_bytes", "blob", "00ff10"],
            ["fetch", "color"],
            ["fetch", "mine"],
            ["fetch", "temp"],
            ["fetch", "blob"],
            ["fetch", "absent"],
            ["keys"],
            ["store", "color", "mine-red", "agent"],
            ["fetch", "color"],
            ["fetch", "color", "global"],
            ["delete", "color"],
            ["fetch", "color"],
            ["keys", "co"],
        ],
    )
    r = report["results"]
    assert r[0] == {"success": True, "key": "color", "scope": "global"}
    assert r[4] == {"success": True, "exists": True, "value": "red", "scope": "global"}
    assert r[5] == {"success": True, "exists": True, "value": {"n": 1}, "scope": "agent"}
    assert r[6] == {"success": True, "exists": True, "value": [1, 2], "scope": "session"}
    assert r[7]["value"] == {"hex": "00ff10"}  # bytes came back as bytes
    assert r[8] == {"success": True, "exists": False, "value": None, "scope": None}
    assert r[9] == {
        "success": True,
        "keys": ["blob", "color", "mine", "temp"],
        "count": 4,
        "truncated": False,
    }
    assert (r[11]["value"], r[11]["scope"]) == ("mine-red", "agent")  # the private key shadows
    assert (r[12]["value"], r[12]["scope"]) == ("red", "global")
    assert r[13] == {"success": True, "deleted": True, "scope": "agent"}
    assert (r[14]["value"], r[14]["scope"]) == ("red", "global")
    assert r[15]["keys"] == ["color"]
    with kernel.client() as op:
        assert op.fetch("color")["value"] == "red"
        assert op.fetch("mine")["exists"] is False  # alice's private key
        assert op.fetch("temp")["value"] == [1, 2]
        assert op.fetch("blob")["value"] == b"\x00\xff\x10"
        assert op.list_keys()["keys"] == ["blob", "color", "temp"]
        entries = op.get_audit_log(category="STATE_STORE", limit=1000)["entries"]
        stores = [e for e in entries if e["event_type"] == "state.store" and e["agent_name"] == "alice"]
        assert stores
        assert stores[0]["args"]["key"] == "color"


def test_agent_scope_is_private_and_kept_by_name(kernel: KernelProcess) -> None:
    run_agent(kernel, "alice", [["store", "secret", 1, "agent"]])
    bob = run_agent(
        kernel,
        "bob",
        [
            ["fetch", "secret"],
            ["keys"],
            ["delete", "secret"],
            ["store", "secret", 2, "agent"],
            ["fetch", "secret"],
        ],
    )["results"]
    assert bob[0]["exists"] is False
    assert bob[1]["keys"] == []
    assert bob[2]["deleted"] is False
    assert (bob[4]["value"], bob[4]["scope"]) == (2, "agent")
    with kernel.client() as op:
        assert op.fetch("secret")["exists"] is False
        op.store("secret", "op", scope="agent")  # the operators' own private scope
        assert (op.fetch("secret")["value"], op.fetch("secret")["scope"]) == ("op", "agent")
        assert op.list_keys()["keys"] == ["secret"]
    with kernel.client() as other_op:  # another operator session shares it
        assert other_op.fetch("secret")["value"] == "op"
    wait_exited(kernel, "alice")
    again = run_agent(kernel, "alice", [["fetch", "secret"]])  # a new agent, the same name
    assert (again["results"][0]["value"], again["results"][0]["scope"]) == (1, "agent")


def test_state_changed_events_reach_only_those_who_may_see_the_key(kernel: KernelProcess) -> None:
    with kernel.client() as op:
        me = op.hello()["session_id"]
        op.subscribe(["STATE_CHANGED"])
        watcher = kernel.call(
            "agent.spawn",
            name="watcher",
            script=RUNNER,
            args=[
                json.dumps(
                    [
                        ["subscribe"],
                        ["ready"],
                        ["store", "mine", 1, "agent"],
                        ["wait_event", "done", "store", 20],
                    ]
                )
            ],
        )
        poll_for(lambda: b"READY" in op.logs(name="watcher")["data"], message="watcher ready")
        run_agent(kernel, "other", [["store", "theirs", 1, "agent"]])
        op.store("opkey", 1, scope="agent")
        op.store("g", 1)
        op.delete_key("g")
        op.store("done", 1)
        report = read_report(kernel, "watcher", timeout=25)
        events: list[dict] = []
        poll_for(
            lambda: (
                events.extend(op.poll_events(max_events=100, timeout=1)["events"])
                or any(e["data"]["key"] == "done" for e in events)
            ),
            message="the operator's events",
        )
    seen = {(e["data"]["key"], e["data"]["scope"], e["data"]["action"]) for e in report["events"]}
    assert seen == {
        ("mine", "agent", "store"),
        ("g", "global", "store"),
        ("g", "global", "delete"),
        ("done", "global", "store"),
    }
    mine = next(e for e in report["events"] if e["data"]["key"] == "mine")
    assert mine["data"]["by"] == watcher["id"]
    assert mine["source_agent_id"] == watcher["id"]
    g = next(e for e in report["events"] if e["data"]["key"] == "g")
    assert g["data"]["by"] == me
    assert g["source_agent_id"] is None
    ops_seen = {(e["data"]["key"], e["data"]["action"]) for e in events}
    assert ops_seen == {("opkey", "store"), ("g", "store"), ("g", "delete"), ("done", "store")}


def test_ttl_keys_vanish_and_expiry_is_announced(kernel: KernelProcess) -> None:
    with kernel.client() as op:
        op.subscribe(["STATE_CHANGED"])
        assert op.store("short", 1, ttl=0.5)["success"]
        op.store("long", 1, ttl=600)
        op.store("mine", 1, scope="agent", ttl=0.5)
        assert op.fetch("short")["exists"] is True
        started = time.monotonic()
        poll_for(lambda: not op.fetch("short")["exists"], 5, message="the key to expire")
        assert time.monotonic() - started < 2
        assert op.list_keys()["keys"] == ["long"]
        events: list[dict] = []
        poll_for(
            lambda: (
                events.extend(op.poll_events(max_events=100, timeout=1)["events"])
                or {e["data"]["key"] for e in events if e["data"]["action"] == "expire"} == {"short", "mine"}
            ),
            5,
            message="expire events",
        )
        expired = [e for e in events if e["data"]["action"] == "expire"]
        assert all(e["data"]["by"] is None for e in expired)
        assert op.fetch("long")["exists"] is True


def test_bad_inputs_get_structured_errors(make_kernel) -> None:  # noqa: ANN001
    k = make_kernel("[kernel]\nmax_message_bytes = 3145728\n")
    with k.client() as op:
        cases = {
            "empty key": op.store("", 1),
            "long key": op.store("x" * 257, 1),
            "nul": op.store("a\x00b", 1),
            "scope": op.store("k", 1, scope="planet"),
            "zero ttl": op.store("k", 1, ttl=0),
            "negative ttl": op.store("k", 1, ttl=-1),
            "text ttl": op.store("k", 1, ttl="5"),  # type: ignore[arg-type]
            "key type": op.fetch(123),  # type: ignore[arg-type]
            "prefix": op.list_keys("p" * 300),
            "fetch scope": op.fetch("k", scope="everywhere"),
        }
        for name, reply in cases.items():
            assert reply["success"] is False, name
            assert reply["code"] == "proto.invalid_args", (name, reply)
        assert cases["scope"]["details"] == {"argument": "scope", "scopes": ["global", "agent", "session"]}
        assert cases["long key"]["details"]["argument"] == "key"
        big = op.store("big", b"x" * (1 << 20))
        assert big["code"] == "quota.exceeded"
        assert big["details"] == {"size": (1 << 20) + 5, "limit": 1 << 20}
        with pytest.raises(InvalidArguments, match="unknown argument 'agent_id'"):
            op.call("state.store", key="k", value=1, agent_id=3)  # identity never comes from the body
        assert op.list_keys()["keys"] == []  # nothing was stored
        assert op.store("k", b"x" * ((1 << 20) - 5))["success"]  # exactly 1 MiB encoded
        assert len(op.fetch("k")["value"]) == (1 << 20) - 5


def test_readonly_agents_read_but_cannot_write(kernel: KernelProcess) -> None:
    with kernel.client() as op:
        op.store("shared", "hello")
        op.subscribe(["SYSCALL_BLOCKED"])
        report = run_agent(
            kernel,
            "ro",
            [
                ["fetch", "shared"],
                ["store", "x", 1],
                ["delete", "shared"],
                ["keys"],
                ["store", "y", 1, "agent"],
            ],
            level="readonly",
        )["results"]
        assert report[0]["value"] == "hello"
        assert report[1]["code"] == "perm.denied"
        assert report[2]["code"] == "perm.denied"
        assert report[3]["keys"] == ["shared"]
        assert report[4]["code"] == "perm.denied"
        assert op.fetch("shared")["value"] == "hello"
        assert op.fetch("x")["exists"] is False
        blocked = op.poll_events(max_events=10, timeout=5)["events"]
        assert blocked[0]["data"]["syscall"] in ("state.store", "state.delete")


def test_global_and_agent_state_survive_a_restart_session_does_not(make_kernel, state_dir: str) -> None:  # noqa: ANN001
    first = make_kernel(state_dir=state_dir)
    try:
        with first.client() as op:
            op.store("g", {"v": 1})
            op.store("s", 1, scope="session")
            op.store("o", "op", scope="agent")
            op.store("t", 1, ttl=600)
            op.store("short", 1, ttl=1)
        keeper = run_agent(first, "keeper", [["store", "mine", 42, "agent"]])
        assert first.stop() == 0
        second = make_kernel(state_dir=state_dir)
        with second.client() as op:
            assert op.fetch("g") == {"success": True, "exists": True, "value": {"v": 1}, "scope": "global"}
            assert op.fetch("s")["exists"] is False
            assert (op.fetch("o")["value"], op.fetch("o")["scope"]) == ("op", "agent")
            assert op.fetch("t")["exists"] is True
            poll_for(lambda: not op.fetch("short")["exists"], 5, message="the ttl key to lapse")
            assert op.list_keys()["keys"] == ["g", "o", "t"]
        again = run_agent(second, "keeper", [["fetch", "mine"]])
        assert (
            again["me"]["name"] == keeper["me"]["name"]
        )  # ids start again in a new kernel; names carry state
        assert (again["results"][0]["value"], again["results"][0]["scope"]) == (42, "agent")
        stranger = run_agent(second, "stranger", [["fetch", "mine"]])
        assert stranger["results"][0]["exists"] is False
        second.stop()
    finally:
        first.stop()


def test_committed_state_survives_a_killed_kernel(make_kernel, state_dir: str) -> None:  # noqa: ANN001
    config = TEST_CONFIG.format(uid_base=random.randrange(300_000, 4_000_000, 1000), sandbox="")
    crashed = KernelProcess(config, state_dir=state_dir).start()
    try:
        zygote = crashed.call("kernel.info")["zygote_pid"]
        with crashed.client() as op:
            op.store("g", 1)
            op.store("o", "op", scope="agent")
            op.store("s", 1, scope="session")
            op.delete_key("g")
            op.store("g", 2)
        os.kill(crashed.pid, signal.SIGKILL)
        crashed.stop()
        assert os.path.getsize(os.path.join(state_dir, "state.db-wal")) > 0  # recovery has work to do
        if not poll_for_gone(zygote):
            os.kill(zygote, signal.SIGKILL)
    finally:
        crashed.cleanup()
    k = make_kernel(state_dir=state_dir)
    assert cgroup_leftovers(crashed.pid) == []  # the next kernel removes what a dead one left
    with k.client() as op:
        assert op.fetch("g")["value"] == 2
        assert (op.fetch("o")["value"], op.fetch("o")["scope"]) == ("op", "agent")
        assert op.fetch("s")["exists"] is False
    k.stop()


def poll_for_gone(pid: int) -> bool:
    try:
        poll_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, message=f"process {pid} to end")
    except TimeoutError:
        return False
    return True
