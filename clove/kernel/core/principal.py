"""Who is calling, as the kernel established it (from the socket a request came in on, never
from the message): the one notion of a caller that services are handed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from clove.config import AgentLimits
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.channels import Caller
    from clove.kernel.core.sessions import OperatorSession
    from clove.policy import Permissions


class Principal(Protocol):
    """The caller of one request. The dispatcher's syscall context is one; a service needs no
    more than this, so it never sees the syscall layer."""

    @property
    def caller(self) -> Caller:
        """Which kind of caller, and its agent or session id."""

    @property
    def agent(self) -> Agent | None:
        """The calling agent's record (``None`` for operators)."""

    @property
    def perms(self) -> Permissions:
        """The caller's permissions (services check paths, commands, URLs against them)."""

    @property
    def session(self) -> OperatorSession | None:
        """The calling operator's session (``None`` for agents)."""

    @property
    def principal_id(self) -> int:
        """The caller's id for messaging, events and async results."""

    @property
    def limits(self) -> AgentLimits:
        """What the caller may make the kernel hold on its behalf (``[limits]``)."""
