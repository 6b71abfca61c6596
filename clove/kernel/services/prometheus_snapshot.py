"""The immutable snapshot the Prometheus exporter serves, and its builder on the kernel's loop.

The loop builds a :class:`Snapshot` on a timer (``[metrics] interval``), :data:`SWEEP_SLICE`
agents a loop turn (:meth:`SnapshotBuilder.begin`, ``advance``, ``finish``), from what the
kernel already keeps (the agents table, the dispatcher's per-caller kernel time, the device
broker's counters, the interlocks, the LLM gateway) and from
:class:`~.prometheus_tally.JournalTally`.
A snapshot holds only tuples, strings and numbers: the exporter's thread reads it without a
lock and never touches kernel state.

Agents come and go, so an agent's series are bounded: an agent that has ended (or was removed)
is still served, its counters frozen, for ``forget_after`` seconds, then dropped; at most
``max_agent_series`` agents are served at once (the longest-dead are dropped first, then the
newest; :attr:`Snapshot.agents_dropped` counts them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from clove.kernel.core.agents import TERMINAL, AgentState, ExitReason
from clove.kernel.services.prometheus_tally import OTHER, Histogram, JournalTally

if TYPE_CHECKING:
    from clove.config.prometheus import MetricsSection
    from clove.kernel.core.agents import Agent

__all__ = ["EXIT_REASONS", "SWEEP_SLICE", "AgentRow", "DeviceRow", "InterlockRow", "Snapshot", "SnapshotBuilder", "Sources"]

EXIT_REASONS: Final = frozenset(r.value for r in ExitReason)
#: Agents tracked per loop turn while a snapshot is built (a few µs each).
SWEEP_SLICE: Final = 128


class AgentRow(NamedTuple):
    """One agent's series (a tuple: a thousand of them are built every interval)."""

    id: int
    name: str
    live: bool
    restarts: int
    pid: int | None
    #: The agent's cgroup directories (one per v1 hierarchy, or one v2 directory), read by the
    #: exporter's thread at scrape time; empty on the rlimit fallback or when not running.
    cgroup_dirs: tuple[str, ...]
    syscalls: int = 0
    denials: int = 0
    kernel_time_us: int = 0
    kernel_calls: int = 0
    rate_throttled: int = 0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    oom_kills: int = 0


class DeviceRow(NamedTuple):
    name: str
    driver: str
    state: str
    host_restarts: int
    calls: int
    errors: int
    denied: int
    dropped: int
    delivered: int


class InterlockRow(NamedTuple):
    name: str
    engaged: bool
    engagements: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape serves (besides what the exporter reads from cgroup files)."""

    monotonic: float
    version: str
    started_at: float
    agent_states: tuple[tuple[str, int], ...]
    agents: tuple[AgentRow, ...]
    agents_dropped: int
    exits: tuple[tuple[str, int], ...]
    syscalls: tuple[tuple[str, str, int], ...]
    denials: tuple[tuple[str, str, int], ...]
    operator_kernel_time_us: int
    devices: tuple[DeviceRow, ...]
    interlocks: tuple[InterlockRow, ...]
    llm_enabled: bool
    llm_queued: int
    llm_running: int
    llm_tokens: tuple[tuple[str, int], ...]
    llm_requests: tuple[tuple[str, int], ...]
    llm_wait_bounds: tuple[float, ...]
    llm_wait_counts: tuple[int, ...]
    llm_wait_sum: float
    journal_last_id: int
    journal_write_errors: int
    journal_unobserved: int
    #: 1 connected, 0 not (or no fleet configured): see :attr:`SnapshotBuilder.fleet_connected`.
    fleet_connected: int


@dataclass(slots=True)
class _Sweep:
    """One snapshot's walk over the agents table, a slice per loop turn."""

    agents: list[Agent]
    kernel_time: dict[Any, dict[str, Any]]
    operator_us: int
    states: dict[str, int]
    done: int = 0
    present: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Track:
    """What the builder remembers of one agent between snapshots (frozen once it has ended)."""

    row: AgentRow
    ended_at: float | None = None
    #: (incarnation, pid) the row's cgroup dirs belong to: they are looked up once per start.
    started: tuple[int, int | None] = (0, None)


@dataclass(slots=True)
class Sources:
    """Where the builder reads the kernel's figures: each a callable run on the loop, so the
    builder can be tested with fakes of exactly these."""

    agents: Callable[[], list[Agent]]
    cgroup_dirs: Callable[[Agent], tuple[str, ...]]
    kernel_time: Callable[[], list[dict[str, Any]]]
    devices: Callable[[], list[dict[str, Any]]] = list
    interlocks: Callable[[], list[dict[str, Any]]] = list
    llm: Callable[[], dict[str, Any] | None] = lambda: None
    journal_figures: Callable[[], tuple[int, int]] = lambda: (0, 0)
    version: str = ""
    started_at: float = 0.0


