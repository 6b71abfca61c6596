"""The two wire codes of the kernel's LLM gateway that an agent may meet in a reply to ``think``.

::

    QuotaExceeded "quota.exceeded"
    └── LlmQuotaExceeded  "llm.quota_exceeded"   a token budget or a per-minute limit cannot fit the request
    CloveError
    └── LlmUnavailable    "llm.unavailable"      no gateway configured, no such provider, or it failed to start

They live in the SDK so that :meth:`CloveClient.call` rebuilds them from a reply in an agent's
environment, where the gateway's own module (:mod:`clove.llm.errors`, which re-exports them
beside the provider failures it retries) is not installed. Importing this module registers both
codes with :func:`clove_sdk.errors.register_error`.
"""

from __future__ import annotations

from clove_sdk.errors import CloveError, QuotaExceeded, register_error

__all__ = ["LlmQuotaExceeded", "LlmUnavailable"]


class LlmQuotaExceeded(QuotaExceeded):
    """The request does not fit the caller's token budget (lifetime or per period), or is larger
    than a tokens-per-minute limit could ever admit. Nothing was sent and nothing is billed.

    ``details``: ``kind`` (``"lifetime"``, ``"period"``, ``"agent_tpm"``, ``"provider_tpm"``),
    ``needed`` (the request's maximum: prompt bound + ``max_tokens``), and for budgets
    ``budget``, ``used``, ``reserved``, ``remaining``.

    Example scenarios: an agent whose ``llm_tokens`` grant is spent; a burst whose last request
    no longer fits once the others' actual usage is settled; ``max_tokens`` larger than what is
    left (ask for fewer).
    """

    code = "llm.quota_exceeded"


class LlmUnavailable(CloveError):
    """The kernel cannot serve ``think``: no ``[llm]`` table in its config, the model is offered
    by no provider, or the provider's plugin failed to start (the message says which)."""

    code = "llm.unavailable"


register_error(LlmQuotaExceeded)
register_error(LlmUnavailable)
