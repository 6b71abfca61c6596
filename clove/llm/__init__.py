"""Clove's LLM gateway: provider plugins, fair queuing, budgets and rate limits.

Agents never talk to a model: they call ``think()`` and the kernel queues, schedules, limits,
performs and journals the call (docs/llm.md). This package is the part without the kernel:

* the provider contract (:class:`Provider`, :class:`ChatRequest`, :class:`ChatResponse`; a
  request from the OpenAI-compatible endpoint carries whole :class:`ChatMessage` conversations,
  :class:`Tool` offers and :class:`ToolCall` answers) and
  plugin discovery (:func:`load_registry`, :data:`hookimpl`, hookspecs in
  :mod:`clove.llm.hookspecs`), for plugin authors;
* the scheduler (:mod:`~clove.llm.scheduler`), budgets (:mod:`~clove.llm.budget`), per-minute
  limits (:mod:`clove.ratelimit`) and the decisions that tie them (:mod:`~clove.llm.gateway`).

A third-party provider::

    # pyproject.toml: [project.entry-points."clove.llm_providers"] myllm = "myllm.plugin"
    from clove.llm import ChatResponse, Provider, ProviderRegistry, hookimpl

    class MyProvider(Provider):
        def _complete(self, request, deadline):
            return ChatResponse(content="...", model=request.model, prompt_tokens=3, completion_tokens=1)

    @hookimpl
    def clove_register_llm_providers(registry: ProviderRegistry) -> None:
        registry.add("myllm", MyProvider)

Importing this package loads no plugin (nor pluggy, until discovery is first used).
"""

from typing import TYPE_CHECKING, Any

from clove.llm.errors import LlmQuotaExceeded, LlmUnavailable, ProviderError, RateLimited, ServerError
from clove.llm.provider import Provider
from clove.llm.types import ChatMessage, ChatRequest, ChatResponse, Image, Tool, ToolCall

if TYPE_CHECKING:
    from clove.llm.registry import (
        ENTRY_POINT_GROUP,
        ProviderRegistry,
        get_plugin_manager,
        hookimpl,
        load_registry,
    )

_REGISTRY = frozenset({"ENTRY_POINT_GROUP", "ProviderRegistry", "get_plugin_manager", "hookimpl", "load_registry"})


def __getattr__(name: str) -> Any:
    """Discovery (pluggy, entry points) is imported on first use: clients that import the SDK,
    which registers this package's error codes, do not pay for it."""
    if name in _REGISTRY:
        from clove.llm import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'clove.llm' has no attribute {name!r}")

__all__ = [
    "ENTRY_POINT_GROUP",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "Image",
    "LlmQuotaExceeded",
    "LlmUnavailable",
    "Provider",
    "ProviderError",
    "ProviderRegistry",
    "RateLimited",
    "ServerError",
    "Tool",
    "ToolCall",
    "get_plugin_manager",
    "hookimpl",
    "load_registry",
]
