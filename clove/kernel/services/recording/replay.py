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
was recorded: it "ran past the end", which is not a divergence. Nor is the end of a recording
whose run a signal ended (a ``kill -9``, the OOM killer): once every recorded call is answered,
the agent is stopped when it asks for more (the call it was in when killed) or when as much
time has passed as the recorded run lived after its last reply (at full speed at most
``TAIL_CAP_S``), unless it ends by itself first; the replay reports where the recorded run ended.

Every call counts, ``hello`` and ``noop`` included: they are the agent's own behaviour, and
``hello``'s recorded answer (its id, its name) is what the agent computed with. The sandbox is
always on and has no network, whatever the recording says; the replayed agent is never
restarted.

An operator's replay, which performs an operator session's recorded calls again instead
(:mod:`.rerun`), runs here too: one replay at a time, of either kind.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, final

from clove.config import AgentConfig
from clove.errors import CloveError, Conflict, InvalidArguments, from_wire
from clove.kernel.core.agents import TERMINAL, Agent
from clove.kernel.services.recording.format import AgentRecording, canonical, decode, encode
from clove.kernel.services.recording.rerun import Perform, Rerun, operator_calls
from clove.kernel.supervision.limits import resolve as resolve_limits
from clove.wire import Request

if TYPE_CHECKING:
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import ServiceHost, ServiceRegistry

__all__ = ["Answer", "ReplayService", "SPEEDS", "attach", "compare", "replay_spec"]

SPEEDS: Final = ("full", "recorded")
IDLE, REPLAYING, DIVERGED, COMPLETED, FAILED = "IDLE", "REPLAYING", "DIVERGED", "COMPLETED", "FAILED"
#: The calls a recording leaves out unless asked, and the option that would have kept them.
_LEFT_OUT: Final = (("llm.think", "include_think"), ("http", "include_http"), ("exec", "include_exec"))
#: After its last recorded reply, a replayed agent whose recorded run a signal ended is given as
#: long as that run lived on, at full speed at most TAIL_CAP_S, plus TAIL_GRACE_S.
TAIL_CAP_S: Final = 5.0
TAIL_GRACE_S: Final = 0.5


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


