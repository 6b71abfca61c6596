"""Post-mortem bundles with fakes: the writer (layout, size cap, pruning, atomicity), the reader,
which deaths get a bundle, and the service driven through the supervisor's hooks with a fake
cgroup, a fake recorder, a real journal and a real loop in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.config import AgentConfig, PostmortemSection
from clove.errors import InvalidArguments, NotFound, SandboxError
from clove.kernel.audit.format import canonical_bytes, record_hash
from clove.kernel.audit.journal import Category, Journal
from clove.kernel.core.agents import Agent, AgentState, ExitInfo, ExitReason
from clove.kernel.core.loop import Loop
from clove.kernel.services.postmortem import bundle as bundle_mod
from clove.kernel.services.postmortem import service as service_mod
from clove.kernel.services.postmortem import store
from clove.kernel.services.postmortem.bundle import (
    BundleJob,
    bundle_dir_name,
    fit_newest,
    prune,
    write_bundle,
)
from clove.kernel.services.postmortem.capture import Death, journal_slice, log_tail, trigger
from clove.kernel.services.postmortem.service import PostmortemService
from clove.kernel.supervision.logs import LogCapture
from clove.kernel.supervision.runtime import Runtime
from clove.kernel.syscalls.registry import SYSCALLS

S = AgentState


def _record(rid: int, agent_id: int | None, event: str, category: str = "AGENT_LIFECYCLE", **details: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": rid, "timestamp": 1.0 + rid, "category": category, "event_type": event, "agent_id": agent_id,
        "agent_name": None if agent_id is None else f"a{agent_id}", "syscall": None, "args": None, "decision": "n/a",
        "code": "ok", "duration_us": None, "details": details, "prev_hash": "0" * 64,
    }  # fmt: skip
    record["hash"] = record_hash(record)
    return record


def _job(root: Path, **overrides: Any) -> BundleJob:
    fields: dict[str, Any] = {
        "root": root,
        "agent_name": "leak",
        "dir_name": bundle_dir_name(1_700_000_000.25, 1),
        "summary": {"reason": "oom_killed", "agent": {"name": "leak", "id": 7}, "time": "t", "exit": {"signal": 9}},
        "log": b"line 1\nline 2\n",
        "journal": [_record(1, 7, "agent.created"), _record(2, 7, "agent.exited", reason="oom_killed")],
        "recording": None,
    }
    fields.update(overrides)
    return BundleJob(**fields)


# ---- the writer ----------------------------------------------------------------------------------


def test_dir_names_sort_in_time_order_and_carry_the_incarnation() -> None:
    assert bundle_dir_name(1_700_000_000.25, 3) == "20231114T221320.250Z-3"
    assert bundle_dir_name(1_700_000_000.9999, 1) == "20231114T221320.999Z-1"
    names = [bundle_dir_name(t, 1) for t in (1_700_000_000.5, 1_700_000_009.0, 1_700_000_010.001)]
    assert names == sorted(names)


def test_bundle_layout_is_private_and_self_describing(tmp_path: Path) -> None:
    root = tmp_path / "postmortem"
    result = write_bundle(_job(root))
    assert result.path == root / "leak" / "20231114T221320.250Z-1"
    assert sorted(os.listdir(result.path)) == ["journal.jsonl", "log.txt", "summary.json"]
    for d in (root, root / "leak", result.path):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in result.path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["reason"] == "oom_killed" and summary["format"] == 1
    assert summary["bundle"] == result.path.name
    assert summary["truncated"] == {}
    for name in ("log.txt", "journal.jsonl"):
        data = (result.path / name).read_bytes()
        assert summary["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert (result.path / "log.txt").read_bytes() == b"line 1\nline 2\n"
    lines = (result.path / "journal.jsonl").read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["event_type"] for line in lines] == ["agent.created", "agent.exited"]
    for line in lines:  # byte for byte the journal's canonical line: each still verifies
        record = json.loads(line)
        assert line == canonical_bytes(record) + b"\n" and record_hash(record) == record["hash"]
    assert result.files == {name: (result.path / name).stat().st_size for name in os.listdir(result.path)}
    assert result.bytes == sum(result.files.values()) and result.pruned == []


def test_recording_is_written_only_when_there_is_one(tmp_path: Path) -> None:
    with_rec = write_bundle(_job(tmp_path, recording=[{"t": 1, "call": "noop"}, {"t": 2, "key": b"x", 3: "int key"}]))
    lines = (with_rec.path / "recording.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"t": 1, "call": "noop"}
    assert json.loads(lines[1]) == {"t": 2, "key": "b'x'", "3": "int key"}, "odd values are written, not fatal"
    empty = write_bundle(_job(tmp_path, dir_name="other", recording=[]))
    assert (empty.path / "recording.jsonl").read_bytes() == b""
    none = write_bundle(_job(tmp_path, dir_name="none"))
    assert not (none.path / "recording.jsonl").exists()


def test_size_cap_keeps_the_newest_of_everything(tmp_path: Path) -> None:
    cap = 64 << 10
    log = b"".join(b"log line %06d\n" % i for i in range(20_000))  # ~300 KiB
    journal = [_record(i, 7, "noop", category="SYSCALL", pad="x" * 300) for i in range(1, 400)]
    recording = [{"seq": i, "pad": "y" * 200} for i in range(500)]
    result = write_bundle(_job(tmp_path, log=log, journal=journal, recording=recording, max_bytes=cap))
    sizes = {p.name: p.stat().st_size for p in result.path.iterdir()}
    assert sum(sizes.values()) <= cap
    assert sizes["summary.json"] < bundle_mod.SUMMARY_RESERVE
    kept_log = (result.path / "log.txt").read_bytes()
    assert log.endswith(kept_log) and kept_log.endswith(b"log line 019999\n")
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["truncated"]["log.txt"] == len(log) - len(kept_log)
    assert "journal.jsonl" not in summary["files"] or summary["files"]["journal.jsonl"]["bytes"] == 0
    assert summary["truncated"]["journal.jsonl"] == 399 and summary["truncated"]["recording.jsonl"] == 500


def test_size_cap_shares_what_the_log_leaves(tmp_path: Path) -> None:
    journal = [_record(i, 7, "noop", category="SYSCALL", pad="x" * 300) for i in range(1, 400)]
    result = write_bundle(_job(tmp_path, log=b"short\n", journal=journal, recording=[{"seq": i} for i in range(10)], max_bytes=80 << 10))
    kept = [json.loads(line)["id"] for line in (result.path / "journal.jsonl").read_text().splitlines()]
    assert kept and kept[-1] == 399 and kept == list(range(kept[0], 400)), "the newest, contiguous, in order"
    assert result.truncated["journal.jsonl"] == 399 - len(kept)
    assert result.bytes <= 80 << 10


def test_fit_newest() -> None:
    assert fit_newest([b"aa", b"bbb", b"c"], 4) == ([b"bbb", b"c"], 1)
    assert fit_newest([b"aa", b"bbb", b"c"], 0) == ([], 3)
    assert fit_newest([], 10) == ([], 0)


def test_same_millisecond_gets_a_suffix_not_an_overwrite(tmp_path: Path) -> None:
    first = write_bundle(_job(tmp_path, log=b"first\n"))
    second = write_bundle(_job(tmp_path, log=b"second\n"))
    assert second.path.name == first.path.name + ".2"
    assert (first.path / "log.txt").read_bytes() == b"first\n"
    assert json.loads((second.path / "summary.json").read_text())["bundle"] == second.path.name


def test_keep_prunes_the_oldest_and_crash_leftovers(tmp_path: Path) -> None:
    agent_dir = tmp_path / "leak"
    agent_dir.mkdir()
    (agent_dir / ".tmp-crashed").mkdir()
    results = [write_bundle(_job(tmp_path, dir_name=bundle_dir_name(1_700_000_000 + i, i + 1), keep=3)) for i in range(5)]
    assert sorted(os.listdir(agent_dir)) == [r.path.name for r in results[2:]]
    assert results[3].pruned == [results[0].path.name] and results[4].pruned == [results[1].path.name]
    assert prune(agent_dir, 1) == [results[2].path.name, results[3].path.name]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = bundle_mod._write

    def failing(directory: Path, name: str, data: bytes) -> tuple[int, str]:
        if name == "journal.jsonl":
            raise OSError(28, "No space left on device")
        return real(directory, name, data)

    monkeypatch.setattr(bundle_mod, "_write", failing)
    with pytest.raises(OSError, match="No space"):
        write_bundle(_job(tmp_path))
    assert os.listdir(tmp_path / "leak") == []


# ---- the reader ----------------------------------------------------------------------------------


def test_listing_finding_and_viewing(tmp_path: Path) -> None:
    for name, t in (("b-agent", 1_700_000_000), ("a-agent", 1_700_000_001), ("a-agent", 1_700_000_005)):
        write_bundle(_job(tmp_path, agent_name=name, dir_name=bundle_dir_name(t, 1),
                          summary={"reason": "signaled", "agent": {"name": name, "id": 1}, "time": str(t), "timestamp": t, "exit": {"signal": 11}}))  # fmt: skip
    (tmp_path / "a-agent" / ".tmp-half").mkdir()
    rows = store.list_bundles(tmp_path)
    assert [(r["agent"], r["timestamp"]) for r in rows] == [("a-agent", 1_700_000_005), ("a-agent", 1_700_000_001), ("b-agent", 1_700_000_000)]
    assert rows[0]["signal"] == 11 and rows[0]["reason"] == "signaled" and rows[0]["size"] > 0
    assert rows[0]["path"] == str(tmp_path / "a-agent" / rows[0]["bundle"])
    assert [r["agent"] for r in store.list_bundles(tmp_path, "b-agent")] == ["b-agent"]
    assert store.list_bundles(tmp_path, "nobody") == []
    assert store.list_bundles(tmp_path / "missing") == []
    latest = store.find_bundle(tmp_path, "a-agent")
    assert latest.name == bundle_dir_name(1_700_000_005, 1)
    assert store.find_bundle(tmp_path, "a-agent", bundle_dir_name(1_700_000_001, 1)).is_dir()
    got = store.view(latest, ["log.txt"], max_bytes=4)
    assert got["contents"] == {"log.txt": b"e 2\n"} and got["summary"]["reason"] == "signaled"
    assert [f["name"] for f in got["files"]] == ["summary.json", "log.txt", "journal.jsonl"]


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", "", ".hidden"])
def test_names_from_callers_cannot_leave_the_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidArguments):
        store.find_bundle(tmp_path, name)
    with pytest.raises(InvalidArguments):
        store.list_bundles(tmp_path, name)


def test_unknown_bundles_and_files_are_refused(tmp_path: Path) -> None:
    write_bundle(_job(tmp_path))
    with pytest.raises(NotFound):
        store.find_bundle(tmp_path, "nobody")
    for bundle in ("../leak", "20231114T221320.250Z-9", ".tmp-x"):
        with pytest.raises(NotFound):
            store.find_bundle(tmp_path, "leak", bundle)
    with pytest.raises(InvalidArguments, match="unknown bundle file"):
        store.view(store.find_bundle(tmp_path, "leak"), ["../../etc/passwd"])
    with pytest.raises(NotFound, match="not a post-mortem bundle"):
        store.read_summary(tmp_path)


def test_postmortem_syscalls_need_the_admin_right() -> None:
    from clove.policy import for_level

    assert {n: SYSCALLS[n].right for n in ("postmortem.list", "postmortem.get")} == {"postmortem.list": "admin", "postmortem.get": "admin"}
    assert not for_level("standard").with_grants({"can_spawn": True}).has("admin"), "a parent agent cannot read them"


# ---- which deaths get one ------------------------------------------------------------------------


def _death(reason: ExitReason, code: int | None = None, sig: int | None = None, *, requested: bool = False, escalated: bool = False) -> Death:
    return Death(agent_id=1, incarnation=1, exit=ExitInfo(reason, code, sig), cgroup={}, cgroup_name=None, uptime=1.0,
                 requested=requested, escalation={"window": 300} if escalated else None)  # fmt: skip


@pytest.mark.parametrize(
    ("death", "expected"),
    [
        (_death(ExitReason.OOM_KILLED, sig=9), "oom_killed"),
        (_death(ExitReason.SIGNALED, sig=11), "signaled"),
        (_death(ExitReason.EXITED, code=3), "crashed"),
        (_death(ExitReason.FAILED_TO_START), "failed_to_start"),
        (_death(ExitReason.START_TIMEOUT, sig=9), "start_timeout"),
        (_death(ExitReason.EXITED, code=0), None),
        (_death(ExitReason.EXITED, code=0, escalated=True), "escalated"),
        (_death(ExitReason.SIGNALED, sig=11, escalated=True), "escalated"),
        (_death(ExitReason.KILLED, sig=15), None),
        (_death(ExitReason.SIGNALED, sig=15, requested=True), None),  # shutdown or an interlock's kill
        (_death(ExitReason.EXITED, code=1, requested=True), None),
        (_death(ExitReason.OOM_KILLED, sig=9, requested=True), "oom_killed"),
    ],
)
def test_trigger(death: Death, expected: str | None) -> None:
    assert trigger(death) == expected


def test_journal_slice_goes_back_to_the_last_start() -> None:
    records = [
        _record(1, 5, "agent.created", state="starting"),
        _record(2, 5, "noop", category="SYSCALL"),
        _record(3, 5, "agent.exited", reason="exited"),
        _record(4, 5, "agent.state", state="backoff", previous="running"),
        _record(5, 5, "agent.state", state="starting", previous="backoff"),
        _record(6, 6, "noop", category="SYSCALL"),
        _record(7, 5, "agent.state", state="running", previous="starting"),
        _record(8, 5, "noop", category="SYSCALL"),
        _record(9, None, "kernel.info", category="SYSCALL"),
        _record(10, 5, "agent.exited", reason="signaled"),
    ]
    got, complete = journal_slice(records, 5, 100)
    assert [r["id"] for r in got] == [5, 7, 8, 10] and complete
    got, complete = journal_slice(records, 5, 2)
    assert [r["id"] for r in got] == [8, 10] and not complete
    got, complete = journal_slice(records[:4], 5, 100)  # only the first incarnation
    assert [r["id"] for r in got] == [1, 2, 3, 4] and complete
    assert journal_slice(records, 42, 100) == ([], False)


def test_log_tail_reaches_into_the_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    (tmp_path / "agent.log.1").write_bytes(b"old 1\nold 2\nold 3\n")
    log.write_bytes(b"new 1\nnew 2\n")
    assert log_tail(log, 1000) == (b"old 1\nold 2\nold 3\nnew 1\nnew 2\n", False)
    assert log_tail(log, 18) == (b"old 3\nnew 1\nnew 2\n", True), "a whole first line is kept"
    assert log_tail(log, 16) == (b"new 1\nnew 2\n", True), "a cut one is dropped"
    assert log_tail(log, 8) == (b"new 2\n", True)
    assert log_tail(log, 6) == (b"new 2\n", True)
    assert log_tail(log, 12) == (b"new 1\nnew 2\n", True)
    assert log_tail(tmp_path / "missing.log", 100) == (b"", False)


# ---- the service, through the supervisor's hooks -----------------------------------------------


class FakeCgroup:
    name = "agent-7.1"

    def __init__(self, stats: dict[str, int] | Exception) -> None:
        self._stats = stats

    def stats(self) -> dict[str, int]:
        if isinstance(self._stats, Exception):
            raise self._stats
        return dict(self._stats)


class FakeRecorder:
    def __init__(self, entries: Any = None, error: Exception | None = None) -> None:
        self.entries, self.error = entries, error
        self.asked: list[str] = []

    def export_agent(self, name: str) -> Any:
        self.asked.append(name)
        if self.error is not None:
            raise self.error
        return self.entries


class Harness:
    """A service on a real journal and loop, an agent, and the supervisor's calls in order."""

    def __init__(self, tmp_path: Path, settings: PostmortemSection, recorder: object | None = None) -> None:
        self.loop = Loop(tick=0.01)
        self.journal = Journal(tmp_path / "journal.jsonl")
        self.journal.open()
        self.recorder = recorder
        self.service = PostmortemService(settings, root=tmp_path / "postmortem", loop=self.loop, journal=self.journal,
                                         facts={"version": "test"}, recorder=lambda: self.recorder)  # fmt: skip
        self.logs = LogCapture(tmp_path / "agent.log", max_bytes=1 << 20)
        spec = AgentConfig(name="leak", script="/agents/leak.py", memory_bytes=32 << 20, pids=16, restart="on-failure")
        self.agent = Agent(id=7, spec=spec, uid=300_007)
        self.agent.isolation = {"backend": "cgroup1", "limits": {"memory": {"requested": 32 << 20, "enforced": True, "via": "x"}}}

    def event(self, event_type: str, **details: Any) -> None:
        """What Supervisor._event does: journal, then tell the listeners."""
        self.journal.append(Category.AGENT_LIFECYCLE, event_type, agent_id=self.agent.id, agent_name=self.agent.name,
                            decision="n/a", details={"state": self.agent.state.value, **details})  # fmt: skip
        self.service.on_lifecycle(event_type, self.agent, details)

    def start(self) -> None:
        self.agent.incarnation += 1
        if self.agent.incarnation == 1:
            self.event("agent.created")
        self.agent.change_state(S.RUNNING)
        self.agent.started_mono = time.monotonic() - 2.0
        self.event("agent.state", previous="starting")
        self.journal.append(Category.SYSCALL, "noop", agent_id=self.agent.id, agent_name=self.agent.name, syscall="noop")

    def die(self, info: ExitInfo, cgroup: FakeCgroup | None, final: AgentState, *, escalate: bool = False) -> None:
        """What Supervisor.on_exited does around its exit hook."""
        self.logs.write(b"about to die\n")
        rt = Runtime(home=self.logs.path.parent, endpoint="ipc://x", logs=self.logs, cgroup=cgroup)  # type: ignore[arg-type]
        self.service.on_exit(self.agent, rt, info)
        self.agent.started_mono = None
        self.event("agent.exited", **info.to_dict())
        if escalate:
            self.event("agent.escalated", restarts_in_window=3, window=300.0)
        previous = self.agent.change_state(final)
        self.event("agent.state", previous=previous.value)

    def restart(self) -> None:
        self.agent.change_state(S.STARTING)
        self.agent.restarts += 1
        self.event("agent.state", previous="backoff", restarts=self.agent.restarts)
        self.start()

    def settle(self, written: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self._records()) < written:
            if time.monotonic() > deadline:
                raise TimeoutError("bundles not written")
            self.loop.run_once()
        return self._records()

    def _records(self) -> list[dict[str, Any]]:
        return self.journal.query(event_type="agent.postmortem", limit=1000)

    def close(self) -> None:
        self.service.close()
        self.logs.close()
        self.journal.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, PostmortemSection())
    yield h
    h.close()


