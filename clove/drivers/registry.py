"""Driver discovery: a fresh :class:`pluggy.PluginManager` per call, the driver hookspecs, and
only the allowlisted entry points of the ``clove.drivers`` group (set up like eggsample's
``get_plugin_manager()``; registration takes a typed registry, like tox's
``tox_register_tox_env(register)``).

Clove's own drivers (``serial``, ``can``, ``gpio``) are separate distributions under
``plugins/`` whose entry points sit in this group exactly as a third party's would.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Final, final

import pluggy

from clove.drivers import hookspecs
from clove.drivers.base import API_VERSION, Driver
from clove.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "DriverRegistry", "get_plugin_manager", "hookimpl", "installed_drivers", "load_drivers"]

ENTRY_POINT_GROUP: Final = "clove.drivers"
hookimpl = pluggy.HookimplMarker("clove")


@final
class DriverRegistry:
    """Driver kinds to classes, filled by ``clove_register_drivers`` implementations."""

    def __init__(self) -> None:
        self._kinds: dict[str, type[Driver]] = {}

    def add(self, kind: str, cls: type[Driver]) -> None:
        """:raises ValueError: an empty or duplicate kind, a class that is not a Driver, or
        one written for another contract version."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"a driver kind must be a non-empty string, got {kind!r}")
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            raise ValueError(f"driver kind {kind!r}: {cls!r} is not a clove.drivers.Driver subclass")
        if getattr(cls, "api_version", None) != API_VERSION:
            raise ValueError(f"driver kind {kind!r}: {cls.__qualname__} targets driver API {cls.api_version}, this Clove has {API_VERSION}")
        if not hasattr(cls, "Config"):
            raise ValueError(f"driver kind {kind!r}: {cls.__qualname__} has no Config dataclass")
        if kind in self._kinds and self._kinds[kind] is not cls:
            raise ValueError(f"driver kind {kind!r} is registered twice ({self._kinds[kind].__qualname__}, {cls.__qualname__})")
        self._kinds[kind] = cls

    def get(self, kind: str) -> type[Driver]:
        """:raises KeyError: no plugin registered ``kind``."""
        return self._kinds[kind]

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds


def get_plugin_manager() -> pluggy.PluginManager:
    """A new manager with the driver hookspecs and no plugins loaded yet."""
    pm = pluggy.PluginManager("clove")
    pm.add_hookspecs(hookspecs)
    return pm


def installed_drivers() -> list[str]:
    """Names of the entry points in :data:`ENTRY_POINT_GROUP` (nothing is imported)."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def load_drivers(allow: Iterable[str], *, pm: pluggy.PluginManager | None = None) -> DriverRegistry:
    """Load the allowlisted driver plugins, check every hook has a spec, collect their kinds.

    :raises ConfigError: a named plugin is not installed, fails to import, or registers badly.
    """
    pm = pm if pm is not None else get_plugin_manager()
    for name in allow:
        if pm.has_plugin(name):
            continue
        try:
            count = pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        except Exception as err:  # noqa: BLE001 - a broken plugin is a config problem, named
            raise ConfigError(f"driver plugin {name!r} failed to load: {type(err).__name__}: {err}", details={"plugin": name}) from err
        if count == 0 and not pm.has_plugin(name):
            installed = ", ".join(installed_drivers()) or "none"
            raise ConfigError(
                f"driver plugin {name!r} is not installed (entry point group {ENTRY_POINT_GROUP}; installed: {installed})",
                details={"plugin": name},
            )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise ConfigError(f"driver plugin {pm.get_name(err.plugin) or err.plugin!r}: {err}") from None
    registry = DriverRegistry()
    try:
        pm.hook.clove_register_drivers(registry=registry)
    except ValueError as err:
        raise ConfigError(f"driver plugins: {err}") from None
    return registry
