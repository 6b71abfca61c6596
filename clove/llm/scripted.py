"""The *scripted* provider: deterministic answers without any model, for tests and demos.

It is a plugin like any other (entry point ``scripted`` in ``clove.llm_providers``) and must be
allowlisted to load. Nothing it says comes from a language model: the reply is a template, or
the first rule whose ``match`` is a substring of the prompt. A token is a whitespace-separated
word, so counts are exact and known in advance::

    [llm.providers.demo]
    kind = "scripted"
    model = "scripted-1"
    reply = "scripted reply to: {prompt}"     # {prompt}, {model}, {system} are filled in
    latency = 0.05                            # seconds per call, plus latency_per_token per answer word
    rules = [
      { match = "weather", reply = "sunny" },
      { match = "flaky", error = "server_error", times = 2 },             # fails twice, then answers
      { match = "busy", error = "rate_limited", retry_after = 1.0, times = 1 },
    ]
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final, final

from clove.errors import OperationTimeout, UpstreamError
from clove.llm.errors import ProviderError, RateLimited, ServerError
from clove.llm.provider import Provider
from clove.llm.registry import ProviderRegistry, hookimpl
from clove.llm.types import ChatRequest, ChatResponse

__all__ = ["ScriptedOptions", "ScriptedProvider", "clove_register_llm_providers", "count_words"]

ERRORS: Final = ("rate_limited", "server_error", "unreachable", "bad_request")
_RULE_KEYS: Final = frozenset({"match", "reply", "error", "retry_after", "times"})


def count_words(text: str | None) -> int:
    return len(text.split()) if text else 0


@dataclass(frozen=True, slots=True)
class Rule:
    match: str
    reply: str | None = None
    error: str | None = None
    retry_after: float | None = None
    times: int | None = None  # None: always


def _rule(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError(f"each rule is a table, got {raw!r}")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise ValueError(f"rule key {unknown[0]!r} is unknown (known: {', '.join(sorted(_RULE_KEYS))})")
    match = raw.get("match")
    if not isinstance(match, str):
        raise ValueError("each rule needs match = \"substring of the prompt\"")
    error = raw.get("error")
    if error is not None and error not in ERRORS:
        raise ValueError(f"rule error must be one of {', '.join(ERRORS)}, got {error!r}")
    reply = raw.get("reply")
    if (reply is None) == (error is None):
        raise ValueError(f"rule {match!r} needs exactly one of reply or error")
    times = raw.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"rule {match!r}: times must be a positive int")
    retry_after = raw.get("retry_after")
    if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)) or retry_after < 0):
        raise ValueError(f"rule {match!r}: retry_after must be a non-negative number")
    return Rule(match, reply if isinstance(reply, str) else None, error, None if retry_after is None else float(retry_after), times)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptedOptions:
    reply: str = field(default="scripted reply to: {prompt}", metadata={"help": "the answer; {prompt}, {model} and {system} are filled in"})
    rules: tuple[dict[str, Any], ...] = field(default=(), metadata={"help": "tables {match, reply | error, retry_after, times}; the first match wins"})
    latency: float = field(default=0.0, metadata={"help": "seconds each call takes"})
    latency_per_token: float = field(default=0.0, metadata={"help": "extra seconds per answer token"})
    completion_tokens: int | None = field(default=None, metadata={"help": "answer exactly this many tokens (words), within max_tokens"})
    image_tokens: int = field(default=85, metadata={"help": "tokens an image costs"})

    def __post_init__(self) -> None:
        for raw in self.rules:
            _rule(raw)
        if self.latency < 0 or self.latency_per_token < 0:
            raise ValueError("latency must be >= 0")
        if self.completion_tokens is not None and self.completion_tokens < 0:
            raise ValueError("completion_tokens must be >= 0")


@final
class ScriptedProvider(Provider):
    """Deterministic replies; the scripted provider. Thread-safe."""

    Options = ScriptedOptions

    def __init__(self, options: ScriptedOptions, *, name: str, concurrency: int = 1) -> None:
        self._rules = [_rule(raw) for raw in options.rules]
        self._left = [rule.times for rule in self._rules]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.image_tokens = options.image_tokens
        self.calls = itertools.count(1)
        super().__init__(options, name=name, concurrency=concurrency)

    def max_prompt_tokens(self, request: ChatRequest) -> int:
        """Exact: words of the system instruction and prompt, 4 per message, the image's."""
        messages = 2 if request.system_instruction else 1
        image = self.image_tokens if request.image is not None else 0
        return count_words(request.system_instruction) + count_words(request.prompt) + 4 * messages + image

    def _pick(self, prompt: str) -> Rule | None:
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.match in prompt:
                    left = self._left[i]
                    if left is None:
                        return rule
                    if left > 0:
                        self._left[i] = left - 1
                        return rule
        return None

    def _complete(self, request: ChatRequest, deadline: float) -> ChatResponse:
        next(self.calls)
        options: ScriptedOptions = self.options
        rule = self._pick(request.prompt)
        if rule is not None and rule.error is not None:
            self._sleep(options.latency, deadline)
            raise _error(rule, self.name)
        template = rule.reply if rule is not None and rule.reply is not None else options.reply
        text = template.replace("{prompt}", request.prompt).replace("{model}", request.model)
        words = text.replace("{system}", request.system_instruction or "").split()
        finish = "stop"
        if options.completion_tokens is not None and words:
            wanted = options.completion_tokens
            words = list(itertools.islice(itertools.cycle(words), wanted))
        if len(words) > request.max_tokens:
            words, finish = words[: request.max_tokens], "length"
        self._sleep(options.latency + options.latency_per_token * len(words), deadline)
        return ChatResponse(
            content=" ".join(words),
            model=request.model,
            prompt_tokens=self.max_prompt_tokens(request),
            completion_tokens=len(words),
            finish_reason=finish,
        )

    def _sleep(self, seconds: float, deadline: float) -> None:
        if seconds <= 0:
            return
        left = deadline - time.monotonic()
        if seconds > left:
            self._stop.wait(max(0.0, left))
            raise OperationTimeout(f"scripted provider {self.name!r} took longer than the deadline")
        self._stop.wait(seconds)

    def _close(self) -> None:
        self._stop.set()

    def describe(self) -> dict[str, Any]:
        return {"scripted": True, "rules": len(self._rules)}


def _error(rule: Rule, name: str) -> Exception:
    if rule.error == "rate_limited":
        return RateLimited(f"scripted provider {name!r}: 429 (rule {rule.match!r})", status=429, retry_after=rule.retry_after)
    if rule.error == "server_error":
        return ServerError(f"scripted provider {name!r}: 500 (rule {rule.match!r})", status=500)
    if rule.error == "bad_request":
        return ProviderError(f"scripted provider {name!r}: 400 (rule {rule.match!r})", status=400)
    return UpstreamError(f"scripted provider {name!r}: unreachable (rule {rule.match!r})")


@hookimpl
def clove_register_llm_providers(registry: ProviderRegistry) -> None:
    registry.add("scripted", ScriptedProvider)
