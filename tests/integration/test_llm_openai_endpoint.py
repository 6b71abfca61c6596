"""The LLM gateway's OpenAI-compatible endpoint with a real kernel, real sandboxed agents and the
real ``openai`` client (and LangChain's ``ChatOpenAI``) in this test process, talking to an
agent's ``llm.sock`` through ``httpx``'s Unix-socket transport, with the fake OpenAI server on
loopback as the provider. The sandbox side (the loopback relay and ``OPENAI_BASE_URL`` inside the
agent's namespace) is another part's; here the socket is what is under test: the agent's
identity, the gateway's rules, the journal, and what one agent can make the endpoint hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from clove.testing.kernel import KernelProcess, poll_for
from clove.testing.openai_server import FakeOpenAIServer
from tests.conftest import agent_row, agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key="sk-kernel-only", tool_arguments={"get_weather": '{"city": "Paris"}'}) as s:
        yield s


def config(server: FakeOpenAIServer, *, endpoint: str = "", llm: str = "") -> str:
    return f"""
[llm]
plugins = ["openai"]
retry_backoff = 0.1
{llm}
[llm.endpoint]
{endpoint}
[llm.providers.fake]
kind = "openai"
model = "fake-model"
base_url = "{server.base_url}"
api_key_env = "CLOVE_TEST_PROVIDER_KEY"
"""


@pytest.fixture
def boot(make_kernel: Any, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``boot(endpoint=..., llm=...)``: a kernel whose provider key only the kernel holds."""
    monkeypatch.setenv("CLOVE_TEST_PROVIDER_KEY", "sk-kernel-only")

    def make(**kw: str) -> KernelProcess:
        return make_kernel(config(server, **kw))  # type: ignore[no-any-return]

    return make


def spawn(k: KernelProcess, name: str, **body: Any) -> tuple[int, Path]:
    """A sandboxed agent that waits quietly, and the path of its ``llm.sock``."""
    agent_id = k.call("agent.spawn", name=name, script=agent_script("msg_wait.py"), args=["600"], **body)["id"]
    poll_for(lambda: b"READY" in k.call("agent.logs", name=name, offset=0)["data"], 30, message=f"{name} ready")
    return agent_id, k.state_dir / "agents" / str(agent_id) / "ipc" / "llm.sock"


def client_for(path: Path, **kw: Any) -> openai.OpenAI:
    # Whatever key the agent sends is ignored: the provider's stays in the kernel.
    return openai.OpenAI(api_key="sk-agent-made-this-up", base_url="http://clove.invalid/v1",
                         http_client=httpx.Client(transport=httpx.HTTPTransport(uds=str(path))), **kw)  # fmt: skip


def journal(k: KernelProcess, agent_id: int, event: str, category: str = "NETWORK") -> list[dict[str, Any]]:
    with k.client() as op:
        entries = op.get_audit_log(category=category, agent_id=agent_id, limit=1000)["entries"]
    return [e for e in entries if e["event_type"] == event]


def at_least(k: KernelProcess, agent_id: int, event: str, count: int, category: str = "NETWORK") -> list[dict[str, Any]]:
    """The agent's ``event`` records once there are ``count`` (the journal is written off the loop)."""
    return poll_for(lambda: (lambda found: found if len(found) >= count else None)(journal(k, agent_id, event, category)), 30, message=f"{count} {event} records")