OOM_STATS = {"memory_current": 600_000, "memory_peak": 32 << 20, "oom_kills": 1, "cpu_usage_us": 31_000, "pids_current": 0}


def test_an_oom_kill_becomes_a_complete_bundle(harness: Harness) -> None:
    harness.start()
    harness.die(ExitInfo(ExitReason.OOM_KILLED, None, 9, "killed by the OOM killer"), FakeCgroup(OOM_STATS), S.EXITED)
    (record,) = harness.settle(1)
    assert record["code"] == "ok" and record["agent_id"] == 7 and record["details"]["trigger"] == "oom_killed"
    path = Path(record["details"]["path"])
    assert path.parent == harness.service.root / "leak" and path.name.endswith("Z-1")
    assert record["details"]["loop_us"] >= 0 and record["details"]["bytes"] == sum(p.stat().st_size for p in path.iterdir())
    summary = json.loads((path / "summary.json").read_text())
    assert summary["reason"] == "oom_killed" and summary["state"] == "exited" and summary["escalated"] is False
    assert summary["cgroup"] == {"name": "agent-7.1", **OOM_STATS}
    assert summary["exit"]["signal_name"] == "SIGKILL"
    assert summary["limits"] == {"memory_bytes": 32 << 20, "cpu_quota_us": None, "pids": 16}
    assert summary["isolation"]["limits"]["memory"]["enforced"] is True
    assert summary["permissions"]["level"] == "standard"
    assert summary["uptime"] >= 2.0 and summary["kernel"] == {"version": "test"}
    assert summary["recording"] == {"available": False} and not (path / "recording.jsonl").exists()
    assert summary["journal"]["since_start"] is True
    events = [json.loads(line)["event_type"] for line in (path / "journal.jsonl").read_text().splitlines()]
    assert events == ["agent.created", "agent.state", "noop", "agent.exited", "agent.state"]
    assert (path / "log.txt").read_bytes().endswith(b"about to die\n")
    assert harness.service.held() == {"postmortem_pending": 0, "postmortem_jobs": 0}


