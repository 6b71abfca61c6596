"""Why an agent process ended, and whether (and when) it restarts."""

from __future__ import annotations

import signal
from typing import Any

from clove.config import SupervisorSection
from clove.kernel.core.agents import Agent, AgentState, ExitInfo, ExitReason

S = AgentState


def classify_exit(agent: Agent, event: dict[str, Any], *, oom_kills: int, timed_out: bool, start_timeout: float) -> ExitInfo:
    """The exit reason from the zygote's ``exited`` event, the agent's state and its cgroup's OOM
    counter: a start failure, an operator's kill, the kernel's stop with a cause (its parent
    exited), an OOM kill, a signal, or a plain exit."""
    sig = event.get("signal")
    code = event.get("exit_code")
    if agent.state is S.STARTING and not agent.operator_kill:
        if event.get("error"):
            return ExitInfo(ExitReason.FAILED_TO_START, code, sig, f"{event.get('stage')}: {event['error']}")
        if timed_out:
            return ExitInfo(ExitReason.START_TIMEOUT, code, sig, f"not up after {start_timeout} s")
        return ExitInfo(ExitReason.FAILED_TO_START, code, sig, "ended before its sandbox was ready")
    if agent.state is S.STOPPING and agent.operator_kill:
        return ExitInfo(ExitReason.KILLED, code, sig, "stopped by operator")
    if agent.state is S.STOPPING and agent.stop_cause is not None:
        return ExitInfo(agent.stop_cause.reason, code, sig, agent.stop_cause.message)
    if oom_kills > 0:
        limit = agent.spec.memory_bytes
        return ExitInfo(ExitReason.OOM_KILLED, code, sig, f"killed by the OOM killer at its memory limit ({limit} bytes)")
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return ExitInfo(ExitReason.SIGNALED, None, sig, f"terminated by {name}")
    if agent.state is S.STARTING:
        return ExitInfo(ExitReason.KILLED, code, None, "stopped before it started")
    if agent.state is S.STOPPING:
        return ExitInfo(ExitReason.KILLED, code, None, "stopped")
    return ExitInfo(ExitReason.EXITED, code, None, None)


def should_restart(agent: Agent, info: ExitInfo) -> bool:
    if agent.exit_requested:
        return False
    policy = agent.spec.restart
    return policy == "always" or (policy == "on-failure" and not info.clean)


def restart_delay(agent: Agent, *, uptime: float, now: float, policy: SupervisorSection) -> float | None:
    """The backoff before the next restart, recording it; ``None`` when the agent has had
    ``max_restarts`` restarts within ``restart_window`` (escalate to failed).

    Delays double from ``backoff_initial`` up to ``backoff_max``; a run of ``stable_after``
    seconds resets the doubling.
    """
    window = agent.spec.restart_window
    while agent.restart_times and now - agent.restart_times[0] > window:
        agent.restart_times.popleft()
    if len(agent.restart_times) >= agent.spec.max_restarts:
        return None
    if uptime >= policy.stable_after:
        agent.consecutive_failures = 0
    delay: float = min(policy.backoff_initial * (2**agent.consecutive_failures), policy.backoff_max)
    agent.consecutive_failures += 1
    agent.restart_times.append(now)
    return delay
