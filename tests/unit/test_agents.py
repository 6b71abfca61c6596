"""clove.kernel.core.agents: the lifecycle state machine and the agent table."""

from __future__ import annotations

import itertools
import time

import pytest

from clove.config import AgentConfig
from clove.errors import Conflict, InternalError, NotFound
from clove.kernel.core import agents as agents_module
from clove.kernel.core.agents import LIVE, TERMINAL, Agent, AgentState, AgentTable, ExitInfo, ExitReason

S = AgentState

# The lifecycle, written out edge by edge. The module docstring draws the main path; the
# other edges are the prose around it: any live agent can be stopped ("operator kill,
# shutdown"), and a process that ends goes to BACKOFF when the restart policy restarts it,
# else straight to EXITED (clean or killed) or FAILED.
EXPECTED: dict[AgentState, set[AgentState]] = {
    S.STARTING: {
        S.RUNNING,  # started
        S.FAILED,  # failed to start
        S.STOPPING,  # operator kill, shutdown
        S.BACKOFF,  # failed to start, restart policy retries
        S.EXITED,  # ended before it reported started
    },
    S.RUNNING: {
        S.PAUSED,  # pause
        S.STOPPING,  # operator kill, shutdown
        S.BACKOFF,  # process ended, restart policy
        S.EXITED,  # process ended, no restart
        S.FAILED,  # process ended, restarts exhausted
    },
    S.PAUSED: {
        S.RUNNING,  # resume
        S.STOPPING,  # operator kill, shutdown
        S.BACKOFF,  # process ended (OOM while frozen), restart policy
        S.EXITED,
        S.FAILED,
    },
    S.STOPPING: {S.EXITED, S.FAILED},
    S.BACKOFF: {
        S.STARTING,  # timer
        S.FAILED,  # escalate
        S.STOPPING,  # operator kill while waiting
        S.EXITED,
    },
    S.EXITED: set(),
    S.FAILED: set(),
}

# The arrows the docstring draws; each must be allowed.
DRAWN = {
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.FAILED),
    (S.RUNNING, S.PAUSED),
    (S.PAUSED, S.RUNNING),
    (S.RUNNING, S.BACKOFF),
    (S.BACKOFF, S.STARTING),
    (S.BACKOFF, S.FAILED),
    (S.STOPPING, S.EXITED),
}


def spec(name: str = "a", **kwargs: object) -> AgentConfig:
    return AgentConfig(name=name, script=f"/srv/{name}.py", **kwargs)  # type: ignore[arg-type]


def agent(agent_id: int = 1, name: str = "a", state: AgentState = S.STARTING, **kwargs: object) -> Agent:
    return Agent(id=agent_id, spec=spec(name), uid=None, state=state, **kwargs)  # type: ignore[arg-type]


# -- the state machine -------------------------------------------------------------------------


def test_states_and_wire_values() -> None:
    assert {s.value for s in AgentState} == {
        "starting",
        "running",
        "paused",
        "stopping",
        "backoff",
        "exited",
        "failed",
    }
    assert {S.EXITED, S.FAILED} == TERMINAL
    assert set(AgentState) - TERMINAL == LIVE
    assert S.RUNNING.value == "running"
    assert isinstance(S.RUNNING, str)  # a str enum: it goes on the wire as is


def test_expected_table_covers_every_state() -> None:
    assert set(EXPECTED) == set(AgentState)
    allowed = agents_module._ALLOWED
    assert allowed == {k: frozenset(v) for k, v in EXPECTED.items()}


def test_drawn_edges_are_allowed() -> None:
    for old, new in DRAWN:
        assert agent(state=old).change_state(new) is old
    for state in LIVE - {S.STOPPING}:
        assert agent(state=state).change_state(S.STOPPING) is state, "every live agent can be stopped"


@pytest.mark.parametrize(
    ("old", "new"), list(itertools.product(AgentState, AgentState)), ids=lambda s: s.value
)
def test_transition(old: AgentState, new: AgentState) -> None:
    a = agent(7, state=old)
    if new in EXPECTED[old]:
        assert a.change_state(new) is old
        assert a.state is new
    else:
        with pytest.raises(InternalError, match=f"agent 7: illegal transition {old.value} -> {new.value}"):
            a.change_state(new)
        assert a.state is old, "a refused transition leaves the state alone"


