"""``clove top``'s pure parts: key decoding, rows from metrics replies, the view state, the
source's two-calls-a-refresh rotation, the keys' state machine, the text it prints; and the
per-agent kernel figures (calls, kernel time, denials) that ``metrics.agents`` now carries."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clove.cli.top import render
from clove.cli.top.app import MAX_INTERVAL, paced
from clove.cli.top.controls import MAX_FILTER, Controls
from clove.cli.top.keys import decode
from clove.cli.top.model import AgentRow, agent_row, build_snapshot
from clove.cli.top.source import Source
from clove.cli.top.view import SORT_KEYS, ViewState
from clove.config import AgentConfig
from clove.errors import Conflict
from clove.kernel.core.agents import Agent, AgentState, AgentTable
from clove.kernel.core.fairshare import Flow
from clove.kernel.services.metrics import MetricsService


def raw(agent_id: int, name: str, *, calls: int = 0, state: str = "running", cgroup: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "agent_id": agent_id, "name": name, "status": state, "restarts": 0,
        "process": {"pid": 100 + agent_id, "cpu": {"percent": 3.0, "seconds": 1.0}, "memory": {"rss": 4096, "vms": 0}},
        "cgroup": cgroup or {}, "kernel": {"calls": calls, "kernel_time_us": 1500, "denied": 2, "throttled": 0},
    }  # fmt: skip


def row(agent_id: int, name: str, **kw: Any) -> AgentRow:
    return agent_row(raw(agent_id, name, **kw), None, None)


class Recorder:
    """An operator client that answers from a table and records what was asked."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers = answers or {}

    def call(self, syscall: str, /, reply_timeout: float | None = None, **body: Any) -> Any:
        self.calls.append((syscall, body))
        answer = self.answers.get(syscall, {"success": True})
        if isinstance(answer, Exception):
            raise answer
        return answer


# ---- keys ----------------------------------------------------------------------------------------


def test_decode_turns_terminal_bytes_into_key_names() -> None:
    assert decode(b"\x1b[A\x1bOBs/\r\x7f\x1b") == ["up", "down", "s", "/", "enter", "backspace", "esc"]
    assert decode(b"\x1b[1;5Cq") == ["q"]  # an unknown sequence is skipped whole
    assert decode("zé".encode()) == ["z", "é"] and decode(b"\x01\x02") == []


# ---- rows ----------------------------------------------------------------------------------------


def test_rows_prefer_the_cgroup_and_fall_back_to_the_process() -> None:
    limited = row(1, "a", cgroup={"cpu_percent": 19.5, "cpu_quota_us": 20_000, "memory_current": 50, "memory_limit": 200})
    assert (limited.cpu_percent, limited.cpu_quota_percent, limited.memory, limited.memory_limit) == (19.5, 20.0, 50, 200)
    assert limited.memory_percent == 25.0 and render.cpu_cell(limited) == "19.5/20%" and render.memory_cell(limited) == "50B/200B (25%)"
    bare = row(2, "b")
    assert (bare.cpu_percent, bare.cpu_quota_percent, bare.memory, bare.memory_limit, bare.memory_percent) == (3.0, None, 4096, None, None)
    assert render.cpu_cell(bare) == "3.0%" and render.memory_cell(bare) == "4.0K"


def test_syscalls_per_second_come_from_two_snapshots() -> None:
    first = build_snapshot([raw(1, "a", calls=10)], 100.0, None)
    assert first.agents[0].syscalls_per_s is None and render.rate_cell(None) == "-"
    second = build_snapshot([raw(1, "a", calls=30), raw(2, "new", calls=5)], 102.0, first)
    assert [r.syscalls_per_s for r in second.agents] == [10.0, None]
    assert second.agents[0].kernel_time_us == 1500 and second.agents[0].denied == 2
    assert [render.kernel_time_cell(us) for us in (900, 1500, 2_500_000)] == ["900µs", "1.5ms", "2.50s"]


