"""What every syscall is: a small class with a name, a frozen ``Request`` dataclass checked
field by field against the body, and ``execute(ctx, req)``.

``execute`` returns the result (anything msgpack can carry) or a :class:`Deferred` that the
handler resolves later (a spawn answered once the sandbox is up, a kill once the agent is gone),
so nothing waits on the loop.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Union

from clove.config import AgentLimits
from clove.errors import InvalidArguments
from clove.kernel.core.channels import Caller

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import ServiceHost
    from clove.policy import Permissions


@dataclass(frozen=True, slots=True)
class SyscallContext:
    """Everything a syscall may touch: the kernel's parts and who is calling (a
    :class:`~clove.kernel.core.principal.Principal`: what is handed on to services).

    :param agent: the calling agent's record (``None`` for operators).
    :param session: the calling operator's session (``None`` for agents).
    :param perms: the caller's permissions (checked again by handlers for paths, commands, URLs).
    """

    kernel: ServiceHost
    caller: Caller
    agent: Agent | None
    perms: Permissions
    session: OperatorSession | None = None

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


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    hint: Any
    required: bool


_FIELDS: dict[type[Any], tuple[tuple[_Field, ...], frozenset[str]]] = {}


def _fields_of(cls: type[Any]) -> tuple[tuple[_Field, ...], frozenset[str]]:
    """The request class's fields with resolved type hints, and their names: once per class."""
    cached = _FIELDS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        fields = tuple(
            _Field(f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
        )
        cached = _FIELDS[cls] = (fields, frozenset(f.name for f in fields))
    return cached


def _check(value: Any, hint: Any) -> bool:
    if hint is Any or type(value) is hint:  # the fast, common case (type(True) is bool, not int)
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_check(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_check(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(_check(k, key) and _check(v, item) for k, v in value.items())
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_args(hint):  # list[str] has a __name__ too ("list"); say what it holds
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_body(cls: type[Any], body: dict[str, Any], call: str) -> Any:
    fields, names = _fields_of(cls)
    if not names.issuperset(body):
        unknown = min((key for key in body if key not in names), key=str)  # keys may be bytes (msgpack bin)
        raise InvalidArguments(f"{call}: unknown argument {unknown!r}", details={"argument": unknown, "known": sorted(names)})
    values = {}
    for field in fields:
        if field.name not in body:
            if field.required:
                raise InvalidArguments(f"{call}: missing argument {field.name!r}", details={"argument": field.name})
            continue
        value = body[field.name]
        if not _check(value, field.hint):
            raise InvalidArguments(
                f"{call}: argument {field.name!r} must be {_describe(field.hint)}, got {type(value).__name__}",
                details={"argument": field.name, "expected": _describe(field.hint)},
            )
        values[field.name] = value
    return cls(**values)
