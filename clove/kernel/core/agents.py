"""Agent records and their lifecycle state machine (after supervisor's ProcessStates).

The main paths (``_ALLOWED`` below is the complete table: any live state may also go to
STOPPING, EXITED or FAILED, for a kill, a death or a failure)::

    STARTING ──started──▶ RUNNING ◀──resume── PAUSED
       │                    │  ╲──pause──────▶  │
       │ failed to start    │ process ended     │
       ▼                    ▼                   ▼
    FAILED ◀─escalate── BACKOFF ──timer──▶ STARTING        STOPPING ──▶ EXITED
                         (restart policy)                 (operator kill, shutdown)

``EXITED`` and ``FAILED`` are terminal: the record stays listed (like ``docker ps -a``) until an
operator removes it or the retention limit drops it. Every transition goes through
:meth:`Agent.change_state`, which checks the source state and reports the change.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from clove.config import AgentConfig
from clove.errors import Conflict, InternalError, NotFound
from clove.policy import Permissions, for_level


class AgentState(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    EXITED = "exited"
    FAILED = "failed"


S = AgentState
_ALLOWED: dict[AgentState, frozenset[AgentState]] = {
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.BACKOFF, S.EXITED, S.FAILED}),
    S.RUNNING: frozenset({S.PAUSED, S.STOPPING, S.BACKOFF, S.EXITED, S.FAILED}),
    S.PAUSED: frozenset({S.RUNNING, S.STOPPING, S.BACKOFF, S.EXITED, S.FAILED}),
    S.STOPPING: frozenset({S.EXITED, S.FAILED}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPING, S.EXITED, S.FAILED}),
    S.EXITED: frozenset(),
    S.FAILED: frozenset(),
}
TERMINAL = frozenset({S.EXITED, S.FAILED})
LIVE = frozenset(AgentState) - TERMINAL


class ExitReason(str, enum.Enum):
    EXITED = "exited"  # the process returned an exit code
    SIGNALED = "signaled"  # a signal ended it (segfault, external kill)
    OOM_KILLED = "oom_killed"  # the memory limit's OOM killer ended it
    KILLED = "killed"  # an operator (or shutdown) stopped it
    FAILED_TO_START = "failed_to_start"  # the sandbox or the interpreter never got going
    START_TIMEOUT = "start_timeout"  # it did not come up within sandbox.start_timeout
    PARENT_EXITED = "parent_exited"  # the agent that spawned it exited (it was not detached)


@dataclass(slots=True)
class ExitInfo:
    reason: ExitReason
    exit_code: int | None = None
    signal: int | None = None
    message: str | None = None
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "message": self.message,
            "at": self.at,
        }

    @property
    def clean(self) -> bool:
        return self.reason is ExitReason.EXITED and self.exit_code == 0


@dataclass(frozen=True, slots=True)
class StopCause:
    """Why the kernel is stopping an agent that neither asked nor was killed by an operator:
    its exit is classified with this reason and message rather than as a plain signal."""

    reason: ExitReason
    message: str


@dataclass(eq=False)
class Agent:
    """One agent across all its incarnations: the id is its identity for life."""

    id: int
    spec: AgentConfig
    uid: int | None
    state: AgentState = AgentState.STARTING
    incarnation: int = 0
    pid: int | None = None
    init_pid: int | None = None
    created_at: float = field(default_factory=time.time)
    started_mono: float | None = None
    restarts: int = 0
    restart_times: deque[float] = field(default_factory=deque)
    consecutive_failures: int = 0
    exit: ExitInfo | None = None
    isolation: dict[str, Any] = field(default_factory=dict)
    operator_kill: bool = False
    exit_requested: bool = False
    permissions: Permissions = field(default_factory=lambda: for_level("standard"))
    parent_id: int | None = None
    #: Spawned ``detached``: it outlives its parent (by default a child dies with it).
    detached: bool = False
    #: Why the kernel is stopping it (its parent exited), for its exit's reason and message.
    stop_cause: StopCause | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        return f"{self.id}.{self.incarnation}"

    def change_state(self, new: AgentState) -> AgentState:
        """Move to ``new``; returns the old state.

        :raises InternalError: for a transition the state machine does not allow (a kernel bug).
        """
        old = self.state
        if new not in _ALLOWED[old]:
            raise InternalError(f"agent {self.id}: illegal transition {old.value} -> {new.value}")
        self.state = new
        return old

    def uptime(self, now: float | None = None) -> float:
        if self.started_mono is None or self.state in TERMINAL or self.state is AgentState.BACKOFF:
            return 0.0
        return (now if now is not None else time.monotonic()) - self.started_mono

    def isolation_report(self) -> dict[str, Any]:
        """What is really enforced, with where each sandbox limit came from and its ceiling,
        as the supervisor recorded it at the start (a copy)."""
        return dict(self.isolation)

    def summary(self, *, detailed: bool = True) -> dict[str, Any]:
        """The row ``list_agents`` returns."""
        row: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "status": self.state.value,
            "uptime": round(self.uptime(), 3),
        }
        if not detailed:
            return row
        row.update(
            pid=self.pid,
            restarts=self.restarts,
            parent_id=self.parent_id,
            detached=self.detached,
            level=self.permissions.level,
            restart_policy=self.spec.restart,
            exit_code=self.exit.exit_code if self.exit else None,
            exit_signal=self.exit.signal if self.exit else None,
            exit_reason=self.exit.reason.value if self.exit else None,
            exit_message=self.exit.message if self.exit else None,
            script=self.spec.script,
            sandboxed=self.spec.sandboxed,
            network=self.spec.network,
            created_at=self.created_at,
            isolation=self.isolation_report(),
            devices={name: list(grant.ops) for name, grant in self.spec.devices.items()},
        )
        return row


class AgentTable:
    """All agent records by id, with the live-name index and the retention of dead ones."""

    def __init__(self, *, max_exited: int) -> None:
        self._by_id: dict[int, Agent] = {}
        self._live_names: dict[str, int] = {}
        self._next_id = 1
        self.max_exited = max_exited

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def new_id(self) -> int:
        agent_id = self._next_id
        self._next_id += 1
        return agent_id

    def add(self, agent: Agent) -> None:
        if agent.name in self._live_names:
            raise Conflict(f"an agent named {agent.name!r} is already running", details={"name": agent.name})
        self._by_id[agent.id] = agent
        self._live_names[agent.name] = agent.id

    def name_in_use(self, name: str) -> bool:
        return name in self._live_names

    def get(self, agent_id: int) -> Agent | None:
        return self._by_id.get(agent_id)

    def find(self, *, name: str | None = None, agent_id: int | None = None) -> Agent:
        """The agent with this id, or the live agent with this name, else the newest dead one.

        :raises NotFound: when nothing matches.
        """
        if agent_id is not None:
            agent = self._by_id.get(agent_id)
            if agent is not None and (name is None or agent.name == name):
                return agent
            raise NotFound(f"no agent with id {agent_id}", details={"agent_id": agent_id})
        if name is None:
            raise NotFound("give an agent name or id")
        live = self._live_names.get(name)
        if live is not None:
            return self._by_id[live]
        dead = [a for a in self._by_id.values() if a.name == name]
        if dead:
            return max(dead, key=lambda a: a.id)
        raise NotFound(f"no agent named {name!r}", details={"name": name})

    def settled(self, agent: Agent) -> list[Agent]:
        """Free the name of an agent that reached a terminal state; returns records dropped by
        the retention limit (oldest terminal ones first)."""
        if self._live_names.get(agent.name) == agent.id:
            del self._live_names[agent.name]
        dead = sorted((a for a in self._by_id.values() if a.state in TERMINAL), key=lambda a: a.id)
        dropped = dead[: max(0, len(dead) - self.max_exited)]
        for old in dropped:
            del self._by_id[old.id]
        return dropped

    def remove(self, agent: Agent) -> None:
        self._by_id.pop(agent.id, None)
        if self._live_names.get(agent.name) == agent.id:
            del self._live_names[agent.name]
