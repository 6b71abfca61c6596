"""The LLM gateway's cost per request, against the same provider called directly, same run.

A fake OpenAI chat-completions server on loopback (``clove.testing.openai_server``, no latency)
answers both paths, in interleaved blocks so machine noise hits them alike:

* ``direct``:       this process POSTs the chat completion with urllib3 (a pooled connection),
                    the way an agent with its own network and key would;
* ``kernel think``: ``llm.think`` through the kernel: the syscall, the fair queue, budget
                    reservation and settlement, a worker thread doing the same POST, the journal;
* ``noop``:         a kernel round trip that does nothing, to split IPC from gateway work;
* ``kernel http``:  the same POST through the kernel's ``http`` syscall (same worker pool and
                    transport, no queue, budget or LLM journal): what the gateway adds on top;
* ``scripted``:     ``llm.think`` to the scripted provider (no HTTP): queue + worker hand-off.

Then, in-process with a fake clock and no I/O: the scheduler's own cost per request (submit,
dispatch, settle) with 100 callers backlogged. And a fairness figure through a real kernel:
four operator sessions, one greedy (50 requests of 200 answer tokens outstanding) and three
modest (20 of 50), Jain's index of the tokens served while all four had requests queued.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from common import Report, bench_kernel, main, stats_dict, summarize, time_calls

from clove.llm.accounts import AgentLimits, ProviderSlot
from clove.llm.gateway import Gateway, GatewaySettings, Job
from clove.llm.scripted import ScriptedOptions, ScriptedProvider
from clove.llm.types import ChatRequest, ChatResponse
from clove.testing.openai_server import FakeOpenAIServer

WARMUP = 100
ROUNDS = 8
BLOCK = 100
INPROC_FLOWS = 100
INPROC_N = 20_000


def config(server: FakeOpenAIServer) -> str:
    return f"""
[llm]
plugins = ["openai", "scripted"]
[llm.providers.fake]
kind = "openai"
model = "fake-model"
base_url = "{server.base_url}"
concurrency = 4
[llm.providers.scripted]
kind = "scripted"
model = "scripted-1"
concurrency = 4
"""


def _interleaved(paths: dict[str, Callable[[], object]]) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in paths}
    for fn in paths.values():
        time_calls(fn, 0, WARMUP)
    for _ in range(ROUNDS):
        for name, fn in paths.items():
            samples[name].extend(time_calls(fn, BLOCK, 10))
    return samples


def _in_process() -> list[int]:
    """ns per request through the gateway's decisions alone: submit, pump, finished."""
    clock = [0.0]
    provider = ScriptedProvider(ScriptedOptions(), name="p")
    provider.close()
    slot = ProviderSlot(name="p", kind="scripted", model="m", models=(), concurrency=8, timeout=60.0, provider=provider)
    gateway = Gateway(GatewaySettings(max_queue=10**6), [slot], clock=lambda: clock[0], wall=lambda: 0.0)
    for p in range(INPROC_FLOWS):
        gateway.account(p, name=f"a{p}", agent_id=p, limits=AgentLimits(weight=1 + p % 3, budget=10**12, rpm=10**9, tpm=10**12))
    request = ChatRequest(prompt="hello there", model="m", max_tokens=64)
    for key in range(INPROC_FLOWS * 5):  # everybody backlogged
        gateway.submit(Job(key, key % INPROC_FLOWS, "p", request, 20, 0.0, 1e12))
    response = ChatResponse(content="x", model="m", prompt_tokens=10, completion_tokens=50)
    running = gateway.pump()
    keys = iter(range(10**6, 10**8))
    out: list[int] = []
    clock_ns = time.perf_counter_ns
    for _ in range(INPROC_N):
        t0 = clock_ns()
        job = running.pop()
        gateway.finished(job, response, False)
        key = next(keys)
        gateway.submit(Job(key, job.principal, "p", request, 20, clock[0], 1e12))
        running.extend(gateway.pump())
        out.append(clock_ns() - t0)
        clock[0] += 0.001
    return out


