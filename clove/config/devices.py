"""``[devices.NAME]`` tables and ``[agents.A.devices.NAME]`` grants, parsed at config load.
(A spawn's grants, given over the wire, go through :func:`parse_grant` too.)

A device table holds the framework's keys (below) and the driver's own keys, which its
``Config`` dataclass validates. Only the drivers named by ``driver`` (or ``plugin``) are loaded:
the config is the allowlist. Errors name the file, the table and the key. Schema: docs/devices.md.

Framework keys::

    driver             the driver kind, e.g. "can", "serial", "gpio" (required)
    plugin             the clove.drivers entry point providing it (default: the driver kind)
    limits             the host process's cgroup: { memory = "64M", cpu = "20%", pids = 16 };
                       each key not given keeps its default (memory 128M, pids 32, no cpu limit)
    heartbeat_timeout  seconds without a host heartbeat before it is killed and restarted (5);
                       more than call_timeout, since an operation holds the host's main loop
    call_timeout       seconds an operation may take before the caller gets device.timeout (2)
    queue              a subscriber's queue, in items (1024)
    queue_bytes        a subscriber's queue for byte streams, in bytes (65536)
    backoff_initial    first restart delay, doubling per consecutive failure (0.2)
    backoff_max        restart delay cap (10)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from clove.config.values import parse_cpu, parse_memory, parse_pids
from clove.drivers.base import Driver
from clove.drivers.grants import DeviceGrant
from clove.drivers.registry import DriverRegistry, load_drivers
from clove.drivers.schema import FieldError, build
from clove.errors import ConfigError
from clove.sandbox.limits import Limits

__all__ = ["DEFAULT_HOST_LIMITS", "FRAMEWORK_KEYS", "DeviceSpec", "parse_agent_grants", "parse_devices", "parse_grant"]

FRAMEWORK_KEYS: Final = frozenset(
    {"driver", "plugin", "limits", "heartbeat_timeout", "call_timeout", "queue", "queue_bytes", "backoff_initial", "backoff_max"}
)
_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,47}$")
DEFAULT_HOST_LIMITS: Final = {"memory": "128M", "pids": 32}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    """One configured device: its driver and how the kernel runs the driver's host."""

    name: str
    driver: str
    plugin: str
    driver_class: type[Driver] = field(compare=False, repr=False)
    config: Any = field(compare=False)
    #: The driver's own keys as written, handed to the host (which parses them again).
    raw: dict[str, Any] = field(compare=False, repr=False)
    limits: Limits
    heartbeat_timeout: float = 5.0
    call_timeout: float = 2.0
    queue: int = 1024
    queue_bytes: int = 65536
    backoff_initial: float = 0.2
    backoff_max: float = 10.0


def _fail(source: str, where: str, key: str, message: str) -> ConfigError:
    suffix = f".{key}" if key else ""
    return ConfigError(f"{source}: [{where}]{suffix}: {message}", details={"table": where, "key": key})


