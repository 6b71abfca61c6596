"""What the Prometheus exporter counts that the kernel keeps no running count of: syscalls by
name and result, denials, and LLM requests, tokens and queue waits, all read from the audit
journal's ring of recent records as they appear (the journal is where every syscall, allowed or
denied, is already counted once); and agent exits, from the supervisor's lifecycle listeners.

Loop thread only. :meth:`JournalTally.poll` runs after every loop turn and costs nothing when
no record was appended; otherwise it reads only the new records, newest first, from the ring's
end. A record that left the ring before it was read (a ring shorter than one loop turn's
records) is counted in :attr:`JournalTally.unobserved`, never guessed.

Every label value is bounded: syscall names come from the syscall registry (anything else an
agent sends is ``other``; an undecodable request is ``malformed``), error codes are the first
:data:`MAX_CODES` well-formed ones seen (then ``other``), LLM outcomes and exit reasons are
fixed sets. Per-agent tallies are dropped with the agent's series (:meth:`JournalTally.keep_only`).

What the journal does not record is not counted: with ``set_audit_config`` switching
``log_syscalls`` off, allowed syscalls (and LLM requests) stop counting; denials never do.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from clove.kernel.audit.journal import AGGREGATED_EVENT

if TYPE_CHECKING:
    from clove.kernel.audit.journal import Journal

__all__ = ["LLM_WAIT_BUCKETS", "AgentTally", "Histogram", "JournalTally"]

#: Distinct error codes counted apart; more (a driver inventing codes) count as ``other``.
MAX_CODES: Final = 64
OTHER: Final = "other"
MALFORMED: Final = "malformed"
LLM_OUTCOMES: Final = frozenset({"ok", "failed", "timeout", "cancelled"})
#: Upper bounds (seconds) of the LLM queue-wait histogram's buckets; +Inf is implied.
LLM_WAIT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CODE_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}(\.[a-z0-9_]{1,32})?$")


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (not cumulative; the last is +Inf), their sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            return  # a clock step or a bad record: not a wait
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class AgentTally:
    """One agent's counts, for its whole life (all incarnations)."""

    syscalls: int = 0
    denials: int = 0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    oom_kills: int = 0


def _count_of(value: Any) -> int:
    """A count from a record: a non-negative int, else 0 (a record is data, not trusted code)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class JournalTally:
    """Counts read from the journal's records (see the module docstring).

    :param journal: the kernel's journal (its ring is read, never changed).
    :param syscall_names: the registry's syscall names: the only ``syscall`` label values.
    """

    def __init__(self, journal: Journal, syscall_names: Iterable[str]) -> None:
        self.journal = journal
        self.names = frozenset(syscall_names)
        self.seen = journal.last_id
        self.syscalls: dict[tuple[str, str], int] = {}
        self.denials: dict[tuple[str, str], int] = {}
        self.agents: dict[int, AgentTally] = {}
        self.llm_tokens = {"prompt": 0, "completion": 0}
        self.llm_requests: dict[str, int] = dict.fromkeys(sorted(LLM_OUTCOMES | {OTHER}), 0)
        self.llm_wait = Histogram(LLM_WAIT_BUCKETS)
        self.exits: dict[str, int] = {}
        self.unobserved = 0
        self._codes: set[str] = {"ok"}

    # ---- labels ------------------------------------------------------------------------------

    def syscall_label(self, name: Any) -> str:
        return name if isinstance(name, str) and name in self.names else OTHER

    def code_label(self, code: Any) -> str:
        if not isinstance(code, str) or not _CODE_RE.match(code):
            return OTHER
        if code not in self._codes:
            if len(self._codes) >= MAX_CODES:
                return OTHER
            self._codes.add(code)
        return code

    def agent(self, agent_id: int) -> AgentTally:
        tally = self.agents.get(agent_id)
        if tally is None:
            tally = self.agents[agent_id] = AgentTally()
        return tally

    def keep_only(self, agent_ids: Iterable[int]) -> None:
        """Forget every agent not in ``agent_ids`` (its series are no longer served)."""
        keep = set(agent_ids)
        for gone in [a for a in self.agents if a not in keep]:
            del self.agents[gone]

    # ---- reading the journal -----------------------------------------------------------------

    def poll(self) -> None:
        """Count the records appended since the last poll (loop housekeeping)."""
        last = self.journal.last_id
        if last == self.seen:
            return
        if last < self.seen:  # a journal that started afresh (tests reopen one): follow it
            self.seen = 0
        fresh: list[dict[str, Any]] = []
        # The ring's end holds the newest records: read back to the last one counted. The ring
        # is the journal's (read-only here); journal.query() would scan all of it every turn.
        for record in reversed(self.journal._ring):  # noqa: SLF001
            if record["id"] <= self.seen:
                break
            fresh.append(record)
        oldest = fresh[-1]["id"] if fresh else last + 1
        if oldest > self.seen + 1:
            self.unobserved += oldest - self.seen - 1
        for record in reversed(fresh):
            self.count(record)
        self.seen = last

    def count(self, record: dict[str, Any]) -> None:
        """Count one journal record (the ones this exporter does not count are ignored)."""
        event, call = record.get("event_type"), record.get("syscall")
        raw = record.get("details")
        details: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if event == AGGREGATED_EVENT:  # denials counted into one record by the journal
            self._syscall(record, call, _count_of(details.get("count")), denied=True)
        elif event == "proto.rejected":
            self._syscall(record, None, 1, denied=True, label=MALFORMED)
        elif call is not None and event == call:  # the dispatcher's record of one syscall
            self._syscall(record, call, 1, denied=record.get("decision") == "denied")
        elif event == "llm.request":
            self._llm(record, details)

    def _syscall(self, record: dict[str, Any], call: Any, n: int, *, denied: bool, label: str | None = None) -> None:
        if n <= 0:
            return
        key = (label or self.syscall_label(call), self.code_label(record.get("code")))
        self.syscalls[key] = self.syscalls.get(key, 0) + n
        if denied:
            self.denials[key] = self.denials.get(key, 0) + n
        agent_id = record.get("agent_id")
        if isinstance(agent_id, int):
            tally = self.agent(agent_id)
            tally.syscalls += n
            if denied:
                tally.denials += n

    def _llm(self, record: dict[str, Any], details: dict[str, Any]) -> None:
        outcome = details.get("outcome")
        outcome = outcome if outcome in LLM_OUTCOMES else OTHER
        self.llm_requests[outcome] += 1
        prompt, completion = _count_of(details.get("prompt_tokens")), _count_of(details.get("completion_tokens"))
        self.llm_tokens["prompt"] += prompt
        self.llm_tokens["completion"] += completion
        wait_ms = details.get("queue_wait_ms")
        if isinstance(wait_ms, (int, float)) and not isinstance(wait_ms, bool):
            self.llm_wait.observe(wait_ms / 1000.0)
        agent_id = record.get("agent_id")
        if isinstance(agent_id, int):
            tally = self.agent(agent_id)
            tally.llm_prompt_tokens += prompt
            tally.llm_completion_tokens += completion

    # ---- the supervisor's lifecycle listener ---------------------------------------------------

    def lifecycle(self, event_type: str, agent_id: int, details: dict[str, Any], reasons: frozenset[str]) -> None:
        """An ``agent.exited`` record: count its reason (one of ``reasons``, else ``other``)."""
        if event_type != "agent.exited":
            return
        reason = details.get("reason")
        reason = reason if isinstance(reason, str) and reason in reasons else OTHER
        self.exits[reason] = self.exits.get(reason, 0) + 1
        if reason == "oom_killed":
            self.agent(agent_id).oom_kills += 1