def test_restarts_each_get_their_own_slice_and_escalation_is_marked(harness: Harness) -> None:
    harness.start()
    harness.die(ExitInfo(ExitReason.EXITED, 3), FakeCgroup({}), S.BACKOFF)
    harness.restart()
    harness.die(ExitInfo(ExitReason.EXITED, 0), FakeCgroup({}), S.FAILED, escalate=True)
    first, second = harness.settle(2)
    assert (first["details"]["trigger"], second["details"]["trigger"]) == ("crashed", "escalated")
    summary = json.loads((Path(second["details"]["path"]) / "summary.json").read_text())
    assert summary["escalated"] is True and summary["escalation"] == {"restarts_in_window": 3, "window": 300.0}
    assert summary["state"] == "failed" and summary["restarts"] == 1 and summary["agent"]["incarnation"] == 2
    slice_ = [json.loads(line) for line in (Path(second["details"]["path"]) / "journal.jsonl").read_text().splitlines()]
    assert slice_[0]["details"]["previous"] == "backoff", "from the restart on"
    assert [r["event_type"] for r in slice_][-3:] == ["agent.exited", "agent.escalated", "agent.state"]


def test_clean_exits_and_requested_stops_get_none(harness: Harness) -> None:
    harness.start()
    harness.die(ExitInfo(ExitReason.EXITED, 0), FakeCgroup({}), S.BACKOFF)
    harness.restart()
    harness.agent.change_state(S.STOPPING)  # shutdown's kill: SIGTERM is a signal, but one we sent
    harness.die(ExitInfo(ExitReason.SIGNALED, None, 15), FakeCgroup({}), S.EXITED)
    for _ in range(20):
        harness.loop.run_once()
    assert harness.settle(0) == [] and not harness.service.root.exists()
    assert harness.service.held() == {"postmortem_pending": 0, "postmortem_jobs": 0}


