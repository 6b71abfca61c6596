"""The OpenAI chat-completions API as the LLM endpoint speaks it: request bodies in, replies,
server-sent events and errors out. Pure functions, no sockets (those are
:mod:`clove.kernel.services.llmhttpconn`'s), so they are unit tested alone.

A request becomes a :class:`~clove.llm.types.ChatRequest` with its whole conversation
(``messages``), tools and ``tool_choice``; the gateway's ``think`` reply becomes a
``chat.completion`` object, or, with ``stream: true``, ``chat.completion.chunk`` events cut
from the completed answer (the provider call itself is not streamed). Keys this endpoint does
not use (``user``, ``metadata``, ``store``, ``logprobs``...) are ignored, as OpenAI-compatible
servers do; ``n`` other than 1 is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, final

from clove.errors import CloveError
from clove.llm.types import THINKING_LEVELS, ChatMessage, ChatRequest, Tool, ToolCall

__all__ = ["ApiError", "ChatCall", "completion_json", "error_body", "error_for", "models_json", "parse_chat", "stream_events"]

MAX_MESSAGES: Final = 4096
MAX_TOOLS: Final = 128
MAX_STOP: Final = 4
MAX_TOKENS_LIMIT: Final = 1_000_000
ROLES: Final = ("system", "developer", "user", "assistant", "tool")
#: Characters of content per streamed chunk: clients see several deltas, as from a real server.
CHUNK_CHARS: Final = 64


@final
class ApiError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: tuple[tuple[str, str], ...] = (), details: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers
        self.details = details or {}


def error_body(error: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
    if error.details:
        body["details"] = error.details
    return {"error": body}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code="invalid_value" if param else "invalid_request", param=param)


#: ``x-should-retry: false`` tells the ``openai`` client not to retry: the gateway has retried
#: the provider already, and a spent budget stays spent.
_NO_RETRY: Final = (("x-should-retry", "false"),)


def error_for(err: CloveError) -> ApiError:
    """The HTTP answer for a gateway or kernel refusal; the message is the gateway's reason."""
    code, details = err.code, dict(err.details)
    if code == "llm.quota_exceeded":
        return ApiError(429, err.message, type_="insufficient_quota", code=code, headers=_NO_RETRY, details=details)
    if code == "quota.exceeded":
        return ApiError(429, err.message, type_="rate_limit_exceeded", code=code, headers=(("retry-after", "1"),), details=details)
    if code == "perm.denied":
        return ApiError(403, err.message, type_="permission_denied", code=code, headers=_NO_RETRY, details=details)
    if code == "llm.unavailable" and "offered" in details:
        return ApiError(404, err.message, code="model_not_found", param="model", headers=_NO_RETRY, details=details)
    if code in ("llm.unavailable", "resource.exhausted"):
        return ApiError(503, err.message, type_="service_unavailable", code=code, headers=_NO_RETRY, details=details)
    if code == "timeout":
        return ApiError(504, err.message, type_="timeout", code=code, headers=_NO_RETRY, details=details)
    if code == "upstream.failed":
        return ApiError(502, err.message, type_="api_error", code=code, headers=_NO_RETRY, details=details)
    if code.startswith("proto."):
        return ApiError(400, err.message, code=code, headers=_NO_RETRY, details=details)
    return ApiError(500, err.message, type_="server_error", code=code, headers=_NO_RETRY)


# ---- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatCall:
    """A parsed ``POST /v1/chat/completions`` body; :meth:`request` once the model is routed."""

    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def request(self, model: str, default_max_tokens: int) -> ChatRequest:
        last_user = next((m.content or "" for m in reversed(self.messages) if m.role == "user"), "")
        return ChatRequest(prompt=last_user, model=model, max_tokens=self.max_tokens or default_max_tokens,
                           messages=self.messages, **self.options)  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """What the journal keeps of the call: sizes and names, never the texts."""
        tools: tuple[Tool, ...] = self.options.get("tools", ())
        return {"model": self.model, "messages": len(self.messages), "tools": [t.name for t in tools], "stream": self.stream,
                "max_tokens": self.max_tokens, "roles": sorted({m.role for m in self.messages})}  # fmt: skip


def _text(value: Any, where: str) -> tuple[str | None, tuple[str, ...]]:
    """A message's content: a string, ``null``, or content parts (text and image_url)."""
    if value is None or isinstance(value, str):
        return value, ()
    if not isinstance(value, list):
        raise bad(f"{where}.content must be a string, null or an array of content parts", f"{where}.content")
    texts: list[str] = []
    images: list[str] = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict) and isinstance(part["image_url"].get("url"), str):
            images.append(part["image_url"]["url"])
        else:
            raise bad(f"{where}.content[{i}]: only text and image_url parts are supported", f"{where}.content")
    return "".join(texts), tuple(images)


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
    calls = []
    for i, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not isinstance(item.get("id"), str):
            raise bad(f"{where}.tool_calls[{i}] needs an id and a function with a name", f"{where}.tool_calls")
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            raise bad(f"{where}.tool_calls[{i}].function.arguments must be a JSON string", f"{where}.tool_calls")
        calls.append(ToolCall(item["id"], function["name"], arguments))
    return tuple(calls)


