"""Agents start after their devices (systemd's After=/Requires=): a deployment's agent that
holds a grant on a device starts once the device is ready, or at its ``device_timeout``, then
starts anyway (``device_wait = "start"``) or fails with the reason (``"fail"``). Restarts wait
the same way. The devices here are loopback ones whose open is slow or always fails."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from clove.errors import InvalidArguments, SpawnFailed
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_row, agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]

FIRST = agent_script("device_first.py")

SLOW = f"""
[devices.slow]
driver = "loopback"
open_delay = 2.0
backoff_initial = 0.1
backoff_max = 0.5

[agents.first]
script = "{FIRST}"
args = ["slow"]
restart = "on-failure"
[agents.first.devices.slow]
ops = ["write"]
tags = ["ok"]
"""

DEAD = f"""
[devices.dead]
driver = "loopback"
fail_open = true
backoff_initial = 0.1
backoff_max = 0.5

[agents.needs]
script = "{FIRST}"
args = ["dead"]
device_wait = "fail"
device_timeout = 1
[agents.needs.devices.dead]
ops = ["write"]
tags = ["ok"]

[agents.tries]
script = "{FIRST}"
args = ["dead"]
device_timeout = 1
[agents.tries.devices.dead]
ops = ["write"]
tags = ["ok"]

[agents.patient]
script = "{FIRST}"
args = ["dead"]
device_timeout = 60
[agents.patient.devices.dead]
ops = ["write"]
tags = ["ok"]
"""


def first_calls(k: KernelProcess, name: str, count: int = 1) -> list[dict]:
    """The ``FIRST`` lines the agent's incarnations printed, once there are ``count``."""

    def lines() -> list[dict]:
        data = k.call("agent.logs", name=name, offset=0, max_bytes=1 << 20)["data"].decode()
        found = [json.loads(line[len("FIRST ") :]) for line in data.splitlines() if line.startswith("FIRST ")]
        return found if len(found) >= count else []

    return poll_for(lines, 30, message=f"{name}'s first device call")


def lifecycle(k: KernelProcess, name: str, event: str) -> list[dict]:
    with k.client() as op:
        entries = op.get_audit_log(category="AGENT_LIFECYCLE", limit=1000)["entries"]
    return [e["details"] for e in entries if e["agent_name"] == name and e["event_type"] == event]


def test_a_deployment_agent_starts_after_its_slow_device_and_restarts_after_it_too(make_kernel):
    k = make_kernel(SLOW)
    assert first_calls(k, "first")[0] == {"ok": {"written": 1, "seq": 1}}  # not device.unavailable
    waited = lifecycle(k, "first", "agent.waiting_for_devices")
    assert waited and waited[0]["devices"]["slow"] == "starting" and waited[0]["then"] == "start"
    assert lifecycle(k, "first", "agent.devices_ready")
    # The device goes down and the agent dies with it: its restart waits for the device again.
    with k.client() as op:
        op.call("device.restart", device="slow")
        poll_for(lambda: op.call("device.info", device="slow")["device"]["state"] != "ready", 10, message="slow down")
        os.kill(agent_row(k, "first")["pid"], signal.SIGKILL)
    second = first_calls(k, "first", count=2)[1]
    assert second == {"ok": {"written": 1, "seq": 1}}, second
    assert agent_row(k, "first")["restarts"] == 1
    assert len(lifecycle(k, "first", "agent.waiting_for_devices")) == 2


def test_devices_not_ready_in_time_start_anyway_or_fail_with_the_reason(make_kernel):
    k = make_kernel(DEAD)
    failed = poll_for(lambda: (row := agent_row(k, "needs"))["state"] == "failed" and row, 20, message="needs failed")
    assert failed["exit_reason"] == "failed_to_start"
    # The device is down, or starting again, after its open failed: the message says which.
    assert re.fullmatch(r"devices not ready after 1 s: dead \((down|starting): .*fail_open is set\)", failed["exit_message"]), failed["exit_message"]
    assert failed["pid"] is None
    assert lifecycle(k, "needs", "agent.devices_not_ready")[0]["then"] == "fail"

    assert first_calls(k, "tries")[0]["code"] == "device.unavailable"  # started anyway, after the timeout
    assert agent_row(k, "tries")["state"] == "running"
    late = lifecycle(k, "tries", "agent.devices_not_ready")[0]
    assert late["then"] == "start" and late["waited_s"] >= 0.9

    # Still waiting: a kill ends it at once, with no process to stop.
    assert agent_row(k, "patient")["state"] == "starting"
    with k.client() as op:
        gone = op.call("agent.kill", name="patient")
    assert gone["exit"]["reason"] == "killed"
    assert gone["exit"]["message"] == "stopped by operator while it was waiting for its devices"


def test_an_operators_spawn_with_devices_waits_the_same_way(make_kernel):
    k = make_kernel(DEAD)
    grant = {"dead": {"ops": ["write"], "tags": ["ok"]}}
    with k.client(timeout=30) as op:
        with pytest.raises(SpawnFailed, match=r"devices not ready after 0.5 s: dead \((down|starting): .*fail_open is set\)"):
            op.call("agent.spawn", name="late", script=FIRST, args=["dead"], devices=grant, device_wait="fail", device_timeout=0.5)
        with pytest.raises(InvalidArguments, match="device_wait must be one of start, fail"):
            op.call("agent.spawn", name="odd", script=FIRST, args=["dead"], devices=grant, device_wait="later")