def _fairness(kernel: Any, server: FakeOpenAIServer) -> tuple[float, dict[str, int]]:
    server.completion_tokens = "max"
    server.latency, server.latency_per_token = 0.005, 0.00005
    plan = {"greedy": (50, 200), "modest0": (20, 50), "modest1": (20, 50), "modest2": (20, 50)}
    clients = {name: kernel.client(timeout=120) for name in plan}
    sessions = {name: c.hello()["session_id"] for name, c in clients.items()}
    barrier = threading.Barrier(len(plan))

    def flood(name: str) -> None:
        count, max_tokens = plan[name]
        c = clients[name]
        barrier.wait()
        for i in range(count):
            c.call("llm.think", prompt=f"{name} {i}", max_tokens=max_tokens, async_=True, request_id=f"{name}-{i}", timeout=120.0)
        got = 0
        while got < count:
            got += len(c.call("async.poll", max_results=100)["results"])
            time.sleep(0.01)

    threads = [threading.Thread(target=flood, args=(name,)) for name in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with kernel.client() as op:
        entries = op.get_audit_log(category="NETWORK", limit=10_000)["entries"]
    by_session: dict[int, list[dict[str, Any]]] = {}
    for e in entries:
        if e["event_type"] == "llm.request" and e["details"]["caller_id"] in sessions.values():
            by_session.setdefault(e["details"]["caller_id"], []).append(e["details"])
    for c in clients.values():
        c.close()
    records = {name: by_session.get(sid, []) for name, sid in sessions.items()}
    start = max(min(r["accepted_at"] for r in rs) for rs in records.values())
    end = min(max(r["dispatched_at"] for r in rs) for rs in records.values())
    served = {name: sum(r["tokens"] for r in rs if start <= r["dispatched_at"] <= end) for name, rs in records.items()}
    values = list(served.values())
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)), served


def run(report: Report, say: Callable[[str], None]) -> None:
    with FakeOpenAIServer() as server, bench_kernel(config(server)) as kernel, kernel.client() as client:
        pool = urllib3.PoolManager(maxsize=1)
        url = server.base_url + "/chat/completions"
        payload = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}

        def direct() -> None:
            response = pool.urlopen("POST", url, body=payload, headers=headers, retries=False)
            json.loads(response.data)

        say(f"llm_gateway: {ROUNDS} rounds x {BLOCK} calls per path, interleaved")
        samples = _interleaved({
            "noop": lambda: client.call("noop", msg="x"),
            "direct": direct,
            "kernel http": lambda: client.call("http", url=url, method="POST", body=payload, headers=headers),
            "kernel think": lambda: client.call("llm.think", prompt="hello there", max_tokens=16),
            "scripted": lambda: client.call("llm.think", prompt="hello there", max_tokens=16, model="scripted-1"),
        })  # fmt: skip
        say("  fairness: greedy vs three modest sessions through the kernel")
        index, served = _fairness(kernel, server)
        pool.clear()
    say("  the scheduler in-process")
    inproc = summarize(_in_process())

    stats = {name: summarize(s) for name, s in samples.items()}
    noop, direct_s, think, scripted = stats["noop"], stats["direct"], stats["kernel think"], stats["scripted"]
    http = stats["kernel http"]
    report.add("direct POST p50", direct_s.p50, "µs")
    report.add("kernel think p50", think.p50, "µs", baseline=direct_s.p50, baseline_name="direct POST p50")
    report.add("kernel think p99", think.p99, "µs", baseline=direct_s.p99, baseline_name="direct POST p99")
    report.add("overhead per request p50", think.p50 - direct_s.p50, "µs", note="kernel think - direct POST")
    report.add("overhead beyond IPC p50", think.p50 - direct_s.p50 - noop.p50, "µs", note="minus a noop round trip")
    report.add("kernel think vs kernel http p50", think.p50, "µs", baseline=http.p50, baseline_name="kernel http p50",
               note="the gateway's own cost: queue, budget, journal")  # fmt: skip
    report.add("gateway beyond kernel http p50", think.p50 - http.p50, "µs")
    report.add("scripted think p50", scripted.p50, "µs", baseline=noop.p50, baseline_name="noop p50")
    report.add("scheduler in-process p50", inproc.p50, "µs", note=f"submit+dispatch+settle, {INPROC_FLOWS} callers backlogged")
    report.add("scheduler in-process p99", inproc.p99, "µs")
    report.add("Jain's index (greedy vs modest)", index, "", target="≥0.95")
    report.details["stats_us"] = {name: stats_dict(s) for name, s in stats.items()}
    report.details["in_process_us"] = stats_dict(inproc)
    report.details["served_while_backlogged"] = served
    report.notes.append("direct and kernel paths hit the same loopback fake OpenAI server (no latency), interleaved")
    report.notes.append("kernel think journals one llm.request record per call besides the syscall's own record")
    for name, s in stats.items():
        say(f"  {name:12s} {s.fmt()}")
    say(f"  in-process  {inproc.fmt()}")
    say(f"  served tokens while all backlogged: {served}; Jain's index {index:.4f}")


if __name__ == "__main__":
    raise SystemExit(main("llm_gateway", run))
