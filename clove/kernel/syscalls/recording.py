"""Recording and replay syscalls (operators: the ``admin`` right), and the kernel's clock and
random seeds (``sys.time``, ``sys.random``: every agent), which exist so an agent that wants to
be replayable takes time and randomness through the kernel, where they are recorded and
replayed, rather than from its own process (docs/recording.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Final, final

from clove.config import validate_name
from clove.errors import InvalidArguments, PermissionDenied
from clove.kernel.services.recording.format import checked_entries, load_entries, parse_entries, select_agents
from clove.kernel.services.recording.recorder import RecordingOptions
from clove.kernel.services.recording.replay import SPEEDS
from clove.kernel.syscalls.base import NoArgs, Syscall, SyscallContext

MAX_ENTRIES_LIMIT: Final = 10_000_000


@dataclass(frozen=True, slots=True)
class RecordStartRequest:
    include_think: bool | None = None
    include_http: bool | None = None
    include_exec: bool | None = None
    filter_agents: list[str] | None = None
    max_entries: int | None = None


@final
class RecordStart(Syscall):
    """``record.start {include_think?, include_http?, include_exec?, filter_agents?,
    max_entries?}`` → the status (``state: "RECORDING"``). Unset options come from the config's
    ``[recording]`` table. An operator that names no agents is recorded too (its own session's
    calls, for an operator's replay). :raises conflict: already recording."""

    name = "record.start"
    category = "SECURITY"
    Request = RecordStartRequest

    def execute(self, ctx: SyscallContext, req: RecordStartRequest) -> dict[str, Any]:
        if req.max_entries is not None and not 1 <= req.max_entries <= MAX_ENTRIES_LIMIT:
            raise InvalidArguments(f"record.start: max_entries must be in [1, {MAX_ENTRIES_LIMIT}]", details={"argument": "max_entries"})
        agents = None
        if req.filter_agents is not None:
            try:
                agents = tuple(validate_name(name) for name in req.filter_agents)
            except ValueError as err:
                raise InvalidArguments(f"record.start: filter_agents: {err}", details={"argument": "filter_agents"}) from None
        recorder = ctx.kernel.recorder
        options = RecordingOptions.from_section(
            recorder.defaults, include_think=req.include_think, include_http=req.include_http,
            include_exec=req.include_exec, agents=agents, max_entries=req.max_entries,
        )  # fmt: skip
        session = ctx.session.id if ctx.session is not None else None
        return recorder.start(options, live=list(ctx.kernel.supervisor.table), session=session)


@final
class RecordStop(Syscall):
    """``record.stop`` → the status (``state: "IDLE"``); the files are closed and the last
    recording stays exportable until the next start."""

    name = "record.stop"
    category = "SECURITY"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        return ctx.kernel.recorder.stop()


@dataclass(frozen=True, slots=True)
class RecordStatusRequest:
    export: bool = False


@final
class RecordStatus(Syscall):
    """``record.status {export?}`` → ``{success, state, recording_id, path, entry_count,
    recorded, dropped, bytes, agents, options, ...}``; with ``export``, ``recording`` holds the
    entries as a JSON array (text)."""

    name = "record.status"
    Request = RecordStatusRequest

    def execute(self, ctx: SyscallContext, req: RecordStatusRequest) -> dict[str, Any]:
        return ctx.kernel.recorder.status(export=req.export)


@dataclass(frozen=True, slots=True)
class ReplayStartRequest:
    recording: str | list[Any] | None = None
    path: str | None = None
    agent: str | None = None
    speed: str = "full"
    env: dict[str, str] | None = None
    args: list[str] | None = None
    mode: str | None = None


#: ``agents``: re-run recorded agents, answered from the recording; ``execute``: perform an
#: operator session's recorded calls again, as the caller's session.
MODES: Final = ("agents", "execute")


@final
class ReplayStart(Syscall):
    """``replay.start {recording | path, agent?, speed?, env?, args?, mode?}`` → the replay's
    status (``state: "REPLAYING"``). ``recording`` is the export (JSON text or a list of
    entries) or JSONL text; ``path`` a recording file or directory, or a post-mortem bundle, on
    the kernel's machine. ``agent`` names the agent to replay (default: every recorded one).
    ``env`` is laid over the recorded environment and ``args`` replaces the recorded
    arguments, to see where a change makes the agent diverge. ``mode`` (default: ``agents``
    when the recording holds a spawned agent or ``agent``, ``env`` or ``args`` is given, else
    ``execute``): see :data:`MODES`; ``execute`` is for operators only.

    :raises notfound: no such file, or no such agent in the recording.
    :raises proto.invalid_args: not a recording, or the agent's part is incomplete.
    :raises conflict: a replay is running, or the agent's name is in use.
    """

    name = "replay.start"
    category = "AGENT_LIFECYCLE"
    Request = ReplayStartRequest

    def execute(self, ctx: SyscallContext, req: ReplayStartRequest) -> dict[str, Any]:
        if (req.recording is None) == (req.path is None):
            raise InvalidArguments("replay.start: give either recording or path", details={"argument": "recording"})
        if req.speed not in SPEEDS:
            raise InvalidArguments(f"replay.start: speed must be one of {', '.join(SPEEDS)}", details={"argument": "speed"})
        if req.mode is not None and req.mode not in MODES:
            raise InvalidArguments(f"replay.start: mode must be one of {', '.join(MODES)}", details={"argument": "mode"})
        if req.path is not None:
            if not os.path.isabs(req.path):
                raise InvalidArguments(f"replay.start: path must be absolute, got {req.path!r}", details={"argument": "path"})
            entries = load_entries(req.path)
        elif isinstance(req.recording, str):
            entries = parse_entries(req.recording)
        else:
            entries = checked_entries(req.recording)
        meta = next((e for e in entries if e["kind"] == "recording"), {})
        rid = meta.get("id") if isinstance(meta.get("id"), str) else None
        agents_asked = req.agent is not None or req.env is not None or req.args is not None
        mode = req.mode or ("agents" if agents_asked or any(e["kind"] == "spawn" for e in entries) else "execute")
        if mode == "execute":
            if ctx.session is None:
                raise PermissionDenied("only an operator session performs recorded calls again (mode execute)", details={"mode": mode})
            return ctx.kernel.replay.start_rerun(entries, ctx.session, speed=req.speed, recording_id=rid)
        parts = select_agents(entries, req.agent)
        return ctx.kernel.replay.start(parts, speed=req.speed, recording_id=rid, env=req.env, args=req.args)


@final
class ReplayStatus(Syscall):
    """``replay.status`` → ``{success, state (IDLE, REPLAYING, DIVERGED, COMPLETED, FAILED),
    active, mode, speed, progress: {replayed, total}, agents, divergence, elapsed,
    recorded_elapsed}``; an operator's replay (mode ``execute``) adds ``calls`` (each call's
    ``outcome``: match, diverged or skipped) and their counts."""

    name = "replay.status"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        return ctx.kernel.replay.status()


@final
class SysTime(Syscall):
    """``sys.time`` → ``{success, time}``: the kernel's ``time.time()``, recorded and replayed."""

    name = "sys.time"
    right = "session"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        return {"success": True, "time": time.time()}


@final
class SysRandom(Syscall):
    """``sys.random`` → ``{success, seed}``: a fresh 64-bit seed from ``os.urandom``, recorded
    and replayed, for an agent's own ``random.Random(seed)``."""

    name = "sys.random"
    right = "session"

    def execute(self, ctx: SyscallContext, req: NoArgs) -> dict[str, Any]:
        return {"success": True, "seed": int.from_bytes(os.urandom(8), "big")}


SYSCALLS: tuple[type[Syscall], ...] = (RecordStart, RecordStop, RecordStatus, ReplayStart, ReplayStatus, SysTime, SysRandom)
