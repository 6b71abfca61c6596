"""Kernel configuration: one TOML file parsed into frozen dataclasses, validated at load time.

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the file,
the table and the key, e.g. ``configs/kernel.toml: [sandbox].backend: expected one of ...``.
The schema is documented in README.md ("Configuration"); the ``[llm]`` table in docs/llm.md.

This package never imports :mod:`clove.kernel`: the CLI and other processes load configs
without it. Its modules:

* :mod:`~clove.config.model`: the dataclasses (:class:`KernelConfig` and its sections) and
  constants;
* :mod:`~clove.config.values`: value parsers (sizes, CPU, pids, names) and :class:`Table`, the
  typed reader every table's parser uses;
* :mod:`~clove.config.devices`, :mod:`~clove.config.interlocks`, :mod:`~clove.config.llm`: the
  ``[devices]`` (and agents' device grants), ``[interlocks]`` and ``[llm]`` tables and their
  specs;
* :mod:`~clove.config.loader`: :func:`load_config` and the kernel's own tables.
"""

from clove.config.devices import DeviceSpec
from clove.config.interlocks import InterlockSpec
from clove.config.llm import LlmAgentSettings, LlmProviderConfig, LlmSection
from clove.config.loader import load_config
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
from clove.config.values import Table, parse_cpu, parse_memory, parse_pids, parse_size, validate_name

__all__ = [
    "BACKENDS",
    "DEFAULT_SOCKET",
    "DEVICE_WAIT_POLICIES",
    "LEVELS",
    "RESTART_POLICIES",
    "TABLES",
    "AgentConfig",
    "AgentLimits",
    "DeviceSpec",
    "InterlockSpec",
    "JournalSection",
    "KernelConfig",
    "KernelSection",
    "LimitsSection",
    "LlmAgentSettings",
    "LlmProviderConfig",
    "LlmSection",
    "LogsSection",
    "PostmortemSection",
    "RecordingSection",
    "RetentionSection",
    "SandboxSection",
    "SupervisorSection",
    "Table",
    "default_state_dir",
    "load_config",
    "parse_cpu",
    "parse_memory",
    "parse_pids",
    "parse_size",
    "validate_name",
]
