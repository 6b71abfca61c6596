"""A fake OpenAI chat-completions server on loopback, for tests, demos and benchmarks.

It speaks enough of the API for any OpenAI-compatible client: ``POST /v1/chat/completions``
(also ``/chat/completions``) and ``GET /v1/models``, with configurable latency, token counts
and failures. No model is involved: the answer is ``reply`` (default ``"reply to: {prompt}"``)
cut or stretched to the number of completion tokens, one word per token.

Token counts, deterministic: a message costs ``ceil(len(text) / 4) + 4`` prompt tokens, plus 3
for the reply's priming and 85 per image (never more than UTF-8 bytes + overheads, the
gateway's bound). The answer has ``completion_tokens`` tokens: a fixed number, ``"max"`` (the
request's ``max_tokens``), or by default the reply's words; never more than ``max_tokens``
(then ``finish_reason`` is ``"length"``).

Tools: when a request offers ``tools`` (and ``tool_choice`` is not ``"none"``) and its last
message is not a tool's result, the fake model calls the first tool (or the one ``tool_choice``
names) with ``tool_arguments[name]`` (default ``"{}"``), ``finish_reason`` ``"tool_calls"``.
Once the last message is a tool's result it answers ``tool_reply`` with ``{result}`` replaced
by that result: a two-step tool-using conversation, deterministic.

Failures are queued rules, consumed in order by the requests they match (``match``: a substring
of the last user message; ``None``: any)::

    with FakeOpenAIServer(latency=0.05) as server:
        server.fail(429, times=2, retry_after=1)        # the next two requests get 429 + Retry-After: 1
        server.fail(500, match="flaky")                  # the next request whose prompt has "flaky"
        server.hang(match="slow")                        # never answers (until close())
        server.drop()                                    # closes the connection without a response
        provider_config = {"base_url": server.base_url}  # http://127.0.0.1:PORT/v1

Every request is recorded (:attr:`FakeOpenAIServer.calls`), with the usage it was answered
with, and :attr:`FakeOpenAIServer.max_concurrent` is the most requests it ever held at once.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clove.testing.serving import BackgroundServer

__all__ = ["ChatCall", "FakeOpenAIServer", "FailureRule", "prompt_tokens"]


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """What the fake server bills for ``messages``."""
    total = 3
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            total += 85 * sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
        else:
            text = str(content or "")
        total += math.ceil(len(text) / 4) + 4
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {} if isinstance(call, dict) else {}
            total += math.ceil(len(str(function.get("arguments", ""))) / 4) + 4
    return total


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


@dataclass
class FailureRule:
    """``status``: an HTTP status to answer with, ``0`` to hang, ``-1`` to drop the connection."""

    status: int
    times: int = 1
    match: str | None = None
    retry_after: float | str | None = None
    body: dict[str, Any] | None = None
    seconds: float | None = None  # for a hang: how long (None: until close)


@dataclass
class ChatCall:
    """One request as the server saw it, and how it answered."""

    model: str
    messages: list[dict[str, Any]]
    prompt: str
    max_tokens: int | None
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    ended: float = 0.0
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens if self.status == 200 else 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "FakeOpenAI/1.0"
    timeout = 60
    owner: FakeOpenAIServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the base class's naming
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in self.owner.models]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        try:
            self.owner._serve(self, raw)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeOpenAIServer(BackgroundServer):
    """The server; a context manager (or :meth:`start` and :meth:`close`). Settings are plain
    attributes, safe to change while it runs.

    :param latency: seconds before each answer, plus ``latency_per_token`` per answer token.
    :param completion_tokens: an int, ``"max"`` (the request's ``max_tokens``) or ``None``
        (the reply's words).
    :param api_key: when set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
    """

    _thread_name = "fake-openai"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: tuple[str, ...] = ("fake-model",),
        latency: float = 0.0,
        latency_per_token: float = 0.0,
        completion_tokens: int | str | None = None,
        reply: str = "reply to: {prompt}",
        api_key: str | None = None,
        tool_arguments: dict[str, str] | None = None,
        tool_reply: str = "the tool said: {result}",
    ) -> None:
        self.models = models
        self.tool_arguments = dict(tool_arguments or {})
        self.tool_reply = tool_reply
        self.latency = latency
        self.latency_per_token = latency_per_token
        self.completion_tokens = completion_tokens
        self.reply = reply
        self.api_key = api_key
        self._rules: list[FailureRule] = []
        self._calls: list[ChatCall] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self.in_flight = 0
        self.max_concurrent = 0
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    # ---- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What an OpenAI-compatible client's ``base_url`` is: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self._server.server_address[0]!s}:{self.port}/v1"

    # ---- scripting -------------------------------------------------------------------------------

    def fail(self, status: int, *, times: int = 1, match: str | None = None, retry_after: float | str | None = None, body: dict[str, Any] | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` (``Retry-After`` when
        given; a JSON error body unless ``body``)."""
        with self._lock:
            self._rules.append(FailureRule(status, times, match, retry_after, body))

    def hang(self, *, times: int = 1, match: str | None = None, seconds: float | None = None) -> None:
        """Hold the next ``times`` matching requests without answering (``seconds``, or until close)."""
        with self._lock:
            self._rules.append(FailureRule(0, times, match, seconds=seconds))

    def drop(self, *, times: int = 1, match: str | None = None) -> None:
        """Close the connection of the next ``times`` matching requests without a response."""
        with self._lock:
            self._rules.append(FailureRule(-1, times, match))

    def clear(self) -> None:
        """Forget pending failure rules."""
        with self._lock:
            self._rules.clear()

    def _rule_for(self, prompt: str) -> FailureRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and (rule.match is None or rule.match in prompt):
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                    return rule
        return None

    # ---- what happened ---------------------------------------------------------------------------

    @property
    def calls(self) -> list[ChatCall]:
        """Every chat request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._calls)

    def calls_matching(self, text: str) -> list[ChatCall]:
        return [c for c in self.calls if text in c.prompt]

    def tokens_billed(self, text: str | None = None) -> int:
        """Tokens the server answered with (200s only), for prompts containing ``text``."""
        return sum(c.tokens for c in self.calls if text is None or text in c.prompt)

    # ---- serving ---------------------------------------------------------------------------------

    def _serve(self, handler: _Handler, raw: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw)
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            handler._json(400, {"error": {"message": "malformed request body", "type": "invalid_request_error"}})
            return
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        prompt = _last_user_text(messages)
        call = ChatCall(str(body.get("model")), messages, prompt, max_tokens if isinstance(max_tokens, int) else None, body, headers, time.monotonic())
        with self._lock:
            self._calls.append(call)
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
        try:
            self._answer(handler, call)
        finally:
            call.ended = time.monotonic()
            with self._lock:
                self.in_flight -= 1

    def _answer(self, handler: _Handler, call: ChatCall) -> None:
        if self.api_key is not None and call.headers.get("authorization") != f"Bearer {self.api_key}":
            call.status = 401
            handler._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})
            return
        if call.model not in self.models:
            call.status = 404
            handler._json(404, {"error": {"message": f"The model {call.model!r} does not exist", "type": "invalid_request_error", "code": "model_not_found"}})
            return
        rule = self._rule_for(call.prompt)
        if rule is not None and rule.status == 0:
            self._stopping.wait(rule.seconds)
            handler.close_connection = True
            call.status = 0
            return
        if rule is not None and rule.status == -1:
            call.status = -1
            handler.close_connection = True
            return
        if rule is not None:
            call.status = rule.status
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
            kind = "rate_limit_exceeded" if rule.status == 429 else "server_error"
            handler._json(rule.status, rule.body or {"error": {"message": f"fake failure {rule.status}", "type": kind}}, headers)
            return
        tool = self._tool_to_call(call)
        if tool is not None:
            self._call_tool(handler, call, tool)
            return
        words, finish = self._words(call)
        if self._stopping.wait(self.latency + self.latency_per_token * len(words)):
            handler.close_connection = True
            return
        call.status = 200
        call.prompt_tokens = prompt_tokens(call.messages)
        call.completion_tokens = len(words)
        handler._json(200, {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": finish}],
            "usage": {"prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
                      "total_tokens": call.prompt_tokens + call.completion_tokens},
        })  # fmt: skip

    def _tool_to_call(self, call: ChatCall) -> str | None:
        """The tool the fake model calls: with tools offered and ``tool_choice`` not ``none``,
        unless the last message is already a tool's result."""
        tools = call.body.get("tools")
        choice = call.body.get("tool_choice")
        last = call.messages[-1] if call.messages else {}
        if not isinstance(tools, list) or not tools or choice == "none" or (isinstance(last, dict) and last.get("role") == "tool"):
            return None
        if isinstance(choice, dict):
            return str((choice.get("function") or {}).get("name"))
        return str(tools[0]["function"]["name"])

    def _call_tool(self, handler: _Handler, call: ChatCall, name: str) -> None:
        if self._stopping.wait(self.latency):
            handler.close_connection = True
            return
        arguments = self.tool_arguments.get(name, "{}")
        call.status = 200
        call.prompt_tokens = prompt_tokens(call.messages)
        call.completion_tokens = math.ceil(len(arguments) / 4) + 4
        call.extra["tool_call"] = name
        handler._json(200, {
            "id": f"chatcmpl-fake-{next(self._ids)}", "object": "chat.completion", "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_fake_{next(self._ids)}", "type": "function", "function": {"name": name, "arguments": arguments}}],
            }}],
            "usage": {"prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
                      "total_tokens": call.prompt_tokens + call.completion_tokens},
        })  # fmt: skip

    def _words(self, call: ChatCall) -> tuple[list[str], str]:
        last = call.messages[-1] if call.messages else {}
        if isinstance(last, dict) and last.get("role") == "tool":  # answer from the tool's result
            words = self.tool_reply.replace("{result}", str(last.get("content") or "")).split() or ["ok"]
        else:
            words = self.reply.replace("{prompt}", call.prompt).split() or ["ok"]
        wanted = self.completion_tokens
        limit = call.max_tokens if call.max_tokens is not None else 1 << 30
        if wanted == "max":
            count = limit if call.max_tokens is not None else len(words)
        elif isinstance(wanted, int):
            count = wanted
        else:
            count = len(words)
        out = list(itertools.islice(itertools.cycle(words), count))
        if len(out) > limit:
            return out[:limit], "length"
        return out, "length" if wanted == "max" and call.max_tokens is not None else "stop"

    # ---- lifetime --------------------------------------------------------------------------------
