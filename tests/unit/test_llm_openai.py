"""The OpenAI-compatible provider without a network: what it sends and how it reads answers and
errors, through a fake :class:`~clove.httpclient.Transport`."""

from __future__ import annotations

import base64
import email.utils
import json
import time
from typing import Any

import pytest

from clove.errors import ConfigError, OperationTimeout, UpstreamError
from clove.httpclient import HttpRequest, HttpResponse
from clove.llm.errors import ProviderError, RateLimited, ServerError
from clove.llm.openai import OpenAIOptions, OpenAIProvider, parse_retry_after
from clove.llm.options import OptionError, parse_options
from clove.llm.types import ChatRequest, Image


class FakeTransport:
    def __init__(self, *responses: HttpResponse | Exception) -> None:
        self.responses = list(responses)
        self.sent: list[tuple[HttpRequest, float]] = []
        self.closed = False

    def send(self, request: HttpRequest, deadline: float) -> HttpResponse:
        self.sent.append((request, deadline))
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response

    def close(self) -> None:
        self.closed = True


def ok(content: Any = "hi there", usage: dict[str, Any] | None = None, **extra: Any) -> HttpResponse:
    message = {"role": "assistant", "content": content, **extra}
    body = {"model": "served-model", "choices": [{"message": message, "finish_reason": "stop"}],
            "usage": usage if usage is not None else {"prompt_tokens": 12, "completion_tokens": 2}}  # fmt: skip
    return HttpResponse(200, {"content-type": "application/json"}, json.dumps(body).encode())


def provider(*responses: HttpResponse | Exception, **options: Any) -> tuple[OpenAIProvider, FakeTransport]:
    transport = FakeTransport(*responses)
    opts = OpenAIOptions(base_url=options.pop("base_url", "http://llm.local:8000/v1/"), **options)
    return OpenAIProvider(opts, name="local", concurrency=2, transport=transport), transport


def call(p: OpenAIProvider, **kw: Any) -> Any:
    return p.complete(ChatRequest(prompt=kw.pop("prompt", "hello"), model="m", max_tokens=kw.pop("max_tokens", 50), **kw), time.monotonic() + 5)


def test_what_is_sent(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret")
    p, t = provider(ok(), api_key_env="TEST_LLM_KEY", max_tokens_field="max_completion_tokens", headers={"OpenAI-Organization": "org"})
    r = call(p, system_instruction="be brief", temperature=0.3, thinking_level="high", image=Image(b"\x89PNG", "image/png"))
    sent, deadline = t.sent[0]
    assert (sent.method, sent.url) == ("POST", "http://llm.local:8000/v1/chat/completions")
    headers = dict(sent.headers)
    assert headers["Authorization"] == "Bearer sk-secret" and headers["OpenAI-Organization"] == "org"
    body = json.loads(sent.body or b"")
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"\x89PNG").decode()}},
            ]},
        ],
        "max_completion_tokens": 50,
        "temperature": 0.3,
        "reasoning_effort": "high",
    }  # fmt: skip
    assert deadline > time.monotonic()
    assert (r.content, r.model, r.prompt_tokens, r.completion_tokens, r.finish_reason) == ("hi there", "served-model", 12, 2, "stop")
    assert "sk-secret" not in json.dumps(p.describe())
    p.close()
    assert t.closed


def test_a_plain_request_and_no_key():
    p, t = provider(ok())
    call(p)
    body = json.loads(t.sent[0][0].body or b"")
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}
    assert "Authorization" not in dict(t.sent[0][0].headers)
    p.close()


def test_a_missing_key_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        OpenAIProvider(OpenAIOptions(base_url="http://x/v1", api_key_env="NO_SUCH_KEY_VAR"), name="p", transport=FakeTransport())


def test_answers_in_other_shapes():
    p, _ = provider(
        ok([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], reasoning_content="thought"),
        ok(None, usage={}),
    )
    parts = call(p)
    assert parts.content == "ab" and parts.reasoning == "thought"
    empty = call(p)
    assert empty.content == "" and empty.prompt_tokens is None and empty.completion_tokens is None
    p.close()


@pytest.mark.parametrize(
    ("response", "kind", "status", "retry_after"),
    [
        (HttpResponse(429, {"retry-after": "7"}, b'{"error": {"message": "slow down"}}'), RateLimited, 429, 7.0),
        (HttpResponse(429, {"retry-after-ms": "1500"}, b""), RateLimited, 429, 1.5),
        (HttpResponse(429, {}, b""), RateLimited, 429, None),
        (HttpResponse(500, {}, b"oops"), ServerError, 500, None),
        (HttpResponse(503, {"retry-after": "2"}, b""), ServerError, 503, 2.0),
        (HttpResponse(400, {}, b'{"error": {"message": "max_tokens is too large"}}'), ProviderError, 400, None),
        (HttpResponse(401, {}, b'{"error": "bad key"}'), ProviderError, 401, None),
    ],
)
def test_http_errors(response, kind, status, retry_after):
    p, _ = provider(response)
    with pytest.raises(kind) as err:
        call(p)
    assert type(err.value) is kind and err.value.status == status and err.value.retry_after == retry_after
    assert err.value.code == "upstream.failed" and err.value.details["status"] == status
    assert err.value.retryable is (status == 429 or status >= 500)
    if status == 400:
        assert err.value.message == "LLM provider 'local' answered 400: max_tokens is too large"
    p.close()


def test_transport_failures_are_named_for_the_provider():
    p, _ = provider(OperationTimeout("HTTP POST took longer than 5 s"), UpstreamError("could not connect: refused"), HttpResponse(200, {}, b"<html>"))
    with pytest.raises(OperationTimeout, match="LLM provider 'local' did not answer in time"):
        call(p)
    with pytest.raises(UpstreamError, match="LLM provider 'local' is unreachable: could not connect") as down:
        call(p)
    assert not isinstance(down.value, ProviderError)
    with pytest.raises(UpstreamError, match="malformed chat completion"):
        call(p)
    p.close()


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "99999999"}) == 3600.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(1000.0 + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1000.0) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "required"),
        ({"base_url": "ftp://x"}, "http:// or https://"),
        ({"base_url": "http://x", "max_tokens_field": "tokens"}, "max_tokens or max_completion_tokens"),
        ({"base_url": "http://x", "api_key": "sk-inline"}, "unknown key"),  # keys come from the environment only
    ],
)
def test_options_are_checked(table, message):
    with pytest.raises(OptionError, match=message):
        parse_options(OpenAIOptions, table)
