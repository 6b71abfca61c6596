"""The single mediation point: decode → identify → authorize → execute → journal → reply.

Every request gets exactly one reply that echoes its id, and one journal record, whether it is
allowed, denied, malformed or fails inside the handler. A bug in a handler becomes an
``internal`` error reply (the traceback goes to the kernel log only). A denial also emits
SYSCALL_BLOCKED.

Recording and replay (docs/recording.md) hook in here too: the recorder captures each recorded
request on arrival and records it with its reply once sent (direct and deferred paths); a
replayed agent's requests go to the replay service right after identify and are answered from
its recording, never performed; an operator's replay re-executes calls through ``perform``.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import zmq

from clove import wire
from clove.errors import CloveError, InternalError, PermissionDenied, ResourceExhausted, UnknownSyscall
from clove.kernel.audit.journal import Category
from clove.kernel.audit.redact import redact
from clove.kernel.core.channels import Caller
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.fairshare import Flow, weight_for
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
#: A reply held longer than this leaves anyway: the journal is failing, and the journal.gap
#: record it writes once it can names what was lost.
HOLD_TIMEOUT_S = 2.0
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
        self.flows: weakref.WeakKeyDictionary[zmq.Socket[bytes], Flow] = weakref.WeakKeyDictionary()
        #: Replies waiting for their journal record to be written: (record id, held since, socket,
        #: routing id, frames), in record order.
        self.held: deque[tuple[int, float, zmq.Socket[bytes], bytes, list[bytes]]] = deque()
        self._watching_journal = False
        kernel.loop.housekeeping.append(self._commit_held)

    def on_readable(self, sock: zmq.Socket[bytes]) -> None:
        """Serve ``sock`` for this turn's share of kernel time (see :mod:`clove.kernel.core.fairshare`)."""
        flow = self.flows.get(sock)
        if flow is None:
            flow = self.flows[sock] = self._new_flow(sock)
        if not flow.start_turn():
            return  # still repaying an expensive call: other callers go first this turn
        self._serve(sock, flow)
        if self.held:  # group commit of this batch's records, charged to the caller
            started = time.perf_counter_ns()
            self._commit_held()
            flow.credit_ns -= time.perf_counter_ns() - started

    def _serve(self, sock: zmq.Socket[bytes], flow: Flow) -> None:
        control = sock is self.kernel.channels.control
        clock = time.perf_counter_ns
        for _ in range(BATCH):
            if flow.credit_ns <= 0:
                return  # the loop comes back next turn: the socket is still readable
            wait = flow.rate_wait()
            if wait:
                self._throttle(sock, flow, wait)
                return
            started = clock()
            try:
                if control:  # frames keep their properties: the peer's credentials
                    raw = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    session = self._session(raw)
                    frames = [frame.bytes for frame in raw]
                else:
                    frames, session = sock.recv_multipart(zmq.NOBLOCK), None
            except zmq.Again:
                flow.idle()
                return
            self.handle(sock, frames, session)
            flow.charge(clock() - started)

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
        return [flow.figures() for sock, flow in list(self.flows.items()) if not sock.closed]

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

    def _session(self, raw: list[zmq.Frame]) -> OperatorSession:
        sessions = self.kernel.sessions
        routing = raw[0].bytes
        session = sessions.lookup(routing)
        if session is None:
            try:
                peer = raw[-1].get("Peer-Address")
            except zmq.ZMQError:
                peer = None
            session = sessions.open(routing, peer if isinstance(peer, str) else None)
        return session

    def handle(self, sock: zmq.Socket[bytes], frames: list[bytes], session: OperatorSession | None = None) -> None:
        caller = self.kernel.channels.by_socket.get(sock)
        if caller is None or not frames:
            return
        if session is not None:
            caller = Caller("operator", session_id=session.id)
        routing, payload = frames[0], frames[1:]
        started = time.perf_counter_ns()
        try:
            request = wire.decode_request(payload, self.max_bytes)
        except wire.BadRequest as bad:
            self._send(sock, routing, wire.error_reply(bad.request_id, bad.error))
            self._record(caller, None, None, started, bad.error, category=Category.SECURITY, event="proto.rejected")
            return
        syscall = self.registry.get(request.call)
        agent = self.kernel.supervisor.table.get(caller.agent_id) if caller.agent_id is not None else None
        pending = None
        if agent is not None:
            if agent.id in self.kernel.replay.tracks:  # a replayed agent: answered from its recording
                self._replay(sock, routing, caller, agent, request, syscall, started)
                return
            if self.kernel.recorder.active:
                pending = self.kernel.recorder.capture(agent, request, started)
        elif session is not None and self.kernel.recorder.active:
            pending = self.kernel.recorder.capture_session(session.id, request, started)
        try:
            result = self._execute(syscall, request, caller, agent, session)
            # Encoded here, inside the error handling: a result that cannot be encoded becomes an
            # error reply rather than no reply at all.
            reply = None if isinstance(result, Deferred) else wire.ok_reply(request.id, result)
        except Exception as exc:  # a CloveError is the caller's answer; anything else is a bug
            err = exc if isinstance(exc, CloveError) else _bug(request.call)
            self._send(sock, routing, wire.error_reply(request.id, err))
            self._record(caller, request, syscall, started, err)
            if pending is not None:
                self.kernel.recorder.record(pending, None, err)
            return
        if reply is None:
            assert isinstance(result, Deferred)  # noqa: S101 - reply is None only for a Deferred
            result.bind(lambda value, error: self._finish_deferred(sock, routing, caller, request, syscall, started, value, error, pending))
            return
        record = self._record(caller, request, syscall, started, None)
        self._reply_after(record, request.call, sock, routing, reply)
        if pending is not None:
            self.kernel.recorder.record(pending, result, None)

    def _execute(self, syscall: Syscall | None, request: wire.Request, caller: Caller, agent: Agent | None, session: OperatorSession | None) -> Any:
        """Authorize and run one request: its result or a :class:`Deferred` (:raises CloveError:)."""
        if syscall is None:
            raise UnknownSyscall(f"unknown syscall {request.call!r}", details={"call": request.call})
        if agent is not None and request.call not in DRAIN_CALLS and self.kernel.journal.space_low:
            raise ResourceExhausted(
                "the kernel's journal disk is below its reserve: new work is refused until space returns",
                details={"resource": "journal_disk"},
            )
        perms = agent.permissions if agent is not None else (session.permissions if session else None) or self.kernel.operator_permissions
        perms.require(syscall.right, request.call)
        return syscall.execute(SyscallContext(self.kernel, caller, agent, perms, session), syscall.parse(request.body))

    def perform(
        self, session: OperatorSession, call: str, body: dict[str, Any], done: Callable[[Any, CloveError | None], None],
        *, mark: str = "rerun",
    ) -> None:  # fmt: skip
        """Run ``call`` as operator ``session`` (its permissions, never more) with no socket, but
        authorized, executed and journaled like its requests, marked ``mark`` (``rerun``: an
        operator's replay; ``fleet``: a signed fleet command); ``done`` gets the result or error."""
        caller, started = Caller("operator", session_id=session.id), time.perf_counter_ns()
        request, syscall = wire.Request("rerun", call, body), self.registry.get(call)

        def finish(value: Any, error: CloveError | None) -> None:
            self._record(caller, request, syscall, started, error, mark=mark)
            done(value, error)

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
        self, sock: zmq.Socket[bytes], routing: bytes, caller: Caller, request: wire.Request, syscall: Syscall | None,
        started: int, value: Any, error: CloveError | None, pending: Pending | None = None,
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
        record = self._record(caller, request, syscall, started, error)
        if error is None:
            self._reply_after(record, request.call, sock, routing, frames)
        else:
            self._send(sock, routing, frames)
        if pending is not None:
            self.kernel.recorder.record(pending, value, error)

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
            self._record(caller, request, syscall, started, answer.error, mark="replayed")

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
        journal = self.kernel.journal
        if record is None or call in READ_ONLY_CALLS or journal.written_id >= record["id"]:
            self._send(sock, routing, frames)
            return
        if not self._watching_journal:
            self._watching_journal = True
            self.kernel.loop.add_reader(journal.written_fd(), self._release_held)
        self.held.append((record["id"], self.kernel.loop.clock(), sock, routing, frames))

    def _commit_held(self) -> None:
        """After each socket's batch, and once per loop turn: write the records of the held
        replies (one write for all of them, on this thread when the writer thread is idle, else
        handed to it at once rather than at the next hand-off tick), release what is written,
        expire stuck replies."""
        if not self.held:
            return
        journal = self.kernel.journal
        if journal.write_now():  # one write on this thread for every reply held this turn
            self._release()
            return
        if journal.batch_pending:
            journal.hand_off()
        if self.kernel.loop.clock() - self.held[0][1] > HOLD_TIMEOUT_S:
            log.warning("journal writes are failing: %d replies sent before their records were written", len(self.held))
            self._release(everything=True)

    def _release_held(self) -> None:
        try:
            os.eventfd_read(self.kernel.journal.written_fd())
        except BlockingIOError:
            pass
        self._release()

    def _release(self, *, everything: bool = False) -> None:
        written = self.kernel.journal.written_id
        held = self.held
        while held and (everything or held[0][0] <= written):
            _, _, sock, routing, frames = held.popleft()
            if not sock.closed:
                self._send(sock, routing, frames)

    def _send(self, sock: zmq.Socket[bytes], routing: bytes, frames: list[bytes]) -> None:
        try:
            sock.send_multipart([routing, *frames], zmq.NOBLOCK)
        except zmq.ZMQError as err:  # peer gone or its queue full: the reply is dropped, not awaited
            log.debug("reply dropped: %s", err)
        self.kernel.loop.recheck(sock)  # a send can swallow the socket's ZMQ_FD wake-up

    def _record(
        self,
        caller: Caller,
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
        # Refusals for want of disk count as denials: the journal aggregates a flood of them.
        denied = isinstance(error, (PermissionDenied, ResourceExhausted)) or (error is not None and error.code.startswith("proto."))
        if category is None:
            category = Category.SECURITY if denied else (syscall.category if syscall else Category.SYSCALL)
        agent = self.kernel.supervisor.table.get(caller.agent_id) if caller.agent_id is not None else None
        call = request.call if request else None
        if denied and mark != "replayed" and (flow := self._flow_of(caller.agent_id)) is not None:
            flow.denied += 1
        if isinstance(error, PermissionDenied) and mark != "replayed":  # a replayed denial blocked nothing now
            self.kernel.events.emit(
                "SYSCALL_BLOCKED",
                {"syscall": call, "reason": error.message, "caller": caller.kind, "caller_id": caller.principal_id, **error.details},
                source_agent_id=caller.agent_id,
            )
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
            details={
                "caller": caller.kind,
                "caller_id": caller.principal_id,
                **({"message": error.message} if error else {}),
                **({"reason": error.details["reason"]} if error is not None and isinstance(error.details.get("reason"), str) else {}),
                **({mark: True} if mark else {}),
            },
        )
