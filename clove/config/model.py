"""The kernel config's shape: frozen dataclasses, one per top-level table, and their constants.

:func:`clove.config.load_config` builds a :class:`KernelConfig` from a TOML file; the schema is
documented in README.md ("Configuration"), the ``[llm]`` table in docs/llm.md, ``[devices]`` in
docs/devices.md and ``[interlocks]`` in docs/interlocks.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Final

from clove.config.devices import DeviceSpec
from clove.config.egress import EgressSection
from clove.config.fleet import FleetSection
from clove.config.interlocks import InterlockSpec
from clove.config.llm import LlmSection
from clove.config.prometheus import MetricsSection
from clove.drivers.grants import DeviceGrant
from clove.policy import LEVELS as LEVELS  # the permission levels are the policy's
from clove.wire import DEFAULT_SOCKET as DEFAULT_SOCKET  # where the kernel listens unless told

BACKENDS: Final = ("auto", "cgroup2", "cgroup1", "rlimit", "none")
RESTART_POLICIES: Final = ("never", "on-failure", "always")
#: What an agent does when the devices it holds grants on are not ready by its ``device_timeout``.
DEVICE_WAIT_POLICIES: Final = ("start", "fail")
#: The top-level tables a config may hold.
TABLES: Final = ("kernel", "sandbox", "supervisor", "logs", "retention", "postmortem", "recording", "limits", "journal", "agents", "llm", "devices", "interlocks", "egress", "fleet", "metrics")


def default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/clove"
    return os.path.join(os.environ.get("XDG_STATE_HOME", os.path.expanduser("~/.local/state")), "clove")


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelSection:
    socket: str = DEFAULT_SOCKET
    state_dir: str = field(default_factory=default_state_dir)
    max_message_bytes: int = 1 << 20
    log_level: str = "info"
    audit_ring: int = 10_000
    operator_level: str = "unrestricted"


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxSection:
    backend: str = "auto"
    require_isolation: bool = False
    uid_base: int = 200_000
    landlock: bool = True
    seccomp: bool = True
    start_timeout: float = 10.0
    kill_grace: float = 3.0
    #: Prepared spares (docs/sandbox.md, "Spares"): the pool follows recent spawn demand between
    #: ``spares_min`` (kept while idle) and ``spares_max`` (0: no spares); one agent's spawns add
    #: at most ``spares_per_agent`` per demand window.
    spares_max: int = 8
    spares_min: int = 1
    spares_per_agent: int = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorSection:
    """Restart backoff: ``backoff_initial * 2**n`` seconds after the n-th consecutive failure,
    capped at ``backoff_max``; a run longer than ``stable_after`` seconds resets n."""

    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsSection:
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSection:
    max_exited: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class PostmortemSection:
    """Post-mortem bundles of agents that die abnormally (docs/postmortem.md): the newest
    ``keep`` per agent, each at most ``max_bytes``, with the last ``log_tail_bytes`` of its log
    and its last ``journal_records`` journal records since its last start."""

    enabled: bool = True
    keep: int = 10
    log_tail_bytes: int = 64 << 10
    journal_records: int = 200
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingSection:
    """Syscall recording for replay (docs/recording.md): ``enabled`` records from boot the
    ``agents`` named (empty: every agent); ``llm.think``, ``http`` and ``exec`` calls only with
    their ``include_*``. The newest ``max_entries`` stay in memory for export; each agent's file
    is rotated at ``max_bytes``, keeping ``rotate`` old ones."""

    enabled: bool = False
    agents: tuple[str, ...] = ()
    include_think: bool = False
    include_http: bool = False
    include_exec: bool = False
    max_entries: int = 50_000
    max_bytes: int = 64 << 20
    rotate: int = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLimits:
    """What one agent may make the kernel hold or spend on its behalf (``[limits]`` defaults,
    ``[limits.agents.NAME]`` overrides). Reaching a byte or count bound is a ``quota.exceeded``
    error to the caller; nothing already accepted is dropped.

    Sandbox defaults (``memory_bytes``, ``cpu_quota_us``, ``pids``, ``workdir_bytes``,
    ``tmp_bytes``, ``tmp_inodes``) apply to a spawn that names none; the ``max_*`` ceilings cap
    what a spawn or config may ask for."""

    event_queue_bytes: int = 4 << 20
    mailbox_bytes: int = 4 << 20
    async_result_bytes: int = 8 << 20
    subscriptions: int = 256
    device_queue_bytes: int = 1 << 20
    recording_bytes: int = 16 << 20
    open_handles: int = 64
    #: Syscalls per second, a backstop behind the fair share (a burst of ``syscall_burst``).
    syscall_rate: float = 5000.0
    syscall_burst: int = 1000
    #: Share of the kernel's time against other callers; ``None``: follow the agent's CPU share.
    weight: float | None = None
    memory_bytes: int = 256 << 20
    cpu_quota_us: int = 50_000
    pids: int = 64
    workdir_bytes: int = 256 << 20
    tmp_bytes: int = 64 << 20
    tmp_inodes: int = 4096
    max_memory_bytes: int = 4 << 30
    max_cpu_quota_us: int = 200_000
    max_pids: int = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSection:
    defaults: AgentLimits = field(default_factory=AgentLimits)
    agents: dict[str, AgentLimits] = field(default_factory=dict)

    def for_agent(self, name: str | None) -> AgentLimits:
        """The limits of the agent called ``name`` (the defaults for operators and unknowns)."""
        if name is None:
            return self.defaults
        return self.agents.get(name, self.defaults)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalSection:
    """The audit journal on disk (docs/audit.md): files rotate at ``max_file_bytes``; the newest
    ``keep_files`` rotated files are kept, and none older than ``keep_days`` (0: no age limit).
    After ``denial_burst`` denials from one agent within ``denial_window`` seconds, further
    denials of the same syscall and code are counted into one record per window. When the
    filesystem holding the state dir has less than ``disk_reserve_bytes`` free, agents' new work
    is refused with ``resource.exhausted`` instead of records being dropped."""

    max_file_bytes: int = 64 << 20
    keep_files: int = 8
    keep_days: float = 0.0
    denial_burst: int = 20
    denial_window: float = 10.0
    disk_reserve_bytes: int = 32 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """An agent the kernel starts at boot (``[agents.NAME]``); also the shape of a spawn."""

    name: str
    script: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    sandboxed: bool = True
    #: ``network = true``: the agent has its own network namespace that reaches only the
    #: kernel's egress proxy, which admits its ``egress`` rules; with ``network_full`` as well
    #: (``network = "full"``) it shares the host's network, as before the proxy existed.
    network: bool = False
    network_full: bool = False
    #: What the egress proxy admits for this agent (docs/egress.md): ``host[:port]`` rules in
    #: canonical form, and the private ranges it may reach despite being private.
    egress: tuple[str, ...] = ()
    egress_private: tuple[str, ...] = ()
    memory_bytes: int | None = None
    cpu_quota_us: int | None = None
    pids: int | None = None
    restart: str = "never"
    max_restarts: int = 5
    restart_window: float = 300.0
    interpreter: str | None = None
    working_dir: str | None = None
    level: str = "standard"
    permissions: dict[str, Any] = field(default_factory=dict)
    #: Device name → this agent's grant on it (``[agents.NAME.devices.DEVICE]``).
    devices: dict[str, DeviceGrant] = field(default_factory=dict)
    #: Each start (restarts too) waits until those devices are ready, for at most
    #: ``device_timeout`` seconds; then ``device_wait`` says: ``start`` anyway, or ``fail``.
    device_wait: str = "start"
    device_timeout: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelConfig:
    kernel: KernelSection = field(default_factory=KernelSection)
    sandbox: SandboxSection = field(default_factory=SandboxSection)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    logs: LogsSection = field(default_factory=LogsSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    postmortem: PostmortemSection = field(default_factory=PostmortemSection)
    recording: RecordingSection = field(default_factory=RecordingSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    journal: JournalSection = field(default_factory=JournalSection)
    agents: tuple[AgentConfig, ...] = ()
    llm: LlmSection | None = None
    devices: tuple[DeviceSpec, ...] = ()
    interlocks: tuple[InterlockSpec, ...] = ()
    egress: EgressSection = field(default_factory=EgressSection)
    #: ``[fleet]``: joining a fleet over NATS JetStream (docs/fleet.md); ``None``: no fleet link.
    fleet: FleetSection | None = None
    #: ``[metrics]``: the Prometheus exporter (docs/metrics.md); off unless ``listen`` is set.
    metrics: MetricsSection = field(default_factory=MetricsSection)
    source: str | None = None