def ended_by_signal(exit_info: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{reason, signal, signal_name}`` when the recorded exit was by a signal, else ``None``."""
    number = (exit_info or {}).get("signal")
    if not isinstance(number, int) or isinstance(number, bool):
        return None
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return {"reason": (exit_info or {}).get("reason"), "signal": number, "signal_name": name}


@dataclass(eq=False)
class _Track:
    part: AgentRecording
    agent: Agent
    cursor: int = 0
    exit: dict[str, Any] | None = None
    done: bool = False
    #: It asked for more than a recording that stopped while it ran holds (not a divergence).
    past_end: bool = False
    #: Stopped at the end of a recording whose run a signal ended (not a divergence either).
    at_signal_end: bool = False

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
        #: How an operator's replay performs a call: the dispatcher's, handed in at boot.
        self.perform: Perform | None = None
        #: The operator's replay, when the last one started was one.
        self.rerun: Rerun | None = None

    def owns(self, agent: Agent) -> bool:
        """True for agents a replay runs (and for the one being spawned right now)."""
        return self._spawning or agent.id in self.tracks

    @property
    def running(self) -> bool:
        return self.state == REPLAYING or (self.rerun is not None and self.rerun.running)

    # ---- control -------------------------------------------------------------------------------

    def start(self, parts: list[AgentRecording], *, speed: str = "full", recording_id: str | None = None,
              env: dict[str, str] | None = None, args: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Spawn the recorded agents and start answering them.

        :raises Conflict: a replay is running, or an agent's name is in use.
        :raises SpawnFailed: the script or interpreter is not there.
        """
        self._check_idle(speed)
        supervisor = self.kernel.supervisor
        specs = [(part, resolve_limits(replay_spec(part, env=env, args=args), self.kernel.config.limits)) for part in parts]
        for _, spec in specs:
            supervisor.check_spawnable(spec)
        self.tracks, self.divergence, self.error, self.rerun = {}, None, None, None
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

    def start_rerun(self, entries: list[dict[str, Any]], session: OperatorSession, *, speed: str = "full", recording_id: str | None = None) -> dict[str, Any]:
        """Perform again, as operator ``session``, the operator calls a recording holds.

        :raises Conflict: a replay is running.
        :raises NotFound: the recording holds no operator calls.
        :raises InvalidArguments: more than the replay's bounds.
        """
        self._check_idle(speed)
        if self.perform is None:
            raise Conflict("this kernel cannot perform calls for a replay", details={"state": self.state})
        calls = operator_calls(entries)
        self.tracks, self.divergence, self.error, self.state = {}, None, None, IDLE
        self.rerun = Rerun(calls, session=session, perform=self.perform, loop=self.kernel.loop, speed=speed, recording_id=recording_id)
        return self.rerun.status()

    def session_closed(self, session: OperatorSession) -> None:
        """Sessions hook: an operator's replay ends with the session it runs as."""
        if self.rerun is not None and self.rerun.session is session:
            self.rerun.stop("the operator session that started the replay closed")

    def _check_idle(self, speed: str) -> None:
        if self.running:
            raise Conflict("a replay is running; wait for it to end", details={"state": REPLAYING})
        if speed not in SPEEDS:
            raise InvalidArguments(f"replay.start: speed must be one of {', '.join(SPEEDS)}", details={"argument": "speed"})

    def status(self) -> dict[str, Any]:
        if self.rerun is not None:
            return self.rerun.status()
        ended = self._finished if self._finished is not None else time.monotonic()
        agents = [
            {
                "name": t.agent.name, "agent_id": t.agent.id, "recorded_agent_id": t.part.agent_id,
                "replayed": t.cursor, "total": len(t.calls), "state": t.agent.state.value,
                "exit": _exit_facts(t.exit), "recorded_exit": _exit_facts(t.part.exit),
                "recorded_elapsed": t.part.elapsed, "ran_past_end": t.past_end,
                "recorded_end": ended_by_signal(t.part.exit) if t.at_signal_end else None,
            }
            for t in self.tracks.values()
        ]  # fmt: skip
        recorded = [t.part.elapsed for t in self.tracks.values() if t.part.elapsed is not None]
        return {
            "success": True,
            "state": self.state,
            "active": self.state == REPLAYING,
            "mode": "agents",
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
            end = ended_by_signal(track.part.exit)
            if end is not None:  # the call it was in when the signal ended the recorded run
                self._stop_at_signal_end(track)
                return Answer(None, Conflict(f"the recorded run ended here, by {end['signal_name']}; the replay stops this agent", details={"index": track.cursor}), 0.0)
            return Answer(None, self._diverge(track, "ran past the end of the recording", None, actual), 0.0)
        entry = track.calls[track.cursor]
        reason = compare(entry, request.call, actual["body"])
        if reason is not None:
            return Answer(None, self._diverge(track, reason, {"call": entry.get("call"), "body": entry.get("body")}, actual), 0.0)
        track.cursor += 1
        delay = float(entry.get("dur") or 0.0) if self.speed == "recorded" else 0.0
        if track.cursor == len(track.calls):
            self._watch_tail(track, delay)
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
            if track.at_signal_end:
                pass  # stopped where a signal ended the recorded run: its own exit is the replay's doing
            elif track.cursor < len(track.calls):
                entry = track.calls[track.cursor]
                self._diverge(track, "exited before the end of the recording", {"call": entry.get("call"), "body": entry.get("body")}, {"exit": _exit_facts(details)})
            elif track.part.exit is not None and _exit_facts(track.part.exit) != _exit_facts(details):
                self._diverge(track, "different exit", {"exit": _exit_facts(track.part.exit)}, {"exit": _exit_facts(details)})
            if self.state == REPLAYING and all(t.done for t in self.tracks.values()):
                self.state = COMPLETED
        if all(t.done for t in self.tracks.values()) and self._finished is None:
            self._finished = time.monotonic()

    def _on_started(self, agent: Agent, error: CloveError | None) -> None:
        if error is not None and self.state == REPLAYING:
            self._fail(f"{agent.name} could not be started: {error.message}")
        track = self.tracks.get(agent.id)
        if error is None and track is not None and not track.calls:  # a recorded run with no syscall
            self._watch_tail(track, 0.0)

    def _watch_tail(self, track: _Track, after: float) -> None:
        """Every recorded call is answered (the last reply leaves in ``after`` s): if a signal
        ended the recorded run, give the agent as long as that run lived on, then stop it."""
        if ended_by_signal(track.part.exit) is None:
            return
        tail = track.part.tail or 0.0
        wait = after + (tail if self.speed == "recorded" else min(tail, TAIL_CAP_S)) + TAIL_GRACE_S

        def over() -> None:
            if self.state == REPLAYING and self.tracks.get(track.agent.id) is track and not track.done:
                self._stop_at_signal_end(track)

        self.kernel.loop.call_later(wait, over)

    def _stop_at_signal_end(self, track: _Track) -> None:
        if not track.at_signal_end:
            track.at_signal_end = True
            self.kernel.supervisor.kill(track.agent, operator=False)

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
    """Build ``kernel.replay`` and let it hear when its agents exit and when sessions close (its
    ``perform`` is handed in by the kernel, from the dispatcher)."""
    service = ReplayService(kernel)
    kernel.replay = service
    kernel.supervisor.listeners.append(service.lifecycle)
    kernel.sessions.on_close.append(service.session_closed)
