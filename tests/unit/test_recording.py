"""Recording and replay without a kernel: the codec, rotation, the recorder's order and filters,
loading and selecting a recording, and the replay's comparison and verdicts (fakes for the
supervisor)."""

from __future__ import annotations

import enum
import json
import stat
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clove.config import AgentConfig, KernelConfig, RecordingSection
from clove.errors import Conflict, InvalidArguments, NotFound, PermissionDenied, QuotaExceeded
from clove.kernel.core.agents import Agent, AgentState
from clove.kernel.services.recording.file import RotatingJsonl
from clove.kernel.services.recording.format import (
    canonical,
    decode,
    encode,
    load_entries,
    parse_entries,
    select_agents,
)
from clove.kernel.services.recording.recorder import Recorder, RecordingOptions
from clove.kernel.services.recording.replay import (
    COMPLETED,
    DIVERGED,
    REPLAYING,
    ReplayService,
    compare,
    replay_spec,
)
from clove.wire import Request

# ---- the codec -----------------------------------------------------------------------------------


class Color(str, enum.Enum):
    RED = "red"


def roundtrip(value: Any) -> Any:
    return decode(json.loads(json.dumps(encode(value))))


def test_bytes_and_odd_maps_survive_json_exactly() -> None:
    value = {"raw": b"\x00\xff", "nested": [b"", {"k": bytearray(b"ab")}], "t": (1, 2.0, True, None), b"key": 1}
    back = roundtrip(value)
    assert back == {"raw": b"\x00\xff", "nested": [b"", {"k": b"ab"}], "t": [1, 2.0, True, None], b"key": 1}
    assert type(back["t"][1]) is float and back["t"][2] is True
    assert encode(b"\x00\x01\xff") == {"__bytes__": "AAH/"}
    # A map that uses a reserved key itself is not mistaken for bytes or for a map.
    tricky = {"__bytes__": "AAH/"}
    assert roundtrip(tricky) == tricky and roundtrip({"__map__": []}) == {"__map__": []}
    assert encode(Color.RED) == "red" and type(encode(Color.RED)) is str


def test_a_bad_bytes_value_is_refused() -> None:
    with pytest.raises(ValueError, match="__bytes__"):
        decode({"__bytes__": "not base64!"})


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text() | st.binary(), inner, max_size=4),
    max_leaves=20,
)


@given(msgpack_values)
def test_whatever_msgpack_carries_round_trips(value: Any) -> None:
    wire = msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)
    assert msgpack.packb(roundtrip(wire), use_bin_type=True) == msgpack.packb(wire, use_bin_type=True)


def test_comparison_keeps_number_kinds_apart_and_ignores_map_order() -> None:
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})
    assert len({canonical(1), canonical(1.0), canonical(True)}) == 3
    entry = {"call": "ipc.send", "body": encode({"message": {"n": 1}, "to": 3})}
    assert compare(entry, "ipc.send", encode({"to": 3, "message": {"n": 1}})) is None
    assert compare(entry, "ipc.send", encode({"to": 3, "message": {"n": 1.0}})) == "different arguments"
    assert compare(entry, "ipc.broadcast", encode({"message": {"n": 1}})) == "different syscall"


# ---- rotation ---------------------------------------------------------------------------------------


def test_files_are_capped_rotated_and_each_segment_stands_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    f = RotatingJsonl(path, max_bytes=200, rotate=2, preamble=lambda: ["HEAD"])
    lines = [f"line-{n:03d}-" + "x" * 30 for n in range(20)]  # 41 bytes with the newline
    for line in lines:
        f.write(line)
    f.close()
    segments = [path.with_name("a.jsonl.2"), path.with_name("a.jsonl.1"), path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]
    kept = []
    for segment in segments:
        text = segment.read_text().splitlines()
        assert text[0] == "HEAD" and segment.stat().st_size <= 200
        assert stat.S_IMODE(segment.stat().st_mode) == 0o600
        kept.extend(text[1:])
    assert kept == lines[-len(kept) :] and len(kept) < len(lines)  # the oldest were dropped, in order
    assert f.rotations > 2 and f.written == sum(len(x) + 1 for x in lines)


def test_rotate_zero_keeps_only_the_current_segment(tmp_path: Path) -> None:
    f = RotatingJsonl(tmp_path / "b.jsonl", max_bytes=64, rotate=0, preamble=lambda: [])
    for n in range(10):
        f.write(f"{n:030d}")
    f.close()
    assert [p.name for p in tmp_path.iterdir()] == ["b.jsonl"]
    assert (tmp_path / "b.jsonl").read_text() == f"{8:030d}\n{9:030d}\n"