def _message(raw: Any, i: int) -> ChatMessage:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise bad(f"{where} must be an object", where)
    role = raw.get("role")
    if role not in ROLES:
        raise bad(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
    content, images = _text(raw.get("content"), where)
    if images and role != "user":
        raise bad(f"{where}: only user messages may hold images", f"{where}.content")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise bad(f"{where}.name must be a string", f"{where}.name")
    calls = _tool_calls(raw.get("tool_calls"), where) if role == "assistant" else ()
    call_id = raw.get("tool_call_id")
    if role == "tool" and not isinstance(call_id, str):
        raise bad(f"{where}: a tool message needs the tool_call_id it answers", f"{where}.tool_call_id")
    if role != "tool":
        call_id = None
    return ChatMessage(role=role, content=content, images=images, name=name, tool_calls=calls, tool_call_id=call_id)


def _tools(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise bad(f"tools must be an array of at most {MAX_TOOLS} functions", "tools")
    tools = []
    for i, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) and item.get("type", "function") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise bad(f"tools[{i}] must be {{type: function, function: {{name, description?, parameters?}}}}", f"tools[{i}]")
        description, parameters, strict = function.get("description"), function.get("parameters"), function.get("strict")
        if description is not None and not isinstance(description, str):
            raise bad(f"tools[{i}].function.description must be a string", f"tools[{i}]")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad(f"tools[{i}].function.parameters must be a JSON Schema object", f"tools[{i}]")
        tools.append(Tool(name=function["name"], description=description, strict=strict if isinstance(strict, bool) else None,
                          parameters=None if parameters is None else json.dumps(parameters, separators=(",", ":"))))  # fmt: skip
    return tuple(tools)


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise bad(f"{key} must be a number in [{low:g}, {high:g}]", key)
    return float(value)


def _options(body: dict[str, Any], tools: tuple[Tool, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {"tools": tools}
    choice = body.get("tool_choice")
    if choice is not None:
        if isinstance(choice, str) and choice in ("auto", "none", "required"):
            options["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
            options["tool_choice"] = json.dumps(choice, separators=(",", ":"))
        else:
            raise bad("tool_choice must be auto, none, required or {type: function, function: {name}}", "tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise bad("parallel_tool_calls must be a boolean", "parallel_tool_calls")
        options["parallel_tool_calls"] = parallel
    options["temperature"] = _number(body, "temperature", 0.0, 2.0)
    options["top_p"] = _number(body, "top_p", 0.0, 1.0)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) for s in stop)):
        raise bad(f"stop must be a string or an array of at most {MAX_STOP} strings", "stop")
    options["stop"] = tuple(stop or ())
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("seed must be an integer", "seed")
    options["seed"] = seed
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict) or not isinstance(response_format.get("type"), str):
            raise bad("response_format must be an object with a type", "response_format")
        options["response_format"] = json.dumps(response_format, separators=(",", ":"))
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in THINKING_LEVELS:
        raise bad(f"reasoning_effort must be one of {', '.join(THINKING_LEVELS)}", "reasoning_effort")
    options["thinking_level"] = effort
    return options


def parse_chat(raw: bytes) -> ChatCall:
    """Check a chat-completions body.

    :raises ApiError: 400 naming the first bad field (``param``).
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model is required: a model name the kernel's LLM gateway offers (GET /v1/models)", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise bad(f"messages must be a non-empty array of at most {MAX_MESSAGES} messages", "messages")
    parsed = tuple(_message(m, i) for i, m in enumerate(messages))
    n = body.get("n", 1)
    if n != 1:
        raise bad("only n = 1 is supported", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise bad(f"max_tokens must be an integer in [1, {MAX_TOKENS_LIMIT}]", "max_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream must be a boolean", "stream")
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    return ChatCall(model=model, messages=parsed, max_tokens=max_tokens, stream=stream, include_usage=include_usage,
                    options=_options(body, _tools(body.get("tools"))))  # fmt: skip


# ---- replies -------------------------------------------------------------------------------------


def _usage(reply: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(reply.get("prompt_tokens") or 0), int(reply.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _calls_json(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in reply.get("tool_calls", ())]


def _finish(reply: dict[str, Any]) -> str:
    reason = reply.get("finish_reason")
    if isinstance(reason, str) and reason:
        return reason
    return "tool_calls" if reply.get("tool_calls") else "stop"


def completion_json(reply: dict[str, Any], completion_id: str, created: int) -> dict[str, Any]:
    """A ``chat.completion`` object from the gateway's ``think`` reply."""
    calls = _calls_json(reply)
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content") or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": reply.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}],
        "usage": _usage(reply), "system_fingerprint": None,
    }  # fmt: skip


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n\n"


def stream_events(reply: dict[str, Any], completion_id: str, created: int, *, include_usage: bool) -> list[bytes]:
    """The answer as server-sent ``chat.completion.chunk`` events, ending with ``[DONE]``."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": reply.get("model"), "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _event({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""})]
    content = reply.get("content") or ""
    events.extend(chunk({"content": content[i : i + CHUNK_CHARS]}) for i in range(0, len(content), CHUNK_CHARS))
    for index, call in enumerate(_calls_json(reply)):
        function = call["function"]
        events.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": {"name": function["name"], "arguments": ""}}]}))
        arguments = function["arguments"]
        events.extend(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + CHUNK_CHARS]}}]})
                      for i in range(0, len(arguments), CHUNK_CHARS))  # fmt: skip
    events.append(chunk({}, _finish(reply)))
    if include_usage:
        events.append(_event({**head, "choices": [], "usage": _usage(reply)}))
    events.append(b"data: [DONE]\n\n")
    return events


def models_json(models: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "clove"} for m in models]}
