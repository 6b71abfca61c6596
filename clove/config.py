"""Kernel configuration: one TOML file parsed into frozen dataclasses, validated at load time.

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the file,
the table and the key, e.g. ``configs/kernel.toml: [sandbox].backend: expected one of ...``.
The schema is documented in README.md ("Configuration"); the ``[llm]`` table in docs/llm.md.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from clove.errors import CloveError, ConfigError

if TYPE_CHECKING:
    from clove.drivers.grants import DeviceGrant
    from clove.kernel.services.devices.settings import DeviceSpec
    from clove.kernel.services.interlocks import InterlockSpec
    from clove.llm.settings import LlmSection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_SOCKET: Final = "/tmp/clove.sock"
BACKENDS: Final = ("auto", "cgroup2", "cgroup1", "rlimit", "none")
RESTART_POLICIES: Final = ("never", "on-failure", "always")
LEVELS: Final = ("unrestricted", "standard", "sandboxed", "readonly", "minimal")
#: The top-level tables a config may hold.
TABLES: Final = ("kernel", "sandbox", "supervisor", "logs", "retention", "postmortem", "recording", "limits", "journal", "agents", "llm", "devices", "interlocks")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


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
    network: bool = False
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
    source: str | None = None


# ---- value parsers shared with the CLI and the spawn syscall --------------------------------

_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_SCALE: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory(value: object) -> int:
    """``"64M"``, ``"1.5G"``, ``"512MiB"`` or an int of bytes → bytes (binary units), at least 4M.

    :raises ValueError: with a message fit for a user.
    """
    number = parse_size(value)
    if number < 4 << 20:
        raise ValueError(f"memory limit must be at least 4M, got {value!r}")
    return number


def parse_size(value: object) -> int:
    """``"64K"``, ``"1.5G"``, ``"512MiB"`` or an int of bytes → a positive number of bytes.

    :raises ValueError: with a message fit for a user.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '64M' or bytes, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = float(m.group(1)) * _SCALE[m.group(2).upper()]
        if not math.isfinite(size):  # "999...9G" would overflow int()
            raise ValueError(f"expected a size like '64M' or bytes, got {value!r}")
        number = int(size)
    else:
        raise ValueError(f"expected a size like '64M' or bytes, got {value!r}")
    if number < 1:
        raise ValueError(f"expected a positive size, got {value!r}")
    return number


def parse_cpu(value: object) -> int:
    """``"20%"`` (of one core) or an int of µs per 100 ms period → quota in µs per 100 ms."""
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage like '20%' or a quota in µs, got {value!r}")
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"expected a percentage like '20%', got {value!r}") from None
        if not math.isfinite(percent * 1000):  # "inf%" would overflow int()
            raise ValueError(f"expected a percentage like '20%', got {value!r}")
        quota = int(round(percent * 1000))
    elif isinstance(value, int):
        quota = value
    else:
        raise ValueError(f"expected a percentage like '20%' or a quota in µs, got {value!r}")
    if quota < 1000:
        raise ValueError(f"cpu quota must be at least 1000 µs per 100 ms (1%), got {value!r}")
    return quota


def parse_pids(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive int, got {value!r}")
    return value


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):  # match() lets 'a\n' through
        raise ValueError(f"agent names are 1-63 of [A-Za-z0-9_.-], starting alphanumeric; got {value!r}")
    return value


# ---- loading -------------------------------------------------------------------------------


class _Table:
    """Typed access to one TOML table that remembers where it is, for error messages."""

    def __init__(self, source: str, where: str, data: dict[str, Any]) -> None:
        self.source, self.where, self.data = source, where, data
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.where}].{key}: {message}", details={"table": self.where, "key": key})

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_names(kinds)}, got bool {value!r}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_names(kinds)}, got {type(value).__name__} {value!r}")
        return value

    def parsed(self, key: str, parse: Callable[[object], Any], default: Any) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        try:
            return parse(self.data[key])
        except ValueError as err:
            raise self.fail(key, str(err)) from None

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}; got {value!r}")
        return str(value)

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value is not None and not value > 0:  # also refuses nan
            raise self.fail(key, f"must be positive, got {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(self.seen))})")