# ---- view ----------------------------------------------------------------------------------------


def test_view_filters_sorts_and_keeps_the_selection_on_the_same_agent() -> None:
    rows = [row(1, "zeta"), row(2, "alpha", state="paused"), row(3, "mid")]
    view = ViewState()
    assert [r.name for r in view.visible(rows)] == ["zeta", "alpha", "mid"]
    view.move(view.visible(rows), 1)
    assert view.selected_id == 2
    view.next_sort()  # name
    assert view.sort == "name" and [r.name for r in view.visible(rows)] == ["alpha", "mid", "zeta"]
    assert view.selected(view.visible(rows)).name == "alpha"  # type: ignore[union-attr]
    view.flip()
    assert [r.name for r in view.visible(rows)] == ["zeta", "mid", "alpha"] and view.describe() == "sort: name ↓"
    view.filter = "PAUS"  # a state matches too, in any case
    assert [r.name for r in view.visible(rows)] == ["alpha"]
    view.filter = "nobody"
    assert view.selected(view.visible(rows)) is None and view.selected_id is None
    for _ in SORT_KEYS:  # the cycle comes back; figures sort biggest first when chosen
        view.next_sort()
        assert view.reverse == (view.sort in ("cpu", "memory", "syscalls", "kernel", "denied", "restarts"))
    with pytest.raises(ValueError, match="sort must be one of"):
        ViewState(sort="colour")


# ---- source --------------------------------------------------------------------------------------


def test_source_makes_two_calls_a_refresh_and_drops_empty_sections() -> None:
    client = Recorder({
        "metrics.agents": {"agents": [raw(1, "a")]},
        "interlock.list": {"interlocks": [{"name": "halt", "engaged": False}]},
        "device.list": {"devices": []},
        "llm.stats": {"enabled": False},
    })  # fmt: skip
    source = Source(client, clock=iter(range(100)).__next__)
    first = source.refresh(everything=True)
    assert [c for c, _ in client.calls] == ["metrics.agents", "interlock.list", "device.list", "llm.stats"]
    assert list(source.rotation) == ["interlocks"] and first.devices == [] and first.llm == {"enabled": False}
    client.calls.clear()
    for _ in range(3):
        source.refresh()
    assert [c for c, _ in client.calls] == ["metrics.agents", "interlock.list"] * 3
    client.calls.clear()
    source.soon("interlocks")
    snap = source.refresh()
    assert [c for c, _ in client.calls] == ["metrics.agents", "interlock.list"] and snap.interlocks == [{"name": "halt", "engaged": False}]
    assert source.calls == 4 + 6 + 2


def test_the_live_view_stretches_its_interval_when_refreshes_get_expensive() -> None:
    assert paced(1.0, 0.005) == 1.0  # 5 ms a refresh: 0.5 % of a second, as asked
    assert paced(1.0, 0.04) == pytest.approx(2.0)  # 40 ms: every 2 s keeps it at 2 %
    assert paced(1.0, 1.0) == MAX_INTERVAL and paced(10.0, 1.0) == 10.0


# ---- keys' state machine -------------------------------------------------------------------------


def _controls(client: Recorder, rows: list[AgentRow]) -> tuple[Controls, ViewState, list[str]]:
    view, soon = ViewState(), list[str]()
    return Controls(client, view, lambda: view.visible(rows), soon.append), view, soon


def test_kill_asks_and_only_yes_kills() -> None:
    client = Recorder()
    controls, _, _ = _controls(client, [row(1, "zeta"), row(2, "alpha")])
    controls.on_key("down")
    controls.on_key("k")
    assert controls.prompt == "kill alpha (id 2)? y/N" and client.calls == []
    assert not controls.on_key("n").refresh and controls.status == "kill alpha cancelled" and client.calls == []
    controls.on_key("k")
    assert controls.on_key("y").refresh and client.calls == [("agent.kill", {"name": "alpha"})] and controls.status == "killed alpha"
    assert controls.mode == "normal" and controls.on_key("q").quit


