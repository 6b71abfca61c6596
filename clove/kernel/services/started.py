"""Requests that reach the kernel before their agent is known to run wait for it
(:func:`when_started`); the file and exec services use it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from clove.errors import CloveError, InternalError
from clove.kernel.core.agents import AgentState
from clove.kernel.core.deferred import Deferred

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.principal import Principal
    from clove.kernel.supervision.supervisor import Supervisor

log = logging.getLogger(__name__)
T = TypeVar("T")


def when_started(supervisor: Supervisor, ctx: Principal, action: Callable[[], T]) -> T | Deferred:
    """Run ``action`` now, or once the calling agent is known to run.

    An agent's first requests can reach the kernel before the zygote's report that it started
    (the agent is still ``starting``, its pid unknown): those wait for that report instead of
    failing. Errors ``action`` raises then reject the returned :class:`Deferred`.
    """
    agent = ctx.agent
    runtime = supervisor.runtime(agent) if agent is not None else None
    if agent is None or runtime is None or agent.state is not AgentState.STARTING or agent.pid is not None:
        return action()
    deferred = Deferred()

    def started(_agent: Agent, error: CloveError | None) -> None:
        if error is not None:
            deferred.reject(error)
            return
        try:
            result = action()
        except CloveError as err:
            deferred.reject(err)
            return
        except Exception:
            log.exception("a request waiting for its agent's start failed")
            deferred.reject(InternalError("the request failed inside the kernel; see the kernel log"))
            return
        if isinstance(result, Deferred):
            result.bind(
                lambda value, err: deferred.reject(err) if err is not None else deferred.resolve(value)
            )
        else:
            deferred.resolve(result)

    runtime.start_waiters.append(started)
    return deferred
