"""The ``[llm]`` table of the kernel config: the gateway's settings, its providers (each with
its plugin's options), and per-agent shares and limits. Parsed by :func:`parse_llm` from
:func:`clove.config.load_config`, in the same style: frozen dataclasses, and every mistake
named by file, table and key (``kernel.toml: [llm.providers.local].base_url: required``).
The gateway that uses them is :mod:`clove.llm` (and the kernel's ``llm`` service).

Parsing loads the allowlisted provider plugins (only those) to check each provider's options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from clove.config.values import Table, validate_name
from clove.errors import ConfigError
from clove.llm.options import OptionError, parse_options
from clove.llm.registry import load_registry

__all__ = ["LlmAgentSettings", "LlmEndpointSettings", "LlmProviderConfig", "LlmSection", "parse_llm"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmAgentSettings:
    """An agent's LLM share and limits (``[llm.defaults]``, ``[llm.agents.NAME]``). The agent's
    ``llm_tokens`` permission, when set, is its lifetime budget instead of ``budget``."""

    weight: float = 1.0
    budget: int | None = None  # lifetime tokens
    period_budget: int | None = None  # tokens per [llm].period
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmProviderConfig:
    """``[llm.providers.NAME]``: the keys every provider has, and its plugin's ``options``
    (an instance of the provider class's ``Options``)."""

    name: str
    kind: str
    model: str
    models: tuple[str, ...] = ()
    concurrency: int = 4
    rpm: int | None = None
    tpm: int | None = None
    timeout: float = 60.0  # seconds per attempt
    options: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmEndpointSettings:
    """``[llm.endpoint]``: the OpenAI-compatible HTTP endpoint on each agent's ``llm.sock``, and
    what one agent may make it hold (docs/llm.md, "Bring your own agent framework")."""

    enabled: bool = True
    max_connections: int = 16  # open connections per agent
    max_request_bytes: int = 4 * 1024 * 1024  # one request's body
    max_header_bytes: int = 16 * 1024  # one request's line and headers
    max_in_flight: int = 8  # requests per agent waiting for the gateway
    idle_timeout: float = 60.0  # seconds a connection may wait between requests (or take to send one)


_LLM_ENDPOINT_KEYS: Final = ("enabled", "max_connections", "max_request_bytes", "max_header_bytes", "max_in_flight", "idle_timeout")


def _llm_endpoint(t: Table) -> LlmEndpointSettings:
    base = LlmEndpointSettings()
    settings = LlmEndpointSettings(
        enabled=t.get("enabled", bool, base.enabled),
        **{key: t.positive(key, int, getattr(base, key)) for key in _LLM_ENDPOINT_KEYS[1:5]},
        idle_timeout=t.positive("idle_timeout", float, base.idle_timeout),
    )
    t.done()
    return settings


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmSection:
    """``[llm]``: the gateway. Absent: ``think`` answers ``llm.unavailable``."""

    plugins: tuple[str, ...] = ()
    providers: tuple[LlmProviderConfig, ...] = ()
    default_provider: str = ""
    record: bool = False
    max_timeout: float = 600.0
    max_retries: int = 3
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0
    max_tokens: int = 1024
    max_queue: int = 256
    period: float = 86400.0
    warn_at: float = 0.8
    defaults: LlmAgentSettings = field(default_factory=LlmAgentSettings)
    agents: dict[str, LlmAgentSettings] = field(default_factory=dict)
    endpoint: LlmEndpointSettings = field(default_factory=LlmEndpointSettings)

    def agent(self, name: str) -> LlmAgentSettings:
        return self.agents.get(name, self.defaults)


_LLM_AGENT_KEYS: Final = ("weight", "budget", "period_budget", "rpm", "tpm")
_LLM_PROVIDER_KEYS: Final = ("kind", "model", "models", "concurrency", "rpm", "tpm", "timeout")


def _count(t: Table, key: str, default: int | None) -> int | None:
    value: int | None = t.get(key, int, default)
    if value is not None and value < 0:
        raise t.fail(key, f"must be >= 0, got {value!r}")
    return value


def _llm_agent(t: Table, base: LlmAgentSettings) -> LlmAgentSettings:
    settings = LlmAgentSettings(
        weight=t.positive("weight", float, base.weight),
        budget=_count(t, "budget", base.budget),
        period_budget=_count(t, "period_budget", base.period_budget),
        rpm=t.positive("rpm", int, base.rpm),
        tpm=t.positive("tpm", int, base.tpm),
    )
    t.done()
    return settings


def _llm_provider(source: str, name: str, data: Any, registry: Any) -> LlmProviderConfig:
    where = f"llm.providers.{name}"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{where}]: expected a table, got {type(data).__name__}")
    try:
        validate_name(name)
    except ValueError as err:
        raise ConfigError(f"{source}: [{where}]: {str(err).replace('agent names', 'provider names')}") from None
    common = Table(source, where, {k: v for k, v in data.items() if k in _LLM_PROVIDER_KEYS})
    kind = common.get("kind", str, None)
    if kind is None:
        raise common.fail("kind", f"required: the provider kind (registered: {', '.join(registry.kinds()) or 'none'})")
    if kind not in registry:
        raise common.fail("kind", f"{kind!r} is not registered by an allowlisted plugin ([llm].plugins; registered: {', '.join(registry.kinds()) or 'none'})")
    model = common.get("model", str, None)
    if not model:
        raise common.fail("model", "required: the model asked for when a think names none")
    models = common.get("models", list, [])
    if not all(isinstance(m, str) and m for m in models):
        raise common.fail("models", "expected an array of model names")
    try:
        options = parse_options(registry.get(kind).Options, {k: v for k, v in data.items() if k not in _LLM_PROVIDER_KEYS})
    except OptionError as err:
        raise ConfigError(f"{source}: [{where}].{err.key}: {err.message}", details={"table": where, "key": err.key}) from None
    provider = LlmProviderConfig(
        name=name,
        kind=kind,
        model=model,
        models=tuple(models),
        concurrency=common.positive("concurrency", int, 4),
        rpm=common.positive("rpm", int, None),
        tpm=common.positive("tpm", int, None),
        timeout=common.positive("timeout", float, 60.0),
        options=options,
    )
    common.done()
    return provider


