"""The zygote under churn: many commands ending at once must never make it read a pipe it has
already closed (it exited on EBADF, and the kernel then had to kill every agent)."""

from __future__ import annotations

import json
import os
import select
import time

import pytest

from clove.kernel.services.exec import MAX_JOBS_PER_CALLER
from clove.sandbox.launcher import ZygoteLauncher
from clove.sandbox.spec import ExecSpec
from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

PATH_ENV = {"PATH": "/usr/bin:/bin"}


def _run_burst(zygote: ZygoteLauncher, first: int, count: int) -> list[dict]:
    """Start ``count`` host commands at once; return the events until all have exited."""
    pipes = []
    for job in range(first, first + count):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        zygote.exec(ExecSpec(job=str(job), argv=("true",), cwd="/", env=PATH_ENV), out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        pipes += [out_r, err_r]
    events: list[dict] = []
    exited = 0
    deadline = time.monotonic() + 60
    while exited < count and time.monotonic() < deadline:
        select.select([zygote.fileno()], [], [], 1.0)
        for event in zygote.events():
            events.append(event)
            if event["ev"] == "lost":
                return events
            exited += event["ev"] == "exec_exited"
    for fd in pipes:
        os.close(fd)
    return events


def test_the_zygote_survives_bursts_of_commands_ending_together() -> None:
    zygote = ZygoteLauncher()
    zygote.start()
    try:
        job = 0
        for burst in (1, 8, 32, 64, 64, 64, 64):
            events = _run_burst(zygote, job, burst)
            assert {"ev": "lost"} not in events, f"the zygote died in a burst of {burst} commands"
            results = [e for e in events if e["ev"] == "exec_exited"]
            assert sorted(int(e["job"]) for e in results) == list(range(job, job + burst))
            assert all(e.get("exit_code") == 0 for e in results), results
            job += burst
        assert zygote.reap() is None, "the zygote exited"
    finally:
        zygote.stop()


def test_agents_outlive_a_flood_of_async_commands(kernel) -> None:
    """Through the kernel, as an agent would attack it: dozens of async commands ending
    together must leave the zygote and every other agent running."""
    zygote_before = kernel.call("kernel.info")["zygote_pid"]
    with kernel.client() as op:
        op.call("agent.spawn", name="bystander", script=agent_script("healthy.py"))
        bystander = poll_for(lambda: agent_row(kernel, "bystander")["pid"], 30, message="the bystander's pid")
        ops: list = []
        for _ in range(4):  # rounds of as many as one caller may run at once
            ops += [["exec", {"command": ["true"], "async_": True}] for _ in range(MAX_JOBS_PER_CALLER)]
            ops.append(["await_async", {"count": MAX_JOBS_PER_CALLER, "timeout": 60}])
        op.call("agent.spawn", name="flooder", script=agent_script("exec_ops.py"), args=[json.dumps(ops)])
    report = read_report(kernel, "flooder", timeout=60)
    assert all(item["ok"] for item in report), [item for item in report if not item["ok"]][:3]
    results = [result for item in report if isinstance(item["value"], list) for result in item["value"]]
    assert len(results) == 4 * MAX_JOBS_PER_CALLER
    assert all(json.loads(r["payload"])["exit_code"] == 0 for r in results), results[:3]
    assert kernel.call("kernel.info")["zygote_pid"] == zygote_before
    row = agent_row(kernel, "bystander")
    assert row["state"] == "running" and row["pid"] == bystander, row