def parse_devices(source: str, raw: dict[str, Any]) -> tuple[tuple[DeviceSpec, ...], DriverRegistry | None]:
    """The ``[devices]`` tables of a config, and the registry of the drivers they load.

    :raises ConfigError: naming the file, table and key of the first problem.
    """
    tables = raw.get("devices", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: [devices]: expected a table of device tables")
    if not tables:
        return (), None
    plugins: dict[str, tuple[str, str]] = {}  # plugin → the (table, key) that first named it
    for name, data in tables.items():
        where = f"devices.{name}"
        if not isinstance(data, dict):
            raise _fail(source, where, "", f"expected a table, got {type(data).__name__}")
        if not _NAME_RE.fullmatch(name):
            raise _fail(source, where, "", "device names are 1-48 of [A-Za-z0-9_-], starting with a letter")
        driver = data.get("driver")
        if not isinstance(driver, str) or not driver:
            raise _fail(source, where, "driver", "required: the driver kind, e.g. \"can\"")
        plugin = data.get("plugin", driver)
        if not isinstance(plugin, str) or not plugin:
            raise _fail(source, where, "plugin", f"expected a string, got {plugin!r}")
        plugins.setdefault(plugin, (where, "plugin" if "plugin" in data else "driver"))
    registry = None
    for plugin, (where, key) in plugins.items():
        try:  # one at a time, so an error names the table that asked for the plugin
            registry = load_drivers(list(plugins)[: list(plugins).index(plugin) + 1])
        except ConfigError as err:
            raise _fail(source, where, key, err.message) from None
    assert registry is not None  # noqa: S101 - tables is not empty
    specs = tuple(_device(source, name, data, registry) for name, data in tables.items())
    return specs, registry


def _device(source: str, name: str, data: dict[str, Any], registry: DriverRegistry) -> DeviceSpec:
    where = f"devices.{name}"
    kind = data["driver"]
    if kind not in registry:
        raise _fail(source, where, "driver", f"no loaded plugin provides driver {kind!r} (provided: {', '.join(registry.kinds()) or 'none'})")
    cls = registry.get(kind)
    driver_keys = {k: v for k, v in data.items() if k not in FRAMEWORK_KEYS}
    try:
        config = cls.parse_config(driver_keys)
    except FieldError as err:
        raise _fail(source, where, err.key, err.message) from None
    return DeviceSpec(
        name=name,
        driver=kind,
        plugin=str(data.get("plugin", kind)),
        driver_class=cls,
        config=config,
        raw=driver_keys,
        limits=_limits(source, where, data.get("limits", {})),
        heartbeat_timeout=_heartbeat(source, where, data),
        call_timeout=_positive(source, where, data, "call_timeout", 2.0),
        queue=int(_positive(source, where, data, "queue", 1024, kind=int)),
        queue_bytes=int(_positive(source, where, data, "queue_bytes", 65536, kind=int)),
        backoff_initial=_positive(source, where, data, "backoff_initial", 0.2),
        backoff_max=_positive(source, where, data, "backoff_max", 10.0),
    )


def _heartbeat(source: str, where: str, data: dict[str, Any]) -> float:
    call = _positive(source, where, data, "call_timeout", 2.0)
    beat = _positive(source, where, data, "heartbeat_timeout", max(5.0, call + 1.0))
    if beat <= call:
        raise _fail(source, where, "heartbeat_timeout", f"must be more than call_timeout ({call:g} s): a call holds the host's loop")
    return beat


def _positive(source: str, where: str, data: dict[str, Any], key: str, default: float, *, kind: type = float) -> float:
    value = data.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok or not value > 0:
        noun = "a positive int" if kind is int else "a positive number"
        raise _fail(source, where, key, f"expected {noun}, got {value!r}")
    return float(value)


def _limits(source: str, where: str, value: Any) -> Limits:
    if not isinstance(value, dict):
        raise _fail(source, where, "limits", f"expected a table like {{ memory = \"64M\", pids = 16 }}, got {value!r}")
    parsers = {"memory": parse_memory, "cpu": parse_cpu, "pids": parse_pids}
    parsed: dict[str, int] = {}
    for key, item in {**DEFAULT_HOST_LIMITS, **value}.items():  # a table overrides defaults key by key
        if key not in parsers:
            raise _fail(source, where, f"limits.{key}", "unknown key (known: cpu, memory, pids)")
        try:
            parsed[key] = parsers[key](item)
        except ValueError as err:
            raise _fail(source, where, f"limits.{key}", str(err)) from None
    return Limits(memory_bytes=parsed.get("memory"), cpu_quota_us=parsed.get("cpu"), pids=parsed.get("pids"))


def parse_grant(device: DeviceSpec, data: Any) -> DeviceGrant:
    """One agent's grant on ``device``.

    :raises FieldError: naming the key (``ops`` for an operation the driver does not have).
    """
    if not isinstance(data, dict):
        raise FieldError("", f"expected a table like {{ ops = [...] }}, got {type(data).__name__}")
    grant = build(device.driver_class.Grant, data)
    known = device.driver_class.grant_ops()
    unknown = [op for op in grant.ops if op not in known]
    if unknown:
        raise FieldError("ops", f"driver {device.driver!r} has no operation {unknown[0]!r} (it has: {', '.join(known)})")
    return grant


def parse_agent_grants(source: str, agent: str, data: Any, devices: dict[str, DeviceSpec]) -> dict[str, DeviceGrant]:
    """``[agents.A.devices]``: device name → grant.

    :raises ConfigError: naming the file, table and key.
    """
    where = f"agents.{agent}.devices"
    if not isinstance(data, dict):
        raise _fail(source, where, "", "expected a table of device grants")
    grants: dict[str, DeviceGrant] = {}
    for name, table in data.items():
        if name not in devices:
            raise _fail(source, f"{where}.{name}", "", f"no device {name!r} is configured (devices: {', '.join(devices) or 'none'})")
        try:
            grants[name] = parse_grant(devices[name], table)
        except FieldError as err:
            raise _fail(source, f"{where}.{name}", err.key, err.message) from None
    return grants