class SnapshotBuilder:
    """Builds :class:`Snapshot` values on the loop (see the module docstring)."""

    def __init__(self, settings: MetricsSection, sources: Sources, tally: JournalTally,
                 *, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.settings = settings
        self.sources = sources
        self.tally = tally
        self.clock = clock
        self.tracks: dict[int, _Track] = {}
        self.engagements: dict[str, int] = {}
        self.agents_dropped = 0
        #: Agents still in the table whose series were dropped (forgotten or over the cap): not
        #: tracked again, or a dead agent kept in the table would come back every snapshot.
        self._gone: set[int] = set()
        self._sweep: _Sweep | None = None
        #: The fleet's hook (clove/fleet): set it to a callable, run on the loop, that says whether
        #: this board's fleet link is up. ``None`` (no fleet): the gauge reads 0.
        self.fleet_connected: Callable[[], bool] | None = None

    def interlock_engaged(self, name: str, known: frozenset[str]) -> None:
        """An INTERLOCK_ENGAGED event (names outside the config are ignored: bounded labels)."""
        if name in known:
            self.engagements[name] = self.engagements.get(name, 0) + 1

    def build(self) -> Snapshot:
        """A whole snapshot at once (tests, benchmarks; the kernel sweeps in slices)."""
        self.begin()
        while not self.advance(1 << 30):
            pass
        return self.finish()

    # A sweep spreads the per-agent work of one snapshot over loop turns: begin(), then
    # advance(SLICE) after each turn until it returns True, then finish().

    def begin(self) -> None:
        """Start a sweep: take the agents table and the per-caller kernel time as they are now."""
        flows = self.sources.kernel_time()
        self._sweep = _Sweep(
            agents=self.sources.agents(),
            kernel_time={f.get("agent_id"): f for f in flows if f.get("caller") == "agent"},
            operator_us=sum(_int(f.get("kernel_time_us")) for f in flows if f.get("caller") == "operator"),
            states=dict.fromkeys((s.value for s in AgentState), 0),
        )

    @property
    def sweeping(self) -> bool:
        return self._sweep is not None

    def advance(self, n: int) -> bool:
        """Track up to ``n`` more agents of the sweep; ``True`` when all are done."""
        sweep = self._sweep
        if sweep is None:
            return True
        now = self.clock()
        stop = min(len(sweep.agents), sweep.done + n)
        for agent in sweep.agents[sweep.done : stop]:
            state = agent.state.value
            sweep.states[state] = sweep.states.get(state, 0) + 1
            sweep.present.add(agent.id)
            if agent.id in self._gone:
                if agent.state in TERMINAL or len(self.tracks) >= self.settings.max_agent_series:
                    continue
                self._gone.discard(agent.id)  # a live agent dropped at the cap: there is room again
            self._track(agent, sweep.kernel_time.get(agent.id), now)
        sweep.done = stop
        return stop >= len(sweep.agents)

    def finish(self) -> Snapshot:
        """End the sweep (tracking whatever is left) and compose the snapshot."""
        if self._sweep is None:
            self.begin()
        self.advance(1 << 30)
        sweep = self._sweep
        assert sweep is not None  # noqa: S101 - begin() set it
        self._sweep = None
        now = self.clock()
        self.tally.poll()
        present = sweep.present
        for agent_id, track in self.tracks.items():
            if agent_id not in present and track.ended_at is None:  # removed from the table
                track.ended_at = now
                track.row = _ended(track.row)
        self._prune(now)
        self._gone &= present
        self.tally.keep_only(self.tracks)
        states, operator_us = sweep.states, sweep.operator_us
        llm = self.sources.llm()
        last_id, write_errors = self.sources.journal_figures()
        t = self.tally
        return Snapshot(
            monotonic=now,
            version=self.sources.version,
            started_at=self.sources.started_at,
            agent_states=tuple(states.items()),
            agents=tuple(track.row for _, track in sorted(self.tracks.items())),
            agents_dropped=self.agents_dropped,
            exits=tuple(sorted({**dict.fromkeys(EXIT_REASONS, 0), **t.exits}.items())),
            syscalls=tuple((s, c, n) for (s, c), n in sorted(t.syscalls.items())),
            denials=tuple((s, c, n) for (s, c), n in sorted(t.denials.items())),
            operator_kernel_time_us=operator_us,
            devices=tuple(_device(d) for d in self.sources.devices()),
            interlocks=tuple(
                InterlockRow(str(i.get("name")), bool(i.get("engaged")), self.engagements.get(str(i.get("name")), 0))
                for i in self.sources.interlocks()
            ),
            llm_enabled=llm is not None,
            llm_queued=_int((llm or {}).get("queued")),
            llm_running=_int((llm or {}).get("running")),
            llm_tokens=tuple(sorted(t.llm_tokens.items())),
            llm_requests=tuple(sorted(t.llm_requests.items())),
            llm_wait_bounds=t.llm_wait.bounds,
            llm_wait_counts=tuple(t.llm_wait.counts),
            llm_wait_sum=t.llm_wait.total,
            journal_last_id=last_id,
            journal_write_errors=write_errors,
            journal_unobserved=t.unobserved,
            fleet_connected=self._fleet(),
        )

    def _track(self, agent: Agent, flow: dict[str, Any] | None, now: float) -> None:
        track = self.tracks.get(agent.id)
        live = agent.state not in TERMINAL
        if track is not None and not live and track.ended_at is not None:
            return  # frozen: its counters no longer move
        tally = self.tally.agents.get(agent.id)
        old = track.row if track is not None else None
        started = (agent.incarnation, agent.pid)
        if not live:
            dirs: tuple[str, ...] = ()
        elif track is not None and track.started == started and old is not None and old.cgroup_dirs:
            dirs = old.cgroup_dirs
        else:
            dirs = self.sources.cgroup_dirs(agent)
        row = AgentRow(
            id=agent.id,
            name=agent.name,
            live=live,
            restarts=agent.restarts,
            pid=agent.pid if live else None,
            cgroup_dirs=dirs,
            syscalls=tally.syscalls if tally else 0,
            denials=tally.denials if tally else 0,
            # A closed socket's figures are gone: keep the last ones seen.
            kernel_time_us=_int(flow.get("kernel_time_us")) if flow else (old.kernel_time_us if old else 0),
            kernel_calls=_int(flow.get("calls")) if flow else (old.kernel_calls if old else 0),
            rate_throttled=_int(flow.get("throttled")) if flow else (old.rate_throttled if old else 0),
            llm_prompt_tokens=tally.llm_prompt_tokens if tally else 0,
            llm_completion_tokens=tally.llm_completion_tokens if tally else 0,
            oom_kills=tally.oom_kills if tally else 0,
        )
        if track is None:
            self.tracks[agent.id] = _Track(row, None if live else now, started)
        else:
            track.row, track.started = row, started
            track.ended_at = None if live else now

    def _prune(self, now: float) -> None:
        forget = self.settings.forget_after
        for agent_id in [a for a, t in self.tracks.items() if t.ended_at is not None and now - t.ended_at > forget]:
            del self.tracks[agent_id]
            self._gone.add(agent_id)
        excess = len(self.tracks) - self.settings.max_agent_series
        if excess > 0:
            # The longest-dead first, then the newest live agents (the oldest keep their series).
            order = sorted(self.tracks.items(), key=lambda kv: (kv[1].ended_at is None, kv[1].ended_at or 0.0, -kv[0]))
            for agent_id, _ in order[:excess]:
                del self.tracks[agent_id]
                self._gone.add(agent_id)
            self.agents_dropped += excess

    def _fleet(self) -> int:
        hook = self.fleet_connected
        if hook is None:
            return 0
        try:
            return 1 if hook() is True else 0
        except Exception:  # the fleet's problem must not stop the metrics
            return 0


def _ended(row: AgentRow) -> AgentRow:
    return row._replace(live=False, pid=None, cgroup_dirs=())


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _device(view: dict[str, Any]) -> DeviceRow:
    raw = view.get("counters")
    counters: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return DeviceRow(
        name=str(view.get("name")),
        driver=str(view.get("driver")),
        state=str(view.get("state") or OTHER),
        host_restarts=_int(view.get("restarts")),
        calls=_int(counters.get("calls")),
        errors=_int(counters.get("errors")),
        denied=_int(counters.get("denied")),
        dropped=_int(counters.get("dropped")),
        delivered=_int(counters.get("delivered")),
    )


def histogram_of(snapshot: Snapshot) -> Histogram:
    """The LLM queue-wait histogram of ``snapshot`` (a copy)."""
    return Histogram(snapshot.llm_wait_bounds, list(snapshot.llm_wait_counts), snapshot.llm_wait_sum, sum(snapshot.llm_wait_counts))
