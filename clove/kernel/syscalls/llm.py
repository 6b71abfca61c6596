"""LLM syscalls: ``llm.think`` (the kernel asks a model for its caller), ``llm.stats`` (usage,
budgets, queue waits) and ``llm.budget`` (operators change an agent's budget or share).

The request is checked here, on the loop thread; queuing, budgets, limits and the call itself
are :mod:`clove.kernel.services.llm`'s (docs/llm.md).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any, Final, final

from clove.errors import InvalidArguments, PermissionDenied
from clove.kernel.core.agents import TERMINAL
from clove.kernel.services import llm as llm_service
from clove.kernel.syscalls.asynccalls import accept_or_wait
from clove.kernel.syscalls.base import Syscall, SyscallContext
from clove.llm.types import IMAGE_TYPES, THINKING_LEVELS, ChatRequest, Image
from clove.schema import parse_body

MAX_TOKENS_LIMIT: Final = 1_000_000
#: What the journal's syscall record keeps of these arguments: their size, never the text (the
#: request's own ``llm.request`` record holds prompts and answers when recording is on).
_PRIVATE: Final = ("prompt", "system_instruction", "image")
BUDGET_KEYS: Final = ("tokens", "period_tokens", "weight")


@dataclass(frozen=True, slots=True)
class ThinkCall:
    prompt: str
    image: bytes | str | None = None
    image_mime_type: str = "image/jpeg"
    system_instruction: str | None = None
    thinking_level: str | None = None
    temperature: float | None = None
    model: str | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    async_: bool = False
    request_id: str | int | None = None


def _image(req: ThinkCall) -> Image | None:
    if req.image is None:
        return None
    if req.image_mime_type not in IMAGE_TYPES:
        raise InvalidArguments(f"llm.think: image_mime_type must be one of {', '.join(IMAGE_TYPES)}", details={"argument": "image_mime_type"})
    data = req.image
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArguments("llm.think: image must be bytes or base64 text", details={"argument": "image"}) from None
    if not data:
        raise InvalidArguments("llm.think: the image is empty", details={"argument": "image"})
    return Image(data, req.image_mime_type)


def build_request(req: ThinkCall, *, model: str, default_max_tokens: int) -> ChatRequest:
    """Validate a call into the request a provider performs.

    :raises InvalidArguments: an empty prompt without an image, an unknown thinking level or
        image type, a temperature outside [0, 2], ``max_tokens`` outside [1, 1000000], a bad
        ``request_id``.
    """
    image = _image(req)
    if not req.prompt and image is None:
        raise InvalidArguments("llm.think: the prompt is empty", details={"argument": "prompt"})
    if req.thinking_level is not None and req.thinking_level not in THINKING_LEVELS:
        raise InvalidArguments(f"llm.think: thinking_level must be one of {', '.join(THINKING_LEVELS)}", details={"argument": "thinking_level"})
    temperature = None if req.temperature is None else float(req.temperature)
    if temperature is not None and not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
        raise InvalidArguments("llm.think: temperature must be in [0, 2]", details={"argument": "temperature"})
    max_tokens = default_max_tokens if req.max_tokens is None else req.max_tokens
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidArguments(f"llm.think: max_tokens must be in [1, {MAX_TOKENS_LIMIT}]", details={"argument": "max_tokens"})
    if isinstance(req.request_id, str) and not 0 < len(req.request_id) <= 128:
        raise InvalidArguments("llm.think: request_id must be 1-128 characters", details={"argument": "request_id"})
    return ChatRequest(
        prompt=req.prompt, model=model, max_tokens=max_tokens, system_instruction=req.system_instruction or None,
        image=image, temperature=temperature, thinking_level=req.thinking_level,
    )  # fmt: skip


@final
class Think(Syscall):
    """``llm.think {prompt, image?, image_mime_type="image/jpeg", system_instruction?,
    thinking_level?, temperature?, model?, max_tokens?, timeout?, async_=False, request_id?}``.

    Result: ``{success: True, content, tokens, prompt_tokens, completion_tokens, model,
    provider, finish_reason, attempts, queue_wait_ms, latency_ms}`` (``reasoning`` too when the
    model returns it). With ``async_`` the reply is ``{success, async: True, request_id,
    status: "accepted"}`` and the result arrives through ``async.poll`` as ``SYS_THINK``.

    Errors: ``llm.unavailable`` (no gateway, model not offered, provider failed to start),
    ``llm.quota_exceeded`` (budget or TPM can never fit the request), ``quota.exceeded`` (too
    many queued), ``timeout``, ``upstream.failed`` (provider error after retries, or down),
    ``proto.invalid_args``.
    """

    name = "llm.think"
    right = "llm"
    category = "NETWORK"
    Request = ThinkCall

    def parse(self, body: dict[str, Any]) -> Any:
        try:
            return parse_body(self.Request, body, self.name)
        finally:  # the dispatcher journals this body, refused or not: keep sizes, not contents
            for key in _PRIVATE:
                value = body.get(key)
                if isinstance(value, (str, bytes)):
                    body[key] = f"<{len(value)} {'bytes' if isinstance(value, bytes) else 'chars'}>"

    def execute(self, ctx: SyscallContext, req: ThinkCall) -> Any:
        service = llm_service.of(ctx.kernel)
        slot, model = service.route(req.model)
        settings = service.settings
        assert settings is not None  # noqa: S101 - route() raised otherwise
        request = build_request(req, model=model, default_max_tokens=settings.max_tokens)
        timeout = settings.max_timeout if req.timeout is None else float(req.timeout)
        if not (math.isfinite(timeout) and 0 < timeout <= settings.max_timeout):
            raise InvalidArguments(f"llm.think: timeout must be in (0, {settings.max_timeout:g}] seconds", details={"argument": "timeout"})
        caller = llm_service.caller_of(ctx.agent, ctx.principal_id, ctx.perms)
        extra: dict[str, Any] = {"async": True, "request_id": req.request_id} if req.async_ else {}
        return accept_or_wait(
            ctx, async_=req.async_, request_id=req.request_id, opcode_name="SYS_THINK",
            start=lambda: service.submit(caller, request, slot, timeout=timeout, extra=extra),
        )


@dataclass(frozen=True, slots=True)
class StatsCall:
    agent_id: int | None = None
    name: str | None = None


@final
class Stats(Syscall):
    """``llm.stats {agent_id?, name?}`` → ``{success, enabled, agents: [...], providers: [...]}``.

    Each agent row: ``agent_id, name, weight, used, reserved, budget, budget_left,
    period_budget, period_used, period_left, period_ends, rpm, tpm, queued, in_flight,
    requests, completed, failed, cancelled, refused, retries, prompt_tokens,
    completion_tokens, queue_wait_ms {n, p50, p95, p99, max}, latency_ms {...}``. Agents see
    their own row only (and no providers); operators every live agent, or the one asked for.
    """

    name = "llm.stats"
    right = "llm"
    Request = StatsCall

    def execute(self, ctx: SyscallContext, req: StatsCall) -> dict[str, Any]:
        service = llm_service.of(ctx.kernel)
        out: dict[str, Any] = {"success": True, **service.describe()}
        if not ctx.is_operator:
            if (req.agent_id is not None and req.agent_id != ctx.principal_id) or (req.name is not None and ctx.agent and req.name != ctx.agent.name):
                raise PermissionDenied("agents may read only their own LLM figures")
            out["agents"] = [service.figures(llm_service.caller_of(ctx.agent, ctx.principal_id, ctx.perms))]
            for key in ("providers", "running", "queued"):  # others' traffic is not an agent's business
                out.pop(key, None)
            return out
        table = ctx.kernel.supervisor.table
        if req.agent_id is not None or req.name is not None:
            agents = [table.find(name=req.name, agent_id=req.agent_id)]
        else:
            agents = [a for a in table if a.state not in TERMINAL or a.id in service.gateway.accounts]
        rows = [service.figures(llm_service.caller_of(a, a.id, a.permissions)) for a in agents]
        if req.agent_id is None and req.name is None:
            known = {a.id for a in agents}
            rows.extend(acct.figures(period_seconds=service.settings.period if service.settings else 86400.0)
                        for pid, acct in service.gateway.accounts.items() if pid not in known)  # fmt: skip
        out["agents"] = rows
        return out


@dataclass(frozen=True, slots=True)
class BudgetCall:
    name: str | None = None
    agent_id: int | None = None
    tokens: int | None = None
    period_tokens: int | None = None
    weight: float | None = None
    reset: list[str] | None = None


@final
class Budget(Syscall):
    """``llm.budget {name | agent_id, tokens?, period_tokens?, weight?, reset?}`` →
    ``{success, agent: {...the llm.stats row...}}``. Operators only.

    ``tokens`` sets the agent's lifetime budget: its ``llm_tokens`` grant, changed as
    ``permissions.set`` would. ``period_tokens`` and ``weight`` override its ``[llm]`` config
    for this kernel's life. ``reset`` (any of ``tokens``, ``period_tokens``, ``weight``) goes
    back to the config (for ``tokens``: clears the grant). In-flight requests keep their
    reservations; queued ones are checked against the new figures at dispatch.
    """

    name = "llm.budget"
    right = "admin"
    category = "RESOURCE"
    Request = BudgetCall

    def execute(self, ctx: SyscallContext, req: BudgetCall) -> dict[str, Any]:
        service = llm_service.of(ctx.kernel)
        supervisor = ctx.kernel.supervisor
        agent = supervisor.table.find(name=req.name, agent_id=req.agent_id)
        for key, value in (("tokens", req.tokens), ("period_tokens", req.period_tokens)):
            if value is not None and value < 0:
                raise InvalidArguments(f"llm.budget: {key} must be >= 0", details={"argument": key})
        if req.weight is not None and not (math.isfinite(req.weight) and req.weight > 0):
            raise InvalidArguments("llm.budget: weight must be positive", details={"argument": "weight"})
        reset = req.reset or []
        bad = [key for key in reset if key not in BUDGET_KEYS]
        if bad:
            raise InvalidArguments(f"llm.budget: reset takes {', '.join(BUDGET_KEYS)}; got {bad[0]!r}", details={"argument": "reset"})
        if "tokens" in reset or req.tokens is not None:
            agent.permissions = agent.permissions.with_grants({"llm_tokens": req.tokens})
            supervisor.permissions_changed(agent)  # journaled, like permissions.set
        override = service.overrides.setdefault(agent.id, {})
        for key, field in (("period_tokens", "period_budget"), ("weight", "weight")):
            if key in reset:
                override.pop(field, None)
        if req.period_tokens is not None:
            override["period_budget"] = req.period_tokens
        if req.weight is not None:
            override["weight"] = float(req.weight)
        caller = llm_service.caller_of(agent, agent.id, agent.permissions)
        service.refresh(caller)
        return {"success": True, "agent": service.figures(caller)}


SYSCALLS: tuple[type[Syscall], ...] = (Think, Stats, Budget)
