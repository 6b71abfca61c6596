"""Interlocks performed by the kernel: a stream item, an event, a lost device host or the
operator engages them; safe commands go out, grants shrink, agents pause; only an operator
releases them, and a kernel restart does not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clove.errors import Conflict, PermissionDenied
from clove.testing.kernel import poll_for
from tests.conftest import agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]

CONFIG = """
[devices.loop]
driver = "loopback"
[devices.motors]
driver = "loopback"
backoff_initial = 0.1

[interlocks.estop]
trigger = {{ device = "loop", match = {{ tag = "estop" }} }}
actions = [
  {{ device = "motors", op = "write", args = {{ tag = "safe", data = "hex:0000" }} }},
  {{ restrict = "loop", ops = ["recv"] }},
  {{ pause = ["navigator"] }},
]

[interlocks.obstacle]
trigger = {{ event = "OBSTACLE" }}
actions = [{{ device = "motors", op = "write", args = {{ tag = "safe" }} }}]

[interlocks.lost]
trigger = {{ device_lost = "motors" }}
actions = [{{ kill = ["navigator"] }}]
{extra}"""


def _ready(k, *names: str) -> None:  # noqa: ANN001
    for name in names:
        poll_for(lambda n=name: k.call("device.info", device=n)["device"]["state"] == "ready", 20, message=f"{name} ready")


def _interlock(k, name: str) -> dict:  # noqa: ANN001
    return next(i for i in k.call("interlock.list")["interlocks"] if i["name"] == name)


def _navigator(k, op) -> None:  # noqa: ANN001
    op.spawn("navigator", agent_script("driver_loop.py"), devices={"loop": {"ops": ["write", "recv"], "tags": ["drive"]}})
    poll_for(lambda: b"READY" in op.logs(name="navigator")["data"], 15, message="navigator ready")
    poll_for(lambda: op.device("loop").info()["counters"]["calls"] >= 3, message="navigator driving")


def test_stream_trigger_sends_safe_frame_blocks_and_pauses_until_released(make_kernel):
    k = make_kernel(CONFIG.format(extra=""))
    _ready(k, "loop", "motors")
    with k.client() as op:
        motors = op.device("motors")
        motors.subscribe()
        _navigator(k, op)
        op.device("loop").write(tag="estop")
        safe = poll_for(lambda: [i for i in motors.recv(timeout=1) if i["tag"] == "safe"], message="the safe command")
        assert safe[0]["data"] == b"\x00\x00"
        state = poll_for(lambda: (i := _interlock(k, "estop"))["engaged"] and all(a["status"] == "done" for a in i["state"]["actions"]) and i, message="engaged")
        assert state["state"]["cause"].startswith("loop:")
        latencies = [a["latency_ms"] for a in state["state"]["actions"]]
        assert all(0 <= ms < 5000 for ms in latencies)
        poll_for(lambda: any(a["name"] == "navigator" and a["state"] == "paused" for a in op.list_agents()), message="navigator paused")
        # Even resumed, the navigator cannot drive while the interlock holds.
        op.resume(name="navigator")
        poll_for(lambda: b"REFUSED perm.denied interlock 'estop' is engaged" in op.logs(name="navigator")["data"], message="the refusal")
        with pytest.raises(PermissionDenied, match="interlock 'estop' is engaged"):
            op.device("loop").write(tag="drive")  # operators too: only a release undoes it
        journal = [e["event_type"] for e in op.get_audit_log(category="SECURITY", limit=200)["entries"]]
        assert "interlock.engaged" in journal and "interlock.completed" in journal
        released = op.call("interlock.release", name="estop")["released"]
        assert released["name"] == "estop"
        with pytest.raises(Conflict):
            op.call("interlock.release", name="estop")
        before = op.device("loop").info()["counters"]["calls"]
        poll_for(lambda: op.device("loop").info()["counters"]["calls"] > before + 3, message="driving again after release")


def test_event_trigger_and_operator_estop_cli(make_kernel):
    k = make_kernel(CONFIG.format(extra=""))
    _ready(k, "loop", "motors")
    with k.client() as op:
        op.emit_event("OBSTACLE", {"range_m": 0.3})
        poll_for(lambda: _interlock(k, "obstacle")["engaged"], message="obstacle engaged")
    out = subprocess.run([sys.executable, "-m", "clove.cli.main", "estop", "--socket", k.socket], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "engaged estop" in out.stdout and "engaged lost" in out.stdout
    listed = subprocess.run([sys.executable, "-m", "clove.cli.main", "estop", "--list", "--socket", k.socket], capture_output=True, text=True, timeout=30)
    assert [line.split()[1] for line in listed.stdout.splitlines()[1:]] == ["ENGAGED", "ENGAGED", "ENGAGED"]


def test_lost_device_host_kills_the_navigator(make_kernel):
    k = make_kernel(CONFIG.format(extra=""))
    _ready(k, "loop", "motors")
    with k.client() as op:
        _navigator(k, op)
        op.call("device.restart", device="motors")
        poll_for(lambda: _interlock(k, "lost")["engaged"], message="lost engaged")
        poll_for(lambda: all(a["state"] != "running" for a in op.list_agents() if a["name"] == "navigator"), message="navigator killed")


def test_an_engaged_interlock_survives_a_kernel_restart(make_kernel):
    k = make_kernel(CONFIG.format(extra=""))
    _ready(k, "loop", "motors")
    k.call("interlock.engage", name="estop")
    state_dir = k.state_dir
    k.stop()
    k2 = make_kernel(CONFIG.format(extra=""), state_dir=state_dir)
    _ready(k2, "loop", "motors")
    state = _interlock(k2, "estop")
    assert state["engaged"] and "still engaged" in state["state"]["cause"]
    # The safe command went out again once the restarted motors device was up.
    poll_for(lambda: _interlock(k2, "estop")["state"]["actions"][-1]["status"] == "done", 20, message="safe state reapplied")


def test_safe_command_is_reapplied_when_the_device_comes_back(make_kernel):
    k = make_kernel(CONFIG.format(extra=""))
    _ready(k, "loop", "motors")
    with k.client() as op:
        op.call("interlock.engage", name="obstacle")
        op.call("device.restart", device="motors")  # also engages "lost": nothing else to stop here
        poll_for(lambda: any(e["event_type"] == "interlock.reapplied" for e in op.get_audit_log(category="SECURITY", limit=200)["entries"]), 20, message="reapplied")
        actions = _interlock(k, "obstacle")["state"]["actions"]
    assert [a["status"] for a in actions][-1] in ("done", "pending")
    assert len(actions) == 2
