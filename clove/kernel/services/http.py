"""HTTP performed by the kernel for its callers, without blocking the kernel's loop.

Threads: the loop thread owns everything here except :class:`WorkerPool`'s threads, which run
:meth:`Transport.send` on immutable :class:`HttpRequest` values (and build the reply) and share nothing with the loop
but two :class:`queue.SimpleQueue`\\ s (jobs in, outcomes out) and a wake-up pipe registered
with ``kernel.loop.add_reader``. Only the loop thread resolves Deferreds, counts requests in
flight, journals and looks at the caller; a worker never touches kernel state.

Limits (see docs/http.md): a response body above :data:`MAX_RESPONSE_BYTES` is
``quota.exceeded``; a caller has at most :data:`MAX_IN_FLIGHT` requests in flight and the kernel
:data:`MAX_PENDING`; each request has one deadline (its ``timeout``, counted from submission)
that covers waiting for a worker, connecting, sending and reading. Results for a caller that
went away (agent exited or removed, operator session closed) are dropped and journaled as
``http.dropped``. At shutdown the pool is told to stop and waited for at most
:data:`SHUTDOWN_WAIT` seconds; a thread stuck in a slow request is a daemon and dies with the
process.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, final

from clove.errors import CloveError, InternalError, OperationTimeout, QuotaExceeded, UpstreamError
from clove.httpclient import HttpRequest, Transport, Urllib3Transport
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.workers import WorkerPool

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.loop import Loop, Timer
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import Journaling, ServiceHost, ServiceRegistry

log = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 16
MAX_PENDING: Final = 256
WORKERS: Final = 8
#: The loop answers ``timeout`` this long after the deadline if the worker has not (a worker
#: stuck in DNS resolution, which no socket timeout covers).
DEADLINE_GRACE: Final = 0.5
SHUTDOWN_WAIT: Final = 1.0


# ---- the loop side ----------------------------------------------------------------------------


#: ``record(event_type, code, agent_id, duration_us, details)``: journal one NETWORK record.


@dataclass(eq=False, slots=True)
class _Pending:
    principal: int
    agent_id: int | None
    request: HttpRequest
    deferred: Deferred
    started: float
    timer: Timer | None = None
    answered: bool = False  # the caller had its reply (or the timeout) already
    dropped: bool = False  # the caller went away
    extra: dict[str, Any] = field(default_factory=dict)


@final
class HttpService:
    """Requests in flight, per caller, between the syscall and the worker pool."""

    def __init__(
        self,
        *,
        loop: Loop,
        transport: Transport,
        record: Journaling | None = None,
        workers: int = WORKERS,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_pending: int = MAX_PENDING,
        max_request_bytes: int = 1 << 20,
    ) -> None:
        self.loop = loop
        self.transport = transport
        self._record = record or (lambda *_: None)
        self.max_in_flight = max_in_flight
        self.max_pending = max_pending
        self.max_request_bytes = max_request_bytes
        self.pool = WorkerPool(self._perform, max_workers=workers, name="clove-http")
        self._pending: dict[int, _Pending] = {}
        self._per_caller: dict[int, int] = {}
        self._keys = itertools.count(1)
        self.closed = False
        self.stats = {"sent": 0, "completed": 0, "failed": 0, "dropped": 0, "timed_out_by_loop": 0}
        loop.add_reader(self.pool.fileno(), self.on_wake)


    def held(self) -> dict[str, int]:
        return {"http_pending": len(self._pending)}
    def _perform(self, job: tuple[HttpRequest, float]) -> tuple[dict[str, Any], int, int]:
        """On a worker thread: the request, and the reply built there too (decoding or base64
        of up to 10 MiB is the worker's time, not the loop's)."""
        response = self.transport.send(*job)
        return response.to_reply(), response.status, len(response.body)

    def in_flight(self, principal_id: int) -> int:
        return self._per_caller.get(principal_id, 0)

    def submit(self, principal_id: int, agent_id: int | None, request: HttpRequest, **extra: Any) -> Deferred:
        """Queue ``request`` for a worker; the Deferred settles on the loop thread.

        :raises QuotaExceeded: the caller (or the whole kernel) has too many requests in flight.
        :raises UpstreamError: the kernel is shutting down.
        """
        if self.closed:
            raise UpstreamError("the kernel is shutting down")
        count = self._per_caller.get(principal_id, 0)
        if count >= self.max_in_flight:
            raise QuotaExceeded(
                f"at most {self.max_in_flight} HTTP requests may be in flight per caller",
                details={"in_flight": count, "max_in_flight": self.max_in_flight},
            )
        if len(self._pending) >= self.max_pending:
            raise QuotaExceeded(f"the kernel has {len(self._pending)} HTTP requests in flight", details={"max_pending": self.max_pending})

        key = next(self._keys)
        deferred = Deferred()
        pending = _Pending(principal_id, agent_id, request, deferred, time.monotonic(), extra=extra)
        pending.timer = self.loop.call_later(request.timeout + DEADLINE_GRACE, lambda: self._expire(key))
        self._pending[key] = pending
        self._per_caller[principal_id] = count + 1
        self.pool.submit(key, (request, pending.started + request.timeout))
        self.stats["sent"] += 1
        return deferred

    def on_wake(self) -> None:
        """The loop's reader for the pool's pipe: settle every finished request."""
        for key, outcome, failed in self.pool.completed():
            self._complete(key, outcome, failed)

    def _complete(self, key: int, outcome: Any, failed: bool) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        left = self._per_caller.get(pending.principal, 1) - 1
        if left > 0:
            self._per_caller[pending.principal] = left
        else:
            self._per_caller.pop(pending.principal, None)
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.dropped:
            self.stats["dropped"] += 1
            self._journal("http.dropped", pending, "ok", {"reason": "caller gone"})
            return
        if pending.answered:
            return  # the loop answered "timeout" already; the worker came back later
        pending.answered = True
        if failed:
            error = outcome if isinstance(outcome, CloveError) else self._unexpected(outcome, pending)
            self.stats["failed"] += 1
            self._journal("http.failed", pending, error.code, {"error": error.message})
            pending.deferred.reject(error)
            return
        reply, status, size = outcome
        self.stats["completed"] += 1
        self._journal("http.response", pending, "ok", {"status_code": status, "bytes": size})
        pending.deferred.resolve(reply)

    @staticmethod
    def _unexpected(err: BaseException, pending: _Pending) -> CloveError:
        log.error("HTTP %s %s failed inside the kernel", pending.request.method, pending.request.url, exc_info=err)
        return InternalError(f"HTTP {pending.request.method} failed inside the kernel; see the kernel log")

    def _expire(self, key: int) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.answered or pending.dropped:
            return
        pending.answered = True
        self.stats["timed_out_by_loop"] += 1
        timeout = pending.request.timeout
        error = OperationTimeout(f"HTTP {pending.request.method} took longer than {timeout:g} s", details={"timeout": timeout})
        self._journal("http.failed", pending, error.code, {"error": error.message})
        pending.deferred.reject(error)

    def drop(self, principal_id: int) -> int:
        """Forget the replies owed to a caller that went away; returns how many. Their workers
        still finish (and count against the caller's in-flight limit until they do)."""
        count = 0
        for pending in self._pending.values():
            if pending.principal == principal_id and not pending.answered and not pending.dropped:
                pending.dropped = True
                if pending.timer is not None:
                    pending.timer.cancel()
                count += 1
        return count

    def close(self) -> None:
        """At shutdown: answer nobody, stop the pool without waiting for slow requests."""
        if self.closed:
            return
        self.closed = True
        for pending in self._pending.values():
            pending.dropped = True
            if pending.timer is not None:
                pending.timer.cancel()
        self.loop.remove_reader(self.pool.fileno())
        if not self.pool.close(SHUTDOWN_WAIT):
            log.info("%d HTTP requests still running at shutdown; their threads end with the process", self.pool.busy)
        else:
            self.transport.close()

    def _journal(self, event: str, pending: _Pending, code: str, details: dict[str, Any]) -> None:
        request = pending.request
        info = {"method": request.method, "url": request.url, "caller_id": pending.principal, **pending.extra, **details}
        self._record(event, code, pending.agent_id, int((time.monotonic() - pending.started) * 1e6), info)


def of(kernel: ServiceHost) -> HttpService:
    """The kernel's HTTP service (``kernel.http``).

    :raises InternalError: the service was not attached.
    """
    service = getattr(kernel, "http", None)
    if not isinstance(service, HttpService):
        raise InternalError("the HTTP service is not running")
    return service


def attach(kernel: ServiceRegistry) -> None:
    """Build the service (``kernel.http``), journal its records under NETWORK, drop replies
    owed to agents that exit or are removed and to closed operator sessions, stop at shutdown."""

    def record(event: str, code: str, agent_id: int | None, duration_us: int, details: dict[str, Any]) -> None:
        if not kernel.audit_config.wants("NETWORK", False):
            return
        agent = kernel.supervisor.table.get(agent_id) if agent_id is not None else None
        kernel.journal.append(
            "NETWORK",
            event,
            agent_id=agent_id,
            agent_name=agent.name if agent else None,
            syscall="http",
            code=code,
            duration_us=duration_us,
            details=details,
        )

    service = HttpService(
        loop=kernel.loop,
        transport=Urllib3Transport(pool_size=WORKERS),
        record=record,
        max_request_bytes=kernel.config.kernel.max_message_bytes,
    )
    kernel.http = service

    def on_lifecycle(event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        if event_type in ("agent.exited", "agent.removed"):
            service.drop(agent.id)

    def on_session_closed(session: OperatorSession) -> None:
        service.drop(session.id)

    kernel.supervisor.listeners.append(on_lifecycle)
    kernel.sessions.on_close.append(on_session_closed)
    kernel.on_shutdown.append(service.close)
