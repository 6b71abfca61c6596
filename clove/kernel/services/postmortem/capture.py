"""Which deaths get a post-mortem, and gathering what one holds (on the loop thread).

A death is captured in two steps because what explains it is known at two moments:

1. :func:`capture` runs from the supervisor's exit hook, when the exit is classified and the
   incarnation's cgroup still exists: its counters (memory peak, OOM kills, CPU, throttling,
   pids) are read then, since the cgroup is removed right after.
2. Once the supervisor has decided what follows (a restart, an escalation to ``failed``, the
   end) :func:`trigger` says whether the death deserves a bundle, and the log tail and the
   summary are gathered; the journal, which by then holds the ``agent.exited`` record, is
   copied for :func:`journal_slice` to cut the agent's records from on the writer thread.

Not every end is a death to explain: a clean exit (code 0), an operator's kill, and any stop the
kernel asked for (shutdown, an interlock) get no bundle, unless the clean exits are what
escalated the agent to ``failed``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clove.kernel.audit.summarize import summarize_args
from clove.kernel.core.agents import Agent, AgentState, ExitInfo, ExitReason

S = AgentState
#: Agent journal records that begin an incarnation: the journal slice goes back to the last one.
_START_EVENTS = ("agent.created", "agent.state")


@dataclass(slots=True)
class Death:
    """What is known about an incarnation's end before its cgroup is released."""

    agent_id: int
    incarnation: int
    exit: ExitInfo
    cgroup: dict[str, int]
    cgroup_name: str | None
    uptime: float
    #: The kernel or an operator had asked it to stop (kill, shutdown, interlock).
    requested: bool
    log_path: Path | None = None
    escalation: dict[str, Any] | None = None
    #: What capturing cost the loop thread so far (journaled with the bundle as ``loop_us``).
    loop_ns: int = 0


def capture(agent: Agent, info: ExitInfo, cgroup_stats: dict[str, int], cgroup_name: str | None, log_path: Path | None = None) -> Death:
    """Step 1: called while the agent is still in the state it died in."""
    uptime = time.monotonic() - agent.started_mono if agent.started_mono else 0.0
    return Death(
        agent_id=agent.id,
        incarnation=agent.incarnation,
        exit=info,
        cgroup=dict(cgroup_stats),
        cgroup_name=cgroup_name,
        uptime=round(uptime, 3),
        requested=agent.state is S.STOPPING or agent.operator_kill,
        log_path=log_path,
    )


def trigger(death: Death) -> str | None:
    """Why this death deserves a bundle (``"oom_killed"``, ``"signaled"``, ``"crashed"``,
    ``"failed_to_start"``, ``"start_timeout"``, ``"escalated"``), or ``None``."""
    reason = death.exit.reason
    if death.escalation is not None:
        return "escalated"
    if reason is ExitReason.OOM_KILLED:
        return "oom_killed"
    if reason in (ExitReason.FAILED_TO_START, ExitReason.START_TIMEOUT):
        return str(reason.value)
    if death.requested or reason is ExitReason.KILLED:
        return None
    if reason is ExitReason.SIGNALED:
        return "signaled"
    if reason is ExitReason.EXITED and death.exit.exit_code not in (0, None):
        return "crashed"
    return None


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def iso_utc(at: float) -> str:
    seconds = int(at)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((at - seconds) * 1000):03d}Z"


def summary(agent: Agent, death: Death, *, why: str, final_state: AgentState, kernel: dict[str, Any]) -> dict[str, Any]:
    """Everything small about the death, JSON-safe: who, when, why, the cgroup's figures at
    death, limits and grants, the isolation report, restarts. The writer adds the file list."""
    spec = agent.spec
    exit_info = death.exit.to_dict()
    exit_info["signal_name"] = signal_name(death.exit.signal)
    return {
        "agent": {
            "id": agent.id,
            "name": agent.name,
            "incarnation": death.incarnation,
            "script": spec.script,
            "args": summarize_args(list(spec.args), max_str=500, max_items=50),
            "parent_id": agent.parent_id,
            "uid": agent.uid,
            "sandboxed": spec.sandboxed,
            "network": spec.network,
            "created_at": agent.created_at,
        },
        "time": iso_utc(death.exit.at),
        "timestamp": death.exit.at,
        "trigger": why,
        "reason": death.exit.reason.value,
        "exit": exit_info,
        "escalated": death.escalation is not None,
        "escalation": death.escalation,
        "state": final_state.value,
        "uptime": death.uptime,
        "restarts": agent.restarts,
        "restart_policy": {"policy": spec.restart, "max_restarts": spec.max_restarts, "window": spec.restart_window,
                           "restarts_in_window": len(agent.restart_times)},  # fmt: skip
        "cgroup": {"name": death.cgroup_name, **death.cgroup},
        "limits": {"memory_bytes": spec.memory_bytes, "cpu_quota_us": spec.cpu_quota_us, "pids": spec.pids},
        "permissions": agent.permissions.to_wire(),
        "devices": {name: summarize_args(grant, max_items=100) for name, grant in spec.devices.items()},
        "isolation": summarize_args(agent.isolation_report(), max_str=500, max_items=50, max_depth=6),
        "kernel": kernel,
    }


def journal_slice(records: Sequence[dict[str, Any]], agent_id: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The agent's records since its last start, at most the newest ``limit``, oldest first;
    and whether the slice reaches back to that start.

    :param records: journal records, oldest first (:meth:`Journal.snapshot`).
    """
    found: list[dict[str, Any]] = []
    for record in reversed(records):
        if record.get("agent_id") != agent_id:
            continue
        found.append(record)
        if _is_start(record):
            found.reverse()
            return found, True
        if len(found) >= limit:
            break
    found.reverse()
    return found, False


def _is_start(record: dict[str, Any]) -> bool:
    if record.get("category") != "AGENT_LIFECYCLE" or record.get("event_type") not in _START_EVENTS:
        return False
    if record["event_type"] == "agent.created":
        return True
    details = record.get("details") or {}
    return details.get("state") == S.STARTING.value and details.get("previous") == S.BACKOFF.value


def log_tail(path: Path, max_bytes: int) -> tuple[bytes, bool]:
    """The last ``max_bytes`` of an agent's log, reaching into the rotated ``.1`` file when the
    current one is shorter. A first line the cut went through is dropped (a whole one is kept).
    Returns the bytes and whether anything older was left out."""
    parts: list[bytes] = []
    want = max_bytes
    older_left = False
    at_line_start = True
    for part in (path, path.with_name(path.name + ".1")):
        if want <= 0:
            older_left = older_left or part.exists()
            break
        try:
            with part.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - want)
                f.seek(max(0, start - 1))
                data = f.read(want + (1 if start else 0))
        except OSError:
            continue
        if start:
            at_line_start, data = data[:1] == b"\n", data[1:]
        else:
            at_line_start = True
        parts.append(data)
        want -= len(data)
        older_left = start > 0
    data = b"".join(reversed(parts))
    if older_left and not at_line_start:
        newline = data.find(b"\n", 0, 4096)
        if newline >= 0:
            data = data[newline + 1 :]
    return data, older_left