def test_a_full_life() -> None:
    a = agent()
    path = [S.RUNNING, S.PAUSED, S.RUNNING, S.BACKOFF, S.STARTING, S.RUNNING, S.STOPPING, S.EXITED]
    assert [a.change_state(s) for s in path] == [S.STARTING, *path[:-1]]


# -- Agent -------------------------------------------------------------------------------------


def test_agent_identity() -> None:
    a = agent(3, name="sensor")
    assert (a.name, a.key, a.incarnation) == ("sensor", "3.0", 0)
    a.incarnation = 2
    assert a.key == "3.2"
    assert a != agent(3, name="sensor"), "agents compare by identity"


def test_uptime() -> None:
    a = agent(state=S.RUNNING)
    assert a.uptime(now=50.0) == 0.0  # never started
    a.started_mono = 40.0
    assert a.uptime(now=50.5) == 10.5
    for state in (S.BACKOFF, S.EXITED, S.FAILED):
        a.state = state
        assert a.uptime(now=50.5) == 0.0
    a.state = S.PAUSED
    assert a.uptime(now=41.0) == 1.0


def test_exit_info() -> None:
    assert ExitInfo(ExitReason.EXITED, exit_code=0).clean
    assert not ExitInfo(ExitReason.EXITED, exit_code=1).clean
    assert not ExitInfo(ExitReason.KILLED, exit_code=0).clean
    info = ExitInfo(ExitReason.SIGNALED, signal=9, message="boom", at=12.5)
    assert info.to_dict() == {
        "reason": "signaled",
        "exit_code": None,
        "signal": 9,
        "message": "boom",
        "at": 12.5,
    }


BRIEF_KEYS = {"id", "name", "state", "status", "uptime"}
DETAIL_KEYS = BRIEF_KEYS | {
    "pid",
    "restarts",
    "restart_policy",
    "exit_code",
    "exit_signal",
    "exit_reason",
    "exit_message",
    "parent_id",
    "detached",
    "level",
    "script",
    "sandboxed",
    "network",
    "created_at",
    "isolation",
    "devices",
}


def test_summary_brief_shows_no_details() -> None:
    a = agent(4, name="b", state=S.RUNNING, pid=1234)
    a.started_mono = time.monotonic() - 100
    row = a.summary(detailed=False)
    assert set(row) == BRIEF_KEYS
    assert (row["id"], row["name"], row["state"], row["status"]) == (4, "b", "running", "running")
    assert 100 <= row["uptime"] < 160
    assert row["uptime"] == round(row["uptime"], 3)


def test_summary_detailed_of_a_running_agent() -> None:
    a = Agent(
        id=5,
        spec=spec("c", restart="always", network=True),
        uid=200_005,
        state=S.RUNNING,
        pid=99,
        created_at=7.0,
    )
    a.restarts = 2
    a.isolation = {"backend": "cgroup2"}
    row = a.summary()
    assert set(row) == DETAIL_KEYS
    assert row == {
        "id": 5,
        "name": "c",
        "state": "running",
        "status": "running",
        "uptime": 0.0,
        "pid": 99,
        "restarts": 2,
        "parent_id": None,
        "detached": False,
        "level": "standard",
        "restart_policy": "always",
        "exit_code": None,
        "exit_signal": None,
        "exit_reason": None,
        "exit_message": None,
        "script": "/srv/c.py",
        "sandboxed": True,
        "network": True,
        "created_at": 7.0,
        "isolation": {"backend": "cgroup2"},
        "devices": {},
    }


def test_summary_detailed_of_an_exited_agent() -> None:
    a = agent(6, state=S.EXITED)
    a.exit = ExitInfo(ExitReason.OOM_KILLED, signal=9, message="memory limit", at=1.0)
    row = a.summary(detailed=True)
    assert (row["state"], row["exit_reason"], row["exit_code"], row["exit_signal"], row["exit_message"]) == (
        "exited",
        "oom_killed",
        None,
        9,
        "memory limit",
    )


# -- AgentTable --------------------------------------------------------------------------------


def settle(table: AgentTable, a: Agent, state: AgentState = S.EXITED) -> list[Agent]:
    a.state = state
    return table.settled(a)


def test_ids_count_up_and_are_never_reused() -> None:
    table = AgentTable(max_exited=1)
    first = [table.new_id() for _ in range(3)]
    assert first == [1, 2, 3]
    a = agent(first[0])
    table.add(a)
    table.remove(a)
    assert table.new_id() == 4


