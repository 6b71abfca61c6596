"""An ``openai``-client chat completion through the kernel's OpenAI-compatible endpoint, against
the same client calling the provider directly, same run.

A fake OpenAI chat-completions server on loopback (``clove.testing.openai_server``, no latency)
answers every path, in interleaved blocks so machine noise hits them alike. Each path is the
real ``openai.OpenAI`` client, one kept-alive connection:

* ``direct``:          ``base_url`` = the fake server (what an agent with its own network and key does);
* ``endpoint``:        ``base_url`` through an agent's ``llm.sock`` (httpx's Unix-socket transport):
                       h11 parsing on the kernel's loop, the fair queue, budget reservation and
                       settlement, a worker thread doing the provider POST, two journal records;
* ``endpoint stream``: the same with ``stream: true`` (events cut from the completed answer);
* ``think``:           ``llm.think`` through the SDK from this process (an operator session), the
                       syscall path to the same gateway, for comparison.

The agent itself is an idle sandboxed process; the sandbox's loopback relay (127.0.0.1:8199 in
its namespace → llm.sock) is not part of this measure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
from common import Report, agent_script, bench_kernel, main, stats_dict, summarize, time_calls

from clove.testing.kernel import poll_for
from clove.testing.openai_server import FakeOpenAIServer

WARMUP = 50
ROUNDS = 6
BLOCK = 50
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]


def config(server: FakeOpenAIServer) -> str:
    return f"""
[llm]
plugins = ["openai"]
[llm.providers.fake]
kind = "openai"
model = "fake-model"
base_url = "{server.base_url}"
concurrency = 4
"""


def _interleaved(paths: dict[str, Callable[[], object]]) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in paths}
    for fn in paths.values():
        time_calls(fn, 0, WARMUP)
    for _ in range(ROUNDS):
        for name, fn in paths.items():
            samples[name].extend(time_calls(fn, BLOCK, 5))
    return samples


def run(report: Report, say: Callable[[str], None]) -> None:
    with FakeOpenAIServer() as server, bench_kernel(config(server)) as kernel, kernel.client() as op:
        agent_id = op.call("agent.spawn", name="bench-llm", script=agent_script("hello_sleep.py"))["id"]
        path = kernel.state_dir / "agents" / str(agent_id) / "ipc" / "llm.sock"
        poll_for(path.exists, 30, message="the agent's llm.sock")
        direct = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        through = openai.OpenAI(api_key="x", base_url="http://clove.invalid/v1", max_retries=0,
                                http_client=httpx.Client(transport=httpx.HTTPTransport(uds=str(path))))  # fmt: skip

        def streamed() -> None:
            for _ in through.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=16, stream=True):
                pass

        say(f"llm_endpoint: {ROUNDS} rounds x {BLOCK} calls per path, interleaved")
        samples = _interleaved({
            "direct": lambda: direct.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=16),
            "endpoint": lambda: through.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=16),
            "endpoint stream": streamed,
            "think": lambda: op.call("llm.think", prompt="hello there", max_tokens=16),
        })  # fmt: skip
        direct.close()
        through.close()
    stats = {name: summarize(s) for name, s in samples.items()}
    base, endpoint, stream, think = stats["direct"], stats["endpoint"], stats["endpoint stream"], stats["think"]
    report.add("direct openai client p50", base.p50, "µs")
    report.add("endpoint openai client p50", endpoint.p50, "µs", baseline=base.p50, baseline_name="direct p50")
    report.add("endpoint openai client p99", endpoint.p99, "µs", baseline=base.p99, baseline_name="direct p99")
    report.add("overhead per completion p50", endpoint.p50 - base.p50, "µs", note="endpoint - direct")
    report.add("endpoint stream p50", stream.p50, "µs", baseline=endpoint.p50, baseline_name="endpoint p50")
    report.add("think (SDK syscall) p50", think.p50, "µs", baseline=endpoint.p50, baseline_name="endpoint p50")
    report.details["stats_us"] = {name: stats_dict(s) for name, s in stats.items()}
    report.notes.append("every path hits the same loopback fake OpenAI server (no latency), interleaved in blocks")
    report.notes.append("the endpoint path journals an llm.chat and an llm.request record per completion")
    for name, s in stats.items():
        say(f"  {name:16s} {s.fmt()}")


if __name__ == "__main__":
    raise SystemExit(main("llm_endpoint", run))