def raw_exchange(path: Path, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the kernel answers until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def status_and_error(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


# ---- the OpenAI client, unchanged ----------------------------------------------------------------


def test_completion_streaming_and_models_through_the_agents_socket(boot, server):
    k = boot(llm="record = true")
    agent_id, path = spawn(k, "chatty")
    st, channel = os.stat(path), os.stat(path.parent / "kernel.sock")
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o660, 0, channel.st_gid) and st.st_gid != 0  # like kernel.sock
    client = client_for(path)
    answer = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hello kernel"}])
    assert answer.choices[0].message.content == "reply to: hello kernel" and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == server.calls[-1].tokens
    assert server.calls[-1].headers["authorization"] == "Bearer sk-kernel-only"  # the kernel's key, never the agent's

    chunks = list(client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "stream " + "word " * 40}],
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "reply to: stream " + " ".join(["word"] * 40)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == server.calls[-1].completion_tokens
    assert [m.id for m in client.models.list()] == ["fake-model"]

    async def async_stream() -> str:
        aclient = openai.AsyncOpenAI(api_key="x", base_url="http://clove.invalid/v1",
                                     http_client=httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path))))  # fmt: skip
        async with aclient:
            stream = await aclient.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "async"}], stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(async_stream()) == "reply to: async"

    requests = at_least(k, agent_id, "llm.request", 3)
    assert {r["details"]["outcome"] for r in requests} == {"ok"} and {r["details"]["name"] for r in requests} == {"chatty"}
    assert sorted(r["details"]["prompt"] for r in requests) == ["async", "hello kernel", "stream " + "word " * 40]
    chats = at_least(k, agent_id, "llm.chat", 3)
    assert len(chats) == 3 and {(c["decision"], c["code"], c["details"]["status"]) for c in chats} == {("allowed", "ok", 200)}
    assert {c["args"]["model"] for c in chats} == {"fake-model"}
    assert "hello kernel" not in json.dumps(chats)  # the syscall-like record keeps sizes, not texts
    with k.client() as op:
        row = op.llm_stats(agent_id=agent_id)["agents"][0]
    assert row["completed"] == 3 and row["used"] == server.tokens_billed()


def test_a_two_step_tool_conversation_passes_tool_calls_and_results(boot, server):
    k = boot(llm="record = true")
    agent_id, path = spawn(k, "tooluser")
    client = client_for(path)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = client.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "the tool said: sunny, 21 C"
    sent = server.calls[-1].body
    assert sent["tools"] == [WEATHER] and sent["messages"][1]["tool_calls"][0]["id"] == call.id
    assert sent["messages"][2] == {"role": "tool", "content": "sunny, 21 C", "tool_call_id": call.id}
    lines = [json.loads(line) for line in (k.state_dir / "llm" / "recording.jsonl").read_text().splitlines()]
    assert lines[0]["tool_calls"][0]["name"] == "get_weather" and lines[1]["messages"][-1]["content"] == "sunny, 21 C"


def test_budget_exhausted_is_a_429_with_the_gateways_reason_and_no_retry(boot, server):
    k = boot()
    agent_id, path = spawn(k, "broke", permissions={"llm_tokens": 40})
    client = client_for(path)  # the client's default max_retries = 2: x-should-retry: false stops them
    before = len(server.calls)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x" * 200}], max_tokens=100)
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "llm.quota_exceeded" and error["type"] == "insufficient_quota"
    assert "budget" in error["message"] and error["details"]["kind"] == "lifetime"
    assert len(server.calls) == before
    refusals = at_least(k, agent_id, "llm.chat", 1)
    assert [(r["code"], r["details"]["status"]) for r in refusals] == [("llm.quota_exceeded", 429)]


