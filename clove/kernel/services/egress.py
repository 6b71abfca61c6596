"""The egress service: starts the egress proxy process (:mod:`clove.egress`), keeps it running,
tells it which agents to serve, and journals its connection records as the agents' own.

The proxy is one child process (``python -m clove.egress``), not a thread: its byte pumping never
loads this loop, and its death takes neither the kernel nor an agent with it. Orders go to it on
a ``SOCK_SEQPACKET`` pair (so listening sockets can travel as SCM_RIGHTS); its records, ``ready``
and heartbeats come back on a ROUTER in ``<state>/egress/proxy.sock`` (root only), one identity
per incarnation, so a dying one's last words are not taken for the next one's.

An agent with ``network = true`` (and not ``"full"``) gets its ``<channel dir>/egress.sock``
when it is created: the kernel binds and listens on it (owned 0:uid, mode 0660, like its
``kernel.sock``) before the agent can start, and hands the proxy a copy with the agent's
``egress`` rules and ``egress_private`` ranges. So an agent never finds the socket missing, and
a connection made while the proxy restarts waits in the backlog. The socket goes when the agent
is removed. A proxy that exits, or sends no heartbeat for ``[egress] heartbeat_timeout``, is restarted with
backoff (like a driver host) and handed every agent again, with the bytes each has used so far
(a byte budget survives the restart).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from clove.errors import SandboxError
from clove.kernel.audit.journal import Category
from clove.kernel.supervision.runtime import WatchedFd
from clove.sandbox.limits import Limits

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.loop import Timer
    from clove.kernel.services.host import ServiceHost, ServiceRegistry
    from clove.sandbox.cgroups import AgentCgroup

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 10.0
START_TIMEOUT_S = 15.0
_STOP_GRACE_S = 2.0
_BACKLOG = 64
SOCKET_NAME = "egress.sock"
#: The proxy's own cgroup: its memory is bounded by the agents' connection limits, but a bug must
#: not take the board's memory with it. No CPU cap: agents' byte rates bound its work, and a cap
#: would slow every agent's traffic at once.
PROXY_LIMITS = Limits(memory_bytes=256 << 20, pids=64)


class EgressService:
    def __init__(self, kernel: ServiceHost) -> None:
        self.kernel = kernel
        self.loop = kernel.loop
        self.dir = kernel.state_dir / "egress"
        self.endpoint = f"ipc://{self.dir / 'proxy.sock'}"
        #: Agent id → its registration order (resent to every new proxy incarnation).
        self.orders: dict[int, dict[str, Any]] = {}
        #: Agent id → its listening egress.sock (the kernel keeps it across proxy restarts).
        self.listeners: dict[int, socket.socket] = {}
        self._control: socket.socket | None = None
        #: Orders the control socket did not take yet (its buffer was full): the order, and the
        #: agent whose listener goes with it (looked up when sent: a removed agent's is skipped).
        self._pending: deque[tuple[dict[str, Any], int | None]] = deque()
        self.cgroup: AgentCgroup | None = None
        #: Agent id → bytes through the proxy so far (from the records).
        self.used: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd: WatchedFd | None = None
        self.incarnation = 0
        self.failures = 0
        self.restarts = 0
        self.ready = False
        self.stopping = False
        self.counters = {"connections": 0, "denied": 0, "overflow": 0}
        self._sock: zmq.Socket[bytes] | None = None
        self._started_at = 0.0
        self._last_heard = 0.0
        self._restart: Timer | None = None

    @property
    def identity(self) -> bytes:
        return f"egress#{self.incarnation}".encode()

    # ---- the process --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the kernel's end; the proxy itself starts with the first agent that needs it."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        path = self.dir / "proxy.sock"
        if path.exists():
            path.unlink()
        # The channels' context: a second one (Context.instance()) costs two more libzmq threads
        # and their buffers in every kernel. shutdown() closes this socket before it is termed.
        sock: zmq.Socket[bytes] = self.kernel.channels.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(self.endpoint)
        self._sock = sock
        self.loop.add_reader(sock, self._on_readable)

    def _spawn(self) -> None:
        self._restart = None
        if self.stopping:
            return
        self.incarnation += 1
        self.ready = False
        egress = self.kernel.config.egress
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control.setblocking(False)
        spec = {
            "control": theirs.fileno(),
            "endpoint": self.endpoint,
            "identity": self.identity.decode(),
            "resolve": dict(egress.resolve),
            "limits": egress.limits.to_wire(),
            "records": egress.records,
        }
        gate_r, gate_w = os.pipe()
        try:
            if self.kernel.backend is not None:
                self.cgroup = self.kernel.backend.create(f"egress-{self.incarnation}", PROXY_LIMITS)
            with open(self._log_path(), "ab") as log_file:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "clove.egress", str(gate_r)],
                    pass_fds=[gate_r, theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    close_fds=True, start_new_session=True,
                )  # fmt: skip
            if self.cgroup is not None:
                self.cgroup.attach(self.proc.pid)  # before the spec: the proxy waits for it
            os.write(gate_w, msgpack.packb(spec, use_bin_type=True))
            self.pidfd = WatchedFd(os.pidfd_open(self.proc.pid))
        except (OSError, SandboxError) as err:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            control.close()
            self._discard_cgroup()
            self._went_down(f"start failed: {err}")
            return
        finally:
            os.close(gate_r)
            os.close(gate_w)
            theirs.close()
        self._control = control
        self._pending.clear()
        for agent_id in self.orders:
            self._hand_over(agent_id)
        self._started_at = self._last_heard = time.monotonic()
        self.loop.add_reader(self.pidfd, self._on_exit)
        limits = {k: v.to_dict() for k, v in self.cgroup.report().items()} if self.cgroup is not None else "none (no cgroup backend)"
        self._record("egress.proxy_started", pid=self.proc.pid, incarnation=self.incarnation, cgroup=limits)

    def _on_exit(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        self._forget_process()
        status = proc.returncode
        if self.stopping:
            return
        self._went_down(f"signal {-status}" if status < 0 else f"exit {status}")

    def _forget_process(self) -> None:
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd.fd)
            self.pidfd = None
        self.proc = None
        self.ready = False
        if self._control is not None:
            self._control.close()
            self._control = None
        self._pending.clear()
        self._discard_cgroup()

    def _discard_cgroup(self) -> None:
        if self.cgroup is not None:
            try:  # a busy cgroup is retried by the supervisor's housekeeping, not leaked
                self.kernel.supervisor.discard_cgroup(self.cgroup)
            except (OSError, SandboxError) as err:
                log.warning("egress: cgroup cleanup failed: %s", err)
            self.cgroup = None

    def _log_path(self) -> str:
        """``<state>/egress/proxy.log``, keeping one previous log past ``[logs] max_bytes``."""
        path = self.dir / "proxy.log"
        try:
            if path.stat().st_size > self.kernel.config.logs.max_bytes:
                path.replace(path.with_suffix(".log.1"))
        except FileNotFoundError:
            pass
        return str(path)

    def _went_down(self, reason: str) -> None:
        if time.monotonic() - self._started_at > STABLE_AFTER_S:
            self.failures = 0
        delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * (2**self.failures))
        self.failures += 1
        self.restarts += 1
        log.error("egress proxy down (%s); restarting in %.1f s", reason, delay)
        self._record("egress.proxy_down", reason=reason, restart_in_s=round(delay, 3), restarts=self.restarts)
        self._restart = self.loop.call_later(delay, self._spawn)

    def tick(self) -> None:
        """A proxy that stays silent (no heartbeat, or never ready) is killed; its exit restarts it."""
        if self.proc is None:
            return
        self._flush_orders()
        limit = self.kernel.config.egress.heartbeat_timeout if self.ready else START_TIMEOUT_S
        now = time.monotonic()
        if now - self._last_heard > limit:
            self._record("egress.proxy_hung", pid=self.proc.pid, silent_s=round(now - self._last_heard, 1))
            self._last_heard = now  # one record; its exit follows
            self.kill()

    def kill(self) -> int | None:
        """SIGKILL the proxy (a hung one; tests); the restart follows. Its pid, if any."""
        if self.proc is None:
            return None
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.pid

    def shutdown(self) -> None:
        self.stopping = True
        if self._restart is not None:
            self._restart.cancel()
        proc = self.proc
        if proc is not None:
            self._order({"t": "stop"})
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self._drain()  # its last records
            self._forget_process()
        if self._sock is not None:
            self.loop.remove_reader(self._sock)
            self._sock.close(linger=0)
            self._sock = None
        for agent_id in list(self.listeners):
            self._close_listener(agent_id)

    # ---- agents -------------------------------------------------------------------------------------

    def agent_created(self, agent: Agent) -> None:
        spec = agent.spec
        if not spec.network or spec.network_full or not spec.sandboxed:
            return  # no network, or the host's (an unsandboxed agent has no namespace of its own)
        entry = self.kernel.channels.agent_sockets.get(agent.id)
        if entry is None:
            return
        path = os.path.join(os.path.dirname(entry[1]), SOCKET_NAME)
        try:
            self.listeners[agent.id] = _listen(path, agent.uid)
        except OSError as err:  # the agent starts without a way out, and the journal says why
            self._record("egress.listen_failed", agent_id=agent.id, path=path, error=str(err))
            return
        self.names[agent.id] = agent.name
        self.orders[agent.id] = {"t": "agent", "id": agent.id, "name": agent.name, "rules": list(spec.egress), "private": list(spec.egress_private)}
        if self.proc is None and self._restart is None and self.incarnation == 0:
            self._spawn()  # the first agent that needs it: a kernel without one runs no proxy
        else:
            self._hand_over(agent.id)

    def agent_removed(self, agent: Agent) -> None:
        if self.orders.pop(agent.id, None) is not None:
            self._order({"t": "gone", "id": agent.id})
        self._close_listener(agent.id)
        self.used.pop(agent.id, None)
        self.names.pop(agent.id, None)  # a late record names the agent itself

    def _close_listener(self, agent_id: int) -> None:
        listener = self.listeners.pop(agent_id, None)
        if listener is None:
            return
        path = listener.getsockname()
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass

    # ---- the lines to the proxy -----------------------------------------------------------------------

    def _hand_over(self, agent_id: int) -> None:
        if agent_id in self.listeners:
            self._order({**self.orders[agent_id], "used": self.used.get(agent_id, 0)}, agent_id)

    def _order(self, order: dict[str, Any], listener_of: int | None = None) -> None:
        """Queue one order for the control socket (with ``listener_of``'s listening socket)."""
        if self._control is None:
            return  # the next proxy gets every agent at its start
        self._pending.append((order, listener_of))
        self._flush_orders()

    def _flush_orders(self) -> None:
        """Send what the control socket takes now; the rest waits for the next tick."""
        while self._pending and self._control is not None:
            order, listener_of = self._pending[0]
            fds: list[int] = []
            if listener_of is not None:
                listener = self.listeners.get(listener_of)
                if listener is None:  # removed meanwhile: its "gone" follows in the queue
                    self._pending.popleft()
                    continue
                fds.append(listener.fileno())
            try:
                socket.send_fds(self._control, [msgpack.packb(order, use_bin_type=True)], fds)
            except BlockingIOError:
                return
            except OSError as err:  # the proxy closed its end: its exit restarts it
                log.error("egress: the proxy does not take orders: %s", err)
                self._pending.clear()
                return
            self._pending.popleft()

    def _on_readable(self) -> None:
        self._drain(256)

    def _drain(self, most: int = 100_000) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(most):
            try:
                identity, frame = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # not two frames: not our proxy
            try:
                batch = msgpack.unpackb(frame, raw=False)
            except (ValueError, msgpack.ExtraData):
                log.warning("egress: undecodable message from the proxy")
                continue
            for message in batch if isinstance(batch, list) else ():  # the proxy sends batches
                if not isinstance(message, dict):
                    continue
                try:
                    self._on_message(identity == self.identity, message)
                except (TypeError, ValueError) as err:  # a proxy bug must not reach the loop
                    log.error("egress: bad message from the proxy %r: %s", message.get("t"), err)
        self.loop.recheck(sock)

    def _on_message(self, current: bool, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "conn":
            self._journal_connection(message)  # an old incarnation's records count too
            return
        if kind == "overflow":
            self.counters["overflow"] += int(message.get("count") or 0)
            self._record("egress.backlog_refusals", count=message.get("count"))
            return
        if not current:
            return
        self._last_heard = time.monotonic()
        self._flush_orders()
        if kind == "ready":
            self.ready = True
            self._record("egress.proxy_ready", pid=message.get("pid"), agents=len(self.orders))
        elif kind == "serve_failed":
            self._record("egress.serve_failed", agent_id=message.get("id"), error=message.get("error"))

    def _journal_connection(self, rec: dict[str, Any]) -> None:
        agent_id = rec.get("id")
        if not isinstance(agent_id, int):
            return
        up, down = int(rec.get("up") or 0), int(rec.get("down") or 0)
        if agent_id in self.orders:
            self.used[agent_id] = self.used.get(agent_id, 0) + up + down
        denied = rec.get("decision") == "denied"
        self.counters["connections"] += 1
        self.counters["denied"] += int(denied)
        code = str(rec.get("code") or "ok")
        details = {key: rec.get(key) for key in ("host", "port", "method", "address", "up", "down", "reason", "slowed_ms") if rec.get(key) is not None}
        details["egress_code"] = code
        self.kernel.journal.append(
            Category.NETWORK,
            "egress.connection",
            agent_id=agent_id,
            agent_name=self.names.get(agent_id, str(rec.get("agent") or "")),
            syscall="egress.connect",
            decision="denied" if denied else "allowed",
            code=f"egress.{code}" if denied else "ok",
            duration_us=int(float(rec.get("duration_ms") or 0) * 1000),
            details=details,
        )

    def _record(self, event: str, **details: Any) -> None:
        self.kernel.journal.append(Category.NETWORK, event, decision="n/a", details=details)

def attach(kernel: ServiceRegistry) -> None:
    service = EgressService(kernel)
    service.start()
    kernel.on_shutdown.append(service.shutdown)
    kernel.loop.housekeeping.append(service.tick)

    def on_lifecycle(event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        if event_type == "agent.created":
            service.agent_created(agent)
        elif event_type == "agent.removed":
            service.agent_removed(agent)

    kernel.supervisor.listeners.append(on_lifecycle)


def _listen(path: str, uid: int | None) -> socket.socket:
    """A listening Unix socket at ``path``, owned 0:uid, mode 0660 (a stale file is replaced).

    :raises OSError: it cannot be made.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
        os.chown(path, 0, uid if uid is not None else 0)
        os.chmod(path, 0o660)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.setblocking(False)
    return sock
