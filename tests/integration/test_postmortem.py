"""Post-mortem bundles from a real kernel: real agents OOM-killed, segfaulting, crashing, failing
to start and escalating; the syscalls and the CLI; a bundle read after being copied away."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest

from clove.kernel.audit.format import record_hash
from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]

MiB = 1 << 20


def _bundles(k, name: str | None = None, count: int = 1, timeout: float = 30) -> list[dict]:
    body = {"name": name} if name else {}
    return poll_for(lambda: (rows := k.call("postmortem.list", **body)["bundles"]) and len(rows) >= count and rows, timeout, message=f"{count} bundle(s)")


def _postmortem_records(c, agent_id: int) -> list[dict]:
    entries = c.get_audit_log(agent_id=agent_id, category="AGENT_LIFECYCLE", limit=10_000)["entries"]
    return [e for e in entries if e["event_type"] == "agent.postmortem"]


def test_an_oom_killed_agent_leaves_a_complete_bundle(kernel):
    with kernel.client() as c:
        r = c.spawn("leak", agent_script("pm_leak.py"), limits={"memory": "32M", "pids": 32})
        (row,) = _bundles(kernel, "leak")
        assert row["reason"] == "oom_killed" and row["signal"] == signal.SIGKILL and row["agent_id"] == r["id"]
        path = Path(row["path"])
        assert path.parent == kernel.state_dir.resolve() / "postmortem" / "leak"
        assert path.name.endswith("Z-1"), "<UTC timestamp>-<incarnation>"
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert sorted(os.listdir(path)) == ["journal.jsonl", "log.txt", "summary.json"]

        summary = json.loads((path / "summary.json").read_text())
        assert (summary["reason"], summary["trigger"], summary["state"]) == ("oom_killed", "oom_killed", "exited")
        assert summary["exit"]["signal"] == 9 and "OOM killer" in summary["exit"]["message"]
        cg = summary["cgroup"]
        assert cg["oom_kills"] > 0
        assert 16 * MiB <= cg["memory_peak"] <= 33 * MiB, cg  # read before the cgroup was removed
        assert cg["memory_current"] < cg["memory_peak"] and cg["cpu_usage_us"] > 0 and "pids_current" in cg
        assert summary["limits"] == {"memory_bytes": 32 * MiB, "cpu_quota_us": 50_000, "pids": 32}  # CPU: the [limits] default
        assert summary["isolation"]["limits"]["memory"] == {"requested": 32 * MiB, "enforced": True, "via": summary["isolation"]["limits"]["memory"]["via"],
                                                            "source": "request", "ceiling": 4 << 30}  # fmt: skip
        assert summary["isolation"]["limits"]["memory"]["enforced"] and summary["isolation"]["uid"] == summary["agent"]["uid"]
        assert summary["permissions"]["level"] == "standard" and summary["devices"] == {}
        assert summary["restarts"] == 0 and summary["agent"]["incarnation"] == 1

        log = (path / "log.txt").read_text()
        assert "PM-LEAK-MARKER" in log and "leaked 8 MiB" in log
        records = [json.loads(line) for line in (path / "journal.jsonl").read_text().splitlines()]
        assert summary["journal"]["since_start"] is True and records[0]["event_type"] == "agent.created"
        assert {e["event_type"] for e in records} >= {"agent.created", "agent.state", "noop", "agent.exited"}
        assert all(rec["agent_id"] == r["id"] and record_hash(rec) == rec["hash"] for rec in records)
        exited = next(rec for rec in records if rec["event_type"] == "agent.exited")
        assert exited["details"]["reason"] == "oom_killed"

        (journaled,) = poll_for(lambda: _postmortem_records(c, r["id"]), message="agent.postmortem record")
        assert journaled["code"] == "ok" and journaled["details"]["path"] == str(path)
        size = journaled["details"]["bytes"]
        assert size == sum(p.stat().st_size for p in path.iterdir()) and size < 64 << 10
        print(f"\nOOM bundle: {size} bytes {journaled['details']['files']}; gathering cost the loop {journaled['details']['loop_us']} µs")


def test_a_segfault_bundle_names_the_signal(kernel):
    with kernel.client() as c:
        c.spawn("steady", agent_script("healthy.py"))
        c.spawn("crash", agent_script("segfault.py"))
        (row,) = _bundles(kernel, "crash")
        summary = c.call("postmortem.get", name="crash", include=["log.txt"])
        assert summary["bundle"] == row["bundle"] and summary["path"] == row["path"]
        s = summary["summary"]
        assert (s["reason"], s["exit"]["signal"], s["exit"]["signal_name"]) == ("signaled", signal.SIGSEGV, "SIGSEGV")
        assert s["cgroup"]["oom_kills"] == 0
        assert b"about to crash" in summary["contents"]["log.txt"]
        assert agent_row(kernel, "steady")["state"] == "running"


def test_clean_exits_and_operator_kills_leave_none_but_a_crash_does(kernel):
    with kernel.client() as c:
        c.spawn("clean", agent_script("exit_code.py"), args=["0"], restart_policy="on-failure")
        r = c.spawn("victim", agent_script("ignore_term.py"))  # needs SIGKILL after the grace: still the operator's
        poll_for(lambda: agent_row(kernel, "clean")["state"] == "exited", message="clean exit")
        poll_for(lambda: b"ready" in c.logs(name="victim")["data"], message="victim ready")
        assert c.kill(name="victim")
        # One writer thread, first in first out: once the crash's bundle is there, any bundle
        # of the agents above would be there too.
        c.spawn("three", agent_script("exit_code.py"), args=["3"])
        rows = _bundles(kernel)
        assert [(b["agent"], b["reason"], b["exit_code"]) for b in rows] == [("three", "exited", 3)]
        assert sorted(os.listdir(kernel.state_dir / "postmortem")) == ["three"]
        assert not _postmortem_records(c, r["id"])
        assert json.loads((Path(rows[0]["path"]) / "summary.json").read_text())["trigger"] == "crashed"


def test_a_start_failure_leaves_a_bundle(kernel):
    with kernel.client() as c:
        # One pid: the sandbox cannot make its work dir's filesystem (mkfs is a process) or fork
        # its pid namespace's init, so the agent never starts.
        r = c.spawn("nostart", agent_script("exit_code.py"), args=["0"], limits={"pids": 1})
        assert r.get("success") is False and r.get("code") == "spawn.failed", r
        (row,) = _bundles(kernel, "nostart")
        s = c.call("postmortem.get", name="nostart")["summary"]
        assert row["reason"] == s["reason"] == "failed_to_start" and s["state"] == "failed"
        assert s["exit"]["message"].startswith(("workdir:", "fork:")) and s["limits"]["pids"] == 1


def test_keep_prunes_the_oldest_and_the_escalation_is_the_latest(make_kernel):
    k = make_kernel("[postmortem]\nkeep = 2\n")
    with k.client() as c:
        r = c.spawn("crashy", agent_script("exit_code.py"), args=["1"], restart_policy="on-failure", max_restarts=3, restart_window=60)
        poll_for(lambda: agent_row(k, "crashy")["state"] == "failed", timeout=30, message="escalation")
        records = poll_for(lambda: len(rec := _postmortem_records(c, r["id"])) == 4 and rec, message="four bundles written")
        assert [rec["details"]["trigger"] for rec in records] == ["crashed", "crashed", "crashed", "escalated"]
        assert [len(rec["details"]["pruned"]) for rec in records] == [0, 0, 1, 1]
        rows = k.call("postmortem.list", name="crashy")["bundles"]
        assert [row["bundle"].rsplit("-", 1)[1] for row in rows] == ["4", "3"], "newest first: incarnations 4 and 3"
        assert rows[0]["escalated"] is True and rows[1]["escalated"] is False
        latest = c.call("postmortem.get", name="crashy", bundle="latest")["summary"]
        assert latest["state"] == "failed" and latest["restarts"] == 3
        assert latest["escalation"]["restarts_in_window"] == 3
        older = c.call("postmortem.get", name="crashy", bundle=rows[1]["bundle"])["summary"]
        assert older["state"] == "backoff" and older["agent"]["incarnation"] == 3
        slice_ = [json.loads(line) for line in (Path(rows[0]["path"]) / "journal.jsonl").read_text().splitlines()]
        assert slice_[0]["details"] == {**slice_[0]["details"], "state": "starting", "previous": "backoff", "restarts": 3}


def test_disabled_writes_nothing(make_kernel):
    k = make_kernel("[postmortem]\nenabled = false\n")
    with k.client() as c:
        c.spawn("crash", agent_script("segfault.py"))
        poll_for(lambda: agent_row(k, "crash")["state"] == "exited", message="crash")
        assert c.call("postmortem.list")["bundles"] == []
        assert not (k.state_dir / "postmortem").exists()


def test_syscalls_refuse_what_is_not_there(kernel):
    from clove.errors import InvalidArguments, NotFound

    with kernel.client() as c:
        c.spawn("crash", agent_script("segfault.py"))
        _bundles(kernel, "crash")
        with pytest.raises(NotFound):
            c.call("postmortem.get", name="nobody")
        with pytest.raises(NotFound):
            c.call("postmortem.get", name="crash", bundle="../crash")
        with pytest.raises(InvalidArguments):
            c.call("postmortem.get", name="../postmortem")
        with pytest.raises(InvalidArguments):
            c.call("postmortem.get", name="crash", include=["/etc/shadow"])
        got = c.call("postmortem.get", name="crash", include=["log.txt", "journal.jsonl"], max_bytes=10)
        assert {k: len(v) for k, v in got["contents"].items()} == {"log.txt": 10, "journal.jsonl": 10}


def test_cli_lists_and_opens_bundles(kernel, capsys):
    from clove.cli.main import main

    with kernel.client() as c:
        c.spawn("leak", agent_script("pm_leak.py"), limits={"memory": "32M"})
        c.spawn("crash", agent_script("segfault.py"))
        _bundles(kernel, count=2)
    sock = ["--socket", kernel.socket]
    assert main(["postmortem", *sock]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["AGENT", "BUNDLE", "TIME", "(UTC)", "REASON", "EXIT", "SIZE"]
    assert "crash" in out and "signaled" in out and "signal 11" in out and "oom_killed" in out
    assert main(["postmortem", "leak", "--json", *sock]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["agent"] for r in rows] == ["leak"]
    assert main(["postmortem", "leak", "--open", "latest", *sock]) == 0
    out = capsys.readouterr().out
    head, log_part = out.split("--- log tail", 1)
    log_part, journal_part = log_part.split("--- last ", 1)
    assert "post-mortem of leak" in head and "oom_killed" in head and "OOM kills 1" in head and "limit 32.0M" in head
    assert "PM-LEAK-MARKER" in log_part
    assert "agent.exited" in journal_part and "agent.created" in journal_part
    assert main(["postmortem", "leak", "--open", rows[0]["bundle"], "--json", *sock]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert opened["summary"]["reason"] == "oom_killed" and "PM-LEAK-MARKER" in opened["contents"]["log.txt"]
    assert main(["postmortem", "leak", "--open", "20000101T000000.000Z-1", *sock]) == 1
    assert "no post-mortem bundle" in capsys.readouterr().err
    assert main(["postmortem", "--open", "latest", *sock]) == 1
    assert "name the agent" in capsys.readouterr().err


def test_a_bundle_is_self_contained(kernel, tmp_path, capsys):
    from clove.cli.main import main

    with kernel.client() as c:
        c.spawn("crash", agent_script("segfault.py"))
        (row,) = _bundles(kernel, "crash")
    copy = tmp_path / "elsewhere" / row["bundle"]
    shutil.copytree(row["path"], copy)
    summary = json.loads((copy / "summary.json").read_text())
    for name, info in summary["files"].items():
        assert hashlib.sha256((copy / name).read_bytes()).hexdigest() == info["sha256"], name
    for line in (copy / "journal.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record_hash(record) == record["hash"]
    # No kernel needed: a socket that does not exist, and the path of the copy.
    assert main(["postmortem", "--open", str(copy), "--socket", str(tmp_path / "no.sock")]) == 0
    out = capsys.readouterr().out
    assert "post-mortem of crash" in out and "SIGSEGV" in out and "about to crash" in out and "agent.exited" in out
    assert str(copy) in out


def test_the_recording_goes_into_the_bundle_when_the_kernel_records(make_kernel):
    from clove.config import KernelConfig

    if "recording" not in KernelConfig.__dataclass_fields__:
        pytest.skip("this kernel has no recorder")
    k = make_kernel("[recording]\nenabled = true\n")
    with k.client() as c:
        c.spawn("leak", agent_script("pm_leak.py"), limits={"memory": "32M"})
        (row,) = _bundles(k, "leak")
    path = Path(row["path"])
    summary = json.loads((path / "summary.json").read_text())
    entries = [json.loads(line) for line in (path / "recording.jsonl").read_text().splitlines()]
    assert summary["recording"] == {"available": True, "entries": len(entries)} and entries
    assert summary["files"]["recording.jsonl"]["bytes"] == (path / "recording.jsonl").stat().st_size
    assert json.dumps(entries).count("pm-leak-start") >= 1, "the agent's noop is in its recording"