# ---- the recorder -------------------------------------------------------------------------------------


def agent(agent_id: int, name: str, incarnation: int = 1, state: AgentState = AgentState.RUNNING) -> Agent:
    a = Agent(id=agent_id, spec=AgentConfig(name=name, script=f"/agents/{name}.py", args=("x",), env={"K": "v"}), uid=None)
    a.incarnation, a.state = incarnation, state
    return a


def recorder(tmp_path: Path, **options: Any) -> Recorder:
    section = RecordingSection(max_bytes=1 << 20)
    r = Recorder(tmp_path / "recordings", section)
    r.start(RecordingOptions.from_section(section, **options))
    return r


def call(r: Recorder, who: Agent, name: str, body: dict[str, Any], result: Any = None, error: Any = None, started: int = 0) -> None:
    pending = r.capture(who, Request(1, name, body), started or 1)
    if pending is not None:
        r.record(pending, result, error)


def syscalls(r: Recorder) -> list[dict[str, Any]]:
    return [e for e in json.loads(r.export()) if e["kind"] == "syscall"]


def test_requests_keep_their_arrival_order_and_bodies_as_they_arrived(tmp_path: Path) -> None:
    r = recorder(tmp_path)
    a = agent(1, "a")
    r.lifecycle("agent.created", a, {})
    body = {"prompt": "secret", "blob": b"\x01"}
    slow = r.capture(a, Request(1, "ipc.recv", {"timeout": 5}), 10)
    fast = r.capture(a, Request(2, "state.store", body), 20)
    body["prompt"] = "<6 chars>"  # what the journal's redaction does after capture
    assert slow is not None and fast is not None
    r.record(fast, {"success": True}, None)
    r.record(slow, None, QuotaExceeded("full", details={"n": 1}))
    got = syscalls(r)
    assert [(e["call"], e["i"]) for e in got] == [("state.store", 1), ("ipc.recv", 0)]  # reply order; i is arrival
    assert got[0]["body"] == {"prompt": "secret", "blob": {"__bytes__": "AQ=="}}
    assert got[1]["ok"] is False and got[1]["error"] == {"code": "quota.exceeded", "message": "full", "details": {"n": 1}}


def test_filters_by_agent_and_by_call(tmp_path: Path) -> None:
    r = recorder(tmp_path, agents=("a",))
    a, b = agent(1, "a"), agent(2, "b")
    for who in (a, b):
        r.lifecycle("agent.created", who, {})
    for name in ("llm.think", "http", "exec", "record.status", "replay.start", "noop", "llm.stats"):
        call(r, a, name, {})
    call(r, b, "noop", {})
    assert [e["call"] for e in syscalls(r)] == ["noop", "llm.stats"]
    everything = recorder(tmp_path / "2", include_think=True, include_http=True, include_exec=True)
    everything.lifecycle("agent.created", a, {})
    for name in ("llm.think", "http", "exec", "record.start"):
        call(everything, a, name, {})
    assert [e["call"] for e in syscalls(everything)] == ["llm.think", "http", "exec"]


def test_the_ring_keeps_the_newest_but_never_loses_the_spawn_entries(tmp_path: Path) -> None:
    r = recorder(tmp_path, max_entries=5)
    a = agent(1, "a")
    r.lifecycle("agent.created", a, {})
    for n in range(12):
        call(r, a, "noop", {"msg": str(n)}, result=str(n))
    status = r.status()
    assert (status["entry_count"], status["recorded"], status["dropped"]) == (5, 12, 7)
    entries = json.loads(r.export())
    assert [e["kind"] for e in entries[:2]] == ["recording", "spawn"]
    assert [e["result"] for e in entries[2:]] == ["7", "8", "9", "10", "11"]
    # The file has them all; the replay refuses the ring, which lost the start.
    r.flush()
    in_file = load_entries(Path(status["path"]))
    assert len([e for e in in_file if e["kind"] == "syscall"]) == 12
    assert len(select_agents(in_file, "a")[0].calls) == 12
    with pytest.raises(InvalidArguments, match="incomplete"):
        select_agents(entries, "a")


