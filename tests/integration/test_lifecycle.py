"""Spawn, list, logs, kill, pause/resume, rm, exit reasons: real kernel, real agents."""

from __future__ import annotations

import os
import signal
import time

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def test_spawn_reports_pid_identity_and_isolation(kernel):
    with kernel.client() as c:
        r = c.spawn("probe", agent_script("probe.py"), args=["1", "/etc/x"], limits={"memory": "128M", "cpu": "50%", "pids": 64})
    assert r["success"] and r["status"] == "running" and r["pid"] > 0
    assert set(r) >= {"id", "name", "pid", "status", "restart_policy", "isolation"}
    iso = r["isolation"]
    assert iso["backend"] == "cgroup1"
    assert {k: v["enforced"] for k, v in iso["limits"].items()} == {"memory": True, "cpu": True, "pids": True}
    assert iso["limits"]["cpu"]["requested"] == 50_000
    assert set(iso["namespaces"]) == {"mount", "uts", "ipc", "pid", "net"}
    assert iso["uid"] != 0 and iso["no_new_privs"] is True
    assert os.path.exists(f"/proc/{r['pid']}")


def test_missing_script_is_a_clear_error_not_a_ghost(kernel, tmp_path):
    with kernel.client() as c:
        r = c.spawn("ghost", str(tmp_path / "nope.py"))
        assert r == {"success": False, "error": f"script not found: {tmp_path / 'nope.py'}", "code": "spawn.failed", "details": {"script": str(tmp_path / "nope.py")}}
        assert all(a["name"] != "ghost" for a in c.list_agents())


def test_exited_agents_stay_listed_with_reason_until_removed(kernel):
    with kernel.client() as c:
        c.spawn("three", agent_script("exit_code.py"), args=["3"])
        row = poll_for(lambda: (a := agent_row(kernel, "three"))["state"] == "exited" and a, message="exit")
        assert (row["exit_reason"], row["exit_code"]) == ("exited", 3)
        assert c.spawn("three", agent_script("exit_code.py"), args=["0"])["success"]  # the name is free again
        poll_for(lambda: all(a["state"] == "exited" for a in c.list_agents() if a["name"] == "three"))
        assert c.remove(name="three") and c.remove(name="three")
        assert not c.list_agents()


def test_segfault_dies_alone_with_signal_reason(kernel):
    with kernel.client() as c:
        c.spawn("steady", agent_script("healthy.py"))
        c.spawn("crash", agent_script("segfault.py"))
        row = poll_for(lambda: (a := agent_row(kernel, "crash"))["state"] == "exited" and a, message="crash")
        assert (row["exit_reason"], row["exit_signal"]) == ("signaled", signal.SIGSEGV)
        assert agent_row(kernel, "steady")["state"] == "running"
        assert c.noop("still here") == "still here"
        assert b"about to crash" in c.logs(name="crash")["data"]


def test_kill_removes_agent_and_its_whole_tree(kernel):
    with kernel.client() as c:
        r = c.spawn("stubborn", agent_script("ignore_term.py"))
        poll_for(lambda: b"ready" in c.logs(name="stubborn")["data"], message="agent ready")
        with open(f"/proc/{r['pid']}/task/{r['pid']}/children") as f:
            children = [int(p) for p in f.read().split()]
        assert len(children) == 1  # the child that also ignores SIGTERM
        assert c.kill(name="stubborn") is True
        for pid in (r["pid"], *children):
            assert not os.path.exists(f"/proc/{pid}")
        assert all(a["name"] != "stubborn" for a in c.list_agents())
        entries = c.get_audit_log(agent_id=r["id"], limit=1000)["entries"]
        exited = [e for e in entries if e["event_type"] == "agent.exited"]
        assert exited and exited[-1]["details"]["reason"] == "killed"
        assert any(e["event_type"] == "agent.force_kill" for e in entries)


def test_pause_freezes_and_resume_thaws(kernel):
    with kernel.client() as c:
        r = c.spawn("ticker", agent_script("healthy.py"))

        def ticks() -> int:
            return sum(1 for e in c.get_audit_log(agent_id=r["id"], limit=10_000)["entries"] if e["event_type"] == "noop")

        poll_for(lambda: ticks() > 5, message="ticks")
        assert c.pause(name="ticker")
        assert agent_row(kernel, "ticker")["state"] == "paused"
        frozen_at = ticks()
        time.sleep(0.5)  # a frozen agent must make no progress over a visible span
        assert ticks() == frozen_at
        assert c.resume(name="ticker")
        poll_for(lambda: ticks() > frozen_at + 3, message="ticks to resume")
        assert c.pause(name="nobody") is False


def test_clove_logs_shows_an_agents_escape_sequences_on_a_terminal_and_passes_them_to_a_pipe(kernel):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with kernel.client() as c:
        c.spawn("hijack", agent_script("terminal_hijack.py"))
    poll_for(lambda: agent_row(kernel, "hijack")["state"] == "exited", message="exit")
    command = [sys.executable, "-m", "clove", "logs", "hijack", "--socket", kernel.socket]
    piped = subprocess.run(command, capture_output=True, timeout=30, cwd=repo, check=True).stdout
    assert piped == b"before\n\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]0;root@prod\x07\x1b[2J\xc2\x9b31mafter\n"
    for extra, expected in (([], b"before\r\n^[]52;c;ZWNobyBwd25lZA==^G^[]0;root@prod^G^[[2J\\x9b31mafter\r\n"), (["--raw"], None)):
        master, slave = os.openpty()
        try:
            proc = subprocess.run(command + extra, stdout=slave, stderr=subprocess.PIPE, timeout=30, cwd=repo, check=True)
            assert proc.returncode == 0
            os.close(slave)
            shown = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the terminal's other end is closed and drained
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            os.close(master)
        if expected is None:  # --raw: the agent's bytes (the terminal turns each \n into \r\n)
            assert b"\x1b]52;" in shown
        else:
            assert shown == expected


def test_logs_and_cli_end_to_end(kernel, capsys):
    from clove.cli.main import main

    assert main(["spawn", "hello", agent_script("exit_code.py"), "0", "--memory", "128M", "--cpu", "30%", "--pids", "32", "--socket", kernel.socket]) == 0
    assert "spawned hello" in capsys.readouterr().out
    poll_for(lambda: agent_row(kernel, "hello")["state"] == "exited", message="exit")
    assert main(["ps", "--socket", kernel.socket]) == 0
    out = capsys.readouterr().out
    assert "hello" in out and "exited(0)" in out and "memory=128.0M" in out
    assert main(["ps", "--json", "--socket", kernel.socket]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "hello" and rows[0]["exit_reason"] == "exited"
    assert main(["logs", "hello", "--socket", kernel.socket]) == 0
    assert "exiting with 0" in capsys.readouterr().out
    assert main(["kill", "nobody", "--socket", kernel.socket]) == 1
    assert capsys.readouterr().err.strip() == "clove: kill nobody: no agent named 'nobody'"
    assert main(["rm", "hello", "--socket", kernel.socket]) == 0
