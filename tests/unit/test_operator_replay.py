"""An operator's own calls in a recording, an operator's replay that performs them again, and the
end of an agent replay whose recorded run a signal ended: without a kernel (a fake loop that
runs its timers in virtual time, a fake ``perform``, a fake supervisor)."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clove.config import AgentConfig, KernelConfig, RecordingSection
from clove.errors import CloveError, Conflict, InvalidArguments, NotFound, PermissionDenied
from clove.kernel.core.agents import Agent
from clove.kernel.core.sessions import OperatorSession
from clove.kernel.services.recording import rerun
from clove.kernel.services.recording.format import select_agents
from clove.kernel.services.recording.recorder import Recorder, RecordingOptions
from clove.kernel.services.recording.replay import (
    COMPLETED,
    DIVERGED,
    REPLAYING,
    TAIL_CAP_S,
    TAIL_GRACE_S,
    ReplayService,
)
from clove.kernel.services.recording.rerun import Rerun, judge, operator_calls
from clove.wire import Request

SIGKILL = {"reason": "signaled", "exit_code": None, "signal": 9}


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Timers in virtual time: :meth:`run` fires them in order, advancing the clock to each."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + max(0.0, delay), callback)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def run(self, until: float = float("inf")) -> None:
        while self._heap and self._heap[0][0] <= until:
            when, _, timer = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = max(self.now, until) if until != float("inf") else self.now


# ---- an operator's calls in a recording ------------------------------------------------------------


def test_the_operator_that_starts_a_recording_is_recorded_with_the_agents_filters(tmp_path: Path) -> None:
    section = RecordingSection(max_bytes=1 << 20)
    r = Recorder(tmp_path, section, bytes_of=lambda name: 1 << 20 if name is None else 10)
    r.start(RecordingOptions.from_section(section), session=7)
    for call in ("state.store", "llm.think", "http", "exec", "record.status", "replay.start", "state.fetch"):
        pending = r.capture_session(7, Request(1, call, {"key": "k"}), 1)
        if pending is not None:
            r.record(pending, {"success": True}, None)
    assert r.capture_session(8, Request(1, "noop", {}), 1) is None  # another session: not recorded
    denied = r.capture_session(7, Request(1, "kernel.info", {}), 1)
    assert denied is not None
    r.record(denied, None, PermissionDenied("no"))
    status = r.stop()
    assert status["sessions"] == [7] and status["agents"] == [] and status["active"] is False
    entries = [e for e in json.loads(r.export()) if e["kind"] == "syscall"]
    assert [(e["call"], e["i"], e["session_id"]) for e in entries] == [("state.store", 0, 7), ("state.fetch", 1, 7), ("kernel.info", 2, 7)]
    assert all("agent_id" not in e and "agent_name" not in e for e in entries)  # never taken for an agent's
    assert entries[2]["ok"] is False and entries[2]["error"]["code"] == "perm.denied"
    path = Path(status["path"]) / "_session-7.jsonl"  # agent names start alphanumeric: no clash
    assert [json.loads(x) for x in path.read_text().splitlines()][1:] == entries
    with pytest.raises(NotFound):
        select_agents(json.loads(r.export()))  # nothing there for an agent replay
    # Naming agents to record leaves the operator out, as before.
    named = Recorder(tmp_path / "2", section)
    named.start(RecordingOptions.from_section(section, agents=("a",)), session=7)
    assert named.capture_session(7, Request(1, "noop", {}), 1) is None and named.status()["sessions"] == []


def test_operator_calls_are_taken_in_arrival_order_and_bounded() -> None:
    def entry(seq: int, t: float, **extra: Any) -> dict[str, Any]:
        return {"seq": seq, "kind": "syscall", "t": t, "call": "noop", "body": {}, "ok": True, "result": None, **extra}

    entries = [entry(1, 0.5, session_id=3), entry(2, 0.1, session_id=3), entry(3, 0.2, agent_id=4, agent_name="a")]
    assert [e["seq"] for e in operator_calls(entries)] == [2, 1]  # agents' calls are not an operator's
    with pytest.raises(NotFound, match="no operator calls"):
        operator_calls(entries[2:])
    with pytest.raises(InvalidArguments, match=f"at most {rerun.MAX_CALLS} calls"):
        operator_calls([entry(n, 0.0, session_id=3) for n in range(rerun.MAX_CALLS + 1)])
    big = entry(1, 0.0, session_id=3, body={"value": "x" * (rerun.MAX_BODY_BYTES + 1)})
    with pytest.raises(InvalidArguments, match="bytes of requests"):
        operator_calls([big])


def test_each_outcome_is_judged_against_the_recorded_one() -> None:
    ok = {"ok": True, "result": {"value": {"__bytes__": "AQ=="}, "n": 1}}
    failed = {"ok": False, "error": {"code": "notfound", "message": "x", "details": {}}}
    assert judge(ok, {"n": 1, "value": b"\x01"}, None) is None  # bytes and map order as recorded
    assert judge(ok, {"n": 1.0, "value": b"\x01"}, None) == "different result"
    assert judge(ok, None, PermissionDenied("no")) == "failed with perm.denied; the recording succeeded"
    assert judge(failed, None, NotFound("gone")) is None
    assert judge(failed, None, Conflict("busy")) == "failed with conflict; the recording failed with notfound"
    assert judge(failed, {"success": True}, None) == "succeeded; the recording failed with notfound"


# ---- an operator's replay ------------------------------------------------------------------------------


def recorded_calls() -> list[dict[str, Any]]:
    rows = [
        ("state.fetch", {"key": "a"}, True, {"value": 1}),
        ("session.close", {}, True, {"success": True}),
        ("state.store", {"key": "b", "value": {"__bytes__": "AQ=="}}, True, {"success": True}),
        ("kernel.info", {}, False, {"code": "perm.denied", "message": "no", "details": {}}),
        ("agent.spawn", {"name": "x"}, True, {"id": 5}),
    ]
    return [
        {"seq": n + 1, "kind": "syscall", "session_id": 2, "i": n, "t": 1.0 + n, "dur": 0.1, "call": call, "body": body, "ok": ok,
         **({"result": out} if ok else {"error": out})}
        for n, (call, body, ok, out) in enumerate(rows)
    ]  # fmt: skip


class FakeKernelForCalls:
    """Answers like a kernel would now: ``a`` changed since, spawn answers later."""

    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.performed: list[tuple[int, str, Any, float]] = []
        self.spawn_done: Callable[[Any, CloveError | None], None] | None = None

    def perform(self, session: OperatorSession, call: str, body: dict[str, Any], done: Callable[[Any, CloveError | None], None]) -> None:
        self.performed.append((session.id, call, body, self.loop.now))
        if call == "state.fetch":
            done({"value": 2}, None)
        elif call == "state.store":
            done({"success": True}, None)
        elif call == "kernel.info":
            done(None, PermissionDenied("still no"))
        else:
            self.spawn_done = done  # a deferred result: answered later, or never


def test_an_operators_replay_performs_each_call_as_its_session_and_compares_it() -> None:
    loop = FakeLoop()
    fake = FakeKernelForCalls(loop)
    session = OperatorSession(2, b"r", None, None, None)
    run = Rerun(recorded_calls(), session=session, perform=fake.perform, loop=loop)  # type: ignore[arg-type]
    assert run.status()["state"] == REPLAYING and run.status()["progress"] == {"replayed": 0, "total": 5}
    assert fake.performed == []  # nothing runs inside the request that started it
    loop.run(until=1.0)
    assert [(sid, call) for sid, call, _, _ in fake.performed] == [(2, "state.fetch"), (2, "state.store"), (2, "kernel.info"), (2, "agent.spawn")]
    assert fake.performed[1][2] == {"key": "b", "value": b"\x01"}  # the recorded body, decoded
    assert run.running and run.status()["progress"]["replayed"] == 4  # waiting for the spawn
    assert fake.spawn_done is not None
    fake.spawn_done({"id": 5}, None)
    loop.run(until=2.0)
    status = run.status()
    assert status["state"] == DIVERGED and not status["active"] and status["mode"] == "execute"
    assert [(r["call"], r["outcome"]) for r in status["calls"]] == [
        ("state.fetch", "diverged"), ("session.close", "skipped"), ("state.store", "match"), ("kernel.info", "match"), ("agent.spawn", "match"),
    ]  # fmt: skip
    assert (status["matched"], status["diverged"], status["skipped"]) == (3, 1, 1)
    assert (status["total_entries"], status["entries_replayed"], status["entries_skipped"]) == (5, 4, 1)
    first = status["calls"][0]
    assert first["reason"] == "different result" and '"value":1' in first["recorded"] and '"value":2' in first["actual"]
    assert status["divergence"]["index"] == 0 and status["divergence"]["actual"] == {"call": "state.fetch", "result": {"value": 2}}
    assert status["calls"][1]["reason"].startswith("it would close the session")


def test_a_call_without_a_result_times_out_and_a_closed_session_stops_the_replay() -> None:
    loop = FakeLoop()
    fake = FakeKernelForCalls(loop)
    calls = [c for c in recorded_calls() if c["call"] == "agent.spawn"] * 2
    run = Rerun(calls, session=OperatorSession(2, b"r", None, None, None), perform=fake.perform, loop=loop)  # type: ignore[arg-type]
    loop.run(until=rerun.CALL_TIMEOUT_S + 1)
    assert run.status()["calls"][0] == {
        "index": 0, "call": "agent.spawn", "outcome": "diverged", "reason": "failed with timeout; the recording succeeded",
        "recorded": '{"result":{"id":5}}', "actual": '{"error":{"code":"timeout","message":"no result within 60 s"}}',
    }  # fmt: skip
    late = fake.spawn_done
    assert late is not None and run.running  # the second spawn is in flight
    run.stop("the operator session that started the replay closed")
    late({"id": 5}, None)  # answered after the stop: dropped
    loop.run()
    status = run.status()
    assert status["state"] == "FAILED" and "closed" in status["error"] and status["progress"]["replayed"] == 1


def test_controls_and_odd_bodies_are_skipped_not_performed() -> None:
    loop = FakeLoop()
    fake = FakeKernelForCalls(loop)
    calls = [
        {"seq": 1, "kind": "syscall", "session_id": 2, "t": 0.0, "call": "replay.start", "body": {}, "ok": True, "result": {}},
        {"seq": 2, "kind": "syscall", "session_id": 2, "t": "soon", "call": "noop", "body": [1], "ok": True, "result": None},
    ]
    run = Rerun(operator_calls(calls), session=OperatorSession(2, b"r", None, None, None), perform=fake.perform, loop=loop)  # type: ignore[arg-type]
    loop.run()
    assert fake.performed == [] and [r["outcome"] for r in run.status()["calls"]] == ["skipped", "skipped"]
    assert run.status()["state"] == COMPLETED and run.status()["entries_skipped"] == 2


def test_at_recorded_speed_each_call_starts_when_it_did() -> None:
    loop = FakeLoop()
    fake = FakeKernelForCalls(loop)
    calls = [c for c in recorded_calls() if c["call"] in ("state.fetch", "state.store")]  # t = 1.0, then 3.0
    Rerun(calls, session=OperatorSession(2, b"r", None, None, None), perform=fake.perform, loop=loop, speed="recorded")  # type: ignore[arg-type]
    loop.run()
    assert [round(at, 3) for *_, at in fake.performed] == [0.0, 2.0]


def test_the_replay_service_runs_one_replay_at_a_time_and_stops_with_the_session() -> None:
    loop = FakeLoop()
    fake = FakeKernelForCalls(loop)
    kernel = FakeKernel(loop)
    service = ReplayService(kernel)  # type: ignore[arg-type]
    session = OperatorSession(2, b"r", None, None, None)
    with pytest.raises(Conflict, match="cannot perform"):
        service.start_rerun(recorded_calls(), session)
    service.perform = fake.perform  # type: ignore[assignment]
    started = service.start_rerun(recorded_calls(), session)
    assert started["state"] == REPLAYING and service.running
    with pytest.raises(Conflict, match="a replay is running"):
        service.start_rerun(recorded_calls(), session)
    service.session_closed(OperatorSession(3, b"x", None, None, None))  # another session: no effect
    assert service.running
    service.session_closed(session)
    assert not service.running and service.status()["state"] == "FAILED"


# ---- an agent replay whose recorded run a signal ended ---------------------------------------------------


class FakeSupervisor:
    def __init__(self) -> None:
        self.killed: list[int] = []
        self.next_id = 100

    def check_spawnable(self, spec: AgentConfig) -> None:
        pass

    def spawn(self, spec: AgentConfig, on_started: Any = None) -> Agent:
        self.next_id += 1
        return Agent(id=self.next_id, spec=spec, uid=None)

    def kill(self, agent: Agent, operator: bool = True) -> None:
        self.killed.append(agent.id)


class FakeKernel:
    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.supervisor = FakeSupervisor()
        self.config = KernelConfig()


def killed_run(tmp_path: Path, *, tail: float) -> list[dict[str, Any]]:
    """An agent that made two calls, then lived ``tail`` s more until a SIGKILL."""
    section = RecordingSection(max_bytes=1 << 20)
    r = Recorder(tmp_path / "rec", section)
    r.start(RecordingOptions.from_section(section))
    a = Agent(id=1, spec=AgentConfig(name="a", script="/agents/a.py"), uid=None)
    a.incarnation = 1
    r.lifecycle("agent.created", a, {})
    for call in ("sys.time", "noop"):
        pending = r.capture(a, Request(1, call, {}), 1)
        assert pending is not None
        r.record(pending, {"success": True}, None)
    r.lifecycle("agent.exited", a, {**SIGKILL, "message": "terminated by SIGKILL"})
    entries: list[dict[str, Any]] = json.loads(r.export())
    last = max(e["t"] + e["dur"] for e in entries if e["kind"] == "syscall")
    next(e for e in entries if e["kind"] == "exit")["t"] = last + tail
    return entries


def replay_killed(tmp_path: Path, tail: float, speed: str = "full") -> tuple[ReplayService, Agent, FakeLoop]:
    loop = FakeLoop()
    service = ReplayService(FakeKernel(loop))  # type: ignore[arg-type]
    service.start(select_agents(killed_run(tmp_path, tail=tail), "a"), speed=speed)
    (track,) = service.tracks.values()
    for call in ("sys.time", "noop"):
        assert service.answer(track.agent, Request(1, call, {})).error is None
    return service, track.agent, loop


def test_the_end_of_a_recording_a_signal_ended_stops_the_agent_after_its_recorded_tail(tmp_path: Path) -> None:
    service, who, loop = replay_killed(tmp_path, tail=1.5)
    assert select_agents(killed_run(tmp_path / "x", tail=1.5), "a")[0].tail == pytest.approx(1.5)
    loop.run(until=1.5 + TAIL_GRACE_S - 0.01)
    assert service.kernel.supervisor.killed == [] and service.state == REPLAYING  # type: ignore[attr-defined]
    loop.run(until=1.5 + TAIL_GRACE_S + 0.01)
    assert service.kernel.supervisor.killed == [who.id]  # type: ignore[attr-defined]
    service.lifecycle("agent.exited", who, {"reason": "killed", "exit_code": None, "signal": 15})
    status = service.status()
    assert status["state"] == COMPLETED and status["divergence"] is None
    assert status["agents"][0]["recorded_end"] == {"reason": "signaled", "signal": 9, "signal_name": "SIGKILL"}


def test_at_full_speed_a_long_tail_is_cut_and_asking_for_more_ends_it_at_once(tmp_path: Path) -> None:
    service, who, loop = replay_killed(tmp_path, tail=3600.0)
    loop.run(until=TAIL_CAP_S + TAIL_GRACE_S + 0.01)
    assert service.kernel.supervisor.killed == [who.id]  # type: ignore[attr-defined]
    # The call it was in when killed: stopped there, and not a divergence.
    service, who, loop = replay_killed(tmp_path / "2", tail=3600.0, speed="recorded")
    answer = service.answer(who, Request(1, "ipc.recv", {}))
    assert isinstance(answer.error, Conflict) and "ended here, by SIGKILL" in answer.error.message
    assert service.kernel.supervisor.killed == [who.id] and service.state == REPLAYING  # type: ignore[attr-defined]
    loop.run()  # the tail's timer finds it stopped already
    assert service.kernel.supervisor.killed == [who.id]  # type: ignore[attr-defined]
    service.lifecycle("agent.exited", who, {"reason": "killed", "exit_code": None, "signal": 15})
    assert service.state == COMPLETED


def test_an_agent_that_dies_as_recorded_or_differently_before_the_tail_is_judged_by_its_exit(tmp_path: Path) -> None:
    service, who, loop = replay_killed(tmp_path, tail=2.0)
    service.lifecycle("agent.exited", who, dict(SIGKILL))  # the same death, by itself: reproduced
    loop.run()
    assert service.state == COMPLETED and service.kernel.supervisor.killed == []  # type: ignore[attr-defined]
    assert service.status()["agents"][0]["recorded_end"] is None
    service, who, loop = replay_killed(tmp_path / "2", tail=2.0)
    service.lifecycle("agent.exited", who, {"reason": "exited", "exit_code": 0, "signal": None})
    assert service.state == DIVERGED and service.divergence is not None and service.divergence["reason"] == "different exit"