def test_agents_running_before_the_start_are_replayable_from_their_next_incarnation(tmp_path: Path) -> None:
    a = agent(1, "a", incarnation=2)
    section = RecordingSection()
    r = Recorder(tmp_path, section)
    r.start(RecordingOptions.from_section(section), live=[a, agent(2, "gone", state=AgentState.EXITED)])
    call(r, a, "noop", {"msg": "mid-life"})
    r.lifecycle("agent.exited", a, {"reason": "exited", "exit_code": 1, "signal": None})
    with pytest.raises(InvalidArguments, match="already running when recording started"):
        select_agents(json.loads(r.export()), "a")
    a.incarnation = 3  # restarted: this one is recorded from its start, numbered from 0 again
    call(r, a, "noop", {"msg": "first"})
    (part,) = select_agents(json.loads(r.export()), "a")
    assert part.incarnation == 3 and [c["body"]["msg"] for c in part.calls] == ["first"] and part.exit is None
    assert r.status()["agents"] == ["a"]
    exported = r.export_agent("a")
    assert exported is not None and [e["kind"] for e in exported] == ["recording", "spawn", "syscall", "exit", "syscall"]
    assert r.export_agent("gone") is None


def test_stop_closes_the_files_and_later_replies_are_not_recorded(tmp_path: Path) -> None:
    r = recorder(tmp_path)
    a = agent(1, "a")
    r.lifecycle("agent.created", a, {})
    pending = r.capture(a, Request(1, "ipc.recv", {}), 1)
    assert pending is not None
    stopped = r.stop()
    r.record(pending, {"success": True}, None)
    assert stopped["state"] == "IDLE" and r.status()["entry_count"] == 0
    assert r.status(export=True)["recording"].startswith('[{"seq":0,"kind":"recording"')
    assert r.start(RecordingOptions())["state"] == "RECORDING"
    with pytest.raises(Conflict, match="already recording"):
        r.start(RecordingOptions())


def test_replayed_agents_are_never_recorded(tmp_path: Path) -> None:
    section = RecordingSection()
    r = Recorder(tmp_path, section, owned=lambda who: who.id == 2)
    r.start(RecordingOptions.from_section(section))
    mine, replayed = agent(1, "a"), agent(2, "a")
    for who in (mine, replayed):
        r.lifecycle("agent.created", who, {})
        call(r, who, "noop", {})
        r.lifecycle("agent.exited", who, {"reason": "exited", "exit_code": 0, "signal": None})
    assert {e["agent_id"] for e in json.loads(r.export()) if "agent_id" in e} == {1}


def test_a_rotated_recording_reads_back_whole_segments_and_knows_what_it_lost(tmp_path: Path) -> None:
    section = RecordingSection(max_bytes=4096, rotate=1)
    r = Recorder(tmp_path, section)
    r.start(RecordingOptions.from_section(section))
    a = agent(1, "a")
    r.lifecycle("agent.created", a, {})
    for n in range(200):
        call(r, a, "noop", {"msg": f"{n:04d}" + "x" * 40}, result="ok")
    r.stop()
    directory = Path(r.status()["path"])
    assert sorted(p.name for p in directory.iterdir()) == ["a.jsonl", "a.jsonl.1"]
    for segment in directory.iterdir():
        lines = [json.loads(x) for x in segment.read_text().splitlines()]
        assert [e["kind"] for e in lines[:2]] == ["recording", "spawn"] and segment.stat().st_size <= 4096
    entries = load_entries(directory)
    kept = [e["i"] for e in entries if e["kind"] == "syscall"]
    assert kept == list(range(200 - len(kept), 200)) and len(kept) < 200
    with pytest.raises(InvalidArguments, match="incomplete: syscall 0"):
        select_agents(entries, "a")


# ---- loading and selecting ----------------------------------------------------------------------------


def test_loading_from_jsonl_export_and_directories(tmp_path: Path) -> None:
    r = recorder(tmp_path, max_entries=100)
    a = agent(1, "a")
    r.lifecycle("agent.created", a, {})
    call(r, a, "noop", {"msg": "x"}, result="x")
    r.lifecycle("agent.exited", a, {"reason": "exited", "exit_code": 0, "signal": None})
    r.stop()
    exported = json.loads(r.export())
    jsonl = "\n".join(json.dumps(e) for e in exported)
    assert parse_entries(jsonl) == exported == load_entries(Path(r.status()["path"]))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "recording.jsonl").write_text(jsonl + "\n")
    (bundle / "agent.log").write_text("not a recording")
    assert load_entries(bundle) == exported
    (part,) = select_agents(exported)
    assert part.exit == {"reason": "exited", "exit_code": 0, "signal": None} and part.elapsed is not None
    for bad, error in (("{}", InvalidArguments), ("[1]", InvalidArguments), ("nope", InvalidArguments)):
        with pytest.raises(error):
            parse_entries(bad)
    with pytest.raises(NotFound, match="recorded: a"):
        select_agents(exported, "b")
    with pytest.raises(NotFound):
        load_entries(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFound, match="no recording here"):
        load_entries(empty)