def _kind_names(kinds: tuple[type, ...]) -> str:
    return " or ".join({bool: "bool", int: "int", float: "number", str: "string", list: "array", dict: "table"}.get(k, k.__name__) for k in kinds)


def _section(source: str, raw: dict[str, Any], name: str) -> _Table:
    data = raw.get(name, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{name}]: expected a table, got {type(data).__name__}")
    return _Table(source, name, data)


def _agent(source: str, name: str, data: Any, base_dir: Path, devices: dict[str, DeviceSpec]) -> AgentConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [agents.{name}]: expected a table, got {type(data).__name__}")
    t = _Table(source, f"agents.{name}", data)
    try:
        validate_name(name)
    except ValueError as err:
        raise ConfigError(f"{source}: [agents.{name}]: {err}") from None
    script = t.get("script", str, None)
    if script is None:
        raise t.fail("script", "required")
    args = t.get("args", list, [])
    if not all(isinstance(a, str) for a in args):
        raise t.fail("args", "expected an array of strings")
    env = t.get("env", dict, {})
    if not all(isinstance(v, str) for v in env.values()):
        raise t.fail("env", "expected a table of strings")
    cpu = t.parsed("cpu", parse_cpu, None)
    quota = t.parsed("cpu_quota", parse_cpu, None)
    if cpu is not None and quota is not None:
        raise t.fail("cpu", "give either cpu or cpu_quota, not both")
    working_dir = t.get("working_dir", str, None)
    interpreter = t.get("interpreter", str, None)
    agent = AgentConfig(
        name=name,
        script=str((base_dir / script).resolve()),
        args=tuple(args),
        env=dict(env),
        sandboxed=t.get("sandboxed", bool, True),
        network=t.get("network", bool, False),
        memory_bytes=t.parsed("memory", parse_memory, None),
        cpu_quota_us=cpu if cpu is not None else quota,
        pids=t.parsed("pids", parse_pids, None),
        restart=t.choice("restart", RESTART_POLICIES, "never"),
        max_restarts=t.get("max_restarts", int, 5),
        restart_window=t.positive("restart_window", float, 300.0),
        interpreter=_resolve_interpreter(interpreter, base_dir, t),
        working_dir=str((base_dir / working_dir).resolve()) if working_dir else None,
        level=t.choice("level", LEVELS, "standard"),
        permissions=_grants(t),
        devices=_device_grants(t, devices),
    )
    if agent.max_restarts < 0:
        raise t.fail("max_restarts", f"must be >= 0, got {agent.max_restarts}")
    t.done()
    return agent


def _grants(t: _Table) -> dict[str, Any]:
    grants = t.get("permissions", dict, {})
    from clove.policy import parse_grants  # the policy module owns the grant schema

    try:
        parse_grants(grants)
    except CloveError as err:
        raise t.fail("permissions", err.message) from None
    return dict(grants)


def _device_grants(t: _Table, devices: dict[str, DeviceSpec]) -> dict[str, DeviceGrant]:
    data = t.get("devices", dict, {})
    if not data:
        return {}
    from clove.kernel.services.devices.settings import parse_agent_grants  # the device broker owns the grant schema

    return parse_agent_grants(t.source, t.where.split(".", 1)[1], data, devices)


def _resolve_interpreter(value: str | None, base_dir: Path, t: _Table) -> str | None:
    """A path is taken relative to the config file; a bare name is looked up on PATH."""
    if value is None:
        return None
    if "/" in value:
        return os.path.normpath(base_dir / value)  # not resolve(): a venv python is a symlink that must stay one
    found = shutil.which(value)
    if found is None:
        raise t.fail("interpreter", f"{value!r} not found on PATH")
    return found


def _postmortem(source: str, raw: dict[str, Any]) -> PostmortemSection:
    t = _section(source, raw, "postmortem")
    section = PostmortemSection(
        enabled=t.get("enabled", bool, True),
        keep=t.positive("keep", int, 10),
        log_tail_bytes=t.positive("log_tail_bytes", int, 64 << 10),
        journal_records=t.positive("journal_records", int, 200),
        max_bytes=t.positive("max_bytes", int, 1 << 20),
    )
    if section.max_bytes < 64 << 10:
        raise t.fail("max_bytes", f"must be at least 65536 (a summary and some log), got {section.max_bytes}")
    t.done()
    return section