def test_the_recording_is_bundled_when_the_kernel_records(tmp_path: Path) -> None:
    h = Harness(tmp_path, PostmortemSection(), FakeRecorder([{"seq": 1, "call": "noop"}, {"seq": 2, "call": "llm.think"}]))
    try:
        h.start()
        h.die(ExitInfo(ExitReason.SIGNALED, None, 11), FakeCgroup({}), S.EXITED)
        (record,) = h.settle(1)
        path = Path(record["details"]["path"])
        assert [json.loads(line)["seq"] for line in (path / "recording.jsonl").read_text().splitlines()] == [1, 2]
        assert json.loads((path / "summary.json").read_text())["recording"] == {"available": True, "entries": 2}
        assert h.recorder.asked == ["leak"]  # type: ignore[union-attr]
    finally:
        h.close()


@pytest.mark.parametrize(
    ("recorder", "noted"),
    [
        (FakeRecorder(None), {"available": True, "entries": 0}),
        (FakeRecorder(error=RuntimeError("ring gone")), {"available": True, "error": "RuntimeError: ring gone"}),
        (FakeRecorder("not a list"), {"available": True, "error": "export_agent returned str, not a list"}),
        (object(), {"available": False}),
    ],
)
def test_a_missing_or_broken_recorder_costs_only_the_recording(tmp_path: Path, recorder: object, noted: dict[str, Any]) -> None:
    h = Harness(tmp_path, PostmortemSection(), recorder)
    try:
        h.start()
        h.die(ExitInfo(ExitReason.SIGNALED, None, 11), FakeCgroup(SandboxError("cgroup gone")), S.EXITED)
        (record,) = h.settle(1)
        path = Path(record["details"]["path"])
        summary = json.loads((path / "summary.json").read_text())
        assert summary["recording"] == noted and not (path / "recording.jsonl").exists()
        assert summary["cgroup"] == {"name": "agent-7.1"}, "unreadable counters are left out, not fatal"
    finally:
        h.close()