def test_langchain_chat_openai_drives_a_two_step_tool_conversation(boot, server):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"rainy in {city}"

    k = boot()
    agent_id, path = spawn(k, "langchain")
    model = ChatOpenAI(model="fake-model", api_key="not-a-key", base_url="http://clove.invalid/v1",  # type: ignore[arg-type]
                       http_client=httpx.Client(transport=httpx.HTTPTransport(uds=str(path))))  # fmt: skip
    llm = model.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("weather in Paris?")]
    ai = llm.invoke(messages)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather" and ai.tool_calls[0]["args"] == {"city": "Paris"}
    messages += [ai, ToolMessage(get_weather.invoke(ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"])]
    final = llm.invoke(messages)
    assert final.content == "the tool said: rainy in Paris"
    assert len(at_least(k, agent_id, "llm.request", 2)) == 2


# ---- who may, and what it can make the kernel hold -----------------------------------------------


def test_only_agents_with_the_llm_right_get_a_socket_and_it_goes_with_the_agent(boot):
    k = boot()
    agent_id, path = spawn(k, "thinker")
    quiet_id, quiet_path = spawn(k, "quiet", level="minimal")
    assert path.exists() and not quiet_path.exists()
    status, error = status_and_error(raw_exchange(path, b"GET /v1/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"))
    assert status == 404 and error["code"] == "unknown_url" and "/v1/chat/completions" in error["message"]
    status, error = status_and_error(raw_exchange(path, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\n{nope"))
    assert status == 400 and "JSON" in error["message"]
    assert [r["details"]["status"] for r in at_least(k, agent_id, "proto.rejected", 1, category="SECURITY")] == [404]
    assert [r["details"]["status"] for r in at_least(k, agent_id, "llm.chat", 1, category="SECURITY")] == [400]
    with k.client() as op:
        assert op.kill(agent_id=agent_id)  # an operator's kill removes the agent, and its channel
    poll_for(lambda: not path.exists(), 15, message="llm.sock removed with the agent")
    assert (path.parent / "kernel.sock").exists() is False


def test_each_bound_is_enforced_with_a_clear_error(boot, server):
    k = boot(endpoint="max_connections = 3\nmax_request_bytes = 4096\nmax_header_bytes = 2048\nmax_in_flight = 1")
    agent_id, path = spawn(k, "greedy")

    # request bytes: refused from Content-Length alone, before the body is read ...
    status, error = status_and_error(raw_exchange(path, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n"))
    assert status == 413 and error["code"] == "request_too_large"
    # ... and from the real client, which sends it all and still reads the answer.
    with client_for(path, max_retries=0) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x" * 10_000}])
    assert caught.value.status_code == 413

    # header bytes, whether they arrive in one read or never end
    status, error = status_and_error(raw_exchange(path, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 4000 + b"\r\n\r\n"))
    assert status == 431 and error["code"] == "headers_too_large"
    status, error = status_and_error(raw_exchange(path, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000))
    assert status == 431

    # requests in flight: one hangs at the provider; the next is refused, not queued
    server.hang(match="slow", seconds=60)
    results: list[Any] = []

    def slow() -> None:
        with client_for(path, max_retries=0, timeout=60) as client:
            try:
                results.append(client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "slow"}]))
            except openai.APIError as err:
                results.append(err)

    hanging = threading.Thread(target=slow)
    hanging.start()
    poll_for(lambda: server.calls_matching("slow"), 30, message="the slow request at the provider")
    with client_for(path, max_retries=0) as client, pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "second"}])
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "too_many_requests"

    # open connections: the hanging request's and two idle ones make three; the next is told why
    held = []
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        held.append(sock)
    try:
        status, error = status_and_error(raw_exchange(path, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n"))
        assert status == 429 and error["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    server.clear()
    server.close()  # ends the hang: the provider call fails and the request settles
    hanging.join(30)
    assert not hanging.is_alive() and isinstance(results[0], openai.APIStatusError) and results[0].status_code == 502
    with k.client() as op:
        assert agent_row(k, "greedy")["state"] == "running"
        assert op.noop("still serving") == "still serving"
    rejected = at_least(k, agent_id, "proto.rejected", 4, category="SECURITY")
    assert sorted(r["details"]["status"] for r in rejected) == [413, 413, 431, 431]


def test_idle_connections_are_closed_and_late_requests_answered_408(boot):
    k = boot(endpoint="idle_timeout = 0.5")
    agent_id, path = spawn(k, "sleepy")
    started = time.monotonic()
    assert raw_exchange(path, b"") == b""  # closed by the kernel, not by the test's 10 s timeout
    assert time.monotonic() - started < 9
    status, error = status_and_error(raw_exchange(path, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{"))
    assert status == 408 and error["code"] == "request_timeout"
    # a connection that was used stays open between requests until it idles
    with client_for(path, max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["fake-model"]
        assert [m.id for m in client.models.list()] == ["fake-model"]
    assert [r["details"]["status"] for r in at_least(k, agent_id, "proto.rejected", 1, category="SECURITY")] == [408]


def test_an_agent_that_exits_takes_its_connections_and_requests_with_it(boot, server):
    """Requests the gateway drops when the agent exits are never answered: the endpoint forgets
    them, so the next incarnation starts with its whole in-flight bound."""
    k = boot(endpoint="max_in_flight = 1")
    agent_id, path = spawn(k, "phoenix", restart_policy="always")
    server.hang(match="slow", seconds=60)
    results: list[Any] = []

    def slow() -> None:
        with client_for(path, max_retries=0, timeout=60) as client:
            try:
                results.append(client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "slow"}]))
            except openai.APIError as err:
                results.append(err)

    hanging = threading.Thread(target=slow)
    hanging.start()
    poll_for(lambda: server.calls_matching("slow"), 30, message="the slow request at the provider")
    with k.client() as op:
        assert op.send_message({"go": True}, to=agent_id)["success"]  # msg_wait returns, the agent exits 0 and restarts
    hanging.join(30)
    assert not hanging.is_alive() and isinstance(results[0], openai.APIConnectionError)  # closed with the incarnation
    poll_for(lambda: agent_row(k, "phoenix")["restarts"] >= 1 and agent_row(k, "phoenix")["state"] == "running", 30, message="restarted")
    with client_for(path, max_retries=0) as client:
        assert client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "again"}]).choices[0].message.content == "reply to: again"


AGENT_CODE = '''
import json, sys
import openai

client = openai.OpenAI()  # OPENAI_BASE_URL and a placeholder key come from the sandbox
answer = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "from the sandbox"}])
streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="fake-model", messages=[{"role": "user", "content": "streamed"}], stream=True) if c.choices)
try:  # the provider itself is out of reach: no network grant
    openai.OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0, timeout=5).models.list()
    direct = "reached"
except openai.APIConnectionError:
    direct = "unreachable"
print("REPORT " + json.dumps({"answer": answer.choices[0].message.content, "streamed": streamed, "direct": direct}), flush=True)
'''


def test_unchanged_openai_code_in_a_sandboxed_agent_reaches_the_gateway_and_nothing_else(boot, server):
    """End to end with the sandbox's loopback relay (127.0.0.1:8199 → llm.sock, OPENAI_BASE_URL)."""
    from tests.conftest import read_report

    k = boot()
    script_dir = Path(tempfile.mkdtemp(prefix="clove-oai-", dir="/tmp"))
    try:
        script_dir.chmod(0o755)
        script = script_dir / "unchanged_openai_agent.py"
        script.write_text(AGENT_CODE)
        script.chmod(0o644)
        agent_id = k.call("agent.spawn", name="unchanged", script=str(script), args=[server.base_url])["id"]
        report = read_report(k, "unchanged", timeout=60)
    finally:
        shutil.rmtree(script_dir, ignore_errors=True)
    assert report == {"answer": "reply to: from the sandbox", "streamed": "reply to: streamed", "direct": "unreachable"}
    assert len(at_least(k, agent_id, "llm.request", 2)) == 2
    assert {c.headers["authorization"] for c in server.calls} == {"Bearer sk-kernel-only"}


def test_the_openai_example_agent_runs_unchanged_with_its_tool(boot, server):
    """examples/openai_agent: a two-step tool-using conversation by plain openai code, sandboxed."""
    from clove.config import load_config
    from tests.conftest import read_report

    example = Path(__file__).resolve().parents[2] / "examples" / "openai_agent"
    shipped = load_config(example / "kernel.toml")  # the example's own config is valid as shipped
    assert [a.name for a in shipped.agents] == ["weather"] and shipped.llm is not None
    k = boot()
    agent_id = k.call("agent.spawn", name="weather", script=str(example / "agent.py"), env={"MODEL": "fake-model"},
                      limits={"memory": 256 << 20})["id"]  # fmt: skip
    report = read_report(k, "weather", timeout=60)
    assert report == {"tool": "get_weather", "arguments": {"city": "Paris"}, "answer": "the tool said: 12 C and clear in Paris"}
    assert len(at_least(k, agent_id, "llm.request", 2)) == 2
