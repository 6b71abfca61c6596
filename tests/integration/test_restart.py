"""Restart policies with exponential backoff, a stable id, and escalation to failed."""

from __future__ import annotations

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def _lifecycle(c, agent_id: int, event: str) -> list[dict]:
    return [e for e in c.get_audit_log(agent_id=agent_id, category="AGENT_LIFECYCLE", limit=10_000)["entries"] if e["event_type"] == event]


def test_on_failure_restarts_with_growing_delay_and_the_same_id(kernel):
    with kernel.client() as c:
        r = c.spawn("crashy", agent_script("exit_code.py"), args=["1"], restart_policy="on-failure", max_restarts=3, restart_window=60)
        row = poll_for(lambda: (a := agent_row(kernel, "crashy"))["state"] == "failed" and a, timeout=30, message="escalation")
        assert row["id"] == r["id"] and row["restarts"] == 3
        backoffs = [e["details"]["delay"] for e in _lifecycle(c, r["id"], "agent.state") if e["details"]["state"] == "backoff"]
        assert backoffs == [0.2, 0.4, 0.8]  # backoff_initial 0.2, doubling
        starts = [e for e in _lifecycle(c, r["id"], "agent.state") if e["details"]["state"] == "running"]
        gaps = [b["timestamp"] - a["timestamp"] for a, b in zip(starts, starts[1:], strict=False)]
        assert len(gaps) == 3 and all(g >= d for g, d in zip(gaps, backoffs, strict=False)) and gaps[0] < gaps[-1]
        assert {e["agent_id"] for e in _lifecycle(c, r["id"], "agent.exited")} == {r["id"]}
        escalated = _lifecycle(c, r["id"], "agent.escalated")
        assert len(escalated) == 1 and escalated[0]["details"]["restarts_in_window"] == 3
        assert row["exit_reason"] == "exited" and row["exit_code"] == 1


def test_clean_exit_is_not_restarted_under_on_failure(kernel):
    with kernel.client() as c:
        r = c.spawn("clean", agent_script("exit_code.py"), args=["0"], restart_policy="on-failure")
        row = poll_for(lambda: (a := agent_row(kernel, "clean"))["state"] == "exited" and a, message="exit")
        assert row["restarts"] == 0
        assert not [e for e in _lifecycle(c, r["id"], "agent.state") if e["details"]["state"] == "backoff"]


def test_always_restarts_clean_exits_too_and_kill_stops_it(kernel):
    with kernel.client() as c:
        r = c.spawn("loop", agent_script("exit_code.py"), args=["0", "0.3"], restart_policy="always", max_restarts=10)
        poll_for(lambda: agent_row(kernel, "loop")["restarts"] >= 2, timeout=20, message="two restarts")
        assert c.kill(name="loop")
        assert all(a["id"] != r["id"] for a in c.list_agents())


def test_signal_death_counts_as_failure(kernel):
    with kernel.client() as c:
        c.spawn("seg", agent_script("segfault.py"), restart_policy="on-failure", max_restarts=1)
        row = poll_for(lambda: (a := agent_row(kernel, "seg"))["state"] == "failed" and a, timeout=20, message="escalation")
        assert row["restarts"] == 1 and row["exit_reason"] == "signaled"
