"""The recorder: the full request and reply of every syscall the recorded agents make, in order,
with timestamps, so an agent's run can be replayed exactly (docs/recording.md).

The dispatcher calls :meth:`Recorder.capture` when a request arrives (the body is encoded then,
before a handler can change it, and the request's place in the agent's order is fixed then) and
:meth:`Recorder.record` once its reply has been sent, on the direct and the deferred path alike.
Both are behind one ``recorder.active`` check, so a kernel that does not record pays nothing.

Entries go to ``<state_dir>/recordings/<id>/<agent>.jsonl`` (0600 in a 0700 directory: a
recording holds prompts, message bodies and HTTP headers in full), size-capped and rotated, and
to an in-memory ring of ``max_entries`` that the SDK exports; in that ring each agent's entries
are also bounded by its ``[limits].recording_bytes`` (its oldest go first, counted as
``dropped``; the file keeps them). What is recorded: every syscall of
the chosen agents except ``llm.think``, ``http`` and ``exec`` unless asked for, and the recording
controls themselves (``record.*``, ``replay.*``); with the same filters, the calls of the operator
session that started the recording (when it named no agents), which an operator's replay can
re-execute. Their entries carry ``session_id`` instead of ``agent_id``, in
``_session-<id>.jsonl`` (a name no agent can have: agent names start alphanumeric).
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

from clove.config import AgentConfig, RecordingSection
from clove.errors import CloveError, Conflict
from clove.kernel.core.agents import TERMINAL, Agent
from clove.kernel.services.recording.file import RotatingJsonl
from clove.kernel.services.recording.format import FORMAT_VERSION, dumps, encode
from clove.wire import Request

if TYPE_CHECKING:
    from clove.kernel.services.host import ServiceRegistry

__all__ = ["Pending", "Recorder", "RecordingOptions", "attach", "spec_entry"]

#: Calls never recorded: the controls of recording and replay (an export would nest itself).
_CONTROL_PREFIXES: Final = ("record.", "replay.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingOptions:
    """What one recording keeps. ``agents`` empty: every agent."""

    include_think: bool = False
    include_http: bool = False
    include_exec: bool = False
    agents: tuple[str, ...] = ()
    max_entries: int = 50_000
    max_bytes: int = 64 << 20
    rotate: int = 3

    @classmethod
    def from_section(cls, section: RecordingSection, **overrides: Any) -> RecordingOptions:
        values = {k: v for k, v in asdict(section).items() if k != "enabled"}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["agents"] = tuple(values["agents"])
        return cls(**values)

    def wants_call(self, call: str) -> bool:
        if call.startswith(_CONTROL_PREFIXES):
            return False
        if call == "llm.think":
            return self.include_think
        if call == "http" or call.startswith("http."):
            return self.include_http
        if call == "exec" or call.startswith("exec."):
            return self.include_exec
        return True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agents": list(self.agents)}


@final
class Pending:
    """A request caught on arrival, waiting for its reply."""

    __slots__ = ("agent_id", "body", "call", "i", "incarnation", "name", "recording", "started")

    def __init__(self, recording: str, agent_id: int, name: str | None, incarnation: int, i: int, started: int, call: str, body: Any) -> None:
        self.recording = recording
        self.agent_id = agent_id  # an operator session's id when name is None
        self.name = name
        self.incarnation = incarnation
        self.i = i
        self.started = started
        self.call = call
        self.body = body


def spec_entry(spec: AgentConfig) -> dict[str, Any]:
    """How the agent was started, as the replay needs it (JSON-safe)."""
    return {
        "name": spec.name, "script": spec.script, "args": list(spec.args), "env": dict(spec.env),
        "sandboxed": spec.sandboxed, "network": spec.network, "memory_bytes": spec.memory_bytes,
        "cpu_quota_us": spec.cpu_quota_us, "pids": spec.pids, "restart": spec.restart,
        "max_restarts": spec.max_restarts, "restart_window": spec.restart_window,
        "interpreter": spec.interpreter, "working_dir": spec.working_dir, "level": spec.level,
        "permissions": encode(spec.permissions), "devices": sorted(spec.devices),
    }  # fmt: skip


@final
class Recorder:
    """Records while :attr:`active`; keeps the last recording's ring for export once stopped.

    :param root: ``<state_dir>/recordings``.
    :param defaults: the ``[recording]`` table (``max_bytes`` and ``rotate`` always come from it).
    :param owned: true for agents that a replay runs: never recorded.
    :param bytes_of: an agent's (by name; ``None`` for an operator session) bound on its
        entries' bytes in the ring (its ``[limits].recording_bytes``); without it, the ring is
        bounded by count alone.
    """

    def __init__(
        self, root: Path, defaults: RecordingSection, *, owned: Callable[[Agent], bool] | None = None,
        bytes_of: Callable[[str | None], int] | None = None,
    ) -> None:
        self.root = root
        self.bytes_of = bytes_of
        self.defaults = defaults
        self.owned: Callable[[Agent], bool] = owned if owned is not None else (lambda agent: False)
        self.active = False
        self.options = RecordingOptions.from_section(defaults)
        self.id: str | None = None
        self.path: Path | None = None
        self.started_at = 0.0
        self.stopped_at: float | None = None
        self.recorded = 0
        self._t0 = 0
        self._seq = 0
        self._meta = ""
        self._headers: dict[str, list[tuple[int, int, str]]] = {}  # name → (seq, agent id, line)
        self._headed: set[int] = set()
        self._sessions: set[int] = set()  # the operator session recorded (the one that started it)
        # [seq, agent id, is syscall, line]; line None: dropped at its agent's byte bound
        self._ring: deque[list[Any]] = deque(maxlen=1)
        self._mine: dict[int, deque[list[Any]]] = {}  # agent id → its live entries in the ring, oldest first
        self._bytes: dict[int, int] = {}  # agent id → bytes of those entries' lines
        self._held = 0
        self._files: dict[str, RotatingJsonl] = {}
        self._order: dict[int, list[int]] = {}  # agent id → [incarnation, next i]
        self._wanted: dict[str, bool] = {}

    # ---- control -----------------------------------------------------------------------------

    def start(self, options: RecordingOptions, live: Iterable[Agent] = (), session: int | None = None) -> dict[str, Any]:
        """Start a new recording; agents already running get a spawn entry whose next
        incarnation is the first one recorded whole. ``session``: the operator session starting
        it, recorded too unless ``options.agents`` names the agents to record.

        :raises Conflict: a recording is running.
        """
        if self.active:
            raise Conflict(f"already recording ({self.id}); stop it first", details={"recording_id": self.id})
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        rid = time.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
        path = self.root / rid
        path.mkdir(mode=0o700)
        self.id, self.path, self.options = rid, path, options
        self.started_at, self.stopped_at, self._t0 = time.time(), None, time.perf_counter_ns()
        self.recorded = self._seq = self._held = 0
        self._headers, self._headed, self._files, self._order, self._wanted = {}, set(), {}, {}, {}
        self._sessions = {session} if session is not None and not options.agents else set()
        self._ring = deque(maxlen=options.max_entries)
        self._mine, self._bytes = {}, {}
        self._meta = dumps({"seq": 0, "kind": "recording", "version": FORMAT_VERSION, "id": rid, "started_at": self.started_at, "options": options.to_dict()})
        self.active = True
        for agent in live:
            if agent.state not in TERMINAL and self._wants_agent(agent.name) and not self.owned(agent):
                self._header(agent, from_incarnation=agent.incarnation + 1)
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop recording and close the files; the ring stays exportable until the next start."""
        if self.active:
            self.active = False
            self.stopped_at = time.time()
            self.close()
        return self.status()

    def status(self, export: bool = False) -> dict[str, Any]:
        ended = self.stopped_at if self.stopped_at is not None else time.time()
        result: dict[str, Any] = {
            "success": True,
            "state": "RECORDING" if self.active else "IDLE",
            "active": self.active,  # the original Clove SDK's flag
            "recording_id": self.id,
            "path": str(self.path) if self.path is not None else None,
            "started_at": self.started_at if self.id else None,
            "duration": round(ended - self.started_at, 3) if self.id else 0.0,
            "entry_count": self._held,
            "recorded": self.recorded,
            "dropped": self.recorded - self._held,
            "bytes": sum(f.written for f in self._files.values()),
            "agents": sorted(self._headers),
            "sessions": sorted(self._sessions),
            "options": self.options.to_dict(),
        }
        if export:
            result["recording"] = self.export()
        return result

    def export(self) -> str:
        """The recording as a JSON array: its header, every spawn entry, then the ring."""
        if self.id is None:
            return "[]"
        headers = sorted(h for rows in self._headers.values() for h in rows)
        lines = heapq.merge(((seq, line) for seq, _, line in headers), ((seq, line) for seq, _, _, line in self._ring if line is not None))
        return "[" + ",".join([self._meta, *(line for _, line in lines)]) + "]"

    def export_agent(self, name: str) -> list[dict[str, Any]] | None:
        """One agent's part of the current recording (header, spawn entries, its entries in the
        ring) as fresh JSON-safe dicts, or ``None`` if it is not recorded. Post-mortem bundles
        store it as their ``recording.jsonl``."""
        headers = self._headers.get(name)
        if self.id is None or not headers:
            return None
        ids = {agent_id for _, agent_id, _ in headers}
        lines = [self._meta, *(line for _, _, line in headers), *(line for _, agent_id, _, line in self._ring if agent_id in ids and line is not None)]
        return [json.loads(line) for line in lines]

    def flush(self) -> None:
        for file in self._files.values():
            file.flush()

    def close(self) -> None:
        for file in self._files.values():
            file.close()

    # ---- the dispatcher's hooks --------------------------------------------------------------

    def capture(self, agent: Agent, request: Request, started: int) -> Pending | None:
        """The request as it arrived, if this recording keeps it (else ``None``)."""
        if agent.id not in self._headed or not self._wants(request.call):
            return None
        order = self._order.get(agent.id)
        if order is None or order[0] != agent.incarnation:
            order = self._order[agent.id] = [agent.incarnation, 0]
        i = order[1]
        order[1] = i + 1
        assert self.id is not None  # noqa: S101 - active implies started
        return Pending(self.id, agent.id, agent.name, agent.incarnation, i, started, request.call, encode(request.body))

    def capture_session(self, session_id: int, request: Request, started: int) -> Pending | None:
        """An operator session's request as it arrived, if this recording keeps it."""
        if session_id not in self._sessions or not self._wants(request.call):
            return None
        order = self._order.setdefault(session_id, [0, 0])
        i, order[1] = order[1], order[1] + 1
        assert self.id is not None  # noqa: S101 - sessions are recorded only once started
        return Pending(self.id, session_id, None, 0, i, started, request.call, encode(request.body))

    def record(self, pending: Pending, result: Any, error: CloveError | None) -> None:
        """Keep the request with the reply that was sent for it."""
        finished = time.perf_counter_ns()
        if not self.active or pending.recording != self.id:
            return  # answered after this recording stopped
        self._seq += 1
        who: dict[str, Any] = (
            {"session_id": pending.agent_id} if pending.name is None
            else {"agent_id": pending.agent_id, "agent_name": pending.name, "incarnation": pending.incarnation}
        )  # fmt: skip
        entry: dict[str, Any] = {
            "seq": self._seq, "kind": "syscall", **who, "i": pending.i, "t": round((pending.started - self._t0) / 1e9, 6),
            "dur": round((finished - pending.started) / 1e9, 6), "call": pending.call, "body": pending.body,
            "ok": error is None,
        }  # fmt: skip
        if error is None:
            entry["result"] = encode(result)
        else:
            entry["error"] = {"code": error.code, "message": error.message, "details": encode(error.details)}
        self.recorded += 1
        self._append(pending.agent_id, pending.name, True, dumps(entry))

    def lifecycle(self, event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        """Supervisor listener: spawn entries for new agents, exit entries when one ends."""
        if not self.active or self.owned(agent):
            return
        if event_type == "agent.created" and self._wants_agent(agent.name):
            self._header(agent, from_incarnation=1)
        elif event_type == "agent.exited" and agent.id in self._headed:
            self._seq += 1
            entry = {"seq": self._seq, "kind": "exit", "agent_id": agent.id, "agent_name": agent.name, "incarnation": agent.incarnation, "t": self._now(), "exit": encode(details)}
            self._append(agent.id, agent.name, False, dumps(entry))

    # ---- internals -----------------------------------------------------------------------------

    def _wants(self, call: str) -> bool:
        wanted = self._wanted.get(call)
        if wanted is None:
            wanted = self._wanted[call] = self.options.wants_call(call)
        return wanted

    def _now(self) -> float:
        return round((time.perf_counter_ns() - self._t0) / 1e9, 6)

    def _wants_agent(self, name: str) -> bool:
        return not self.options.agents or name in self.options.agents

    def _header(self, agent: Agent, *, from_incarnation: int) -> None:
        self._seq += 1
        entry = {"seq": self._seq, "kind": "spawn", "agent_id": agent.id, "agent_name": agent.name, "t": self._now(), "from_incarnation": from_incarnation, "spec": spec_entry(agent.spec)}
        line = dumps(entry)
        self._headers.setdefault(agent.name, []).append((self._seq, agent.id, line))
        self._headed.add(agent.id)
        file = self._files.get(agent.name)
        if file is None:
            self._file(agent.name).open()  # its preamble holds this header
        else:
            file.write(line)

    def _file(self, name: str) -> RotatingJsonl:
        file = self._files.get(name)
        if file is None:
            assert self.path is not None  # noqa: S101
            file = self._files[name] = RotatingJsonl(
                self.path / f"{name}.jsonl",
                max_bytes=self.options.max_bytes,
                rotate=self.options.rotate,
                preamble=lambda: [self._meta, *(line for _, _, line in self._headers.get(name, ()))],
            )
        return file

    def _append(self, agent_id: int, name: str | None, syscall: bool, line: str) -> None:
        """Keep one line in the ring and its file; ``name`` ``None``: an operator session's."""
        ring = self._ring
        if len(ring) == ring.maxlen and ring[0][3] is not None:
            self._forget(ring[0])  # the ring is full: its oldest goes (it is its agent's oldest too)
        entry = [self._seq, agent_id, syscall, line]
        ring.append(entry)
        mine = self._mine.get(agent_id)
        if mine is None:
            mine = self._mine[agent_id] = deque()
        mine.append(entry)
        self._bytes[agent_id] = self._bytes.get(agent_id, 0) + len(line)
        if syscall:
            self._held += 1
        if self.bytes_of is not None:
            bound = self.bytes_of(name)
            while mine and self._bytes[agent_id] > bound:  # over its bytes: its own oldest go
                self._forget(mine[0])
        self._file(name if name is not None else f"_session-{agent_id}").write(line)

    def _forget(self, entry: list[Any]) -> None:
        """Drop a live entry (its agent's oldest) from memory; the file keeps it."""
        agent_id = entry[1]
        self._mine[agent_id].popleft()
        self._bytes[agent_id] -= len(entry[3])
        if entry[2]:
            self._held -= 1
        entry[3] = None

    def held(self) -> dict[str, int]:
        """Bytes of recorded lines held in memory for export."""
        return {"recording_bytes": sum(self._bytes.values())}

    def held_by(self, agent_id: int) -> dict[str, int]:
        return {"recording_bytes": self._bytes.get(agent_id, 0)}


def attach(kernel: ServiceRegistry) -> None:
    """Build ``kernel.recorder``; start recording at boot when ``[recording].enabled``."""
    section = kernel.config.recording
    limits = kernel.config.limits
    recorder = Recorder(
        kernel.state_dir / "recordings", section, owned=lambda agent: kernel.replay.owns(agent),
        bytes_of=lambda name: limits.for_agent(name).recording_bytes,
    )
    kernel.recorder = recorder
    kernel.supervisor.listeners.append(recorder.lifecycle)
    kernel.loop.housekeeping.append(recorder.flush)

    def stop_at_shutdown() -> None:  # after the agents' exits were recorded; closes the files
        recorder.stop()

    kernel.on_shutdown.append(stop_at_shutdown)
    if section.enabled:
        recorder.start(RecordingOptions.from_section(section))
