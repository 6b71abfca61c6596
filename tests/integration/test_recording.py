"""Recording and deterministic replay on real kernels with real sandboxed agents.

The recorded agent (tests/agents/record_agent.py) takes every input through the kernel: its
identity, the kernel's clock and a seed, state (with bytes), a message round trip with an echo
agent, the loopback device's stream and an answer from the scripted LLM provider. A replay must
give it back exactly the same inputs, which its REPORT line shows, without touching any of them.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from clove.cli.main import main as clove_main
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

WORLD = """
[devices.loop]
driver = "loopback"

[llm]
plugins = ["scripted"]
[llm.providers.main]
kind = "scripted"
model = "scripted-1"
reply = "sunny at {prompt}"
latency = 0.3
"""
GRANT = {"loop": {"ops": ["write", "recv"], "tags": ["*"]}}
CALLS = [
    "hello", "sys.time", "sys.random", "state.store", "state.fetch", "ipc.send", "ipc.recv",
    "device.subscribe", "device.call", "device.recv", "llm.think", "sys.time",
]  # fmt: skip


def _world(make_kernel: Any, extra: str = "") -> KernelProcess:
    k = make_kernel(WORLD + extra)
    poll_for(lambda: k.call("device.info", device="loop")["device"]["state"] == "ready", 20, message="loop ready")
    with k.client() as op:
        op.spawn("echo-agent", agent_script("msg_echo.py"), args=["echo"])
        poll_for(lambda: b"READY" in op.logs(name="echo-agent")["data"], message="echo ready")
    return k


def _run_recorded(k: KernelProcess, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Run the recorded agent to its end; its REPORT line and its id."""
    with k.client() as op:
        spawned = op.spawn("rec", agent_script("record_agent.py"), args=["echo"], env=env, devices=GRANT)
        assert spawned["success"], spawned
        read_report(k, "rec")
        poll_for(lambda: agent_row(k, "rec")["state"] == "exited", message="rec exit")
        return _report_line(op, spawned["id"]), spawned["id"]


def _report_line(op: Any, agent_id: int) -> str:
    data = op.logs(agent_id=agent_id, offset=0, max_bytes=1 << 20)["data"].decode()
    (line,) = [line for line in data.splitlines() if line.startswith("REPORT ")]
    return line


