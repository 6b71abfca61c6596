"""Exit classification and restart backoff, on plain agent records."""

from __future__ import annotations

import signal

import pytest

from clove.config import AgentConfig, SupervisorSection
from clove.kernel.core.agents import Agent, AgentState, ExitInfo, ExitReason, StopCause
from clove.kernel.supervision.exits import classify_exit, restart_delay, should_restart


def agent(state: AgentState = AgentState.RUNNING, **spec: object) -> Agent:
    return Agent(id=1, spec=AgentConfig(name="a", script="/a.py", **spec), uid=None, state=state)  # type: ignore[arg-type]


def classify(a: Agent, event: dict, oom: int = 0, timed_out: bool = False) -> ExitInfo:
    return classify_exit(a, event, oom_kills=oom, timed_out=timed_out, start_timeout=10.0)


def test_plain_exit_signal_and_oom() -> None:
    assert classify(agent(), {"exit_code": 3}).reason is ExitReason.EXITED
    info = classify(agent(), {"signal": signal.SIGSEGV})
    assert (info.reason, info.signal, info.message) == (ExitReason.SIGNALED, 11, "terminated by SIGSEGV")
    info = classify(agent(memory_bytes=64 << 20), {"signal": 9}, oom=1)
    assert info.reason is ExitReason.OOM_KILLED and "67108864" in (info.message or "")


def test_start_failures_and_kills() -> None:
    starting = agent(AgentState.STARTING)
    assert classify(starting, {"exit_code": 127, "error": "ENOENT", "stage": "exec"}).reason is ExitReason.FAILED_TO_START
    assert classify(starting, {"signal": 9}, timed_out=True).reason is ExitReason.START_TIMEOUT
    assert classify(starting, {"exit_code": 0}).reason is ExitReason.FAILED_TO_START
    stopping = agent(AgentState.STOPPING)
    stopping.operator_kill = True
    assert classify(stopping, {"signal": 15}, oom=1).reason is ExitReason.KILLED  # the operator's kill wins


def test_a_stop_with_a_cause_reports_the_cause() -> None:
    child = agent(AgentState.STOPPING)
    child.stop_cause = StopCause(ExitReason.PARENT_EXITED, "parent 'p' (id 1) exited")
    info = classify(child, {"signal": 15})
    assert (info.reason, info.message, info.signal) == (ExitReason.PARENT_EXITED, "parent 'p' (id 1) exited", 15)
    child.operator_kill = True
    assert classify(child, {"signal": 15}).reason is ExitReason.KILLED  # an operator's kill came first


@pytest.mark.parametrize(
    ("policy", "info", "restart"),
    [
        ("never", ExitInfo(ExitReason.EXITED, 1), False),
        ("on-failure", ExitInfo(ExitReason.EXITED, 0), False),
        ("on-failure", ExitInfo(ExitReason.EXITED, 1), True),
        ("on-failure", ExitInfo(ExitReason.OOM_KILLED, None, 9), True),
        ("always", ExitInfo(ExitReason.EXITED, 0), True),
    ],
)
def test_policies(policy: str, info: ExitInfo, restart: bool) -> None:
    assert should_restart(agent(restart=policy), info) is restart


def test_exit_request_stops_restarts() -> None:
    a = agent(restart="always")
    a.exit_requested = True
    assert should_restart(a, ExitInfo(ExitReason.EXITED, 1)) is False


def test_backoff_doubles_caps_resets_and_escalates() -> None:
    sv = SupervisorSection(backoff_initial=0.5, backoff_max=3.0, stable_after=10.0)
    a = agent(restart="on-failure", max_restarts=5, restart_window=100.0)
    delays = [restart_delay(a, uptime=1.0, now=float(t), policy=sv) for t in range(4)]
    assert delays == [0.5, 1.0, 2.0, 3.0]
    assert restart_delay(a, uptime=60.0, now=4.0, policy=sv) == 0.5  # a stable run resets the doubling
    assert restart_delay(a, uptime=1.0, now=5.0, policy=sv) is None  # five restarts inside the window
    assert restart_delay(a, uptime=1.0, now=200.0, policy=sv) is not None  # the window moved on
