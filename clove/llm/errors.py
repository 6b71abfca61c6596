"""The LLM gateway's errors: two new wire codes, and the provider failures the gateway retries.

::

    QuotaExceeded "quota.exceeded"
    └── LlmQuotaExceeded  "llm.quota_exceeded"   a token budget or a per-minute limit cannot fit the request
    CloveError
    └── LlmUnavailable    "llm.unavailable"      no gateway configured, no such provider, or it failed to start
    UpstreamError "upstream.failed"
    └── ProviderError     (same code; details.status)  the provider answered with an HTTP error
        ├── RateLimited   429: retried after Retry-After (or backoff)
        └── ServerError   5xx: retried with backoff

A plain :class:`~clove.errors.UpstreamError` raised by a provider means it could not be reached
(connection refused or reset, DNS, TLS): retried with backoff, and counted towards marking the
provider down. The two new codes are defined in :mod:`clove_sdk.llm_errors` (an agent's
environment holds only the SDK) and registered there, so clients rebuild them from replies.
"""

from __future__ import annotations

from typing import Any

from clove.errors import UpstreamError
from clove_sdk.llm_errors import LlmQuotaExceeded, LlmUnavailable

__all__ = ["LlmQuotaExceeded", "LlmUnavailable", "ProviderError", "RateLimited", "ServerError"]


class ProviderError(UpstreamError):
    """The provider answered with an HTTP error. ``details.status`` is its status code.

    :param retry_after: seconds the provider asked to wait (``Retry-After``), if it did.
    """

    retryable = False

    def __init__(self, message: str, *, status: int, retry_after: float | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={**(details or {}), "status": status, **({"retry_after": retry_after} if retry_after is not None else {})})
        self.status = status
        self.retry_after = retry_after


class RateLimited(ProviderError):
    """429 Too Many Requests: retried after ``retry_after`` (the whole provider waits)."""

    retryable = True


class ServerError(ProviderError):
    """A 5xx: retried with exponential backoff."""

    retryable = True