def _replay_cli(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code = clove_main(["replay", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def recorded(make_kernel: Any) -> dict[str, Any]:
    """A kernel that recorded one run of the agent (LLM calls included), stopped recording."""
    k = _world(make_kernel)
    with k.client() as op:
        started = op.start_recording(include_think=True, filter_agents=["rec"])
        line, rec_id = _run_recorded(k)
        status = op.get_recording_status(export=True)
        stopped = op.stop_recording()
    return {"kernel": k, "line": line, "rec_id": rec_id, "started": started, "status": status, "stopped": stopped}


def test_recording_keeps_every_request_and_reply_in_order_with_the_api_shapes(recorded):
    started, status, stopped, line = recorded["started"], recorded["status"], recorded["stopped"], recorded["line"]
    assert started["success"] and started["state"] == "RECORDING" and started["entry_count"] == 0
    assert status["success"] and status["state"] == "RECORDING" and status["agents"] == ["rec"]
    assert stopped["success"] and stopped["state"] == "IDLE" and stopped["entry_count"] == len(CALLS)
    entries = json.loads(status["recording"])
    assert isinstance(status["recording"], str) and status["entry_count"] == len(CALLS) == status["recorded"]
    syscalls = [e for e in entries if e["kind"] == "syscall"]
    assert [e["call"] for e in syscalls] == CALLS  # the echo agent is filtered out
    assert {e["agent_name"] for e in syscalls} == {"rec"} and [e["i"] for e in syscalls] == list(range(len(CALLS)))
    for e in syscalls:
        assert set(e) >= {"seq", "agent_id", "agent_name", "t", "call", "body", "ok"} and ("result" in e) == e["ok"]
    assert [e["t"] for e in syscalls] == sorted(e["t"] for e in syscalls) and all(e["dur"] >= 0 for e in syscalls)
    report = json.loads(line[len("REPORT ") :])
    by_call: dict[str, Any] = {}
    for e in syscalls:
        by_call.setdefault(e["call"], e)
    # What the agent got is what was recorded: time, seed, bytes, message receipt, stream, LLM.
    assert by_call["sys.time"]["result"]["time"] == report["now"]
    assert by_call["sys.random"]["result"]["seed"] == report["seed"] and report["seed"] < 2**64
    assert by_call["state.store"]["body"]["value"]["raw"] == {"__bytes__": "AAH/"}
    assert by_call["ipc.recv"]["result"]["messages"][0]["message"] == {"echo": {"text": "hello", "pick": report["pick"]}, "by": "echo"}
    assert by_call["device.recv"]["result"]["items"] == report["items"]
    assert by_call["llm.think"]["body"]["prompt"] == f"weather at {report['pick']}"  # whole, not the journal's size
    assert by_call["llm.think"]["result"]["content"] == report["answer"][1] and by_call["llm.think"]["dur"] >= 0.3
    (spawn,) = [e for e in entries if e["kind"] == "spawn"]
    assert spawn["spec"]["script"] == agent_script("record_agent.py") and spawn["spec"]["args"] == ["echo"]
    assert [e["exit"]["exit_code"] for e in entries if e["kind"] == "exit"] == [0]
    # The per-agent file holds the same entries, private to the kernel's user.
    path = Path(stopped["path"]) / "rec.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    in_file = [json.loads(x) for x in path.read_text().splitlines()]
    assert in_file == entries and sorted(p.name for p in path.parent.iterdir()) == ["rec.jsonl"]


def test_replay_reproduces_the_run_without_touching_the_world(recorded, capsys):
    """``clove replay`` in a private kernel (no devices, no LLM, no echo agent there): same
    REPORT line, same exit; at recorded speed the LLM's 0.3 s is waited again."""
    path = recorded["stopped"]["path"]
    code, result = _replay_cli(capsys, path, "--agent", "rec")
    assert code == 0, result
    assert result["state"] == "COMPLETED" and result["divergence"] is None
    assert result["progress"] == {"replayed": len(CALLS), "total": len(CALLS)}
    (agent,) = result["agents"]
    assert agent["exit"] == agent["recorded_exit"] == {"reason": "exited", "exit_code": 0, "signal": None}
    replayed_lines = [line for line in result["output"]["rec"].splitlines() if line.startswith("REPORT ")]
    assert replayed_lines == [recorded["line"]]
    code, slow = _replay_cli(capsys, path, "--agent", "rec", "--speed", "recorded")
    assert code == 0 and slow["state"] == "COMPLETED" and slow["elapsed"] >= 0.3
    print(f"recorded {result['recorded_elapsed']:.3f} s; replay at full speed {result['elapsed']:.3f} s, at recorded speed {slow['elapsed']:.3f} s")


def test_a_changed_agent_diverges_at_its_first_different_syscall(recorded, capsys):
    path = recorded["stopped"]["path"]
    code, result = _replay_cli(capsys, path, "--agent", "rec", "--env", "RECORD_MESSAGE=changed")
    assert code == 1 and result["state"] == "DIVERGED"
    d = result["divergence"]
    assert (d["agent"], d["index"], d["reason"]) == ("rec", CALLS.index("ipc.send"), "different arguments")
    assert d["recorded"]["call"] == d["actual"]["call"] == "ipc.send"
    assert d["recorded"]["body"]["message"]["text"] == "hello" and d["actual"]["body"]["message"]["text"] == "changed"
    assert d["recorded"]["body"]["message"]["pick"] == d["actual"]["body"]["message"]["pick"]  # the seed was replayed
    assert result["progress"]["replayed"] == CALLS.index("ipc.send")
    # The human report names the syscall and both argument sets; exit status 1.
    assert clove_main(["replay", path, "--agent", "rec", "--arg", "someone-else"]) == 1
    out = capsys.readouterr().out
    assert "DIVERGED" in out and "syscall #5: different arguments" in out
    assert '  recorded: ipc.send {"message": {"pick": ' in out and '"to_name": "echo"}' in out
    assert '"to_name": "someone-else"}' in out


def test_sdk_replay_in_the_running_kernel_answers_from_the_recording_only(recorded):
    k, export = recorded["kernel"], recorded["status"]["recording"]
    with k.client() as op:
        before = k.call("device.info", device="loop")["device"]["counters"]
        llm_before = op.llm_stats()
        started = op.start_replay(export, agent="rec")
        assert started["success"] and started["state"] == "REPLAYING"
        assert started["progress"] == {"replayed": 0, "total": len(CALLS)}
        done = poll_for(lambda: (s := op.get_replay_status())["state"] != "REPLAYING" and s, 30, message="replay end")
        assert done["success"] and done["state"] == "COMPLETED" and done["progress"]["replayed"] == len(CALLS)
        replay_id = done["agents"][0]["agent_id"]
        assert replay_id != recorded["rec_id"] and _report_line(op, replay_id) == recorded["line"]
        # Nothing was performed: no device call or stream item, no LLM request, no message.
        assert k.call("device.info", device="loop")["device"]["counters"] == before
        assert op.llm_stats()["agents"] == llm_before["agents"]
        journal = [e for e in op.get_audit_log(agent_id=replay_id, limit=100)["entries"] if e["category"] != "AGENT_LIFECYCLE"]
        assert [e["syscall"] for e in journal] == CALLS and all(e["details"].get("replayed") for e in journal)
        # A changed argument: the agent is stopped at its first different syscall.
        changed = op.start_replay(export, agent="rec", args=["nobody"])
        assert changed["success"], changed
        diverged = poll_for(lambda: (s := op.get_replay_status())["state"] != "REPLAYING" and s, 30, message="divergence")
        assert diverged["state"] == "DIVERGED" and diverged["divergence"]["index"] == CALLS.index("ipc.send")
        assert diverged["divergence"]["actual"]["body"]["to_name"] == "nobody"
        poll_for(lambda: op.get_replay_status()["agents"][0]["state"] == "exited", message="the diverged agent stopped")
        assert op.start_replay(export, agent="ghost")["code"] == "notfound"
        assert op.start_replay("not json")["code"] == "proto.invalid_args"


def test_a_recording_without_think_diverges_there_with_a_hint(make_kernel, capsys):
    k = _world(make_kernel)
    with k.client() as op:
        assert op.start_recording(filter_agents=["rec"])["success"]
        _run_recorded(k)
        calls = [e["call"] for e in json.loads(op.get_recording_status(export=True)["recording"]) if e["kind"] == "syscall"]
        assert "llm.think" not in calls and calls == [c for c in CALLS if c != "llm.think"]
        path = op.stop_recording()["path"]
    code, result = _replay_cli(capsys, path, "--agent", "rec")
    assert code == 1 and result["divergence"]["reason"] == "different syscall"
    assert result["divergence"]["actual"]["call"] == "llm.think" and "include_think" in result["divergence"]["hint"]


def test_recording_from_the_config_at_boot_and_a_crash_bundle_replays(make_kernel, capsys):
    """``[recording] enabled`` records from boot; an agent that exits 3 leaves a post-mortem
    bundle holding its recording, and ``clove replay BUNDLE`` reproduces the exit."""
    k = _world(make_kernel, '\n[recording]\nenabled = true\nagents = ["rec"]\ninclude_think = true\nmax_entries = 100\n')
    with k.client() as op:
        status = op.get_recording_status()
        assert status["state"] == "RECORDING" and status["options"]["agents"] == ["rec"] and status["options"]["max_entries"] == 100
        assert op.start_recording()["code"] == "conflict"
        line, _ = _run_recorded(k, env={"RECORD_EXIT": "3"})
        assert op.get_recording_status()["entry_count"] == len(CALLS)
    root = k.state_dir / "postmortem" / "rec"
    bundle = poll_for(lambda: [p for p in root.iterdir() if (p / "recording.jsonl").exists()] if root.exists() else None, 10, message="bundle")[0]
    code, result = _replay_cli(capsys, str(bundle), "--agent", "rec")
    assert code == 0 and result["state"] == "COMPLETED", result
    assert result["agents"][0]["exit"] == {"reason": "exited", "exit_code": 3, "signal": None}
    assert [x for x in result["output"]["rec"].splitlines() if x.startswith("REPORT ")] == [line]


def test_controls_need_admin_and_check_their_arguments(make_kernel, tmp_path):
    k = make_kernel()
    with k.client() as op:
        assert op.start_recording(filter_agents=["bad name!"])["code"] == "proto.invalid_args"
        assert op.start_recording(max_entries=0)["code"] == "proto.invalid_args"
        assert op.start_replay("[]")["code"] == "notfound"
        assert op.start_replay(path="relative/dir")["code"] == "proto.invalid_args"
        assert op.start_replay(path=str(tmp_path / "missing"))["code"] == "notfound"
        assert op.get_replay_status()["state"] == "IDLE" and op.get_recording_status()["state"] == "IDLE"
        assert op.get_recording_status(export=True)["recording"] == "[]"
        assert isinstance(op.now(), float) and 0 <= op.random_seed() < 2**64
        op.call("agent.spawn", name="minimal", script=agent_script("record_controls.py"), level="minimal")
        report = read_report(k, "minimal")
    assert report == {"record.start": "perm.denied", "record.status": "perm.denied", "replay.status": "perm.denied", "now": True, "seed": True}
    export = tmp_path / "rec.json"
    assert clove_main(["record", "start", "--socket", k.socket, "--agent", "x", "--think"]) == 0
    assert clove_main(["record", "status", "--socket", k.socket, "--export", str(export)]) == 0
    assert json.loads(export.read_text())[0]["options"]["include_think"] is True
    assert clove_main(["record", "stop", "--socket", k.socket]) == 0
