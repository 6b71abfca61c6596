"""The snapshot builder: agents by state, dead agents' series kept a while then dropped, a cap
on agents with series, and hooks that misbehave (the fleet's) never breaking a snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.config import AgentConfig
from clove.config.prometheus import MetricsSection
from clove.kernel.audit.journal import Journal
from clove.kernel.core.agents import Agent, AgentState
from clove.kernel.services.prometheus_snapshot import SnapshotBuilder, Sources
from clove.kernel.services.prometheus_tally import JournalTally


class World:
    """What the builder reads, as plain values a test changes."""

    def __init__(self) -> None:
        self.agents: list[Agent] = []
        self.flows: list[dict[str, Any]] = []
        self.now = 0.0

    def add(self, agent_id: int, state: AgentState = AgentState.RUNNING) -> Agent:
        agent = Agent(id=agent_id, spec=AgentConfig(name=f"a{agent_id}", script="x.py"), uid=None, state=state, pid=1000 + agent_id)
        self.agents.append(agent)
        return agent


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.jsonl")
    j.open()
    yield j
    j.close()


def builder(world: World, journal: Journal, **settings: Any) -> SnapshotBuilder:
    sources = Sources(agents=lambda: list(world.agents), cgroup_dirs=lambda a: (f"/cg/{a.id}",), kernel_time=lambda: list(world.flows))
    return SnapshotBuilder(MetricsSection(**settings), sources, JournalTally(journal, ["noop"]), clock=lambda: world.now)


def test_agents_by_state_count_every_state(world: World, journal: Journal) -> None:
    world.add(1)
    world.add(2)
    world.add(3, AgentState.EXITED)
    snap = builder(world, journal).build()
    states = dict(snap.agent_states)
    assert states["running"] == 2 and states["exited"] == 1 and states["paused"] == 0
    assert set(states) == {s.value for s in AgentState}
    rows = {r.id: r for r in snap.agents}
    assert rows[1].live and rows[1].cgroup_dirs == ("/cg/1",) and rows[1].pid == 1001
    assert not rows[3].live and rows[3].cgroup_dirs == () and rows[3].pid is None


def test_a_dead_agents_series_stay_frozen_for_forget_after_then_go(world: World, journal: Journal) -> None:
    b = builder(world, journal, forget_after=30.0)
    agent = world.add(1)
    world.flows = [{"caller": "agent", "agent_id": 1, "kernel_time_us": 500, "calls": 5, "throttled": 0}]
    assert b.build().agents[0].kernel_time_us == 500
    agent.state = AgentState.EXITED
    world.flows = []  # its channel closed: the dispatcher forgot it
    world.now = 1.0
    row = b.build().agents[0]
    assert not row.live and row.kernel_time_us == 500 and row.kernel_calls == 5
    world.agents.clear()  # removed from the table too
    world.now = 30.0
    assert [r.id for r in b.build().agents] == [1]
    world.now = 31.5
    assert b.build().agents == ()


def test_agent_series_are_capped_dead_first(world: World, journal: Journal) -> None:
    b = builder(world, journal, max_agent_series=3, forget_after=1000.0)
    for i in range(1, 4):
        world.add(i, AgentState.EXITED)
    b.build()
    for i in range(4, 7):
        world.add(i)
    snap = b.build()
    assert [r.id for r in snap.agents] == [4, 5, 6] and snap.agents_dropped == 3
    for i in range(7, 107):  # a spawn storm beyond the cap: the newest lose their series
        world.add(i)
    snap = b.build()
    assert [r.id for r in snap.agents] == [4, 5, 6] and snap.agents_dropped == 103
    assert len(b.tally.agents) <= 3


def test_the_fleet_hook_is_zero_until_a_fleet_says_connected(world: World, journal: Journal) -> None:
    b = builder(world, journal)
    assert b.build().fleet_connected == 0
    b.fleet_connected = lambda: True
    assert b.build().fleet_connected == 1

    def broken() -> bool:
        raise RuntimeError("fleet bug")

    b.fleet_connected = broken
    assert b.build().fleet_connected == 0
    b.fleet_connected = lambda: "yes"  # type: ignore[assignment,return-value]
    assert b.build().fleet_connected == 0


def test_interlock_engagements_only_for_configured_names(world: World, journal: Journal) -> None:
    b = builder(world, journal)
    known = frozenset({"estop"})
    for name in ("estop", "estop", "forged", "None"):
        b.interlock_engaged(name, known)
    assert b.engagements == {"estop": 2}


def test_a_forgotten_agent_still_listed_in_the_table_does_not_come_back(world: World, journal: Journal) -> None:
    b = builder(world, journal, forget_after=5.0)
    world.add(1, AgentState.FAILED)  # kept in the table (retention.max_exited) long after
    assert [r.id for r in b.build().agents] == [1]
    for t in (6.0, 7.0, 100.0):
        world.now = t
        assert b.build().agents == ()
    assert dict(b.build().agent_states)["failed"] == 1  # still counted by state


def test_a_sweep_in_slices_gives_the_same_snapshot(world: World, journal: Journal) -> None:
    for i in range(1, 8):
        world.add(i, AgentState.RUNNING if i % 2 else AgentState.EXITED)
    whole = builder(world, journal).build()
    b = builder(world, journal)
    assert not b.sweeping
    b.begin()
    steps = 1
    while not b.advance(3):
        steps += 1
    assert steps == 3 and b.sweeping  # 7 agents, 3 a turn
    sliced = b.finish()
    assert not b.sweeping
    assert sliced.agents == whole.agents and sliced.agent_states == whole.agent_states
