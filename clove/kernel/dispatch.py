"""The single mediation point: decode → identify → authorize → execute → journal → reply.

Every request gets exactly one reply that echoes its id, and one journal record, whether it is
allowed, denied, malformed or fails inside the handler. A bug in a handler becomes an
``internal`` error reply (the traceback goes to the kernel log only). A denial also emits
SYSCALL_BLOCKED.

Recording and replay (docs/recording.md) hook in here too: the recorder captures each recorded
request on arrival and records it with its reply once sent (direct and deferred paths); a
replayed agent's requests go to the replay service right after identify and are answered from
its recording, never performed; an operator's replay re-executes calls through ``perform``.

The kernel's hottest path: no per-request work that can be done per turn or not at all. Frames
go through pyzmq's base-class calls (:mod:`~clove.kernel.core.channels`), the fair share is
charged once per turn, and a read-only call's reply leaves before its record is built (in the
same turn); replies a call completes (a waiting receiver's) are committed before its own record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import zmq

from clove import wire
from clove.errors import CloveError, InternalError, PermissionDenied, ResourceExhausted, UnknownSyscall
from clove.kernel.audit.journal import Category
from clove.kernel.audit.redact import redact
from clove.kernel.core.channels import Caller, read_message, send_message
from clove.kernel.core.commit import HeldReplies
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.fairshare import Flow, Flows, weight_for
from clove.kernel.core.loop import zmq_readable
from clove.kernel.services.host import ServiceRegistry
from clove.kernel.syscalls.base import Syscall, SyscallContext
from clove.kernel.syscalls.registry import SYSCALLS
from clove.policy import Permissions
from clove.ratelimit import TokenBucket

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.recording.recorder import Pending

log = logging.getLogger(__name__)


class DispatchHost(ServiceRegistry, Protocol):
    """What the dispatcher uses of the kernel: what services see, and the operators' rights."""

    operator_permissions: Permissions

#: At most this many messages from one socket per loop turn, however cheap (the fair share in
#: :mod:`clove.kernel.core.fairshare` usually stops a busy socket sooner).
BATCH = 32
#: What an agent may still do while the journal's disk is below its reserve: drain what the
#: kernel holds for it and learn why. Everything else is new work, refused until space returns.
DRAIN_CALLS: Final = frozenset({"hello", "noop", "kernel.info", "events.poll", "ipc.recv", "async.poll", "events.unsubscribe"})
#: Calls that change nothing: their replies leave at once. Every other successful reply waits
#: until its journal record has been written (group commit), so a reply the caller saw always
#: has its record on disk, even if the kernel is killed the next instant.
READ_ONLY_CALLS: Final = frozenset({
    "noop", "echo", "hello", "kernel.info", "sys.time", "sys.random", "agent.list", "agent.logs",
    "device.list", "device.info", "fs.read", "llm.budget", "llm.stats", "metrics.agent", "metrics.agents",
    "metrics.cgroup", "metrics.system", "record.status", "replay.status", "interlock.list", "permissions.get",
    "postmortem.get", "postmortem.list", "state.fetch", "state.keys", "audit.query",
})  # fmt: skip
#: A throttled agent is announced (``AGENT_THROTTLED``) at most once per this many seconds.
THROTTLE_EVENT_INTERVAL_S = 1.0
#: Shorter waits than this are not worth a timer: the loop polls in whole milliseconds.
TIMER_RESOLUTION_S = 0.001


def _bug(call: str) -> InternalError:
    """The exception being handled, a handler's bug: logged with its traceback, answered ``internal``."""
    log.exception("syscall %s failed", call)
    return InternalError(f"{call} failed inside the kernel; see the kernel log")