def test_actions_and_refusals_show_on_the_status_line() -> None:
    client = Recorder({"agent.resume": Conflict("agent is not paused"), "interlock.engage": {"engaged": [{"name": "halt"}]}})
    controls, _, soon = _controls(client, [row(1, "zeta")])
    controls.on_key("p")
    assert controls.status == "paused zeta"
    controls.on_key("r")
    assert controls.status == "resume zeta: agent is not paused [conflict]"
    controls.on_key("E")
    assert controls.status == "e-stop: engaged halt" and soon == ["interlocks"]
    assert client.calls[-1] == ("interlock.engage", {"reason": "clove top e-stop"})
    empty, _, _ = _controls(Recorder(), [])
    empty.on_key("k")
    assert empty.status == "no agent selected" and empty.mode == "normal"


def test_filter_mode_types_live_and_escape_puts_the_old_filter_back() -> None:
    controls, view, _ = _controls(Recorder(), [row(1, "zeta")])
    for key in ["/", "z", "e", "backspace", "enter"]:
        controls.on_key(key)
    assert view.filter == "z" and controls.mode == "normal"
    for key in ["/", "x", "y"]:
        controls.on_key(key)
    assert view.filter == "zxy" and controls.prompt.startswith("filter: zxy")
    controls.on_key("esc")
    assert view.filter == "z"
    controls.on_key("/")
    for _ in range(MAX_FILTER + 10):
        controls.on_key("a")
    assert len(view.filter) == MAX_FILTER  # bounded, whatever is typed


# ---- text ----------------------------------------------------------------------------------------


def test_plain_text_has_every_section() -> None:
    snap = build_snapshot([raw(1, "zeta")], 1.0, None)
    snap.devices = [{"name": "bus", "driver": "loopback", "state": "ready", "stream": "items", "counters": {"items_in": 7, "dropped": 1}}]
    snap.interlocks = [{"name": "halt", "engaged": True, "state": {"cause": "operator"}}]
    snap.llm = {"enabled": True, "queued": 2, "running": 1, "agents": [{"name": "zeta", "used": 1200, "budget": 5000}]}
    text = render.plain(snap, ViewState())
    assert text.splitlines()[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert "bus     loopback  ready" in text and "7 items" in text
    assert "interlocks: halt ENGAGED (operator)" in text and "llm: queued 2, running 1; budgets: zeta 1200/5000" in text
    assert render.interlock_line([{"name": "x", "engaged": True, "state": {"cause": "dev: \x1b[2J"}}]) == "interlocks: x ENGAGED (dev: ?[2J)"
    assert render.interlock_line([]) == "interlocks: none configured" and render.llm_line({"enabled": False}) == "llm: gateway disabled"


# ---- the kernel's side: figures per agent ---------------------------------------------------------


def test_a_flow_counts_denials_and_metrics_rows_carry_the_kernel_figures() -> None:
    flow = Flow(weight=1.0)
    flow.charge(2_000_000)
    flow.denied += 1
    assert {k: flow.figures()[k] for k in ("kernel_time_us", "calls", "denied")} == {"kernel_time_us": 2000, "calls": 1, "denied": 1}

    table = AgentTable(max_exited=4)
    agent = Agent(id=table.new_id(), spec=AgentConfig(name="w", script="/x.py"), uid=None, state=AgentState.RUNNING)
    table.add(agent)
    service = MetricsService(SimpleNamespace(table=table, runtime=lambda a: None))  # type: ignore[arg-type]
    assert service.agent(agent)["kernel"] == {}  # before boot wires the dispatcher in
    service.kernel_time_by = lambda agent_id: {"kernel_time_us": 7, "calls": 3, "denied": 1, "throttled": 0}
    assert service.agent(agent)["kernel"] == {"kernel_time_us": 7, "calls": 3, "denied": 1, "throttled": 0}
