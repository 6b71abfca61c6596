"""Every syscall and lifecycle change is on the hash-chained record, and tampering shows."""

from __future__ import annotations

import json

import pytest

from clove.cli.main import main
from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def test_syscalls_and_lifecycle_are_journaled_and_the_chain_verifies(kernel, capsys):
    with kernel.client() as c:
        r = c.spawn("hello", agent_script("exit_code.py"), args=["0"])
        poll_for(lambda: agent_row(kernel, "hello")["state"] == "exited", message="exit")
        c.noop("one")
        try:
            c.call("agent.kill", name="nobody")
        except Exception:
            pass
        log = c.get_audit_log(limit=1000)
        assert log["success"] and log["count"] == len(log["entries"])
        entries = log["entries"]
        assert all({"id", "timestamp", "category", "event_type", "agent_id"} <= set(e) for e in entries)
        kinds = {(e["category"], e["event_type"]) for e in entries}
        assert {("AGENT_LIFECYCLE", "agent.spawn"), ("AGENT_LIFECYCLE", "agent.created"), ("AGENT_LIFECYCLE", "agent.exited"), ("SYSCALL", "noop")} <= kinds
        failed = [e for e in entries if e["event_type"] == "agent.kill"][-1]
        assert failed["code"] == "notfound" and failed["decision"] == "allowed"
        noop = [e for e in entries if e["event_type"] == "noop"][-1]
        assert noop["args"] == {"msg": "one"} and noop["duration_us"] >= 0
        by_agent = c.get_audit_log(agent_id=r["id"], limit=1000)["entries"]
        assert by_agent and all(e["agent_id"] == r["id"] for e in by_agent)
        later = c.get_audit_log(since_id=entries[-3]["id"], limit=1000)["entries"]
        assert [e["id"] for e in later][:2] == [entries[-2]["id"], entries[-1]["id"]]
    assert main(["audit", "--verify", "--socket", kernel.socket]) == 0
    assert "chain intact" in capsys.readouterr().out
    assert main(["audit", "--agent", "hello", "--json", "--socket", kernel.socket]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["agent_name"] == "hello" for row in rows)


def test_an_edited_record_is_detected_and_named(kernel, capsys):
    with kernel.client() as c:
        for i in range(5):
            c.noop(f"n{i}")
        journal = c.kernel_info()["journal"]
    kernel.stop()
    lines = open(journal).read().splitlines()
    victim = next(i for i, line in enumerate(lines) if '"msg":"n2"' in line)
    record = json.loads(lines[victim])
    record["args"]["msg"] = "forged"
    lines[victim] = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with open(journal, "w") as f:
        f.write("\n".join(lines) + "\n")
    assert main(["audit", "--verify", "--file", journal]) == 1
    out = capsys.readouterr().out
    assert f"BROKEN at record {record['id']}" in out
    assert main(["audit", "--verify", "--file", journal, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["first_bad_id"] == record["id"]
