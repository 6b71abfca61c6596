"""The exporter's journal tally against a real Journal: syscalls by name and result, denials
(aggregated ones included), LLM figures, and every label bounded whatever an agent sends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clove.config import JournalSection
from clove.kernel.audit.journal import Category, Journal
from clove.kernel.services.prometheus_tally import LLM_WAIT_BUCKETS, MAX_CODES, JournalTally

NAMES = ("noop", "state.store", "llm.think")


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def journal(tmp_path: Path, clock: list[float]) -> Iterator[Journal]:
    settings = JournalSection(denial_burst=3, denial_window=10.0)
    j = Journal(tmp_path / "journal.jsonl", ring_size=500, settings=settings, monotonic=lambda: clock[0])
    j.open()
    yield j
    j.close()


def syscall(j: Journal, call: str, *, agent_id: int | None = 1, code: str = "ok", denied: bool = False) -> None:
    """A record shaped as the dispatcher writes one."""
    j.append(Category.SECURITY if denied else Category.SYSCALL, call, agent_id=agent_id, agent_name="a", syscall=call,
             decision="denied" if denied else "allowed", code=code)  # fmt: skip


def test_syscalls_by_name_and_result(journal: Journal) -> None:
    tally = JournalTally(journal, NAMES)
    for _ in range(3):
        syscall(journal, "noop")
    syscall(journal, "state.store", code="quota.exceeded")
    syscall(journal, "state.store", code="perm.denied", denied=True)
    journal.append(Category.AGENT_LIFECYCLE, "agent.state", agent_id=1, decision="n/a")  # not a syscall
    tally.poll()
    assert tally.syscalls == {("noop", "ok"): 3, ("state.store", "quota.exceeded"): 1, ("state.store", "perm.denied"): 1}
    assert tally.denials == {("state.store", "perm.denied"): 1}
    assert tally.agents[1].syscalls == 5 and tally.agents[1].denials == 1
    tally.poll()  # nothing new: nothing counted twice
    assert tally.syscalls[("noop", "ok")] == 3


def test_invented_syscall_names_and_codes_are_bounded(journal: Journal) -> None:
    tally = JournalTally(journal, NAMES)
    for i in range(300):
        syscall(journal, f"evil.{i}", code="proto.unknown_syscall")
        tally.poll()
    for i in range(MAX_CODES * 2):
        syscall(journal, "noop", code=f"made.up{i}")
    syscall(journal, "noop", code='bad "code"\nwith junk')
    tally.poll()
    names = {name for name, _ in tally.syscalls}
    codes = {code for _, code in tally.syscalls}
    assert names == {"other", "noop"}
    assert tally.syscalls[("other", "proto.unknown_syscall")] == 300
    assert len(codes) <= MAX_CODES + 1 and "other" in codes
    assert sum(tally.syscalls.values()) == 300 + MAX_CODES * 2 + 1  # every call counted, under some label


def test_aggregated_denials_count_every_denial(journal: Journal, clock: list[float]) -> None:
    tally = JournalTally(journal, NAMES)
    for _ in range(50):
        syscall(journal, "state.store", code="perm.denied", denied=True)
    clock[0] += 11.0  # the denial window ends: the journal writes one aggregate
    journal.tick()
    tally.poll()
    assert tally.denials[("state.store", "perm.denied")] == 50
    assert tally.agents[1].denials == 50


def test_malformed_requests_and_llm_records(journal: Journal) -> None:
    tally = JournalTally(journal, NAMES)
    journal.append(Category.SECURITY, "proto.rejected", agent_id=2, decision="denied", code="proto.malformed")
    for outcome, prompt, completion, wait in (("ok", 10, 5, 3.0), ("failed", None, None, None), ("weird", -4, "x", -1.0)):
        journal.append(Category.NETWORK, "llm.request", agent_id=2, syscall="llm.think", decision="allowed", code="ok",
                       details={"outcome": outcome, "prompt_tokens": prompt, "completion_tokens": completion, "queue_wait_ms": wait})  # fmt: skip
    tally.poll()
    assert tally.syscalls == {("malformed", "proto.malformed"): 1}  # llm.request is not a second llm.think
    assert tally.llm_requests["ok"] == 1 and tally.llm_requests["failed"] == 1 and tally.llm_requests["other"] == 1
    assert tally.llm_tokens == {"prompt": 10, "completion": 5}
    assert tally.agents[2].llm_prompt_tokens == 10
    assert tally.llm_wait.count == 1 and tally.llm_wait.counts[LLM_WAIT_BUCKETS.index(0.005)] == 1


def test_records_that_left_the_ring_are_counted_as_unobserved(tmp_path: Path) -> None:
    j = Journal(tmp_path / "small.jsonl", ring_size=10)
    j.open()
    try:
        tally = JournalTally(j, NAMES)
        for _ in range(25):
            syscall(j, "noop")
        tally.poll()
        assert tally.syscalls[("noop", "ok")] == 10 and tally.unobserved == 15
    finally:
        j.close()


def test_exits_by_reason_and_oom_kills_per_agent(journal: Journal) -> None:
    tally = JournalTally(journal, NAMES)
    reasons = frozenset({"exited", "oom_killed"})
    tally.lifecycle("agent.exited", 4, {"reason": "oom_killed"}, reasons)
    tally.lifecycle("agent.exited", 4, {"reason": "made-up"}, reasons)
    tally.lifecycle("agent.state", 4, {"reason": "exited"}, reasons)
    assert tally.exits == {"oom_killed": 1, "other": 1}
    assert tally.agents[4].oom_kills == 1
    tally.keep_only([])
    assert tally.agents == {}