def _recording(source: str, raw: dict[str, Any]) -> RecordingSection:
    t = _section(source, raw, "recording")
    agents = t.get("agents", list, [])
    try:
        names = tuple(validate_name(name) for name in agents)
    except ValueError as err:
        raise t.fail("agents", str(err)) from None
    section = RecordingSection(
        enabled=t.get("enabled", bool, False),
        agents=names,
        include_think=t.get("include_think", bool, False),
        include_http=t.get("include_http", bool, False),
        include_exec=t.get("include_exec", bool, False),
        max_entries=t.positive("max_entries", int, 50_000),
        max_bytes=t.positive("max_bytes", int, 64 << 20),
        rotate=t.get("rotate", int, 3),
    )
    if section.max_bytes < 4096:
        raise t.fail("max_bytes", f"must be at least 4096 (a segment holds the recording's header), got {section.max_bytes}")
    if section.rotate < 0:
        raise t.fail("rotate", f"must be >= 0, got {section.rotate}")
    t.done()
    return section


_LIMIT_SIZES: Final = ("event_queue_bytes", "mailbox_bytes", "async_result_bytes", "device_queue_bytes",
                       "recording_bytes", "memory_bytes", "workdir_bytes", "tmp_bytes", "max_memory_bytes")  # fmt: skip
_LIMIT_COUNTS: Final = ("subscriptions", "open_handles", "syscall_burst", "pids", "tmp_inodes", "max_pids")
_LIMIT_CPU: Final = ("cpu_quota_us", "max_cpu_quota_us")


def _agent_limits(t: _Table, base: AgentLimits) -> AgentLimits:
    """One ``[limits]`` or ``[limits.agents.NAME]`` table over ``base``: sizes take ``"64M"``
    or bytes, CPU takes ``"50%"`` or µs per 100 ms."""
    values: dict[str, Any] = {}
    for key in _LIMIT_SIZES:
        parse = parse_memory if key in ("memory_bytes", "max_memory_bytes") else parse_size
        values[key] = t.parsed(key, parse, getattr(base, key))
    for key in _LIMIT_COUNTS:
        values[key] = t.positive(key, int, getattr(base, key))
    for key in _LIMIT_CPU:
        values[key] = t.parsed(key, parse_cpu, getattr(base, key))
    values["syscall_rate"] = t.positive("syscall_rate", float, base.syscall_rate)
    values["weight"] = t.positive("weight", float, base.weight)
    limits = AgentLimits(**values)
    for value, ceiling in (("memory_bytes", "max_memory_bytes"), ("cpu_quota_us", "max_cpu_quota_us"), ("pids", "max_pids")):
        if getattr(limits, value) > getattr(limits, ceiling):
            raise t.fail(value, f"{getattr(limits, value)} is above {ceiling} ({getattr(limits, ceiling)})")
    return limits


def _limits(source: str, raw: dict[str, Any]) -> LimitsSection:
    t = _section(source, raw, "limits")
    per_agent = t.get("agents", dict, {})
    defaults = _agent_limits(t, AgentLimits())
    t.done()
    agents: dict[str, AgentLimits] = {}
    for name, data in per_agent.items():
        where = f"limits.agents.{name}"
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{where}]: expected a table, got {type(data).__name__}")
        try:
            validate_name(name)
        except ValueError as err:
            raise ConfigError(f"{source}: [{where}]: {err}") from None
        at = _Table(source, where, data)
        agents[name] = _agent_limits(at, defaults)
        at.done()
    return LimitsSection(defaults=defaults, agents=agents)