def test_a_write_failure_is_journaled_not_raised(tmp_path: Path) -> None:
    h = Harness(tmp_path, PostmortemSection())
    try:
        h.service.root.parent.mkdir(exist_ok=True)
        h.service.root.write_text("not a directory")
        h.start()
        h.die(ExitInfo(ExitReason.SIGNALED, None, 11), FakeCgroup({}), S.EXITED)
        (record,) = h.settle(1)
        assert record["code"] == "postmortem.failed" and "File exists" in record["details"]["error"]
        assert h.service.counters == {"written": 0, "failed": 1, "dropped": 0}
    finally:
        h.close()


def test_a_full_queue_drops_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_mod, "MAX_QUEUED", 0)
    h = Harness(tmp_path, PostmortemSection())
    try:
        h.start()
        h.die(ExitInfo(ExitReason.SIGNALED, None, 11), FakeCgroup({}), S.EXITED)
        (record,) = h.journal.query(event_type="agent.postmortem")
        assert record["code"] == "postmortem.dropped" and h.service.counters["dropped"] == 1
    finally:
        h.close()


def test_close_waits_for_bundles_in_flight(tmp_path: Path) -> None:
    h = Harness(tmp_path, PostmortemSection())
    h.start()
    h.die(ExitInfo(ExitReason.SIGNALED, None, 11), FakeCgroup({}), S.EXITED)
    h.service.close()  # no loop turn: close() itself collects and journals it
    try:
        (record,) = h.journal.query(event_type="agent.postmortem")
        assert record["code"] == "ok" and Path(record["details"]["path"]).is_dir()
    finally:
        h.logs.close()
        h.journal.close()


def test_a_bug_in_capture_never_reaches_the_supervisor(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(service_mod, "summary", broken)
    harness.start()
    harness.die(ExitInfo(ExitReason.SIGNALED, None, 11), FakeCgroup({}), S.EXITED)  # must not raise
    (record,) = harness.journal.query(event_type="agent.postmortem")
    assert record["code"] == "postmortem.failed"


def test_disabled_means_no_writer_thread(tmp_path: Path) -> None:
    h = Harness(tmp_path, PostmortemSection(enabled=False))
    try:
        assert h.service._pool is None and h.loop.readers() == []
        assert h.service.bundles() == []
    finally:
        h.close()
