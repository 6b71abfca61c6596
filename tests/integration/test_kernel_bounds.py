"""Everything an agent can make the kernel hold is bounded per agent in bytes ([limits]), and the
kernel's memory stays near those bounds under abuse: unpolled async results, event queues,
subscriptions and mailboxes. RSS is the kernel process's VmRSS before and after the abuse."""

from __future__ import annotations

import json

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

MB = 1 << 20
#: Allocator slack, ZeroMQ buffers and transient copies of one large reply on a loaded machine.
RSS_MARGIN = 48 * MB


def rss(k: KernelProcess) -> int:
    """The kernel process's resident set, in bytes."""
    with open(f"/proc/{k.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def held(k: KernelProcess) -> dict[str, int]:
    return k.call("kernel.info")["resources"]


def warm_up(k: KernelProcess) -> int:
    """Run a throwaway agent through the same paths first so one-off imports and caches are not
    counted as growth; returns the RSS after it."""
    with k.client() as op:
        op.spawn("warmup", agent_script("exec_ops.py"), args=[json.dumps([["exec", {"command": "head -c 1000 /dev/urandom"}]])])
        read_report(k, "warmup")
        op.kill(name="warmup")
    return rss(k)


def abuse(k: KernelProcess, name: str, **args: object) -> dict:
    with k.client() as op:
        op.spawn(name, agent_script("bounds_abuse.py"), args=[json.dumps(args)])
    return read_report(k, name, timeout=120)


def drained(k: KernelProcess, name: str) -> dict:
    """Tell the abuser to collect what the kernel kept for it, and return what it got."""
    with k.client() as op:
        op.send_message({"go": 1}, to_name=name)

    def find() -> dict | None:
        data = k.call("agent.logs", name=name, offset=0, max_bytes=1 << 20)["data"].decode()
        lines = [line for line in data.splitlines() if line.startswith("DRAINED ")]
        return json.loads(lines[0][len("DRAINED ") :]) if lines else None

    return poll_for(find, 90, message=f"{name}'s drain")


def test_unpolled_async_results_are_bounded_in_bytes_and_none_is_lost(make_kernel):
    k = make_kernel(extra='[limits]\nasync_result_bytes = "4M"\n')
    before = warm_up(k)
    report = abuse(k, "asyncer", mode="async", n=30, size=1_000_000)
    info = poll_for(lambda: (h := held(k))["exec_jobs"] == 0 and h, timeout=60, message="commands done")
    growth = rss(k) - before
    print(f"async: accepted {len(report['accepted'])}, refused {len(report['refused'])}, rss growth {growth / MB:.1f} MiB")

    bound = 4 * MB
    assert growth < 3 * bound + RSS_MARGIN, f"kernel grew {growth / MB:.1f} MiB"
    refusal = report["refused"][0]
    assert refusal["code"] == "quota.exceeded" and refusal["details"]["limit"] == "async_result_bytes"
    assert refusal["details"]["bound"] == bound and refusal["details"]["held"] >= bound
    # Accepted: what fit, plus what was already running (at most 16 commands at once) when the
    # bound was reached; every later submission is refused.
    assert len(report["accepted"]) + len(report["refused"]) == 30
    assert len(report["accepted"]) <= 20 and len(report["refused"]) >= 10
    # Kept while under the bound: at most the bound plus the one result that crossed it (~2.6 MB of
    # UTF-8 JSON for 1 MB of random output), plus small "too large" errors.
    assert bound <= info["async_result_bytes"] <= bound + 3 * MB
    assert info["async_results"] == len(report["accepted"])
    with k.client() as op:  # the per-agent view says the same
        mine = op.get_agent_metrics(agent_row(k, "asyncer")["id"])["held"]
    assert mine["async_result_bytes"] == info["async_result_bytes"] and mine["async_results"] == info["async_results"]

    got = drained(k, "asyncer")
    results = {r["request_id"]: r for r in got["results"]}
    assert sorted(results) == sorted(report["accepted"])  # every accepted request has its result
    kept = [r for r in results.values() if r["success"]]
    too_large = [r for r in results.values() if not r["success"]]
    assert kept and all(r["payload_type"] == "str" and 900_000 < r["stdout_len"] <= 1_000_000 for r in kept)
    assert all(r["code"] == "quota.exceeded" and r["details"]["limit"] == "async_result_bytes" for r in too_large)
    assert all(r["opcode_name"] == "SYS_EXEC" for r in results.values())
    assert got["after_drain"] == "accepted"  # polled below the bound: accepted again
    poll_for(lambda: held(k)["exec_jobs"] == 0, message="last command")
    with k.client() as op:
        op.kill(name="asyncer")
    after = held(k)
    assert after["async_result_bytes"] == 0 and after["async_results"] == 0


def test_event_queues_are_bounded_in_bytes_and_drops_are_reported(make_kernel):
    k = make_kernel(extra='[kernel]\nmax_message_bytes = 4194304\n[limits]\nevent_queue_bytes = "4M"\n')
    before = warm_up(k)
    report = abuse(k, "emitter", mode="events", n=300, size=900_000, too_big=1_500_000)
    growth = rss(k) - before
    info = held(k)
    print(f"events: emitted {report['emitted']}, rss growth {growth / MB:.1f} MiB")

    assert growth < 3 * 4 * MB + RSS_MARGIN, f"kernel grew {growth / MB:.1f} MiB"
    assert report["emitted"] == 300 and report["codes"] == []
    assert report["too_big"]["code"] == "quota.exceeded" and report["too_big"]["details"]["limit"] == "event_data_bytes"
    assert report["subscribe"]["subscribed"] == ["abuse.evt"] and report["subscribe"]["count"] == 1
    assert 3 * 900_000 < info["event_queue_bytes"] <= 4 * MB

    got = drained(k, "emitter")
    assert got["received"] == 4 and got["sizes"] == [900_000]  # 4 of 900 KB fit in 4 MiB
    assert got["dropped"] == 296
    assert 296 * 900_000 <= got["dropped_bytes"] <= 296 * 901_000


def test_subscriptions_are_capped_and_subscribe_replies_do_not_grow(make_kernel):
    k = make_kernel(extra="[limits]\nsubscriptions = 1000\n")
    before = warm_up(k)
    report = abuse(k, "subscriber", mode="subscribe", n=5200, bulk=20_000)
    growth = rss(k) - before
    print(f"subscriptions: {report['ok']} ok, {report['refused']} refused, reply sizes {report['reply_sizes']}, rss growth {growth / MB:.1f} MiB")

    assert report["ok"] == 1000 and report["refused"] == 4200
    refusal = report["first_refusal"]
    assert refusal["code"] == "quota.exceeded"
    assert refusal["details"] == {**refusal["details"], "limit": "subscriptions", "held": 1000, "bound": 1000, "requested": 1}
    assert report["reply_sizes"][1] < 400, "subscribe replies grew with the set"
    assert report["bulk"]["code"] == "quota.exceeded" and report["bulk_seconds"] < 2.0
    assert report["again"] == {"success": True, "subscribed": ["t.0"], "added": [], "count": 1000}
    assert held(k)["subscriptions"] == 1000
    assert growth < RSS_MARGIN


def test_a_mailbox_is_bounded_by_its_recipients_limit(make_kernel):
    k = make_kernel(extra='[limits]\nmailbox_bytes = "8M"\n[limits.agents.sink]\nmailbox_bytes = "1M"\n')
    with k.client() as op:
        op.spawn("sink", agent_script("exec_ops.py"), args=['[["hello", {}]]'])  # never receives
        read_report(k, "sink")
    before = rss(k)
    report = abuse(k, "sender", mode="send", n=100, size=200_000, to_name="sink")
    growth = rss(k) - before
    print(f"mailbox: sent {report['sent']}, rss growth {growth / MB:.1f} MiB")

    assert report["sent"] == 5  # 5 x ~200 KB fit in the sink's 1 MiB, not the sender's 8 MiB
    failure = report["failure"]
    assert failure["code"] == "ipc.mailbox_full"
    assert failure["details"]["max_bytes"] == MB and failure["details"]["limit"] == "mailbox_bytes"
    assert 5 * 200_000 < held(k)["mailbox_bytes"] <= MB
    assert growth < RSS_MARGIN
