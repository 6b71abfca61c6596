"""The OpenAI chat-completions translation of the LLM endpoint (clove.kernel.services.llmhttpapi),
the tool fields of the OpenAI provider plugin, and the budget bound of a tool conversation.
Replies are checked with the real ``openai`` package's own response types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from clove.errors import OperationTimeout, PermissionDenied, QuotaExceeded, UpstreamError
from clove.httpclient import HttpRequest, HttpResponse
from clove.kernel.services.llmhttpapi import ApiError, completion_json, error_for, parse_chat, stream_events
from clove.llm.errors import LlmQuotaExceeded, LlmUnavailable
from clove.llm.openai import OpenAIOptions, OpenAIProvider
from clove.llm.types import ChatMessage, ChatRequest, ToolCall
from clove.testing.openai_server import prompt_tokens

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "the weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
]


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_a_tool_conversation_parses_into_a_request_with_every_message_and_tool():
    call = parse_chat(body(messages=CONVERSATION, tools=[WEATHER], tool_choice="auto", temperature=0.2, max_completion_tokens=50, stream=True,
                           stream_options={"include_usage": True}, user="ignored", parallel_tool_calls=False))  # fmt: skip
    assert call.model == "m" and call.stream and call.include_usage and call.max_tokens == 50
    request = call.request("routed", default_max_tokens=1024)
    assert request.model == "routed" and request.max_tokens == 50 and request.prompt == "weather in Paris?"
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    assert request.messages[2].tool_calls == (ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)
    assert request.messages[3].tool_call_id == "call_1"
    assert request.tools[0].name == "get_weather" and json.loads(request.tools[0].parameters or "") == WEATHER["function"]["parameters"]
    assert request.tool_choice == "auto" and request.temperature == 0.2 and request.parallel_tool_calls is False
    assert call.summary() == {"model": "m", "messages": 4, "tools": ["get_weather"], "stream": True, "max_tokens": 50,
                              "roles": ["assistant", "system", "tool", "user"]}  # fmt: skip


def test_content_parts_become_text_and_images():
    call = parse_chat(body(messages=[{"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "text", "text": "this?"},
                                                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]))  # fmt: skip
    message = call.request("m", 10).messages[0]
    assert message.content == "what is this?" and message.images == ("data:image/png;base64,AAAA",)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (body(messages=[]), "messages"),
        (body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (body(messages=[{"role": "user", "content": [{"type": "audio"}]}]), "messages[0].content"),
        (body(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]), "messages[0].tool_calls"),
        (body(tools=[{"type": "function", "function": {}}]), "tools[0]"),
        (body(tools=[WEATHER] * 129), "tools"),
        (body(tool_choice="sometimes"), "tool_choice"),
        (body(temperature=3), "temperature"),
        (body(max_tokens=0), "max_tokens"),
        (body(n=2), "n"),
        (body(stream="yes"), "stream"),
        (body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (body(reasoning_effort="extreme"), "reasoning_effort"),
    ],
)
def test_bad_requests_are_400_naming_the_field(raw: bytes, param: str | None):
    with pytest.raises(ApiError) as caught:
        parse_chat(raw)
    assert caught.value.status == 400 and caught.value.param == param and caught.value.message


@pytest.mark.parametrize(
    ("error", "status", "kind", "retry"),
    [
        (LlmQuotaExceeded("budget spent", details={"kind": "lifetime"}), 429, "insufficient_quota", "false"),
        (QuotaExceeded("at most 256 queued"), 429, "rate_limit_exceeded", None),
        (PermissionDenied("needs the llm right"), 403, "permission_denied", "false"),
        (LlmUnavailable("no provider offers x", details={"model": "x", "offered": ["m"]}), 404, "invalid_request_error", "false"),
        (LlmUnavailable("not configured"), 503, "service_unavailable", "false"),
        (OperationTimeout("too slow"), 504, "timeout", "false"),
        (UpstreamError("provider down"), 502, "api_error", "false"),
    ],
)
def test_gateway_refusals_map_to_openai_errors_with_the_gateways_reason(error: Any, status: int, kind: str, retry: str | None):
    api = error_for(error)
    assert (api.status, api.type, api.message) == (status, kind, error.message)
    assert dict(api.headers).get("x-should-retry") == retry


def reply(**extra: Any) -> dict[str, Any]:
    return {"success": True, "content": "hello world " * 20, "prompt_tokens": 12, "completion_tokens": 40, "tokens": 52, "model": "m",
            "finish_reason": "stop", **extra}  # fmt: skip


def test_completion_json_is_an_openai_chat_completion():
    completion = ChatCompletion.model_validate(completion_json(reply(), "chatcmpl-1", 1700000000))
    assert completion.choices[0].message.content == "hello world " * 20
    assert completion.usage is not None and completion.usage.total_tokens == 52
    calls = [{"id": "call_9", "name": "get_weather", "arguments": '{"city":"Oslo"}'}]
    with_tools = ChatCompletion.model_validate(completion_json(reply(content="", tool_calls=calls, finish_reason="tool_calls"), "c", 1))
    message = with_tools.choices[0].message
    assert message.content is None and with_tools.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and message.tool_calls[0].function.arguments == '{"city":"Oslo"}'


def test_stream_events_rebuild_the_answer_and_tool_calls():
    calls = [{"id": "call_9", "name": "get_weather", "arguments": json.dumps({"city": "x" * 150})}]
    events = stream_events(reply(tool_calls=calls, finish_reason="tool_calls"), "chatcmpl-2", 1, include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n" and all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    chunks = [ChatCompletionChunk.model_validate_json(e[6:-2]) for e in events[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(tc.function.arguments or "" for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or () if tc.function)
    assert text == "hello world " * 20 and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert json.loads(arguments) == {"city": "x" * 150}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 40
    without_usage = stream_events(reply(), "c", 1, include_usage=False)
    assert all(ChatCompletionChunk.model_validate_json(e[6:-2]).choices for e in without_usage[:-1])


class Transport:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.sent: list[dict[str, Any]] = []

    def send(self, request: HttpRequest, deadline: float) -> HttpResponse:
        self.sent.append(json.loads(request.body or b"{}"))
        return HttpResponse(200, {}, json.dumps(self.answer).encode())

    def close(self) -> None:
        pass


def test_the_openai_provider_sends_the_conversation_and_reads_tool_calls():
    answer = {"model": "m", "usage": {"prompt_tokens": 30, "completion_tokens": 9},
              "choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
                  {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]}}]}  # fmt: skip
    transport = Transport(answer)
    provider = OpenAIProvider(OpenAIOptions(base_url="http://x/v1"), name="p", transport=transport)
    try:
        request = parse_chat(body(messages=CONVERSATION, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                  response_format={"type": "json_object"}, seed=7, stop="END")).request("m", 100)  # fmt: skip
        response = provider.complete(request, deadline=float("inf"))
    finally:
        provider.close()
    sent = transport.sent[0]
    assert sent["messages"] == CONVERSATION
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["response_format"] == {"type": "json_object"} and sent["seed"] == 7 and sent["stop"] == ["END"] and sent["max_tokens"] == 100
    assert response.tool_calls == (ToolCall("call_2", "get_weather", '{"city":"Rome"}'),) and response.finish_reason == "tool_calls"


def test_malformed_tool_calls_from_a_provider_are_an_upstream_error():
    answer = {"choices": [{"message": {"role": "assistant", "tool_calls": [{"id": "x", "function": {"arguments": "{}"}}]}}]}
    provider = OpenAIProvider(OpenAIOptions(base_url="http://x/v1"), name="p", transport=Transport(answer))
    try:
        with pytest.raises(UpstreamError, match="malformed tool calls"):
            provider.complete(ChatRequest(prompt="hi", model="m", max_tokens=5), deadline=float("inf"))
    finally:
        provider.close()


def test_the_reserved_prompt_bound_covers_what_a_tool_conversation_is_billed():
    """The gateway reserves max_prompt_tokens before sending: it must never be below what the
    (fake) provider bills for the same conversation, tool calls included."""
    provider = OpenAIProvider(OpenAIOptions(base_url="http://x/v1"), name="p", transport=Transport({}))
    try:
        request = parse_chat(body(messages=CONVERSATION, tools=[WEATHER])).request("m", 10)
        assert provider.max_prompt_tokens(request) >= prompt_tokens(CONVERSATION)
        plain = ChatRequest(prompt="hello", model="m", max_tokens=5, system_instruction="sys")
        assert provider.max_prompt_tokens(plain) == len("hello") + len("sys") + 8 * 2 + 8  # unchanged for think
        assert ChatMessage(role="tool", content="é", tool_call_id="c").text_bytes() == 3
    finally:
        provider.close()


def test_the_endpoint_bounds_come_from_the_llm_endpoint_table():
    from clove.config.llm import LlmEndpointSettings, parse_llm
    from clove.errors import ConfigError

    base = {"plugins": ["openai"], "providers": {"f": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}}}
    section = parse_llm("k.toml", {"llm": base})
    assert section is not None and section.endpoint == LlmEndpointSettings()
    section = parse_llm("k.toml", {"llm": {**base, "endpoint": {"max_connections": 2, "idle_timeout": 0.5, "enabled": False}}})
    assert section is not None and (section.endpoint.max_connections, section.endpoint.idle_timeout, section.endpoint.enabled) == (2, 0.5, False)
    with pytest.raises(ConfigError, match=r"\[llm.endpoint\].max_in_flight: must be positive"):
        parse_llm("k.toml", {"llm": {**base, "endpoint": {"max_in_flight": 0}}})
    with pytest.raises(ConfigError, match=r"\[llm.endpoint\].bogus: unknown key"):
        parse_llm("k.toml", {"llm": {**base, "endpoint": {"bogus": 1}}})
