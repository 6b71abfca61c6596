"""What every syscall is: a small class with a name, a frozen ``Request`` dataclass checked
field by field against the body, and ``execute(ctx, req)``.

``execute`` returns the result (anything msgpack can carry) or a :class:`Deferred` that the
handler resolves later (a spawn answered once the sandbox is up, a kill once the agent is gone),
so nothing waits on the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from clove.config import AgentLimits
from clove.kernel.core.channels import Caller
from clove.schema import parse_body
from clove.wire import Request as WireRequest

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import ServiceRegistry
    from clove.policy import Permissions


@dataclass(slots=True)
class SyscallContext:
    """Everything a syscall may touch: the kernel's parts and who is calling (a
    :class:`~clove.kernel.core.principal.Principal`: what is handed on to services). Read-only
    by convention (built for every request, so not frozen: that costs a call per field).

    :param agent: the calling agent's record (``None`` for operators).
    :param session: the calling operator's session (``None`` for agents).
    :param perms: the caller's permissions (checked again by handlers for paths, commands, URLs).
    :param request: the request as it arrived (``None`` when a call is made without one), for
        handlers that pass a large value on as the client encoded it (:func:`clove.wire.encoded_tail`).
    """

    kernel: ServiceRegistry
    caller: Caller
    agent: Agent | None
    perms: Permissions
    session: OperatorSession | None = None
    request: WireRequest | None = None

    @property
    def principal_id(self) -> int:
        """The caller's id: the agent's spawn id, or the operator session's id."""
        return self.caller.principal_id

    @property
    def is_operator(self) -> bool:
        return self.caller.is_operator

    @property
    def limits(self) -> AgentLimits:
        """The caller's ``[limits]`` (``[limits.agents.NAME]`` over the defaults; an operator's
        are the defaults): what it may make the kernel hold on its behalf."""
        config = getattr(self.kernel, "config", None)
        if config is None:  # a kernel built without a config (unit tests' fakes): the defaults
            return AgentLimits()
        limits: AgentLimits = config.limits.for_agent(self.agent.name if self.agent is not None else None)
        return limits


@dataclass(frozen=True, slots=True)
class NoArgs:
    """The body of a syscall that takes nothing."""


class Syscall:
    """Base of every syscall. Subclasses set ``name``, ``Request`` and ``execute``."""

    name: ClassVar[str]
    category: ClassVar[str] = "SYSCALL"
    #: The right (see :mod:`clove.policy`) a caller needs; checked before ``execute``.
    right: ClassVar[str] = "admin"
    Request: ClassVar[type[Any]] = NoArgs

    def execute(self, ctx: SyscallContext, req: Any) -> Any:
        raise NotImplementedError

    def parse(self, body: dict[str, Any]) -> Any:
        """Build ``Request`` from the body.

        :raises InvalidArguments: naming the unknown, missing or mistyped field.
        """
        return parse_body(self.Request, body, self.name)