def test_the_replay_spec_keeps_the_program_and_drops_the_privileges() -> None:
    (part,) = select_agents(
        parse_entries(json.dumps([
            {"seq": 1, "kind": "spawn", "agent_id": 4, "agent_name": "a", "t": 0, "from_incarnation": 1,
             "spec": {"script": "/s.py", "args": ["1"], "env": {"A": "1"}, "network": True, "sandboxed": False,
                      "memory_bytes": 1 << 26, "level": "unrestricted", "permissions": {"exec_allow": ["*"]}, "restart": "always"}},
        ]))  # fmt: skip
    )
    spec = replay_spec(part, env={"B": "2"})
    assert (spec.script, spec.args, spec.env, spec.memory_bytes) == ("/s.py", ("1",), {"A": "1", "B": "2"}, 1 << 26)
    assert (spec.sandboxed, spec.network, spec.level, spec.permissions, spec.restart) == (True, False, "minimal", {}, "never")
    assert replay_spec(part, args=[]).args == ()


# ---- the replay's verdicts --------------------------------------------------------------------------


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
    def __init__(self) -> None:
        self.supervisor = FakeSupervisor()
        self.config = KernelConfig()  # a replay's agents get the [limits] defaults too


def recorded_run(tmp_path: Path, exit_code: int | None = 0) -> list[dict[str, Any]]:
    r = recorder(tmp_path)
    a = agent(1, "a")
    r.lifecycle("agent.created", a, {})
    call(r, a, "hello", {}, result={"agent_id": 1})
    call(r, a, "state.fetch", {"key": "k"}, result={"value": b"\x07"})
    call(r, a, "ipc.send", {"message": "hi", "to": 2}, error=PermissionDenied("no", details={"right": "ipc"}))
    if exit_code is not None:
        r.lifecycle("agent.exited", a, {"reason": "exited", "exit_code": exit_code, "signal": None})
    return json.loads(r.export())


def replay(entries: list[dict[str, Any]], speed: str = "full") -> tuple[ReplayService, Agent]:
    service = ReplayService(FakeKernel())  # type: ignore[arg-type]
    service.start(select_agents(entries, "a"), speed=speed)
    (track,) = service.tracks.values()
    return service, track.agent


def ask(service: ReplayService, who: Agent, name: str, body: dict[str, Any]) -> Any:
    return service.answer(who, Request(1, name, body))


def test_an_identical_run_gets_the_recorded_replies_and_completes(tmp_path: Path) -> None:
    service, who = replay(recorded_run(tmp_path))
    assert service.owns(who) and service.state == REPLAYING
    assert ask(service, who, "hello", {}).result == {"agent_id": 1}
    assert ask(service, who, "state.fetch", {"key": "k"}).result == {"value": b"\x07"}  # bytes again
    denied = ask(service, who, "ipc.send", {"message": "hi", "to": 2})
    assert isinstance(denied.error, PermissionDenied) and denied.error.details == {"right": "ipc"}
    assert service.status()["progress"] == {"replayed": 3, "total": 3}
    service.lifecycle("agent.exited", who, {"reason": "exited", "exit_code": 0, "signal": None, "at": 1.0})
    status = service.status()
    assert status["state"] == COMPLETED and status["divergence"] is None and service.kernel.supervisor.killed == []  # type: ignore[attr-defined]


