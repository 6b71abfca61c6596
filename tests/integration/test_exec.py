"""exec through the SDK on a real kernel: output, exit codes, timeouts that kill whole trees,
commands confined in the calling agent's sandbox and limits, policy, async results."""

from __future__ import annotations

import json
import os
import sys

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def run_ops(kernel, name: str, ops: list, **spawn) -> tuple[dict, list[dict]]:
    """Spawn the ops agent with these calls; return the spawn reply and its report."""
    with kernel.client() as op:
        r = op.call(
            "agent.spawn", name=name, script=agent_script("exec_ops.py"), args=[json.dumps(ops)], **spawn
        )
    return r, read_report(kernel, name, timeout=60)


def processes_running(argv: list[str]) -> list[int]:
    """Host pids whose command line is exactly ``argv``."""
    wanted = ("\0".join(argv) + "\0").encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == wanted:
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_output_exit_code_and_streams_stay_apart(kernel):
    _, report = run_ops(
        kernel,
        "runner",
        [
            ["exec", {"command": "echo out; echo err >&2; exit 3"}],
            ["exec", {"command": ["printf", "%s|", "a b", "c"]}],
            ["exec", {"command": "echo 'quoted  arg'"}],  # no shell syntax: split by shlex, no shell
            ["exec", {"command": ["nosuch-program"]}],
            ["exec", {"command": ["true"], "cwd": "/nonexistent"}],
        ],
    )
    failing, argv, quoted, missing, bad_cwd = (item["value"] for item in report)
    assert failing["stdout"] == "out\n" and failing["stderr"] == "err\n"
    assert failing["exit_code"] == 3 and failing["success"] is False and failing["timed_out"] is False
    assert argv == {
        **argv,
        "success": True,
        "stdout": "a b|c|",
        "stderr": "",
        "exit_code": 0,
        "truncated": False,
    }
    assert quoted["stdout"] == "quoted  arg\n"
    assert missing["code"] == "notfound" and "nosuch-program" in missing["error"]
    assert bad_cwd["code"] == "notfound"


def test_commands_run_inside_the_agents_sandbox(kernel):
    r, report = run_ops(
        kernel,
        "boxed",
        [
            ["exec", {"command": ["hostname"]}],
            ["exec", {"command": ["id", "-u"]}],
            ["exec", {"command": ["cat", "/proc/self/cgroup"]}],
            ["exec", {"command": "pwd; ls /tmp; echo $$"}],
            ["exec", {"command": ["cat", "/etc/shadow"]}],
            ["exec", {"command": [sys.executable, "-c", "import socket; socket.socket(socket.AF_INET)"]}],
            ["exec", {"command": "touch /etc/clove-exec-escape"}],
            ["write_local", {"path": "/tmp/agent-private.txt", "text": "mine"}],
            ["exec", {"command": ["cat", "/tmp/agent-private.txt"]}],
        ],
    )
    hostname, uid, cgroup, where, shadow, inet, escape, _, private = (item["value"] for item in report)
    assert hostname["stdout"] == "clove-boxed\n"
    assert uid["stdout"] == f"{r['isolation']['uid']}\n"
    assert f"/{r['isolation']['cgroup']}\n" in cgroup["stdout"]
    pwd, *rest = where["stdout"].split("\n")
    assert pwd == f"{kernel.state_dir}/agents/{r['id']}/work"
    assert "agent-private.txt" not in rest and int(rest[-2]) < 100  # a pid in the agent's own namespace
    assert shadow["exit_code"] != 0 and "Permission denied" in shadow["stderr"]
    assert inet["exit_code"] != 0 and "Operation not permitted" in inet["stderr"]  # seccomp, no network
    assert escape["exit_code"] != 0 and not os.path.exists("/etc/clove-exec-escape")
    assert private["stdout"] == "mine"  # the agent's private /tmp, not the host's
    assert not os.path.exists("/tmp/agent-private.txt")


def test_timeout_kills_the_whole_tree(kernel):
    _, report = run_ops(
        kernel, "sleepy", [["exec", {"command": "tail -s 37 -f /dev/null & tail -s 37 -f /dev/null; echo never", "timeout": 1}]]
    )
    result = report[0]["value"]
    assert result["timed_out"] is True and result["success"] is False
    assert result["exit_code"] == -9 and result["signal"] == 9 and result["stdout"] == ""
    assert 0.9 < result["duration"] < 5
    poll_for(lambda: not processes_running(["tail", "-s", "37", "-f", "/dev/null"]), 5, message="the blocked children to die")
    assert agent_row(kernel, "sleepy")["state"] == "running"


