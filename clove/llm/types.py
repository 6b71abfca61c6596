"""The values that cross between the gateway and a provider (and the worker threads): frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
THINKING_LEVELS: Final = ("none", "minimal", "low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Image:
    """An image sent with the prompt: raw bytes and their MIME type (one of :data:`IMAGE_TYPES`)."""

    data: bytes
    mime_type: str = "image/jpeg"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One completion to perform.

    :param model: the model name the provider is asked for (already checked against what the
        provider offers).
    :param max_tokens: the most completion tokens the provider may produce; the gateway has
        reserved this many (plus the prompt's bound) from the caller's budget.
    :param thinking_level: one of :data:`THINKING_LEVELS`, or ``None`` for the model's default.
    """

    prompt: str
    model: str
    max_tokens: int
    system_instruction: str | None = None
    image: Image | None = None
    temperature: float | None = None
    thinking_level: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResponse:
    """What a provider returns.

    :param prompt_tokens: as the provider counted (and bills) them; ``None`` if it did not say
        (the gateway then bills the reservation's prompt bound).
    :param completion_tokens: likewise for the answer (``None``: billed as ``max_tokens``).
    :param finish_reason: ``"stop"``, ``"length"`` (cut at ``max_tokens``), ... as reported.
    :param reasoning: the model's separate reasoning text, when the server returns one.
    """

    content: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    reasoning: str | None = None
