"""Thinking through the kernel: agents never hold a model's key or reach its server; the kernel
queues their requests fairly, enforces their token budgets and rate limits, performs the call
and journals it (docs/llm.md)."""

from __future__ import annotations

from typing import Any

import clove_sdk.llm_errors  # noqa: F401 - registers llm.quota_exceeded and llm.unavailable for call()
from clove_sdk._base import ClientBase


class LlmMixin(ClientBase):
    def think(
        self,
        prompt: str,
        image: bytes | str | None = None,
        image_mime_type: str = "image/jpeg",
        system_instruction: str | None = None,
        thinking_level: str | None = None,
        temperature: float | None = None,
        model: str | None = None,
        async_: bool = False,
        request_id: str | int | None = None,
        *,
        max_tokens: int | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Ask the kernel's LLM gateway.

        :param image: bytes, or base64 text, sent with the prompt (``image_mime_type``: jpeg,
            png, gif or webp).
        :param thinking_level: ``none``, ``minimal``, ``low``, ``medium`` or ``high`` (the
            provider's reasoning effort), or ``None`` for the model's default.
        :param temperature: 0 to 2, or ``None`` for the model's default.
        :param model: a model some configured provider offers; ``None``: the default one.
        :param max_tokens: the most answer tokens (default: the kernel's ``[llm].max_tokens``).
            Your budget must hold the prompt plus this many before the request is sent.
        :param timeout: seconds for the whole call, waiting in the queue included (the
            kernel caps it at ``[llm].max_timeout``).
        :param async_: reply at once with ``{success, async, request_id, status: "accepted"}``;
            the result arrives through :meth:`poll_async` as ``SYS_THINK``.
        :returns: ``{success: True, content, tokens, prompt_tokens, completion_tokens, model,
            provider, finish_reason, attempts, queue_wait_ms, latency_ms}``; failures:
            ``{success: False, error, code}`` with ``code`` ``llm.quota_exceeded``,
            ``llm.unavailable``, ``quota.exceeded``, ``timeout``, ``upstream.failed``,
            ``perm.denied`` or ``proto.invalid_args``.
        """
        body: dict[str, Any] = {"prompt": prompt, "timeout": float(timeout)}
        if image is not None:
            body["image"] = image
            body["image_mime_type"] = image_mime_type
        for key, value in (
            ("system_instruction", system_instruction),
            ("thinking_level", thinking_level),
            ("temperature", None if temperature is None else float(temperature)),
            ("model", model),
            ("max_tokens", max_tokens),
            ("request_id", request_id),
        ):
            if value is not None:
                body[key] = value
        if async_:
            body["async_"] = True
        return self._compat("llm.think", **body)

    def llm_stats(self, agent_id: int | None = None, name: str | None = None) -> dict[str, Any]:
        """Token usage, budgets and queue waits: ``{success, enabled, agents: [...]}`` (agents
        see their own row; operators every agent and ``providers`` too)."""
        body: dict[str, Any] = {}
        if agent_id is not None:
            body["agent_id"] = agent_id
        if name is not None:
            body["name"] = name
        return self._compat("llm.stats", **body)

    def set_llm_budget(
        self,
        name: str | None = None,
        agent_id: int | None = None,
        *,
        tokens: int | None = None,
        period_tokens: int | None = None,
        weight: float | None = None,
        reset: list[str] | None = None,
    ) -> dict[str, Any]:
        """Operators: change an agent's lifetime budget (its ``llm_tokens`` grant), its budget
        per period, or its weight; ``reset`` names ones to return to the config.

        :returns: ``{success, agent: {...its llm_stats row...}}``.
        """
        body: dict[str, Any] = {}
        for key, value in (("name", name), ("agent_id", agent_id), ("tokens", tokens), ("period_tokens", period_tokens),
                           ("weight", None if weight is None else float(weight)), ("reset", reset)):  # fmt: skip
            if value is not None:
                body[key] = value
        return self._compat("llm.budget", **body)