class Dispatcher:
    def __init__(self, kernel: DispatchHost, registry: dict[str, Syscall] | None = None) -> None:
        self.kernel = kernel
        self.registry = registry if registry is not None else SYSCALLS
        self.max_bytes = kernel.config.kernel.max_message_bytes
        #: One fair-share account per socket (an agent's, or the operators' control socket).
        self.flows = Flows(self._new_flow)
        #: Successful replies waiting for their journal record to be written (group commit).
        self.replies = HeldReplies(kernel.journal, kernel.loop, self._send)
        kernel.loop.each_turn.append(self.replies.commit)  # replies completed outside a batch

    def on_readable(self, sock: zmq.Socket[bytes]) -> None:
        """Serve ``sock`` for this turn's share of kernel time (see :mod:`clove.kernel.core.fairshare`)."""
        flow = self.flows.of(sock)
        if not flow.start_turn():
            return  # still repaying an expensive call: other callers go first this turn
        self._serve(sock, flow)
        if self.replies.held:  # group commit of this batch's records, charged to the caller
            started = time.perf_counter_ns()
            self.replies.commit()
            flow.credit_ns -= time.perf_counter_ns() - started

    def _serve(self, sock: zmq.Socket[bytes], flow: Flow) -> None:
        """Up to :data:`BATCH` requests, while the flow has credit and its rate allows; the
        turn's kernel time and calls are charged at the end, in one go."""
        allowance = flow.allowance(BATCH)
        if allowance == 0:
            wait = flow.rate_wait()
            if wait:
                self._throttle(sock, flow, wait)
                return
            allowance = 1
        control = sock is self.kernel.channels.control
        clock = time.perf_counter_ns
        credit, served, drained = flow.credit_ns, 0, False
        turn_started = started = clock()
        while served < allowance and credit > 0:
            try:
                message = read_message(sock)
            except zmq.ZMQError:  # closed under us (its agent is gone)
                message = None
            if message is None:
                drained = True
                break
            first, routing, frames = message
            self.handle(sock, routing, frames, self.kernel.sessions.of_peer(routing, first) if control else None, started)
            served += 1
            now = clock()
            credit -= now - started
            started = now
            if not zmq_readable(sock):  # read after the reply was sent: nothing else queued
                drained = True
                break
        if served:
            flow.charge(started - turn_started, served)
        if drained:
            self.kernel.loop.settled(sock)
            flow.idle()
        elif served >= allowance and allowance < BATCH:  # more queued, over the rate
            wait = flow.rate_wait()
            if wait:
                self._throttle(sock, flow, wait)

    def _new_flow(self, sock: zmq.Socket[bytes]) -> Flow:
        caller = self.kernel.channels.by_socket.get(sock)
        agent = self.kernel.supervisor.table.get(caller.agent_id) if caller is not None and caller.agent_id is not None else None
        if agent is None:
            return Flow(weight=1.0, label={"caller": "operator"})
        limits = self.kernel.config.limits.for_agent(agent.name)
        quota = agent.spec.cpu_quota_us if agent.spec.cpu_quota_us is not None else limits.cpu_quota_us
        return Flow(
            weight=weight_for(quota, limits.weight),
            bucket=TokenBucket(limits.syscall_rate, limits.syscall_burst),
            label={"caller": "agent", "agent_id": agent.id, "name": agent.name},
        )

    def _throttle(self, sock: zmq.Socket[bytes], flow: Flow, wait: float) -> None:
        """Stop reading an agent over its syscall rate until tokens are back: slowed, not failed."""
        loop = self.kernel.loop
        now = loop.clock()
        if now - flow.throttled_until > THROTTLE_EVENT_INTERVAL_S:
            flow.throttled += 1
            self.kernel.events.emit(
                "AGENT_THROTTLED",
                {"agent_id": flow.label.get("agent_id"), "name": flow.label.get("name"), "reason": "syscall_rate", "wait_s": round(wait, 4)},
                source_agent_id=None,
            )
        flow.throttled_until = now + wait
        loop.remove_reader(sock)

        def resume() -> None:
            if not sock.closed:
                loop.add_reader(sock, lambda: self.on_readable(sock))

        loop.call_later(wait, resume)

    def figures(self) -> list[dict[str, Any]]:
        """Kernel time used per caller since boot, for ``kernel.info`` and metrics."""
        return self.flows.figures()

    def _flow_of(self, agent_id: int | None) -> Flow | None:
        """An agent's flow, or the operators' (``None``); ``None`` before its first request."""
        channels = self.kernel.channels
        if agent_id is None:
            sock = channels.control
        else:
            entry = channels.agent_sockets.get(agent_id)
            sock = entry[0] if entry is not None else None
        return self.flows.get(sock) if sock is not None else None

    def agent_figures(self, agent_id: int) -> dict[str, int]:
        """One agent's kernel time, calls, denials and throttling episodes since boot (zeros
        before its first request), for ``metrics.agent(s)``."""
        flow = self._flow_of(agent_id)
        if flow is None:
            return {"kernel_time_us": 0, "calls": 0, "denied": 0, "throttled": 0}
        return {"kernel_time_us": flow.used_ns // 1000, "calls": flow.calls, "denied": flow.denied, "throttled": flow.throttled}

    def handle(
        self, sock: zmq.Socket[bytes], routing: bytes, frames: list[bytes | memoryview],
        session: OperatorSession | None = None, started: int | None = None,
    ) -> None:  # fmt: skip
        """One request (``frames``, from the peer ``routing``) from ``sock``, answered."""
        kernel = self.kernel
        caller = kernel.channels.by_socket.get(sock)
        if caller is None:
            return
        if session is not None:
            caller = session.caller
        if started is None:
            started = time.perf_counter_ns()
        agent = kernel.supervisor.table.get(caller.agent_id) if caller.agent_id is not None else None
        try:
            request = wire.decode_request(frames, self.max_bytes)
        except wire.BadRequest as bad:
            self._reply(sock, routing, wire.error_reply(bad.request_id, bad.error))
            self._record(caller, agent, None, None, started, bad.error, category=Category.SECURITY, event="proto.rejected")
            return
        syscall = self.registry.get(request.call)
        pending = None
        if agent is not None:
            if agent.id in kernel.replay.tracks:  # a replayed agent: answered from its recording
                self._replay(sock, routing, caller, agent, request, syscall, started)
                return
            if kernel.recorder.active:
                pending = kernel.recorder.capture(agent, request, started)
        elif session is not None and kernel.recorder.active:
            pending = kernel.recorder.capture_session(session.id, request, started)
        try:
            result = self._execute(syscall, request, caller, agent, session)
            # Encoded here, inside the error handling: a result that cannot be encoded becomes an
            # error reply rather than no reply at all.
            reply = None if isinstance(result, Deferred) else wire.ok_reply(request.id, result)
        except Exception as exc:  # a CloveError is the caller's answer; anything else is a bug
            err = exc if isinstance(exc, CloveError) else _bug(request.call)
            self._reply(sock, routing, wire.error_reply(request.id, err))
            self._record(caller, agent, request, syscall, started, err)
            if pending is not None:
                kernel.recorder.record(pending, None, err)
            return
        if reply is None:
            assert isinstance(result, Deferred)  # noqa: S101 - reply is None only for a Deferred
            result.bind(lambda value, error: self._finish_deferred(sock, routing, caller, agent, request, syscall, started, value, error, pending))
            return
        if request.call in READ_ONLY_CALLS:  # answered at once; its record follows in this turn
            self._reply(sock, routing, reply)
            self._record(caller, agent, request, syscall, started, None)
        else:
            if self.replies.held:  # what this call completed (a waiting receiver's reply) leaves before its own record
                self.replies.commit()
            self._reply_after(self._record(caller, agent, request, syscall, started, None), request.call, sock, routing, reply)
        if pending is not None:
            kernel.recorder.record(pending, _plain(result), None)

    def _execute(self, syscall: Syscall | None, request: wire.Request, caller: Caller, agent: Agent | None, session: OperatorSession | None) -> Any:
        """Authorize and run one request: its result or a :class:`Deferred` (:raises CloveError:)."""
        if syscall is None:
            raise UnknownSyscall(f"unknown syscall {request.call!r}", details={"call": request.call})
        kernel = self.kernel
        if agent is not None:
            if request.call not in DRAIN_CALLS and kernel.journal.space_low:
                raise ResourceExhausted(
                    "the kernel's journal disk is below its reserve: new work is refused until space returns",
                    details={"resource": "journal_disk"},
                )
            perms = agent.permissions
        else:
            perms = (session.permissions if session else None) or kernel.operator_permissions
        perms.require(syscall.right, request.call)
        return syscall.execute(SyscallContext(kernel, caller, agent, perms, session, request), syscall.parse(request.body))

    def perform(
        self, session: OperatorSession, call: str, body: dict[str, Any], done: Callable[[Any, CloveError | None], None],
        *, mark: str = "rerun",
    ) -> None:  # fmt: skip
        """Run ``call`` as operator ``session`` (its permissions, never more) with no socket, but
        authorized, executed and journaled like its requests, marked ``mark`` (``rerun``: an
        operator's replay; ``fleet``: a signed fleet command); ``done`` gets the result or error."""
        caller, started = session.caller, time.perf_counter_ns()
        request, syscall = wire.Request("rerun", call, body), self.registry.get(call)

        def finish(value: Any, error: CloveError | None) -> None:
            self._record(caller, None, request, syscall, started, error, mark=mark)
            done(_plain(value), error)

        try:
            result = self._execute(syscall, request, caller, None, session)
        except Exception as exc:  # as in handle: the caller's answer, or a bug
            finish(None, exc if isinstance(exc, CloveError) else _bug(call))
            return
        if isinstance(result, Deferred):
            result.bind(finish)
        else:
            finish(result, None)

    def _finish_deferred(
        self, sock: zmq.Socket[bytes], routing: bytes, caller: Caller, agent: Agent | None, request: wire.Request,
        syscall: Syscall | None, started: int, value: Any, error: CloveError | None, pending: Pending | None = None,
    ) -> None:  # fmt: skip
        if sock.closed:
            return
        try:
            frames = wire.error_reply(request.id, error) if error is not None else wire.ok_reply(request.id, value)
        except Exception:  # msgpack: too deep, too large an int, an unknown type
            log.exception("the result of %s could not be encoded", request.call)
            error = InternalError(f"{request.call} failed inside the kernel; see the kernel log")
            frames = wire.error_reply(request.id, error)
            value = None
        record = self._record(caller, agent, request, syscall, started, error)
        if error is None:
            self._reply_after(record, request.call, sock, routing, frames)
        else:
            self._send(sock, routing, frames)
        if pending is not None:
            self.kernel.recorder.record(pending, _plain(value), error)

    def _replay(self, sock: zmq.Socket[bytes], routing: bytes, caller: Caller, agent: Agent, request: wire.Request,
                syscall: Syscall | None, started: int) -> None:  # fmt: skip
        """Answer a replayed agent from its recording (now, or after the recorded duration);
        journaled like any syscall, marked ``replayed``."""
        answer = self.kernel.replay.answer(agent, request)

        def send() -> None:
            if sock.closed:
                return
            frames = wire.error_reply(request.id, answer.error) if answer.error is not None else wire.ok_reply(request.id, answer.result)
            self._send(sock, routing, frames)
            self._record(caller, agent, request, syscall, started, answer.error, mark="replayed")

        # At recorded speed the reply leaves when it did in the recording, counted from arrival;
        # below the loop's 1 ms timer resolution it leaves now (the replay's own work is that wait).
        wait = answer.delay - (time.perf_counter_ns() - started) / 1e9
        if wait >= TIMER_RESOLUTION_S:
            self.kernel.loop.call_later(wait, send)
        else:
            send()

    def _reply_after(self, record: dict[str, Any] | None, call: str, sock: zmq.Socket[bytes], routing: bytes, frames: list[bytes]) -> None:
        """Send a successful reply once its journal record is written; read-only calls and
        calls not journaled (audit config) answer at once."""
        if record is None or call in READ_ONLY_CALLS or self.kernel.journal.written_id >= record["id"]:
            self._send(sock, routing, frames)
        else:
            self.replies.hold(record["id"], sock, routing, frames)

    def _send(self, sock: zmq.Socket[bytes], routing: bytes, frames: list[bytes]) -> None:
        """A reply sent outside its socket's turn (deferred, released, replayed)."""
        self._reply(sock, routing, frames)
        self.kernel.loop.recheck(sock)  # a send can swallow the socket's ZMQ_FD wake-up

    @staticmethod
    def _reply(sock: zmq.Socket[bytes], routing: bytes, frames: list[bytes]) -> None:
        """A reply sent in its socket's turn (which reads ``ZMQ_EVENTS`` after it)."""
        try:
            send_message(sock, routing, frames)
        except zmq.ZMQError as err:  # peer gone or its queue full: the reply is dropped, not awaited
            log.debug("reply dropped: %s", err)

    def _record(
        self,
        caller: Caller,
        agent: Agent | None,
        request: wire.Request | None,
        syscall: Syscall | None,
        started: int,
        error: CloveError | None,
        *,
        category: str | None = None,
        event: str | None = None,
        mark: str | None = None,
    ) -> dict[str, Any] | None:
        """Journal one request (and emit SYSCALL_BLOCKED for a denial); the record, or ``None``
        when the audit config leaves it out or it was counted into a denial aggregate.
        ``mark``: ``replayed`` (answered from a recording), ``rerun`` (an operator's replay) or
        ``fleet`` (a signed fleet command)."""
        call = request.call if request else None
        details: dict[str, Any] = {"caller": caller.kind, "caller_id": caller.principal_id}
        denied = False
        if error is not None:
            # Refusals for want of disk count as denials: the journal aggregates a flood of them.
            denied = isinstance(error, (PermissionDenied, ResourceExhausted)) or error.code.startswith("proto.")
            details["message"] = error.message
            reason = error.details.get("reason")
            if isinstance(reason, str):
                details["reason"] = reason
            if denied and mark != "replayed" and (flow := self._flow_of(caller.agent_id)) is not None:
                flow.denied += 1
            if isinstance(error, PermissionDenied) and mark != "replayed":  # a replayed denial blocked nothing now
                self.kernel.events.emit(
                    "SYSCALL_BLOCKED",
                    {"syscall": call, "reason": error.message, "caller": caller.kind, "caller_id": caller.principal_id, **error.details},
                    source_agent_id=caller.agent_id,
                )
        if mark:
            details[mark] = True
        if category is None:
            category = Category.SECURITY if denied else (syscall.category if syscall else Category.SYSCALL)
        if not self.kernel.audit_config.wants(category, denied):
            return None
        return self.kernel.journal.append(
            category,
            event or (call or "unknown"),
            agent_id=caller.agent_id,
            agent_name=agent.name if agent else None,
            syscall=call,
            args=redact(request.body) if request else None,
            decision="denied" if denied else "allowed",
            code=error.code if error else "ok",
            duration_us=(time.perf_counter_ns() - started) // 1000,
            details=details,
        )


def _plain(result: Any) -> Any:
    """A result as recordings and operators' replays keep it: a :class:`wire.Packed` decoded."""
    return result.value() if type(result) is wire.Packed else result