def test_operator_commands_run_on_the_host_with_capped_output_and_timeouts(kernel, tmp_path):
    with kernel.client() as op:
        r = op.exec(["sh", "-c", "id -u; pwd"], cwd=str(tmp_path))
        assert r["stdout"] == f"{os.geteuid()}\n{tmp_path}\n" and r["success"]
        big = op.exec(["head", "-c", str(3 << 20), "/dev/zero"])
        assert big["truncated"] is True and len(big["stdout"]) == 1 << 20 and big["exit_code"] == 0
        r = op.exec("tail -s 39 -f /dev/null & tail -s 39 -f /dev/null", timeout=0.5)
        assert r["timed_out"] and r["exit_code"] == -9
    poll_for(lambda: not processes_running(["tail", "-s", "39", "-f", "/dev/null"]), 5, message="the operator's blocked commands to die")


def test_a_command_dies_at_the_agents_memory_limit(kernel):
    _, report = run_ops(
        kernel,
        "small",
        [
            ["exec", {"command": [sys.executable, "-c", "b = bytearray(200 << 20)"]}],
            ["exec", {"command": ["true"]}],
        ],
        limits={"memory": "64M"},
    )
    hog, after = report[0]["value"], report[1]["value"]
    assert hog["signal"] == 9 and hog["exit_code"] == -9 and hog.get("oom_killed") is True
    assert after["success"] is True  # the agent itself survived and can go on
    assert agent_row(kernel, "small")["state"] == "running"


def test_denied_commands(kernel):
    _, report = run_ops(
        kernel,
        "picky",
        [
            ["exec", {"command": ["cat", "/etc/hostname"]}],
            ["exec", {"command": "cat /etc/hostname"}],
            ["exec", {"command": "cat /etc/hostname | wc -c"}],
            ["exec", {"command": ["echo", "allowed"]}],
        ],
        permissions={"exec_deny": ["cat"]},
    )
    listed, split, piped, echo = (item["value"] for item in report)
    assert listed["code"] == split["code"] == piped["code"] == "perm.denied"
    assert echo["stdout"] == "allowed\n"
    _, report = run_ops(kernel, "reader", [["exec", {"command": ["true"]}]], level="readonly")
    assert report[0]["value"]["code"] == "perm.denied" and "'exec' right" in report[0]["value"]["error"]
    with kernel.client() as op:
        denied = [
            e
            for e in op.get_audit_log(category="SECURITY", limit=1000)["entries"]
            if e["event_type"] == "exec"
        ]
        assert len(denied) == 4 and all(e["decision"] == "denied" for e in denied)


def test_async_exec_comes_back_through_poll_async(kernel):
    _, report = run_ops(
        kernel,
        "later",
        [["exec", {"command": "echo done", "async_": True, "request_id": "job-1"}], ["await_async", {}]],
    )
    accepted, results = report[0]["value"], report[1]["value"]
    assert accepted == {"success": True, "async": True, "request_id": "job-1", "status": "accepted"}
    assert [(r["request_id"], r["opcode_name"]) for r in results] == [("job-1", "SYS_EXEC")]
    payload = json.loads(results[0]["payload"])
    assert payload["stdout"] == "done\n" and payload["success"] is True
    with kernel.client() as op:
        accepted = op.exec(["sh", "-c", "exit 4"], async_=True)
        results = poll_for(lambda: op.poll_async()["results"], 10, message="the operator's async result")
        payload = json.loads(results[0]["payload"])
        assert results[0]["request_id"] == accepted["request_id"]
        assert payload.get("exit_code") == 4, payload


def test_an_agents_exit_ends_its_commands_with_an_error(kernel):
    with kernel.client() as op:
        op.spawn("orphan", agent_script("exec_orphan.py"), restart_policy="on-failure")
    results = read_report(kernel, "orphan", timeout=30)
    assert [r["request_id"] for r in results] == ["long"]
    payload = json.loads(results[0]["payload"])
    assert payload["success"] is False and payload["code"] == "conflict" and "exited" in payload["error"]
    log = kernel.call("agent.logs", name="orphan", offset=0, max_bytes=1 << 20)["data"].decode()
    assert "SLEEPER true" in log
    poll_for(lambda: not processes_running(["tail", "-s", "38", "-f", "/dev/null"]), 5, message="the command to die with its agent")
