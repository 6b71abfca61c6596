"""Deterministic replay: run a recorded agent's unmodified script in a fresh sandbox and answer
every syscall it makes from the recording instead of the world (docs/recording.md).

The dispatcher hands every request of a replayed agent to :meth:`ReplayService.answer` right
after identifying the caller, before authorization: nothing is performed (no device, network,
LLM, state or message is touched), so the agent's own permissions do not matter and it runs
with none. Each request is compared, call and body, with the next recorded request of that
agent; equal, it gets the recorded reply (after the recorded duration at ``recorded`` speed,
at once at ``full`` speed); different, or past the end of the recording, the replay stops its
agents and reports the first divergence ``{agent, index, reason, recorded, actual}``. An agent
that exits before the end, or with another exit than recorded, diverges too. An agent whose
recording stopped while it still ran (no recorded exit) is stopped when it asks for more than
was recorded: it "ran past the end", which is not a divergence.

Every call counts, ``hello`` and ``noop`` included: they are the agent's own behaviour, and
``hello``'s recorded answer (its id, its name) is what the agent computed with. The sandbox is
always on and has no network, whatever the recording says; the replayed agent is never
restarted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, final

from clove.config import AgentConfig
from clove.errors import CloveError, Conflict, InvalidArguments, from_wire
from clove.kernel.core.agents import TERMINAL, Agent
from clove.kernel.services.recording.format import AgentRecording, canonical, decode, encode
from clove.kernel.supervision.limits import resolve as resolve_limits
from clove.wire import Request

if TYPE_CHECKING:
    from clove.kernel.services.host import ServiceHost, ServiceRegistry

__all__ = ["Answer", "ReplayService", "SPEEDS", "attach", "compare", "replay_spec"]

SPEEDS: Final = ("full", "recorded")
IDLE, REPLAYING, DIVERGED, COMPLETED, FAILED = "IDLE", "REPLAYING", "DIVERGED", "COMPLETED", "FAILED"
#: The calls a recording leaves out unless asked, and the option that would have kept them.
_LEFT_OUT: Final = (("llm.think", "include_think"), ("http", "include_http"), ("exec", "include_exec"))


class Answer(NamedTuple):
    """What to send back: ``result``, or ``error``; ``delay`` seconds from now."""

    result: Any
    error: CloveError | None
    delay: float


def compare(entry: dict[str, Any], call: str, body: Any) -> str | None:
    """Why the request (``body`` already :func:`encode`-d) differs from the recorded ``entry``,
    or ``None`` when it is the same request."""
    if entry.get("call") != call:
        return "different syscall"
    if canonical(entry.get("body")) != canonical(body):
        return "different arguments"
    return None


def replay_spec(part: AgentRecording, *, name: str | None = None, env: dict[str, str] | None = None, args: list[str] | None = None) -> AgentConfig:
    """The recorded spawn as a replay runs it: same script, arguments, environment, interpreter
    and limits; sandboxed, no network, no grants, never restarted. ``env`` is laid over the
    recorded environment and ``args`` replaces the recorded arguments (to try a change).

    :raises InvalidArguments: the recorded spec is not usable.
    """
    spec = part.spec
    try:
        recorded_env = {str(k): str(v) for k, v in dict(spec.get("env") or {}).items()}
        return AgentConfig(
            name=name or part.name,
            script=str(spec["script"]),
            args=tuple(str(a) for a in (args if args is not None else spec.get("args") or [])),
            env={**recorded_env, **(env or {})},
            sandboxed=True,
            network=False,
            memory_bytes=_opt_int(spec.get("memory_bytes")),
            cpu_quota_us=_opt_int(spec.get("cpu_quota_us")),
            pids=_opt_int(spec.get("pids")),
            restart="never",
            interpreter=str(spec["interpreter"]) if spec.get("interpreter") else None,
            level="minimal",
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidArguments(f"the recorded spawn of {part.name} is not usable: {err}") from None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _exit_facts(exit_info: dict[str, Any] | None) -> dict[str, Any] | None:
    if exit_info is None:
        return None
    return {k: exit_info.get(k) for k in ("reason", "exit_code", "signal")}


@dataclass(eq=False)
class _Track:
    part: AgentRecording
    agent: Agent
    cursor: int = 0
    exit: dict[str, Any] | None = None
    done: bool = False
    #: It asked for more than a recording that stopped while it ran holds (not a divergence).
    past_end: bool = False

    @property
    def calls(self) -> tuple[dict[str, Any], ...]:
        return self.part.calls


@final
class ReplayService:
    """One replay at a time, of one or more agents of a recording."""

    def __init__(self, kernel: ServiceHost) -> None:
        self.kernel = kernel
        self.state = IDLE
        self.speed = "full"
        #: Replayed agents by their id in this kernel: the dispatcher routes their calls here.
        self.tracks: dict[int, _Track] = {}
        self.divergence: dict[str, Any] | None = None
        self.error: str | None = None
        self.recording_id: str | None = None
        self._started = 0.0
        self._finished: float | None = None
        self._spawning = False

    def owns(self, agent: Agent) -> bool:
        """True for agents a replay runs (and for the one being spawned right now)."""
        return self._spawning or agent.id in self.tracks

    # ---- control -------------------------------------------------------------------------------

    def start(self, parts: list[AgentRecording], *, speed: str = "full", recording_id: str | None = None,
              env: dict[str, str] | None = None, args: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Spawn the recorded agents and start answering them.

        :raises Conflict: a replay is running, or an agent's name is in use.
        :raises SpawnFailed: the script or interpreter is not there.
        """
        if self.state == REPLAYING:
            raise Conflict("a replay is running; wait for it to end", details={"state": self.state})
        if speed not in SPEEDS:
            raise InvalidArguments(f"replay.start: speed must be one of {', '.join(SPEEDS)}", details={"argument": "speed"})
        supervisor = self.kernel.supervisor
        specs = [(part, resolve_limits(replay_spec(part, env=env, args=args), self.kernel.config.limits)) for part in parts]
        for _, spec in specs:
            supervisor.check_spawnable(spec)
        self.tracks, self.divergence, self.error = {}, None, None
        self.speed, self.recording_id, self.state = speed, recording_id, REPLAYING
        self._started, self._finished = time.monotonic(), None
        for part, spec in specs:
            self._spawning = True
            try:
                agent = supervisor.spawn(spec, on_started=self._on_started)
            except CloveError as err:
                self._fail(f"{part.name} could not be started: {err.message}")
                raise
            finally:
                self._spawning = False
            self.tracks[agent.id] = _Track(part, agent)
        return self.status()

    def status(self) -> dict[str, Any]:
        ended = self._finished if self._finished is not None else time.monotonic()
        agents = [
            {
                "name": t.agent.name, "agent_id": t.agent.id, "recorded_agent_id": t.part.agent_id,
                "replayed": t.cursor, "total": len(t.calls), "state": t.agent.state.value,
                "exit": _exit_facts(t.exit), "recorded_exit": _exit_facts(t.part.exit),
                "recorded_elapsed": t.part.elapsed, "ran_past_end": t.past_end,
            }
            for t in self.tracks.values()
        ]  # fmt: skip
        recorded = [t.part.elapsed for t in self.tracks.values() if t.part.elapsed is not None]
        return {
            "success": True,
            "state": self.state,
            "speed": self.speed,
            "recording_id": self.recording_id,
            "progress": {"replayed": sum(a["replayed"] for a in agents), "total": sum(a["total"] for a in agents)},
            "agents": agents,
            "divergence": self.divergence,
            "error": self.error,
            "elapsed": round(ended - self._started, 3) if self.tracks else 0.0,
            "recorded_elapsed": max(recorded) if recorded and len(recorded) == len(agents) else None,
        }

    # ---- the dispatcher's hook ---------------------------------------------------------------

    def answer(self, agent: Agent, request: Request) -> Answer:
        """The recorded reply to a replayed agent's request, or the error that stops it."""
        track = self.tracks[agent.id]
        if self.state != REPLAYING:
            return Answer(None, Conflict(f"this replay has ended ({self.state})", details={"state": self.state}), 0.0)
        actual = {"call": request.call, "body": encode(request.body)}
        if track.cursor >= len(track.calls):
            if track.part.exit is None:  # recording stopped while it ran: reproduced as far as it goes
                track.past_end = True
                self.kernel.supervisor.kill(agent, operator=False)
                return Answer(None, Conflict("the recording ends here; the replay stops this agent", details={"index": track.cursor}), 0.0)
            return Answer(None, self._diverge(track, "ran past the end of the recording", None, actual), 0.0)
        entry = track.calls[track.cursor]
        reason = compare(entry, request.call, actual["body"])
        if reason is not None:
            return Answer(None, self._diverge(track, reason, {"call": entry.get("call"), "body": entry.get("body")}, actual), 0.0)
        track.cursor += 1
        delay = float(entry.get("dur") or 0.0) if self.speed == "recorded" else 0.0
        if entry.get("ok"):
            return Answer(decode(entry.get("result")), None, delay)
        error = decode(entry.get("error"))
        return Answer(None, from_wire(error if isinstance(error, dict) else {}), delay)

    # ---- lifecycle -------------------------------------------------------------------------------

    def lifecycle(self, event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        """Supervisor listener: a replayed agent's exit ends its part of the replay."""
        track = self.tracks.get(agent.id)
        if track is None or event_type != "agent.exited" or track.done:
            return
        track.exit, track.done = dict(details), True
        if self.state == REPLAYING:
            if track.cursor < len(track.calls):
                entry = track.calls[track.cursor]
                self._diverge(track, "exited before the end of the recording", {"call": entry.get("call"), "body": entry.get("body")}, {"exit": _exit_facts(details)})
            elif track.part.exit is not None and _exit_facts(track.part.exit) != _exit_facts(details):
                self._diverge(track, "different exit", {"exit": _exit_facts(track.part.exit)}, {"exit": _exit_facts(details)})
            elif all(t.done for t in self.tracks.values()):
                self.state = COMPLETED
        if all(t.done for t in self.tracks.values()) and self._finished is None:
            self._finished = time.monotonic()

    def _on_started(self, agent: Agent, error: CloveError | None) -> None:
        if error is not None and self.state == REPLAYING:
            self._fail(f"{agent.name} could not be started: {error.message}")

    def _diverge(self, track: _Track, reason: str, recorded: dict[str, Any] | None, actual: dict[str, Any] | None) -> CloveError:
        self.state = DIVERGED
        self.divergence = {"agent": track.agent.name, "index": track.cursor, "reason": reason, "recorded": recorded, "actual": actual}
        call = (actual or {}).get("call")
        for prefix, option in _LEFT_OUT:
            if isinstance(call, str) and (call == prefix or call.startswith(prefix + ".")) and not track.part.options.get(option, True):
                self.divergence["hint"] = f"the recording left {prefix} calls out ({option} was off)"
        self._stop_agents()
        return Conflict(f"replay diverged at syscall {track.cursor}: {reason}", details={"index": track.cursor, "reason": reason})

    def _fail(self, message: str) -> None:
        self.state, self.error = FAILED, message
        self._stop_agents()

    def _stop_agents(self) -> None:
        for track in list(self.tracks.values()):
            if not track.done and track.agent.state not in TERMINAL:  # done: its exit is under way
                self.kernel.supervisor.kill(track.agent, operator=False)


def attach(kernel: ServiceRegistry) -> None:
    """Build ``kernel.replay`` and let it hear when its agents exit."""
    service = ReplayService(kernel)
    kernel.replay = service
    kernel.supervisor.listeners.append(service.lifecycle)
