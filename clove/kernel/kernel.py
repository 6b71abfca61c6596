"""The kernel object: wires the loop, channels, journal, sandbox and supervisor together, and
runs the orderly shutdown (stop agents, remove cgroups, flush the journal, remove the socket)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clove import __version__
from clove.config import AgentConfig, KernelConfig
from clove.errors import CloveError
from clove.kernel.audit.journal import Category, Journal
from clove.kernel.audit.settings import AuditConfig
from clove.kernel.core.agents import Agent
from clove.kernel.core.asyncjobs import AsyncResults
from clove.kernel.core.channels import Channels
from clove.kernel.core.events import EventBus
from clove.kernel.core.lifecycle import lifecycle_events
from clove.kernel.core.loop import Loop, Timer
from clove.kernel.core.sessions import OperatorSession, OperatorSessions
from clove.kernel.dispatch import Dispatcher
from clove.kernel.services import egress as egress_service
from clove.kernel.services import exec as exec_service
from clove.kernel.services import files, interlocks, memtrim, messaging, metrics, prometheus, state
from clove.kernel.services import http as http_service
from clove.kernel.services import llm as llm_service
from clove.kernel.services.devices import broker as devices
from clove.kernel.services.postmortem import service as postmortem
from clove.kernel.services.recording import recorder as recording
from clove.kernel.services.recording import replay
from clove.kernel.supervision.limits import resolve as resolve_limits
from clove.kernel.supervision.runtime import WatchedFd
from clove.kernel.supervision.supervisor import Supervisor
from clove.policy import for_level
from clove.sandbox import linux
from clove.sandbox.backends import detect_backend
from clove.sandbox.cgroups import CgroupBackend
from clove.sandbox.landlock import abi_version
from clove.sandbox.launcher import ZygoteLauncher
from clove.sandbox.reaper import reap_stale
from clove.sandbox.warden import REAP_TIMEOUT, Warden

if TYPE_CHECKING:
    from clove.kernel.services.devices.broker import DeviceBroker
    from clove.kernel.services.exec import ExecService
    from clove.kernel.services.files import FileService
    from clove.kernel.services.host import ServiceRegistry
    from clove.kernel.services.http import HttpService
    from clove.kernel.services.interlocks import Interlocks
    from clove.kernel.services.llm import LlmService
    from clove.kernel.services.messaging import MessagingService
    from clove.kernel.services.metrics import MetricsService
    from clove.kernel.services.postmortem.service import PostmortemService
    from clove.kernel.services.prometheus_exporter import PrometheusExporter
    from clove.kernel.services.recording.recorder import Recorder
    from clove.kernel.services.recording.replay import ReplayService
    from clove.kernel.services.state import StateService

log = logging.getLogger(__name__)

JOURNAL_HAND_OFF_S = 0.002
_SERVICE_ATTRS = ("messaging", "execs", "http", "metrics", "state", "files", "llm", "devices", "postmortem", "recorder")


def _raise_fd_limit() -> None:
    """Each agent costs the kernel a handful of fds (its socket, log pipe and file): take the
    hard limit rather than failing at the 200th agent under a 1024 soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


#: The agent services, attached at boot in this order. Each ``attach(kernel)`` builds its
#: service, sets it on the kernel and registers housekeeping and shutdown hooks; a service sees
#: the kernel only as a :class:`~clove.kernel.services.host.ServiceHost`.
def _attach_fleet(kernel: ServiceRegistry) -> None:
    """The fleet link, with a ``[fleet]`` table only: nats-py and cryptography are imported then,
    not by every kernel (about 0.1 s of each start here, 9 times that on a slow board)."""
    if kernel.config.fleet is not None:
        from clove.kernel.services import fleet

        fleet.attach(kernel)


def _attach_llm_endpoint(kernel: ServiceRegistry) -> None:
    """The OpenAI-compatible endpoint on each agent's llm.sock, with an enabled ``[llm]`` table
    only: its HTTP parser (h11) is imported then, not by every kernel."""
    settings = kernel.config.llm
    if settings is not None and settings.endpoint.enabled:
        from clove.kernel.services import llmhttp

        llmhttp.attach(kernel)


