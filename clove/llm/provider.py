"""The provider contract: a class, like python-can's ``BusABC``.

A provider performs one chat completion at a time per call, blocking: the gateway calls
:meth:`Provider.complete` on a worker thread (never on the kernel's loop), up to the provider's
configured concurrency at once, so implementations must be thread-safe. Everything else
(queuing, fairness, budgets, rate limits, retries, cancellation, journaling) is the gateway's.

Subclasses set ``Options`` (a frozen dataclass: the provider's own keys in its
``[llm.providers.NAME]`` table), implement :meth:`Provider._complete`, and call
``super().__init__(...)`` last in their own ``__init__``.
"""

from __future__ import annotations

import abc
import time
import warnings
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final

from clove.errors import OperationTimeout, UpstreamError
from clove.llm.errors import LlmUnavailable
from clove.llm.types import ChatRequest, ChatResponse

__all__ = ["MESSAGE_OVERHEAD", "NoOptions", "Provider", "REPLY_OVERHEAD"]

#: Tokens a chat template may add per message (role markers, separators), and once for the
#: reply's priming. Generous on purpose: the gateway reserves an upper bound.
MESSAGE_OVERHEAD: Final = 8
REPLY_OVERHEAD: Final = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class NoOptions:
    """For providers without options of their own."""


class Provider(abc.ABC):
    """Base of every LLM provider.

    :param options: an instance of the subclass's ``Options``, parsed from its config table.
    :param name: the provider's name in the config (``[llm.providers.NAME]``).
    :param concurrency: the most calls the gateway makes at once (size connection pools to it).
    """

    Options: ClassVar[type[Any]] = NoOptions
    #: Tokens an image may cost at most, for :meth:`max_prompt_tokens`.
    image_tokens: int = 0

    def __init__(self, options: Any, *, name: str, concurrency: int = 1) -> None:
        self.options = options
        self.name = name
        self.concurrency = concurrency
        self._closed = False

    # ---- what the gateway calls -----------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: float) -> ChatResponse:
        """Perform ``request``; blocks, on a worker thread. Template method: checks, then
        :meth:`_complete`, then sanity checks of the counts it reports.

        :param deadline: a :func:`time.monotonic` instant; give up by then.
        :raises OperationTimeout: the deadline passed.
        :raises RateLimited: 429 (with ``retry_after`` when the provider said).
        :raises ServerError: 5xx.
        :raises ProviderError: another HTTP error (not retried).
        :raises UpstreamError: the provider could not be reached, or its answer is malformed.
        :raises LlmUnavailable: the provider is closed.
        """
        if self._closed:
            raise LlmUnavailable(f"LLM provider {self.name!r} is closed")
        if deadline <= time.monotonic():
            raise OperationTimeout(f"no time left to call LLM provider {self.name!r}")
        response = self._complete(request, deadline)
        if not isinstance(response, ChatResponse):
            raise UpstreamError(f"LLM provider {self.name!r} returned {type(response).__name__}, not a ChatResponse")
        for count in (response.prompt_tokens, response.completion_tokens):
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                raise UpstreamError(f"LLM provider {self.name!r} reported a bad token count: {count!r}")
        return response

    def max_prompt_tokens(self, request: ChatRequest) -> int:
        """An upper bound of the prompt tokens ``request`` will be billed, used to reserve
        budget before it is sent. The default holds for byte-level BPE and byte-fallback
        tokenizers (never more tokens than UTF-8 bytes) plus template overhead and
        :attr:`image_tokens`; override it when the provider knows better.
        """
        # Tools and tool calls are JSON the template renders: their bytes bound their tokens too.
        tools = len(request.tools) + sum(len(m.tool_calls) for m in request.messages)
        overhead = MESSAGE_OVERHEAD * (request.message_count() + tools) + REPLY_OVERHEAD
        return request.text_bytes() + overhead + self.image_tokens * request.image_count()

    def describe(self) -> dict[str, Any]:
        """Non-secret facts for ``clove llm`` (base URL, model...); never keys."""
        return {}

    @abc.abstractmethod
    def _complete(self, request: ChatRequest, deadline: float) -> ChatResponse:
        """Perform the call. Same contract as :meth:`complete`."""

    # ---- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Release connections. Safe to call twice; :meth:`complete` then raises LlmUnavailable."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def _close(self) -> None:  # noqa: B027 - optional: not every provider holds resources
        """Subclasses release their resources here."""

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"LLM provider {getattr(self, 'name', '?')!r} was never closed", ResourceWarning, stacklevel=1)
