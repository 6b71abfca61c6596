"""What the journal keeps of each request, and the recording of prompts and answers for replay.

Every request ends in one journal record (:func:`request_details` is its ``details``). With
``[llm].record = true`` the record also holds the prompt, system instruction and answer (the
journal clips strings at 2000 characters) and the SHA-256 of each, and :class:`Recording`
appends the whole texts to ``<state_dir>/llm/recording.jsonl`` (mode 0600), one JSON line per
request. A conversation from the OpenAI-compatible endpoint is kept whole (``messages``, the
tools' names, and the answer's ``tool_calls``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any, final

from clove.llm.jobs import Job, Verdict
from clove.llm.types import ChatMessage, ToolCall

__all__ = ["Recording", "request_details"]

log = logging.getLogger(__name__)


def request_details(job: Job, outcome: str, verdict: Verdict, now: float) -> dict[str, Any]:
    """The journal record's details: who, which model, tokens, waits, outcome; no prompt."""
    dispatched = job.dispatched
    details: dict[str, Any] = {
        "request": job.key, "caller_id": job.principal, "name": job.name, "provider": job.provider,
        "model": job.request.model, "outcome": outcome, "tokens": verdict.billed,
        "prompt_tokens": verdict.prompt_tokens, "completion_tokens": verdict.completion_tokens,
        "reserved": job.need, "max_tokens": job.request.max_tokens, "attempts": job.attempts,
        "queue_wait_ms": None if dispatched is None else round((dispatched - job.accepted) * 1000, 3),
        "latency_ms": None if dispatched is None else round((now - job.attempt_started) * 1000, 3),
        "accepted_at": round(job.accepted, 6), "dispatched_at": None if dispatched is None else round(dispatched, 6),
        **{k: v for k, v in job.extra.items() if k in ("async", "request_id")},
    }  # fmt: skip
    if verdict.response is not None:
        details["answer_model"] = verdict.response.model
        details["finish_reason"] = verdict.response.finish_reason
    if verdict.error is not None:
        details["error"] = verdict.error.message
    return details


def _call(call: ToolCall) -> dict[str, str]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [_call(c) for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.images:
        out["images"] = len(message.images)
    return out


@final
class Recording:
    """The recording file (opened on first use; ``path=None``: journal fields only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def add(self, job: Job, verdict: Verdict, details: dict[str, Any]) -> None:
        """Add the texts and their hashes to ``details``; append the whole texts to the file."""
        request = job.request
        answer = verdict.response.content if verdict.response is not None else None
        texts: dict[str, Any] = {"prompt": request.prompt, "system_instruction": request.system_instruction, "answer": answer,
                 "temperature": request.temperature, "thinking_level": request.thinking_level}  # fmt: skip
        if request.messages:  # a conversation from the OpenAI-compatible endpoint: keep all of it
            texts["messages"] = [_message(m) for m in request.messages]
            texts["tools"] = [t.name for t in request.tools]
        if verdict.response is not None and verdict.response.tool_calls:
            texts["tool_calls"] = [_call(c) for c in verdict.response.tool_calls]
        details.update(texts)
        import hashlib  # here: hashlib loads OpenSSL (about 3.5 MiB), and only an [llm] kernel gets here

        details["prompt_sha256"] = hashlib.sha256(request.prompt.encode("utf-8")).hexdigest()
        if answer is not None:
            details["answer_sha256"] = hashlib.sha256(answer.encode("utf-8")).hexdigest()
        if request.image is not None:
            details["image_sha256"] = hashlib.sha256(request.image.data).hexdigest()
        if self.path is None:
            return
        line = {"time": time.time(), "request": job.key, "agent_id": job.agent_id, "name": job.name, "model": request.model,
                "outcome": details["outcome"], "tokens": verdict.billed, **texts}  # fmt: skip
        try:
            if self._file is None:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                self._file = os.fdopen(fd, "a", encoding="utf-8")
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._file.flush()
        except OSError as err:
            log.error("LLM recording: cannot write %s: %s", self.path, err)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
