"""The OpenAI-compatible chat-completions provider: OpenAI, vLLM, llama.cpp server, Ollama...

``POST {base_url}/chat/completions`` with urllib3, through the same transport as the kernel's
``http`` syscall, :class:`~clove.httpclient.Urllib3Transport` (one deadline for the whole call, a
size cap on the answer, no redirects, no proxies from the environment, certificates verified)::

    [llm.providers.openai]
    kind = "openai"
    model = "gpt-4o-mini"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"        # the key is read from the kernel's environment at boot
    max_tokens_field = "max_completion_tokens"   # newer OpenAI models; vLLM/llama.cpp/Ollama: "max_tokens"

The key is never journaled nor shown. ``thinking_level`` becomes ``reasoning_effort``; an image
becomes an ``image_url`` content part holding a ``data:`` URL. A request with ``messages`` (the
kernel's OpenAI-compatible endpoint) sends that conversation, its tools and ``tool_choice``, and
the answer's ``tool_calls`` come back in :attr:`ChatResponse.tool_calls`.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Final, final

from clove.errors import ConfigError, OperationTimeout, UpstreamError
from clove.httpclient import HttpRequest, Transport, Urllib3Transport
from clove.llm.errors import ProviderError, RateLimited, ServerError
from clove.llm.provider import Provider
from clove.llm.registry import ProviderRegistry, hookimpl
from clove.llm.types import ChatMessage, ChatRequest, ChatResponse, Tool, ToolCall

__all__ = ["OpenAIOptions", "OpenAIProvider", "clove_register_llm_providers", "parse_retry_after"]

MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024
MAX_RETRY_AFTER: Final = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAIOptions:
    base_url: str = field(metadata={"help": "the API root, e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1"})
    api_key_env: str | None = field(default=None, metadata={"help": "name of the environment variable holding the API key"})
    max_tokens_field: str = field(default="max_tokens", metadata={"help": "max_tokens, or max_completion_tokens for newer OpenAI models"})
    image_tokens: int = field(default=2500, metadata={"help": "tokens reserved for an image (an upper bound)"})
    headers: dict[str, str] = field(default_factory=dict, metadata={"help": "extra request headers (not secrets: they are in the config file)"})

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"max_tokens_field must be max_tokens or max_completion_tokens, got {self.max_tokens_field!r}")
        if self.image_tokens < 0:
            raise ValueError("image_tokens must be >= 0")


def parse_retry_after(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date); capped."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return min(MAX_RETRY_AFTER, max(0.0, float(raw_ms) / 1000))
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(raw)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - (time.time() if now is None else now)))


@final
class OpenAIProvider(Provider):
    """Chat completions over HTTP. Thread-safe: one urllib3 pool sized to the concurrency.

    :param transport: for tests; by default a :class:`Urllib3Transport`.
    :raises ConfigError: ``api_key_env`` names a variable that is not set.
    """

    Options = OpenAIOptions

    def __init__(self, options: OpenAIOptions, *, name: str, concurrency: int = 4, transport: Transport | None = None) -> None:
        key = None
        if options.api_key_env:
            key = os.environ.get(options.api_key_env)
            if not key:
                raise ConfigError(f"LLM provider {name!r}: the environment variable {options.api_key_env} (api_key_env) is not set")
        self._url = options.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json", **options.headers}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._headers = tuple(headers.items())
        self._transport: Transport = transport if transport is not None else Urllib3Transport(pool_size=concurrency)
        self.image_tokens = options.image_tokens
        super().__init__(options, name=name, concurrency=concurrency)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body for ``request``."""
        options: OpenAIOptions = self.options
        if request.messages:
            messages = [message_json(m) for m in request.messages]
        else:
            messages = self._prompt_messages(request)
        body: dict[str, Any] = {"model": request.model, "messages": messages, options.max_tokens_field: request.max_tokens}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.thinking_level is not None:
            body["reasoning_effort"] = request.thinking_level
        if request.tools:
            body["tools"] = [tool_json(t) for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = json.loads(request.tool_choice) if request.tool_choice.startswith("{") else request.tool_choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.response_format is not None:
            body["response_format"] = json.loads(request.response_format)
        return body

    @staticmethod
    def _prompt_messages(request: ChatRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if request.system_instruction:
            messages.append({"role": "system", "content": request.system_instruction})
        if request.image is not None:
            data = base64.b64encode(request.image.data).decode("ascii")
            content: Any = [
                {"type": "text", "text": request.prompt},
                {"type": "image_url", "image_url": {"url": f"data:{request.image.mime_type};base64,{data}"}},
            ]
        else:
            content = request.prompt
        messages.append({"role": "user", "content": content})
        return messages

    def _complete(self, request: ChatRequest, deadline: float) -> ChatResponse:
        payload = json.dumps(self.body(request), ensure_ascii=False).encode("utf-8")
        timeout = max(0.001, deadline - time.monotonic())
        http = HttpRequest("POST", self._url, self._headers, payload, timeout, MAX_ANSWER_BYTES)
        try:
            response = self._transport.send(http, deadline)
        except OperationTimeout:
            raise OperationTimeout(f"LLM provider {self.name!r} did not answer in time", details={"provider": self.name}) from None
        except UpstreamError as err:
            raise UpstreamError(f"LLM provider {self.name!r} is unreachable: {err.message}", details={"provider": self.name}) from None
        if response.status != 200:
            raise self._http_error(response.status, response.headers, response.body)
        return self._parse(response.body, request)

    def _http_error(self, status: int, headers: dict[str, str], body: bytes) -> ProviderError:
        detail = _error_message(body)
        message = f"LLM provider {self.name!r} answered {status}" + (f": {detail}" if detail else "")
        if status == 429:
            return RateLimited(message, status=status, retry_after=parse_retry_after(headers))
        if status >= 500:
            return ServerError(message, status=status, retry_after=parse_retry_after(headers))
        return ProviderError(message, status=status)

    def _parse(self, raw: bytes, request: ChatRequest) -> ChatResponse:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            message = choice.get("message") or {}
            content = message.get("content")
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError(f"LLM provider {self.name!r} sent a malformed chat completion: {raw[:200]!r}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        tool_calls = _tool_calls(message.get("tool_calls"))
        if tool_calls is None:
            raise UpstreamError(f"LLM provider {self.name!r} sent malformed tool calls: {raw[:200]!r}")
        return ChatResponse(
            content=content if isinstance(content, str) else "",
            model=str(data.get("model") or request.model),
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            finish_reason=choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            tool_calls=tool_calls,
        )

    def describe(self) -> dict[str, Any]:
        options: OpenAIOptions = self.options
        return {"base_url": options.base_url, "api_key_env": options.api_key_env}

    def _close(self) -> None:
        self._transport.close()


def message_json(message: ChatMessage) -> dict[str, Any]:
    """One conversation message as the chat-completions API takes it."""
    out: dict[str, Any] = {"role": message.role}
    if message.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
        parts.extend({"type": "image_url", "image_url": {"url": url}} for url in message.images)
        out["content"] = parts
    else:
        out["content"] = message.content
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def tool_json(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = json.loads(tool.parameters)
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_calls(raw: Any) -> tuple[ToolCall, ...] | None:
    """The answer's ``tool_calls``; ``None`` when they are malformed."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        return None
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        arguments = function.get("arguments")
        calls.append(ToolCall(str(item.get("id") or ""), function["name"], arguments if isinstance(arguments, str) else json.dumps(arguments or {})))
    return tuple(calls)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str):
            return message[:300]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace").strip()


@hookimpl
def clove_register_llm_providers(registry: ProviderRegistry) -> None:
    registry.add("openai", OpenAIProvider)