def test_add_get_len_iter() -> None:
    table = AgentTable(max_exited=5)
    a, b = agent(1, "a"), agent(2, "b")
    table.add(a)
    table.add(b)
    assert len(table) == 2
    assert list(table) == [a, b]
    assert (table.get(1), table.get(2), table.get(3)) == (a, b, None)
    assert table.name_in_use("a")
    assert not table.name_in_use("c")
    for x in table:  # iterates over a snapshot, so the loop body may remove records
        table.remove(x)
    assert len(table) == 0


def test_live_name_conflict() -> None:
    table = AgentTable(max_exited=5)
    table.add(agent(1, "a"))
    with pytest.raises(Conflict, match="an agent named 'a' is already running") as info:
        table.add(agent(2, "a"))
    assert info.value.details == {"name": "a"}
    assert table.get(2) is None
    assert len(table) == 1


def test_settled_frees_the_name() -> None:
    table = AgentTable(max_exited=5)
    old = agent(1, "a")
    table.add(old)
    assert settle(table, old) == []
    assert not table.name_in_use("a")
    new = agent(2, "a")
    table.add(new)
    assert table.find(name="a") is new, "the live agent wins over the dead one"
    assert table.find(agent_id=1) is old


def test_settled_does_not_free_a_name_owned_by_another_agent() -> None:
    table = AgentTable(max_exited=5)
    old, new = agent(1, "a"), agent(2, "a")
    table.add(old)
    settle(table, old)
    table.add(new)
    table.settled(old)  # a late, second settle of the old record
    assert table.name_in_use("a")
    table.remove(old)
    assert table.name_in_use("a")
    assert table.find(name="a") is new


def test_find_by_name_prefers_live_then_newest_dead() -> None:
    table = AgentTable(max_exited=10)
    records = []
    for agent_id in (1, 2, 3):
        a = agent(agent_id, "a")
        table.add(a)
        settle(table, a, S.FAILED if agent_id == 2 else S.EXITED)
        records.append(a)
    table.add(agent(4, "other"))
    assert table.find(name="a") is records[2]
    live = agent(5, "a")
    table.add(live)
    assert table.find(name="a") is live


def test_find_by_id() -> None:
    table = AgentTable(max_exited=10)
    a = agent(1, "a")
    table.add(a)
    assert table.find(agent_id=1) is a
    assert table.find(agent_id=1, name="a") is a
    with pytest.raises(NotFound, match="no agent with id 1") as info:
        table.find(agent_id=1, name="b")
    assert info.value.details == {"agent_id": 1}
    with pytest.raises(NotFound, match="no agent with id 9"):
        table.find(agent_id=9)
    with pytest.raises(NotFound, match="no agent with id 9"):
        table.find(agent_id=9, name="a")  # the id decides, even when the name exists


def test_find_not_found() -> None:
    table = AgentTable(max_exited=10)
    with pytest.raises(NotFound, match="no agent named 'x'") as info:
        table.find(name="x")
    assert info.value.details == {"name": "x"}
    with pytest.raises(NotFound, match="give an agent name or id"):
        table.find()


def test_retention_drops_the_oldest_terminal_records() -> None:
    table = AgentTable(max_exited=2)
    live = agent(1, "live", state=S.RUNNING)
    table.add(live)
    dead = []
    for agent_id in range(2, 7):
        a = agent(agent_id, f"d{agent_id}")
        table.add(a)
        dead.append(a)
    assert settle(table, dead[0]) == []
    assert settle(table, dead[1]) == []
    assert settle(table, dead[2], S.FAILED) == [dead[0]]
    assert [a.id for a in table] == [1, 3, 4, 5, 6]
    # settled out of order: still the lowest ids go first
    dead[4].state = S.EXITED
    dead[3].state = S.EXITED
    assert table.settled(dead[4]) == [dead[1], dead[2]]
    assert [a.id for a in table] == [1, 5, 6]
    assert table.get(1) is live, "live agents are never dropped"
    with pytest.raises(NotFound):
        table.find(name="d2")


def test_remove() -> None:
    table = AgentTable(max_exited=2)
    a = agent(1, "a")
    table.add(a)
    table.remove(a)
    assert table.get(1) is None
    assert not table.name_in_use("a")
    table.remove(a)  # twice is harmless
    table.add(agent(2, "a"))
    assert table.find(name="a").id == 2