SERVICES: tuple[Callable[[ServiceRegistry], None], ...] = (
    state.attach,
    messaging.attach,
    files.attach,
    exec_service.attach,
    http_service.attach,
    metrics.attach,
    llm_service.attach,
    _attach_llm_endpoint,  # the OpenAI-compatible endpoint on each agent's llm.sock; after llm
    devices.attach,
    interlocks.attach,
    recording.attach,
    replay.attach,
    postmortem.attach,
    _attach_fleet,  # last: it reports on the devices and interlocks
    egress_service.attach,
    memtrim.attach,  # hands the C heap's free pages back once a minute (docs/kernel-memory.md)
)


class Kernel:
    """One kernel instance. :meth:`start`, then :meth:`run` until a signal or :meth:`request_stop`."""

    def __init__(self, config: KernelConfig, *, socket_path: str, state_dir: str) -> None:
        self.config = config
        self.socket_path = os.path.abspath(socket_path)
        self.state_dir = Path(state_dir).resolve()
        self.loop = Loop(tick=0.1)
        self.channels = Channels(max_message_bytes=config.kernel.max_message_bytes)
        self.journal = Journal(self.state_dir / "journal.jsonl", ring_size=config.kernel.audit_ring, batch=True, settings=config.journal)
        self._hand_off_timer: Timer | None = None
        self.launcher = ZygoteLauncher(preload=("zmq", "clove_sdk"))
        #: The life line (see clove.sandbox.lifeline): only this process holds the write end.
        self._lifeline: tuple[int, int] | None = None
        self.warden: Warden | None = None
        self._warden_fd: WatchedFd | None = None
        self.backend: CgroupBackend | None = None
        self.supervisor: Supervisor  # set in start()
        self.dispatcher = Dispatcher(self)
        self.events = EventBus(loop=self.loop)
        self.journal.on_space_change = self._journal_space_change
        self.async_results = AsyncResults()
        self.audit_config = AuditConfig(max_entries=config.kernel.audit_ring)
        self.operator_permissions = for_level(config.kernel.operator_level)
        #: Called with every zygote event the supervisor does not own (``exec_*``).
        self.zygote_listeners: list[Callable[[dict[str, Any]], None]] = []
        #: Called in order at shutdown, before the journal closes.
        self.on_shutdown: list[Callable[[], None]] = []
        # The agent services, set by their attach() in start() (see SERVICES).
        self.state: StateService
        self.messaging: MessagingService
        self.files: FileService
        self.execs: ExecService
        self.http: HttpService
        self.metrics: MetricsService
        self.devices: DeviceBroker
        self.interlocks: Interlocks
        self.recorder: Recorder  # the dispatcher asks it about every agent syscall
        self.replay: ReplayService  # ...and hands it those of replayed agents
        self.postmortem: PostmortemService
        self.llm: LlmService
        self.prometheus: PrometheusExporter | None = None  # the Prometheus exporter, set in start()
        self.started_at = time.time()
        self._stopping = False
        self._stop_deadline = 0.0
        self._signal_r: socket.socket | None = None

    # ---- boot --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind, start the zygote, detect the sandbox backend and boot configured agents.

        :raises CloveError: (Conflict, SandboxError, ...) with a message for the operator.
        """
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o711)  # traversable, not listable: agents reach their own dirs only
        # Not a child subreaper: a dead zygote's orphans go to init (see clove.kernel.supervision.adoption).
        # The name tells a booting kernel that this pid's cgroups are live (is_live_kernel).
        with contextlib.suppress(OSError):
            linux.set_process_name("clove-kernel")
        _raise_fd_limit()
        self.channels.bind_control(self.socket_path)  # first: refuses to start beside a live kernel
        try:
            self.journal.open()
            self.backend = detect_backend(self.config.sandbox.backend, kernel_tag=f"clove-{os.getpid()}")
            if self.backend is not None:
                for path in reap_stale(self.backend):
                    log.warning("removed cgroup %s left by a dead kernel", path)
            self._lifeline = os.pipe()  # close-on-exec: no child ever inherits the write end
            self.launcher.lifeline = self._lifeline[0]
            if self.backend is not None:
                parents = [base / self.backend.kernel_tag for base in self.backend.base_dirs]
                self.warden = Warden(self._lifeline[0], parents)
                self._start_warden()
            # The zygote is every sandbox's parent: on a slow machine it gets the agents' start_timeout.
            self.launcher.start(timeout=max(15.0, self.config.sandbox.start_timeout))
        except BaseException:
            self._cut_lifeline()
            self.channels.close()
            raise
        self.supervisor = Supervisor(
            self.config,
            loop=self.loop,
            journal=self.journal,
            channels=self.channels,
            launcher=self.launcher,
            backend=self.backend,
            state_dir=self.state_dir,
            on_channel=self._on_agent_channel,
        )
        self.sessions = OperatorSessions(self.supervisor.table.new_id)
        self.sessions.on_close.append(self._session_closed)
        self.supervisor.listeners.append(self._lifecycle_event)
        for attach in SERVICES:
            attach(self)
        self.replay.perform = self.dispatcher.perform  # an operator's replay performs calls through it
        fleet = getattr(self, "fleet", None)  # set by the fleet service's attach with a [fleet] table
        if fleet is not None:
            fleet.perform = functools.partial(self.dispatcher.perform, mark="fleet")  # ...and so does a signed fleet command
        # Last: it reads every service. None unless [metrics] listen is set (docs/metrics.md).
        self.prometheus = prometheus.attach(self, syscall_names=self.dispatcher.registry, kernel_time=self.dispatcher.figures)
        self.metrics.kernel_time_by = self.dispatcher.agent_figures  # metrics.agent(s) report each agent's kernel time
        self.supervisor.spares.prepare()
        control = self.channels.control
        assert control is not None  # noqa: S101 - bind_control just set it
        self.loop.add_reader(control, lambda: self.dispatcher.on_readable(control))
        self._watch_zygote()
        self.supervisor.zygote_started.append(self._watch_zygote)
        self.loop.housekeeping.append(self._housekeeping)
        self._install_signals()
        self.journal.append(Category.SYSCALL, "kernel.started", decision="n/a", details=self.info())
        log.info("clove kernel %s listening on ipc://%s (sandbox: %s)", __version__, self.socket_path, self._backend_name())
        for agent in self.config.agents:
            self.boot_agent(agent)

    def boot_agent(self, spec: AgentConfig) -> None:
        def report(agent: Any, error: CloveError | None) -> None:
            if error is not None:
                log.error("agent %s failed to start: %s", spec.name, error.message)

        try:
            self.supervisor.spawn(resolve_limits(spec, self.config.limits), on_started=report)
        except CloveError as err:
            log.error("agent %s: %s", spec.name, err.message)

    def _backend_name(self) -> str:
        return self.backend.name if self.backend is not None else "rlimit"

    def _install_signals(self) -> None:
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        self._signal_r, self._signal_w = r, w
        signal.set_wakeup_fd(w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)  # the wakeup fd carries the signal number
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.loop.add_reader(r.fileno(), self._on_signal)

    def _on_signal(self) -> None:
        assert self._signal_r is not None  # noqa: S101
        try:
            data = self._signal_r.recv(512)
        except BlockingIOError:
            return
        if any(sig in (signal.SIGTERM, signal.SIGINT) for sig in data):
            self.request_stop()

    def _on_agent_channel(self, agent_id: int, added: bool) -> None:
        entry = self.channels.agent_sockets.get(agent_id)
        if added and entry is not None:
            sock = entry[0]
            self.loop.add_reader(sock, lambda: self.dispatcher.on_readable(sock))
        elif not added:
            # The supervisor closed the socket already; unregister it from the poller.
            for sock in self.loop.readers():
                if getattr(sock, "closed", False):
                    self.loop.remove_reader(sock)

    def _watch_zygote(self) -> None:
        self._zygote_fd = self.launcher.fileno()
        self.loop.add_reader(self._zygote_fd, self._on_zygote)

    def _on_zygote(self) -> None:
        for event in self.launcher.events():
            kind = str(event.get("ev", ""))
            if kind == "lost":
                self.loop.remove_reader(self._zygote_fd)
            if kind.startswith("exec_"):
                for listener in self.zygote_listeners:
                    listener(event)
                continue
            self.supervisor.handle_zygote_event(event)  # on "lost" this restarts the zygote

    def _start_warden(self) -> None:
        if self.warden is None or self._stopping:
            return
        try:
            self.warden.start()
        except OSError as err:
            log.error("cannot start the warden (%s); retrying in 1 s", err)
            self.loop.call_later(1.0, self._start_warden)
            return
        self._warden_fd = WatchedFd(self.warden.pidfd)
        self.loop.add_reader(self._warden_fd, self._on_warden_exit)

    def _on_warden_exit(self) -> None:
        """The warden died while this kernel lives: agents are unaffected; start another."""
        if self._warden_fd is not None:
            self.loop.remove_reader(self._warden_fd)
            self._warden_fd = None
        if self.warden is None:
            return
        lived = time.monotonic() - self.warden.started_at
        pid, code = self.warden.pid, self.warden.reap()
        log.error("the warden %s died (status %s); starting another", pid, code)
        self.loop.call_later(0.0 if lived > 1.0 else 1.0, self._start_warden)

    def _cut_lifeline(self) -> None:
        """The last act of a stopping kernel: every G still up takes its tree down, and the
        warden empties and removes whatever is left of this kernel's cgroups, then exits."""
        if self._warden_fd is not None:
            self.loop.remove_reader(self._warden_fd)
            self._warden_fd = None
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None
        if self.warden is not None:
            self.warden.wait(REAP_TIMEOUT + 2.0)

    def _session_closed(self, session: OperatorSession) -> None:
        self.events.drop(session.id)
        self.async_results.drop(session.id)

    def _lifecycle_event(self, event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        """Supervisor lifecycle records become bus events (AGENT_SPAWNED, AGENT_EXITED, ...)."""
        for kind, data in lifecycle_events(event_type, agent, details):
            self.events.emit(kind, data, source_agent_id=agent.id)
        if event_type == "agent.removed":
            self.events.drop(agent.id)
            self.async_results.drop(agent.id)

    def _journal_space_change(self, low: bool, details: dict[str, Any]) -> None:
        """The journal's disk crossed its reserve (either way): tell subscribers once."""
        self.events.emit("KERNEL_RESOURCE_LOW", {"resource": "journal_disk", **details}, source_agent_id=None)

    def _housekeeping(self) -> None:
        self.supervisor.housekeeping()
        self.sessions.reap()
        self.journal.tick()  # denial windows, the disk reserve, keep_days; returns at once unless due
        if self.journal.batch_pending and self._hand_off_timer is None:
            # Records reach the writer thread within 2 ms, in one wake-up per batch.
            self._hand_off_timer = self.loop.call_later(JOURNAL_HAND_OFF_S, self._hand_off)

    def _hand_off(self) -> None:
        self._hand_off_timer = None
        self.journal.hand_off()

    # ---- run and stop ------------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._stopping:
            return
        log.info("stopping: %d live agents", self.supervisor.live_count())
        self._stopping = True
        self._stop_deadline = time.monotonic() + self.config.sandbox.kill_grace + 3.0
        self.supervisor.stop_all()

    def _done(self) -> bool:
        return self._stopping and (self.supervisor.live_count() == 0 or time.monotonic() > self._stop_deadline)

    def run(self) -> None:
        try:
            self.loop.run(until=self._done)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Remove cgroups, stop the zygote, flush the journal, remove the socket."""
        self.supervisor.finish()
        for hook in self.on_shutdown:
            try:
                hook()
            except Exception:
                log.exception("shutdown hook %r failed", hook)
        self._stopping = True
        self._cut_lifeline()
        if self.backend is not None:
            self.backend.close()
        self.launcher.stop()
        self.journal.append(Category.SYSCALL, "kernel.stopped", decision="n/a")
        self.journal.close()
        self.channels.close()
        signal.set_wakeup_fd(-1)
        log.info("clove kernel stopped")

    def resources(self) -> dict[str, int]:
        """How much per-caller state the kernel holds now: what a leak check compares."""
        held: dict[str, int] = {"agents": len(self.supervisor.table), "operator_sessions": len(self.sessions)}
        for service in (self.events, self.async_results, *(getattr(self, n, None) for n in _SERVICE_ATTRS)):
            report = getattr(service, "held", None)
            if report is not None:
                held.update(report())
        return held

    def info(self) -> dict[str, Any]:
        return {
            "success": True,
            "version": __version__,
            "pid": os.getpid(),
            "socket": self.socket_path,
            "state_dir": str(self.state_dir),
            "journal": str(self.journal.path),
            "sandbox_backend": self._backend_name(),
            "zygote_pid": self.launcher.pid,
            "warden_pid": self.warden.pid if self.warden is not None else None,
            "backend": self.backend.describe() if self.backend is not None else {"name": "rlimit"},
            "landlock_abi": abi_version(),
            "require_isolation": self.config.sandbox.require_isolation,
            "started_at": self.started_at,
            "resources": self.resources(),
            "kernel_time": self.dispatcher.figures(),
            "spares": self.supervisor.spares.info(),
        }
