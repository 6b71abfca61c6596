"""Events, permissions, operator sessions and audit switches, through the SDK on a real kernel."""

from __future__ import annotations

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def test_lifecycle_and_custom_events_reach_subscribers(kernel):
    with kernel.client() as op:
        op.subscribe(["*"])
        watcher = op.spawn("watcher", agent_script("events_watch.py"))
        poll_for(lambda: b"READY" in op.logs(name="watcher")["data"], message="watcher ready")
        child = op.spawn("short", agent_script("exit_code.py"), args=["3"])
        report = read_report(kernel, "watcher")
        assert report["subscribe"]["subscribed"] == ["AGENT_EXITED", "AGENT_SPAWNED", "CUSTOM"]
        assert report["forge"]["code"] == "perm.denied"
        assert report["bad_name"]["code"] == "proto.invalid_args"
        seen = {(e["type"], (e["data"] or {}).get("name")) for e in report["seen"]}
        assert ("AGENT_SPAWNED", "short") in seen and ("AGENT_EXITED", "short") in seen
        exited = next(e for e in report["seen"] if e["type"] == "AGENT_EXITED")
        assert exited["data"]["reason"] == "exited" and exited["data"]["exit_code"] == 3
        assert exited["source_agent_id"] == child["id"] and exited["timestamp"] > 1.7e9
        events = []
        poll_for(lambda: events.extend(op.poll_events(max_events=100)["events"]) or any(e["type"] == "sensor.reading" for e in events), message="custom event")
        custom = next(e for e in events if e["type"] == "sensor.reading")
        assert custom["data"] == {"value": 42} and custom["source_agent_id"] == watcher["id"]
        blocked = [e for e in events if e["type"] == "SYSCALL_BLOCKED"]
        assert blocked and blocked[0]["data"]["syscall"] == "events.emit" and blocked[0]["source_agent_id"] == watcher["id"]


def test_restart_and_escalation_events(kernel):
    with kernel.client() as op:
        op.subscribe(["AGENT_RESTARTING", "AGENT_ESCALATED"])
        op.spawn("crashy", agent_script("exit_code.py"), args=["1"], restart_policy="on-failure", max_restarts=2)
        events = []
        poll_for(lambda: events.extend(op.poll_events(max_events=50, timeout=2)["events"]) or any(e["type"] == "AGENT_ESCALATED" for e in events), timeout=20, message="escalation")
        kinds = [e["type"] for e in events]
        assert kinds.count("AGENT_RESTARTING") == 2 and kinds[-1] == "AGENT_ESCALATED"
        assert [e["data"]["delay"] for e in events if e["type"] == "AGENT_RESTARTING"] == [0.2, 0.4]


def test_blocking_poll_times_out_empty(kernel):
    import time

    with kernel.client() as op:
        op.subscribe(["NEVER_HAPPENS"])
        t = time.monotonic()
        r = op.poll_events(timeout=0.5)
        assert r == {"success": True, "events": [], "count": 0, "dropped": 0, "dropped_bytes": 0}
        assert 0.4 < time.monotonic() - t < 3


def test_agents_cannot_raise_their_own_permissions(kernel):
    with kernel.client() as op:
        op.spawn("selfish", agent_script("perms_self.py"))
    report = read_report(kernel, "selfish")
    assert report["before"]["level"] == "standard"
    assert report["raise"]["code"] == "perm.denied"
    assert report["lower"]["success"] and report["after"]["level"] == "readonly"
    assert report["raise_again"]["code"] == "perm.denied"
    assert "fs.write" not in report["after"]["permissions"]["rights"] and report["after"]["permissions"]["write_paths"] == []
    with kernel.client() as op:
        security = op.get_audit_log(category="SECURITY", limit=1000)["entries"]
        assert any(e["event_type"] == "permissions.set" and e["decision"] == "denied" for e in security)


def test_children_get_at_most_their_parents_rights_and_limits(kernel):
    with kernel.client() as op:
        op.spawn("stranger", agent_script("healthy.py"))
        parent = op.call(
            "agent.spawn",
            name="parent",
            script=agent_script("spawner.py"),
            args=["p"],
            limits={"memory": "256M"},
            permissions={"can_spawn": True, "max_children": 1},
        )
        report = read_report(kernel, "parent", timeout=30)
        kid = report["ok"]
        assert kid["success"] and kid["name"] == "p-kid"
        assert kid["isolation"]["limits"]["memory"]["requested"] == 256 << 20  # inherited ceiling
        assert report["unsandboxed"]["code"] == "perm.denied"
        assert report["more_memory"]["code"] == "perm.denied"
        assert report["more_rights"]["code"] == "perm.denied"
        assert report["second"]["code"] == "perm.denied"  # max_children = 1
        assert report["raise_child"] == "perm.denied"
        assert report["lower_child"]["success"] and report["lower_child"]["level"] == "minimal"
        assert report["kill_kid"] is True and report["kill_stranger"] is False
        assert agent_row(kernel, "stranger")["state"] == "running"
        assert op.get_permissions(agent_id=parent["id"])["permissions"]["can_spawn"] is True


def test_operator_sessions_have_ids_and_end_on_close(kernel):
    with kernel.client() as a, kernel.client() as b:
        ha, hb = a.hello(), b.hello()
    assert ha["role"] == hb["role"] == "operator"
    with kernel.client() as c:
        perms = c.get_permissions()
        assert perms["level"] == "unrestricted"
        r = c.set_permissions(level="minimal")  # a session may lower its own (never above the config's)
        assert r["success"] and c.get_permissions()["level"] == "minimal"
        assert c.set_permissions(level="unrestricted")["code"] == "perm.denied"


def test_audit_config_switches_syscall_records_but_never_denials(kernel):
    with kernel.client() as op:
        cfg = op.set_audit_config(log_syscalls=False, max_entries=500)
        assert cfg["config"]["log_syscalls"] is False and cfg["config"]["max_entries"] == 500
        last = op.get_audit_log(limit=1000)["entries"][-1]["id"]
        op.noop("unrecorded")
        try:
            op.call("no.such")
        except Exception:
            pass
        new = op.get_audit_log(since_id=last, limit=100)["entries"]
        assert not any(e["event_type"] == "noop" for e in new)
        assert any(e["code"] == "proto.unknown_syscall" for e in new)
        assert op.set_audit_config(bogus=1)["code"] == "proto.invalid_args"
        op.set_audit_config(log_syscalls=True)