def parse_llm(source: str, raw: dict[str, Any]) -> LlmSection | None:
    """The ``[llm]`` table of a config file's ``raw`` TOML, or ``None`` without one.

    :raises ConfigError: naming the file, table and key of the first problem.
    """
    if "llm" not in raw:
        return None
    t = Table.top(source, raw, "llm")
    plugins = t.get("plugins", list, [])
    if not all(isinstance(p, str) and p for p in plugins):
        raise t.fail("plugins", "expected an array of plugin names (entry points in clove.llm_providers)")
    try:
        registry = load_registry(plugins)
    except ConfigError as err:
        raise t.fail("plugins", err.message) from None
    providers_raw = t.get("providers", dict, {})
    if not providers_raw:
        raise t.fail("providers", "at least one [llm.providers.NAME] table is needed")
    providers = tuple(_llm_provider(source, name, data, registry) for name, data in providers_raw.items())
    default_provider = t.get("default_provider", str, providers[0].name)
    if default_provider not in {p.name for p in providers}:
        raise t.fail("default_provider", f"no provider named {default_provider!r} (providers: {', '.join(p.name for p in providers)})")
    defaults_raw = t.get("defaults", dict, {})
    defaults = _llm_agent(Table(source, "llm.defaults", defaults_raw), LlmAgentSettings())
    agents: dict[str, LlmAgentSettings] = {}
    for name, data in t.get("agents", dict, {}).items():
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [llm.agents.{name}]: expected a table, got {type(data).__name__}")
        try:
            validate_name(name)
        except ValueError as err:
            raise ConfigError(f"{source}: [llm.agents.{name}]: {err}") from None
        agents[name] = _llm_agent(Table(source, f"llm.agents.{name}", data), defaults)
    section = LlmSection(
        plugins=tuple(plugins),
        providers=providers,
        default_provider=default_provider,
        record=t.get("record", bool, False),
        max_timeout=t.positive("max_timeout", float, 600.0),
        max_retries=_count(t, "max_retries", 3) or 0,
        retry_backoff=t.positive("retry_backoff", float, 0.5),
        retry_backoff_max=t.positive("retry_backoff_max", float, 30.0),
        max_tokens=t.positive("max_tokens", int, 1024),
        max_queue=t.positive("max_queue", int, 256),
        period=t.positive("period", float, 86400.0),
        warn_at=t.positive("warn_at", float, 0.8),
        defaults=defaults,
        agents=agents,
        endpoint=_llm_endpoint(Table(source, "llm.endpoint", t.get("endpoint", dict, {}))),
    )
    if section.warn_at > 1:
        raise t.fail("warn_at", f"a fraction of the budget, in (0, 1]; got {section.warn_at!r}")
    t.done()
    return section
