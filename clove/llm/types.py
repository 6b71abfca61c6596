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


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asks for: ``arguments`` is the JSON text as the model wrote it
    (passed through unparsed, as OpenAI does)."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A function the caller offers the model: ``parameters`` is its JSON Schema as JSON text."""

    name: str
    description: str | None = None
    parameters: str | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """One message of a whole conversation (the OpenAI-compatible endpoint sends these).

    :param role: ``system``, ``developer``, ``user``, ``assistant`` or ``tool``.
    :param images: ``image_url`` URLs of a user message's content parts, in order after its text.
    :param tool_calls: an assistant message's calls; ``tool_call_id``: what a tool message answers.
    """

    role: str
    content: str | None = None
    images: tuple[str, ...] = ()
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def text_bytes(self) -> int:
        """UTF-8 bytes of everything the model reads of this message but its images."""
        size = len((self.content or "").encode("utf-8")) + len((self.name or "").encode("utf-8"))
        for call in self.tool_calls:
            size += len(call.id.encode("utf-8")) + len(call.name.encode("utf-8")) + len(call.arguments.encode("utf-8"))
        return size + len((self.tool_call_id or "").encode("utf-8"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One completion to perform.

    :param model: the model name the provider is asked for (already checked against what the
        provider offers).
    :param max_tokens: the most completion tokens the provider may produce; the gateway has
        reserved this many (plus the prompt's bound) from the caller's budget.
    :param thinking_level: one of :data:`THINKING_LEVELS`, or ``None`` for the model's default.
    :param messages: a whole conversation (from the OpenAI-compatible endpoint); when given,
        providers send it instead of ``system_instruction`` + ``prompt`` + ``image``, and
        ``prompt`` is only its last user text (for the journal and the recording).
    :param tools: functions offered to the model; ``tool_choice`` is ``"auto"``, ``"none"``,
        ``"required"`` or the JSON text of a ``{"type": "function", ...}`` choice.
    :param response_format: the JSON text of OpenAI's ``response_format``, passed through.
    """

    prompt: str
    model: str
    max_tokens: int
    system_instruction: str | None = None
    image: Image | None = None
    temperature: float | None = None
    thinking_level: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: str | None = None

    def text_bytes(self) -> int:
        """UTF-8 bytes of every text the model reads (messages, tools' schemas), images aside."""
        if not self.messages:
            return len(self.prompt.encode("utf-8")) + len((self.system_instruction or "").encode("utf-8"))
        size = sum(m.text_bytes() for m in self.messages)
        for tool in self.tools:
            size += len(tool.name.encode("utf-8")) + len((tool.description or "").encode("utf-8")) + len((tool.parameters or "").encode("utf-8"))
        return size + len((self.tool_choice or "").encode("utf-8")) + len((self.response_format or "").encode("utf-8"))

    def image_count(self) -> int:
        return sum(len(m.images) for m in self.messages) if self.messages else int(self.image is not None)

    def message_count(self) -> int:
        """Messages sent (a ``prompt`` call sends one, plus its system instruction)."""
        return len(self.messages) if self.messages else 1 + int(bool(self.system_instruction))


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResponse:
    """What a provider returns.

    :param prompt_tokens: as the provider counted (and bills) them; ``None`` if it did not say
        (the gateway then bills the reservation's prompt bound).
    :param completion_tokens: likewise for the answer (``None``: billed as ``max_tokens``).
    :param finish_reason: ``"stop"``, ``"length"`` (cut at ``max_tokens``), ... as reported.
    :param reasoning: the model's separate reasoning text, when the server returns one.
    :param tool_calls: the functions the model asks the caller to run (``finish_reason``
        ``"tool_calls"``).
    """

    content: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
