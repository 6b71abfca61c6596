"""Recording and replay on a real kernel, from an operator's side: its own calls recorded and
exported, then performed again as its session (within its permissions) with each result
compared; and ``clove replay`` of the post-mortem bundle of an agent killed by SIGKILL, which
ends where the recorded run was killed."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from clove.cli.main import main as clove_main
from clove.testing.kernel import poll_for
from tests.conftest import agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def _replay_end(op: Any) -> dict[str, Any]:
    return poll_for(lambda: (s := op.get_replay_status())["state"] != "REPLAYING" and s, 30, message="the replay's end")


def test_an_operators_own_calls_are_recorded_and_exported(kernel):
    with kernel.client() as op:
        session_id = op.hello()["session_id"]
        started = op.start_recording()
        assert started["success"] and started["sessions"] == [session_id]
        op.store("op.rec", {"raw": b"\x00\xff"})
        op.fetch("op.rec")
        assert op.fetch("op.missing", scope="nowhere")["code"] == "proto.invalid_args"  # an error is recorded too
        with kernel.client() as someone_else:  # another session: not the one recording
            someone_else.store("op.other", 1)
        status = op.get_recording_status(export=True)
        stopped = op.stop_recording()
        assert op.start_recording(filter_agents=["nobody"])["sessions"] == []  # naming agents leaves it out
        op.stop_recording()
    entries = json.loads(status["recording"])
    calls = [e for e in entries if e["kind"] == "syscall"]
    assert [e["call"] for e in calls] == ["state.store", "state.fetch", "state.fetch"]  # no record.* controls
    assert {e["session_id"] for e in calls} == {session_id} and [e["i"] for e in calls] == [0, 1, 2]
    assert calls[0]["body"]["value"] == {"raw": {"__bytes__": "AP8="}} and calls[1]["result"]["value"] == calls[0]["body"]["value"]
    assert calls[2]["ok"] is False and calls[2]["error"]["code"] == "proto.invalid_args"
    assert status["entry_count"] == stopped["entry_count"] == 3
    path = Path(stopped["path"]) / f"_session-{session_id}.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(line) for line in path.read_text().splitlines()] == entries


def test_an_operators_replay_performs_its_calls_again_within_its_session(kernel, tmp_path):
    target = tmp_path / "written.txt"
    with kernel.client() as op:
        op.store("op.a", 1)
        assert op.start_recording()["success"]
        assert op.fetch("op.a")["value"] == 1
        assert op.store("op.b", 2)["success"]
        assert op.call("fs.write", path=str(target), content="recorded")["success"]
        export = op.get_recording_status(export=True)["recording"]
        op.stop_recording()
        op.store("op.a", 7)  # the world changed since: that fetch will differ
        target.unlink()
        started = op.start_replay(export)  # the original SDK's call: the recording alone
        assert started["success"] and started["state"] == "REPLAYING" and started["mode"] == "execute"
        assert started["progress"] == {"replayed": 0, "total": 3}
        done = _replay_end(op)
        assert done["state"] == "DIVERGED" and not done["active"] and done["progress"] == {"replayed": 3, "total": 3}
        assert [(c["call"], c["outcome"]) for c in done["calls"]] == [("state.fetch", "diverged"), ("state.store", "match"), ("fs.write", "match")]
        assert done["calls"][0]["reason"] == "different result" and '"value":7' in done["calls"][0]["actual"]
        assert done["divergence"]["index"] == 0 and (done["matched"], done["diverged"], done["skipped"]) == (2, 1, 0)
        assert target.read_text() == "recorded"  # performed, not answered from the recording
        assert op.fetch("op.b")["value"] == 2
        journal = [e for e in op.get_audit_log(limit=200)["entries"] if e["details"].get("rerun")]
        assert [e["syscall"] for e in journal] == ["state.fetch", "state.store", "fs.write"]
        assert {e["details"]["caller_id"] for e in journal} == {op.hello()["session_id"]}
        # Never above the session: with writes taken away, the same calls are refused.
        target.unlink()
        assert op.set_permissions(permissions={"write_paths": ["/nowhere/**"]})["success"]
        op.store("op.a", 1)
        assert op.start_replay(export, mode="execute")["success"]
        lowered = _replay_end(op)
        assert [(c["call"], c["outcome"]) for c in lowered["calls"]] == [("state.fetch", "match"), ("state.store", "match"), ("fs.write", "diverged")]
        assert lowered["calls"][2]["reason"] == "failed with perm.denied; the recording succeeded" and not target.exists()


def test_an_agent_cannot_perform_an_operators_recording(kernel):
    with kernel.client() as op:
        op.start_recording()
        op.store("op.x", 1)
        export = op.get_recording_status(export=True)["recording"]
        op.stop_recording()
        assert op.start_replay(export, agent="ghost")["code"] == "notfound"  # an agent replay: no such agent
        assert op.start_replay(export, mode="warp")["code"] == "proto.invalid_args"


@pytest.mark.parametrize("wait_in", ["idle", "recv"])
def test_the_bundle_of_an_agent_killed_by_sigkill_replays_to_where_it_was_killed(make_kernel, capsys, wait_in):
    k = make_kernel("[recording]\nenabled = true\n")
    with k.client() as op:
        spawned = op.spawn("victim", agent_script("record_then_wait.py"), env={"WAIT_IN": wait_in})
        assert spawned["success"], spawned
        poll_for(lambda: b"READY" in op.logs(name="victim")["data"], 20, message="victim ready")
        os.kill(spawned["pid"], signal.SIGKILL)
        log = op.logs(name="victim")["data"].decode()
    root = k.state_dir / "postmortem" / "victim"
    bundle = poll_for(lambda: [p for p in root.iterdir() if (p / "recording.jsonl").exists()] if root.exists() else None, 20, message="bundle")[0]
    assert json.loads((bundle / "summary.json").read_text())["exit"]["signal"] == signal.SIGKILL
    began = time.monotonic()
    code = clove_main(["replay", str(bundle), "--json", "--max-seconds", "60"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["state"] == "COMPLETED" and result["divergence"] is None, result
    assert time.monotonic() - began < 30 and result["elapsed"] < 15  # not --max-seconds later
    (agent,) = result["agents"]
    assert agent["recorded_end"] == {"reason": "signaled", "signal": 9, "signal_name": "SIGKILL"}
    assert agent["recorded_exit"] == {"reason": "signaled", "exit_code": None, "signal": 9}
    assert result["progress"]["replayed"] == result["progress"]["total"] >= 3
    report = [line for line in log.splitlines() if line.startswith("REPORT ")]
    assert [line for line in result["output"]["victim"].splitlines() if line.startswith("REPORT ")] == report
    # The human report says where and how the recorded run ended; exit status 0.
    assert clove_main(["replay", str(bundle), "--max-seconds", "60"]) == 0
    out = capsys.readouterr().out
    assert "COMPLETED" in out and "where the recorded run ended by signal 9 (SIGKILL" in out