def _journal(source: str, raw: dict[str, Any]) -> JournalSection:
    t = _section(source, raw, "journal")
    section = JournalSection(
        max_file_bytes=t.parsed("max_file_bytes", parse_size, 64 << 20),
        keep_files=t.positive("keep_files", int, 8),
        keep_days=t.get("keep_days", float, 0.0),
        denial_burst=t.positive("denial_burst", int, 20),
        denial_window=t.positive("denial_window", float, 10.0),
        disk_reserve_bytes=t.parsed("disk_reserve_bytes", parse_size, 32 << 20),
    )
    if section.max_file_bytes < 64 << 10:
        raise t.fail("max_file_bytes", f"must be at least 65536, got {section.max_file_bytes}")
    if section.keep_days < 0:
        raise t.fail("keep_days", f"must be >= 0, got {section.keep_days}")
    t.done()
    return section


def load_config(path: str | os.PathLike[str] | None) -> KernelConfig:
    """Read and validate a kernel config; ``None`` gives the defaults.

    :raises ConfigError: naming the file, table and key of the first problem.
    """
    if path is None:
        return KernelConfig()
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except OSError as err:
        raise ConfigError(f"{source}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: invalid TOML: {err}") from None
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise ConfigError(f"{source}: [{unknown[0]}]: unknown table (known: {', '.join(sorted(TABLES))})")
    base_dir = Path(source).resolve().parent
    k = _section(source, raw, "kernel")
    state_dir = k.get("state_dir", str, None)
    kernel = KernelSection(
        socket=k.get("socket", str, DEFAULT_SOCKET),
        state_dir=str((base_dir / state_dir).resolve()) if state_dir else default_state_dir(),
        max_message_bytes=k.positive("max_message_bytes", int, 1 << 20),
        log_level=k.choice("log_level", ("debug", "info", "warning", "error"), "info"),
        audit_ring=k.positive("audit_ring", int, 10_000),
        operator_level=k.choice("operator_level", LEVELS, "unrestricted"),
    )
    k.done()
    s = _section(source, raw, "sandbox")
    sandbox = SandboxSection(
        backend=s.choice("backend", BACKENDS, "auto"),
        require_isolation=s.get("require_isolation", bool, False),
        uid_base=s.positive("uid_base", int, 200_000),
        landlock=s.get("landlock", bool, True),
        seccomp=s.get("seccomp", bool, True),
        start_timeout=s.positive("start_timeout", float, 10.0),
        kill_grace=s.positive("kill_grace", float, 3.0),
    )
    s.done()
    sv = _section(source, raw, "supervisor")
    supervisor = SupervisorSection(
        backoff_initial=sv.positive("backoff_initial", float, 0.5),
        backoff_max=sv.positive("backoff_max", float, 30.0),
        stable_after=sv.positive("stable_after", float, 10.0),
    )
    sv.done()
    lg = _section(source, raw, "logs")
    logs = LogsSection(max_bytes=lg.positive("max_bytes", int, 1 << 20))
    lg.done()
    r = _section(source, raw, "retention")
    retention = RetentionSection(max_exited=r.positive("max_exited", int, 100))
    r.done()
    postmortem = _postmortem(source, raw)
    recording = _recording(source, raw)
    limits = _limits(source, raw)
    journal = _journal(source, raw)
    from clove.kernel.services.devices.settings import parse_devices  # loads only the drivers the config names

    devices, _registry = parse_devices(source, raw)
    by_name = {d.name: d for d in devices}
    from clove.kernel.services.interlocks import parse_interlocks  # the interlocks own their schema

    interlocks = parse_interlocks(source, raw, by_name)
    agents_raw = raw.get("agents", {})
    if not isinstance(agents_raw, dict):
        raise ConfigError(f"{source}: [agents]: expected a table of agent tables")
    agents = tuple(_agent(source, name, data, base_dir, by_name) for name, data in agents_raw.items())
    from clove.llm.settings import parse_llm  # the gateway owns its table's schema (and loads plugins)

    llm = parse_llm(source, raw)
    return KernelConfig(
        kernel=kernel, sandbox=sandbox, supervisor=supervisor, logs=logs, retention=retention, postmortem=postmortem, recording=recording, limits=limits, journal=journal, agents=agents, llm=llm, devices=devices, interlocks=interlocks, source=source
    )
