"""Loading a kernel config: one TOML file parsed into a :class:`~clove.config.model.KernelConfig`,
validated at load time.

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the file,
the table and the key, e.g. ``configs/kernel.toml: [sandbox].backend: expected one of ...``.
Each table has its parser: here the kernel's own tables and ``[agents]``; ``[devices]``,
``[interlocks]`` and ``[llm]`` in :mod:`clove.config.devices`, :mod:`clove.config.interlocks`
and :mod:`clove.config.llm`.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Final

from clove.config.devices import DeviceSpec, parse_agent_grants, parse_devices
from clove.config.egress import parse_cidrs, parse_egress, parse_rules
from clove.config.fleet import parse_fleet
from clove.config.interlocks import parse_interlocks
from clove.config.llm import parse_llm
from clove.config.model import (
    BACKENDS,
    DEFAULT_SOCKET,
    DEVICE_WAIT_POLICIES,
    LEVELS,
    RESTART_POLICIES,
    TABLES,
    AgentConfig,
    AgentLimits,
    JournalSection,
    KernelConfig,
    KernelSection,
    LimitsSection,
    LogsSection,
    PostmortemSection,
    RecordingSection,
    RetentionSection,
    SandboxSection,
    SupervisorSection,
    default_state_dir,
)
from clove.config.prometheus import parse_metrics
from clove.config.values import Table, parse_cpu, parse_memory, parse_pids, parse_size, validate_name
from clove.drivers.grants import DeviceGrant
from clove.errors import CloveError, ConfigError
from clove.policy import parse_grants

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_config"]


def _agent(source: str, name: str, data: Any, base_dir: Path, devices: dict[str, DeviceSpec]) -> AgentConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [agents.{name}]: expected a table, got {type(data).__name__}")
    t = Table(source, f"agents.{name}", data)
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
    network = t.get("network", str if isinstance(t.data.get("network"), str) else bool, False)
    if network not in (True, False, "full"):
        raise t.fail("network", f"expected true, false or \"full\", got {network!r}")
    agent = AgentConfig(
        name=name,
        script=str((base_dir / script).resolve()),
        args=tuple(args),
        env=dict(env),
        sandboxed=t.get("sandboxed", bool, True),
        network=network is not False,
        network_full=network == "full",
        egress=t.parsed("egress", parse_rules, ()),
        egress_private=t.parsed("egress_private", parse_cidrs, ()),
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
        device_wait=t.choice("device_wait", DEVICE_WAIT_POLICIES, "start"),
        device_timeout=t.positive("device_timeout", float, 30.0),
    )
    if agent.max_restarts < 0:
        raise t.fail("max_restarts", f"must be >= 0, got {agent.max_restarts}")
    if (agent.egress or agent.egress_private) and (not agent.network or agent.network_full):
        key, network = ("egress" if agent.egress else "egress_private"), ('"full"' if agent.network_full else "false")
        raise t.fail(key, f"applies to network = true only (the egress proxy); this agent has network = {network}")
    if not math.isfinite(agent.device_timeout):  # a start must not wait for ever
        raise t.fail("device_timeout", f"must be a finite number of seconds, got {agent.device_timeout}")
    t.done()
    return agent


def _grants(t: Table) -> dict[str, Any]:
    grants = t.get("permissions", dict, {})
    try:
        parse_grants(grants)
    except CloveError as err:
        raise t.fail("permissions", err.message) from None
    return dict(grants)


def _device_grants(t: Table, devices: dict[str, DeviceSpec]) -> dict[str, DeviceGrant]:
    data = t.get("devices", dict, {})
    if not data:
        return {}
    return parse_agent_grants(t.source, t.where.split(".", 1)[1], data, devices)


def _resolve_interpreter(value: str | None, base_dir: Path, t: Table) -> str | None:
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
    t = Table.top(source, raw, "postmortem")
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
    t = Table.top(source, raw, "recording")
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


def _agent_limits(t: Table, base: AgentLimits) -> AgentLimits:
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
    t = Table.top(source, raw, "limits")
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
        at = Table(source, where, data)
        agents[name] = _agent_limits(at, defaults)
        at.done()
    return LimitsSection(defaults=defaults, agents=agents)


#: The most spares a kernel may keep: each holds two processes, a cgroup, a loop device and an
#: empty image (docs/sandbox.md, "Spares").
SPARES_CEILING: Final = 64


def _sandbox(source: str, raw: dict[str, Any]) -> SandboxSection:
    s = Table.top(source, raw, "sandbox")
    section = SandboxSection(
        backend=s.choice("backend", BACKENDS, "auto"),
        require_isolation=s.get("require_isolation", bool, False),
        uid_base=s.positive("uid_base", int, 200_000),
        landlock=s.get("landlock", bool, True),
        seccomp=s.get("seccomp", bool, True),
        start_timeout=s.positive("start_timeout", float, 10.0),
        kill_grace=s.positive("kill_grace", float, 3.0),
        spares_max=s.get("spares_max", int, 8),
        spares_min=s.get("spares_min", int, 1),
        spares_per_agent=s.get("spares_per_agent", int, 2),
    )
    for key in ("spares_max", "spares_min", "spares_per_agent"):
        value = getattr(section, key)
        if not 0 <= value <= SPARES_CEILING:
            raise s.fail(key, f"must be between 0 and {SPARES_CEILING}, got {value}")
    if section.spares_min > section.spares_max:
        raise s.fail("spares_min", f"must be at most spares_max ({section.spares_max}), got {section.spares_min}")
    s.done()
    return section


def _journal(source: str, raw: dict[str, Any]) -> JournalSection:
    t = Table.top(source, raw, "journal")
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
    k = Table.top(source, raw, "kernel")
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
    sandbox = _sandbox(source, raw)
    sv = Table.top(source, raw, "supervisor")
    supervisor = SupervisorSection(
        backoff_initial=sv.positive("backoff_initial", float, 0.5),
        backoff_max=sv.positive("backoff_max", float, 30.0),
        stable_after=sv.positive("stable_after", float, 10.0),
    )
    sv.done()
    lg = Table.top(source, raw, "logs")
    logs = LogsSection(max_bytes=lg.positive("max_bytes", int, 1 << 20))
    lg.done()
    r = Table.top(source, raw, "retention")
    retention = RetentionSection(max_exited=r.positive("max_exited", int, 100))
    r.done()
    postmortem = _postmortem(source, raw)
    recording = _recording(source, raw)
    limits = _limits(source, raw)
    journal = _journal(source, raw)
    devices, _registry = parse_devices(source, raw)  # loads only the drivers the config names
    by_name = {d.name: d for d in devices}
    interlocks = parse_interlocks(source, raw, by_name)
    agents_raw = raw.get("agents", {})
    if not isinstance(agents_raw, dict):
        raise ConfigError(f"{source}: [agents]: expected a table of agent tables")
    agents = tuple(_agent(source, name, data, base_dir, by_name) for name, data in agents_raw.items())
    llm = parse_llm(source, raw)  # loads only the allowlisted provider plugins
    egress = parse_egress(source, raw)
    fleet = parse_fleet(source, raw, base_dir)
    metrics = parse_metrics(source, raw)
    return KernelConfig(
        kernel=kernel, sandbox=sandbox, supervisor=supervisor, logs=logs, retention=retention, postmortem=postmortem, recording=recording, limits=limits, journal=journal, agents=agents, llm=llm, devices=devices, interlocks=interlocks, egress=egress, fleet=fleet, metrics=metrics, source=source
    )
