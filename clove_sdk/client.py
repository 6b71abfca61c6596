"""``CloveClient``: the one way agents and operators talk to a Clove kernel.

Inside a spawned agent ``CloveClient()`` connects to the agent's own channel (the kernel put its
address in ``CLOVE_AGENT_ENDPOINT``); elsewhere it connects to the operators' control socket
(``socket_path``, else ``$CLOVE_SOCKET``, else ``/tmp/clove.sock``).

Two layers, as in the original Clove SDK: :meth:`call` returns the result or raises the
:mod:`clove_sdk.errors` class for the reply's code; the named methods keep the original return
shapes (dicts with ``success``, bools, lists). Every call times out (``timeout`` seconds)
instead of hanging on a dead kernel, raising :class:`KernelUnavailable`; a socket file that is
missing or has no listener fails the first call at once (see :mod:`clove_sdk._probe`).

As in the original SDK, :meth:`connect` says whether a kernel answers (True or False, never an
exception for an absent kernel) and :meth:`disconnect` closes; a client works without a ``with``
block, and ``connect()`` after ``disconnect()`` opens it again.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import zmq

from clove_sdk import wire
from clove_sdk._devices import DevicesMixin
from clove_sdk._events import EventsMixin
from clove_sdk._exec import ExecMixin
from clove_sdk._files import FilesMixin
from clove_sdk._http import HttpMixin
from clove_sdk._llm import LlmMixin
from clove_sdk._messaging import MessagingMixin
from clove_sdk._metrics import MetricsMixin
from clove_sdk._permissions import PermissionsMixin
from clove_sdk._probe import kernel_listening as kernel_listening  # the CLI's liveness check
from clove_sdk._probe import socket_path, why_unreachable
from clove_sdk._recording import RecordingMixin
from clove_sdk._state import StateMixin
from clove_sdk.errors import CloveError, KernelUnavailable

# pyzmq's base-class calls on plain int flags: the sugar's send_multipart and recv_multipart add
# several µs of checks and flag objects to every call.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_SNDMORE = int(zmq.SNDMORE)


def _send_request(sock: zmq.Socket[bytes], request_id: int, syscall: str, body: dict[str, Any]) -> None:
    _send(sock, wire.PROTOCOL, _SNDMORE)  # the header frames are constants
    _send(sock, wire.KIND_REQUEST, _SNDMORE)
    _send(sock, wire.request_payload(request_id, syscall, body), 0)


def _recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """One multipart message (waits up to the socket's ``RCVTIMEO``: :class:`zmq.Again`)."""
    frame = _recv(sock, 0, False)
    frames = [frame.bytes]
    while frame.more:  # the rest of a multipart message is there at once
        frame = _recv(sock, 0, False)
        frames.append(frame.bytes)
    return frames


def default_endpoint(socket_path: str | None = None) -> str:
    """The endpoint a client with these arguments connects to."""
    if socket_path is None:
        agent = os.environ.get("CLOVE_AGENT_ENDPOINT")
        if agent:
            return agent
        socket_path = os.environ.get("CLOVE_SOCKET", wire.DEFAULT_SOCKET)
    return socket_path if socket_path.startswith("ipc://") else f"ipc://{socket_path}"


class CloveClient(
    MessagingMixin, StateMixin, EventsMixin, FilesMixin, ExecMixin, HttpMixin, LlmMixin, PermissionsMixin, MetricsMixin,
    DevicesMixin, RecordingMixin,
):
    """A connection to a kernel. Use it as a context manager, or call :meth:`close` (or
    :meth:`disconnect`) when done; :meth:`connect` checks that the kernel answers.

    :param socket_path: the control socket (``ipc://`` prefix optional); ``None`` picks the
        agent channel inside an agent, else ``$CLOVE_SOCKET`` or ``/tmp/clove.sock``.
    :param timeout: seconds to wait for each reply.
    """

    def __init__(self, socket_path: str | None = None, *, timeout: float = 30.0) -> None:
        self.endpoint = default_endpoint(socket_path)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._open_socket()

    def _open_socket(self) -> None:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        self._sock = sock
        self._rcvtimeo = -1
        self._probed = False  # the socket file is probed before this socket's first request

    def _probe(self, syscall: str) -> None:
        """Fail at once when nothing can answer (ZeroMQ would wait the whole timeout); once per
        socket, so a syscall costs no more than before."""
        reason = why_unreachable(self.endpoint)
        if reason is not None:
            path = socket_path(self.endpoint)
            raise KernelUnavailable(
                f"no kernel at {path}: {reason}", details={"endpoint": self.endpoint, "path": path, "call": syscall}
            )
        self._probed = True

    # ---- the original SDK's connection calls -------------------------------------------------

    def connect(self) -> bool:
        """Open the connection if :meth:`disconnect` closed it, and check that the kernel answers
        (a ``hello`` round trip). True when it does; False, never an exception, when no kernel is
        there: at once for a missing socket file or one without a listener, after ``timeout``
        for a kernel that stays silent. Calls made after a False raise
        :class:`KernelUnavailable`, and work once a kernel is there."""
        if self._sock is None:
            self._open_socket()
        try:
            self.call("hello")
        except KernelUnavailable:
            return False
        except CloveError:
            pass  # a refusal is an answer: the kernel is there
        return True

    def disconnect(self) -> None:
        """Close the connection (as :meth:`close`); :meth:`connect` opens it again."""
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------

    def call(self, syscall: str, /, reply_timeout: float | None = None, **body: Any) -> Any:
        """Make one syscall and return its result. ``body`` is the syscall's arguments (a
        ``timeout`` there is the syscall's own, e.g. a blocking receive's; the wait for the reply
        is stretched to cover it). ``reply_timeout`` overrides the client's timeout.

        :raises CloveError: the subclass named by the reply's error code.
        :raises KernelUnavailable: no reply within ``timeout`` (the socket is then reset, so a
            late reply cannot be mistaken for the next call's); at once when the socket file is
            missing or nothing listens on it, or the client was closed.
        """
        sock = self._open_or_raise(syscall)
        if not self._probed:
            self._probe(syscall)
        request_id = next(self._ids)
        _send_request(sock, request_id, syscall, body)
        wait = self.timeout if reply_timeout is None else reply_timeout
        own = body.get("timeout")
        if own is not None and isinstance(own, (int, float)) and not isinstance(own, bool):
            wait = max(wait, float(own) + 5.0)  # the kernel answers by then, even if with nothing
        deadline = time.monotonic() + wait
        remaining_ms = max(1, int(wait * 1000))
        while True:
            # RCVTIMEO rather than a poll per call: pyzmq builds a Poller for each poll().
            if remaining_ms != self._rcvtimeo:
                sock.setsockopt(zmq.RCVTIMEO, remaining_ms)
                self._rcvtimeo = remaining_ms
            try:
                frames = _recv_frames(sock)
            except zmq.Again:
                self._reset()
                raise KernelUnavailable(
                    f"no reply from the kernel at {self.endpoint} within {wait:g} s",
                    details={"endpoint": self.endpoint, "call": syscall},
                ) from None
            reply = wire.decode_reply(frames)
            if reply.id == request_id:
                break
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))  # a stale reply: skip it
        if not reply.ok:
            assert reply.error is not None  # noqa: S101 - decode_reply sets it
            raise reply.error
        return reply.result

    def call_many(
        self, calls: Iterable[tuple[str, Mapping[str, Any]]], *, window: int = 16, reply_timeout: float | None = None,
    ) -> list[Any]:  # fmt: skip
        """Make many syscalls with up to ``window`` of them in flight at once, and return their
        outcomes in the order given: each call's result, or the :class:`CloveError` it was
        refused with (returned, not raised, so one refusal does not hide the others' outcomes).

        The kernel serves an agent's calls in order, but a call that waits (an order waiting
        for its fsync, a driver's slow operation) no longer holds back the next one: pipelined
        orders share the exchange's group commit (docs/sdk.md, "Many calls in flight"). The
        kernel bounds what one caller may have in flight per device (``quota.exceeded``).

        :raises KernelUnavailable: no reply within the timeout (``reply_timeout`` or the
            client's, counted from the last reply); the outcomes of the calls still unanswered
            are then unknown, and the socket is reset.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        sock = self._open_or_raise("call_many")
        pending = iter(calls)
        outcomes: list[Any] = []
        in_flight: dict[int, int] = {}  # request id -> index in outcomes
        wait = self.timeout if reply_timeout is None else reply_timeout
        sock.setsockopt(zmq.RCVTIMEO, max(1, int(wait * 1000)))
        self._rcvtimeo = max(1, int(wait * 1000))
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < window:
                nxt = next(pending, None)
                if nxt is None:
                    exhausted = True
                    break
                syscall, body = nxt
                if not self._probed:
                    self._probe(syscall)
                request_id = next(self._ids)
                in_flight[request_id] = len(outcomes)
                outcomes.append(None)
                _send_request(sock, request_id, syscall, dict(body))
            if not in_flight:
                return outcomes
            try:
                frames = _recv_frames(sock)
            except zmq.Again:
                self._reset()
                raise KernelUnavailable(
                    f"no reply from the kernel at {self.endpoint} within {wait:g} s ({len(in_flight)} calls unanswered)",
                    details={"endpoint": self.endpoint, "call": "call_many", "unanswered": len(in_flight)},
                ) from None
            reply = wire.decode_reply(frames)
            index = in_flight.pop(reply.id, None) if isinstance(reply.id, int) else None
            if index is None:
                continue  # a stale reply (an earlier call's, timed out): not ours
            outcomes[index] = reply.result if reply.ok else reply.error

    def _open_or_raise(self, call: str) -> zmq.Socket[bytes]:
        sock = self._sock
        if sock is None:
            raise KernelUnavailable(
                f"the client of {self.endpoint} is closed (disconnect() or close()): call connect() to open it again",
                details={"endpoint": self.endpoint, "call": call},
            )
        return sock

    def _reset(self) -> None:
        """A new socket after a timeout, so a late reply cannot be taken for a later call's."""
        if self._sock is not None:
            self._sock.close(linger=0)
        self._open_socket()

    def _compat(self, syscall: str, **body: Any) -> dict[str, Any]:
        """The original SDK's style: errors come back as ``{success: False, error, code}``."""
        try:
            result = self.call(syscall, **body)
        except KernelUnavailable:
            raise
        except CloveError as err:
            return {"success": False, "error": err.message, "code": err.code, "details": err.details}
        return result if isinstance(result, dict) else {"success": True, "result": result}

    def close(self) -> None:
        """Close the connection; an operator session ends at once (its names are released)."""
        if self._sock is None:
            return
        if self.endpoint != os.environ.get("CLOVE_AGENT_ENDPOINT"):
            try:
                self.call("session.close", reply_timeout=min(self.timeout, 1.0))
            except CloveError:
                pass  # the kernel is gone or busy: the session ends when this process does
        self._sock.close(linger=0)
        self._sock = None

    def __enter__(self) -> CloveClient:
        if self._sock is None:  # a client closed earlier, used in a block again
            self._open_socket()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---- session -----------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Who the kernel says you are: ``{success, version, role, agent_id, name}``."""
        return self._compat("hello")

    def noop(self, msg: str = "") -> str:
        """Round-trip ``msg`` through the kernel and return it."""
        return str(self.call("noop", msg=msg))

    def echo(self, msg: str = "") -> str:
        return str(self.call("echo", msg=msg))

    def exit(self) -> bool:
        """Tell the kernel this agent is done: its next exit will not be restarted."""
        return bool(self._compat("exit").get("success"))

    # ---- agents ------------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        script: str,
        sandboxed: bool = True,
        network: bool | str = False,
        limits: dict[str, Any] | None = None,
        restart_policy: str = "never",
        max_restarts: int = 5,
        restart_window: int = 300,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        interpreter: str | None = None,
        working_dir: str | None = None,
        devices: dict[str, dict[str, Any]] | None = None,
        detached: bool = False,
        device_wait: str | None = None,
        device_timeout: float | None = None,
        egress: list[str] | None = None,
        egress_private: list[str] | None = None,
    ) -> dict[str, Any]:
        """Start an agent. ``limits`` takes ``memory`` (bytes or "64M"), ``cpu_quota`` (µs per
        100 ms) or ``cpu`` ("20%"), and ``pids`` (or ``max_pids``); what it leaves out comes from
        the kernel's ``[limits]`` defaults, and a value above the kernel's ceiling is refused
        (``proto.invalid_args``). ``devices`` grants devices as a config's
        ``[agents.NAME.devices.DEVICE]`` tables do (operators only). An agent with device grants
        starts once its devices are ready; after ``device_timeout`` seconds ``device_wait``
        decides: ``"start"`` anyway or ``"fail"`` (docs/devices.md). A child an agent spawns
        ends with its parent unless ``detached`` (which needs the ``can_detach`` right).
        ``network=True`` gives the agent its own network namespace whose only way out is the
        kernel's egress proxy, which admits the ``egress`` rules (``"api.example.com:443"``,
        ``"*.pypi.org"``) and private networks only in ``egress_private`` (CIDRs);
        ``network="full"`` the host's network (docs/egress.md).

        :returns: ``{success, id, name, pid, status, restart_policy, isolation}`` or
            ``{success: False, error, code}``.
        """
        body: dict[str, Any] = {
            "name": name,
            "script": os.path.abspath(script),
            "sandboxed": sandboxed,
            "network": network,
            "restart_policy": restart_policy,
            "max_restarts": max_restarts,
            "restart_window": restart_window,
        }
        if limits:
            body["limits"] = dict(limits)
        if args:
            body["args"] = list(args)
        if env:
            body["env"] = dict(env)
        if interpreter:
            body["interpreter"] = interpreter
        if working_dir:
            body["working_dir"] = os.path.abspath(working_dir)
        if devices:
            body["devices"] = dict(devices)
        if detached:
            body["detached"] = True
        if device_wait is not None:
            body["device_wait"] = device_wait
        if device_timeout is not None:
            body["device_timeout"] = device_timeout
        if egress is not None:
            body["egress"] = list(egress)
        if egress_private is not None:
            body["egress_private"] = list(egress_private)
        return self._compat("agent.spawn", **body)

    @staticmethod
    def _target(name: str | None, agent_id: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if agent_id is not None:
            body["agent_id"] = agent_id
        return body

    def kill(self, name: str | None = None, agent_id: int | None = None) -> bool:
        """Stop an agent (SIGTERM, then SIGKILL of its tree) and remove it; True once gone."""
        return bool(self._compat("agent.kill", **self._target(name, agent_id)).get("success"))

    def pause(self, name: str | None = None, agent_id: int | None = None) -> bool:
        return bool(self._compat("agent.pause", **self._target(name, agent_id)).get("success"))

    def resume(self, name: str | None = None, agent_id: int | None = None) -> bool:
        return bool(self._compat("agent.resume", **self._target(name, agent_id)).get("success"))

    def remove(self, name: str | None = None, agent_id: int | None = None) -> bool:
        """Forget an exited or failed agent (``clove rm``)."""
        return bool(self._compat("agent.remove", **self._target(name, agent_id)).get("success"))

    def list_agents(self) -> list[dict[str, Any]]:
        """Every agent the kernel knows, exited and failed ones included."""
        return list(self.call("agent.list")["agents"])

    def logs(self, name: str | None = None, agent_id: int | None = None, offset: int = -16384, max_bytes: int = 65536) -> dict[str, Any]:
        """A chunk of the agent's log: ``{data: bytes, offset, size, state}``."""
        return dict(self.call("agent.logs", offset=offset, max_bytes=max_bytes, **self._target(name, agent_id)))

    # ---- audit -------------------------------------------------------------------------------

    def get_audit_log(
        self, category: str | None = None, agent_id: int | None = None, since_id: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """Recent journal records: ``{success, count, entries}``; each entry has ``id``,
        ``timestamp``, ``category``, ``event_type``, ``agent_id`` and more."""
        body: dict[str, Any] = {"since_id": since_id, "limit": limit}
        if category is not None:
            body["category"] = category
        if agent_id is not None:
            body["agent_id"] = agent_id
        return self._compat("audit.query", **body)

    def set_audit_config(self, **kwargs: Any) -> dict[str, Any]:
        """Change what the journal records: ``log_syscalls``, ``log_security``, ``log_lifecycle``,
        ``log_ipc``, ``log_state`` (bools), ``max_entries``. :returns: ``{success, config}``."""
        return self._compat("audit.config", changes=kwargs)

    def poll_async(self, max_results: int = 10) -> dict[str, Any]:
        """Results of ``async_=True`` calls: ``{success, results, count}``; each result is
        ``{request_id, opcode_name, payload}`` with ``payload`` the JSON of the sync reply.
        Poll often: past your ``async_result_bytes`` new async calls are refused
        (``quota.exceeded``) and late results become small ``quota.exceeded`` payloads."""
        return self._compat("async.poll", max_results=max_results)

    def kernel_info(self) -> dict[str, Any]:
        return dict(self.call("kernel.info"))