def test_the_first_different_request_stops_the_agent_and_is_reported(tmp_path: Path) -> None:
    service, who = replay(recorded_run(tmp_path))
    ask(service, who, "hello", {})
    answer = ask(service, who, "state.fetch", {"key": "other"})
    assert isinstance(answer.error, Conflict) and service.state == DIVERGED
    assert service.divergence == {
        "agent": "a", "index": 1, "reason": "different arguments",
        "recorded": {"call": "state.fetch", "body": {"key": "k"}}, "actual": {"call": "state.fetch", "body": {"key": "other"}},
    }  # fmt: skip
    assert service.kernel.supervisor.killed == [who.id]  # type: ignore[attr-defined]
    assert isinstance(ask(service, who, "hello", {}).error, Conflict)  # nothing more is answered


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        (["hello", "state.fetch", "ipc.send", "noop"], "ran past the end of the recording"),
        (["hello", "exit:0"], "exited before the end of the recording"),
        (["hello", "state.fetch", "ipc.send", "exit:2"], "different exit"),
    ],
)
def test_running_past_the_end_exiting_early_or_differently_diverge(tmp_path: Path, events: list[str], reason: str) -> None:
    service, who = replay(recorded_run(tmp_path))
    bodies = {"hello": {}, "state.fetch": {"key": "k"}, "ipc.send": {"message": "hi", "to": 2}, "noop": {}}
    for event in events:
        if event.startswith("exit:"):
            service.lifecycle("agent.exited", who, {"reason": "exited", "exit_code": int(event[5:]), "signal": None})
        else:
            ask(service, who, event, bodies[event])
    assert service.state == DIVERGED and service.divergence is not None and service.divergence["reason"] == reason


def test_a_recording_that_stopped_mid_run_ends_the_replay_there(tmp_path: Path) -> None:
    service, who = replay(recorded_run(tmp_path, exit_code=None))
    for name, body in (("hello", {}), ("state.fetch", {"key": "k"}), ("ipc.send", {"message": "hi", "to": 2})):
        ask(service, who, name, body)
    assert isinstance(ask(service, who, "noop", {}).error, Conflict) and service.kernel.supervisor.killed == [who.id]  # type: ignore[attr-defined]
    service.lifecycle("agent.exited", who, {"reason": "signaled", "exit_code": None, "signal": 15})
    assert service.state == COMPLETED and service.status()["agents"][0]["ran_past_end"] is True


def test_recorded_speed_waits_as_long_as_each_reply_took(tmp_path: Path) -> None:
    entries = recorded_run(tmp_path)
    for e in entries:
        if e["kind"] == "syscall":
            e["dur"] = 0.25
    fast, who = replay(entries)
    assert ask(fast, who, "hello", {}).delay == 0.0
    slow, who = replay(entries, speed="recorded")
    assert ask(slow, who, "hello", {}).delay == 0.25
    with pytest.raises(Conflict, match="a replay is running"):
        slow.start(select_agents(entries, "a"))
    with pytest.raises(InvalidArguments, match="speed"):
        ReplayService(FakeKernel()).start(select_agents(entries, "a"), speed="warp")  # type: ignore[arg-type]


# ---- the [recording] table ------------------------------------------------------------------------


def test_the_recording_table_defaults_and_values(tmp_path: Path) -> None:
    from clove.config import load_config

    path = tmp_path / "kernel.toml"
    path.write_text("")
    assert load_config(path).recording == RecordingSection()
    path.write_text('[recording]\nenabled = true\nagents = ["nav", "arm"]\ninclude_think = true\nmax_entries = 10\nmax_bytes = 8192\nrotate = 0\n')
    got = load_config(path).recording
    assert (got.enabled, got.agents, got.include_think, got.include_http, got.max_entries, got.max_bytes, got.rotate) == (
        True, ("nav", "arm"), True, False, 10, 8192, 0,
    )  # fmt: skip
    options = RecordingOptions.from_section(got, include_http=True, agents=None)
    assert options.include_http and options.agents == ("nav", "arm") and options.max_bytes == 8192


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enabled = 1", "[recording].enabled: expected bool, got int 1"),
        ('agents = ["ok", "bad name"]', "[recording].agents: agent names are 1-63"),
        ('agents = "nav"', "[recording].agents: expected array"),
        ("max_entries = 0", "[recording].max_entries: must be positive"),
        ("max_bytes = 100", "[recording].max_bytes: must be at least 4096"),
        ("rotate = -1", "[recording].rotate: must be >= 0"),
        ("include_exec = true\nrecord_everything = true", "[recording].record_everything: unknown key (known: "),
        ("recording = 1", None),
    ],
)
def test_the_recording_table_refuses_bad_values(tmp_path: Path, text: str, message: str | None) -> None:
    from clove.config import load_config
    from clove.errors import ConfigError

    path = tmp_path / "kernel.toml"
    path.write_text(text + "\n" if message is None else f"[recording]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = message or "[recording]: expected a table, got int"
    assert str(path) in info.value.message and expected in info.value.message
