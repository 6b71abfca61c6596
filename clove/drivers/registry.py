"""Driver discovery: a fresh :class:`pluggy.PluginManager` per call, the driver hookspecs, and
only the allowlisted entry points of the ``clove.drivers`` group (set up like eggsample's
``get_plugin_manager()``; registration takes a typed registry, like tox's
``tox_register_tox_env(register)``).

Clove's own drivers (``serial``, ``can``, ``gpio``) are separate distributions under
``plugins/`` whose entry points sit in this group exactly as a third party's would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, final

import pluggy

from clove.drivers import hookspecs
from clove.drivers.base import API_VERSION, Driver
from clove.errors import ConfigError
from clove.plugins import KindRegistry, installed, load_allowlisted

__all__ = ["ENTRY_POINT_GROUP", "DriverRegistry", "get_plugin_manager", "hookimpl", "installed_drivers", "load_drivers"]

ENTRY_POINT_GROUP: Final = "clove.drivers"
hookimpl = pluggy.HookimplMarker("clove")


@final
class DriverRegistry(KindRegistry[Driver]):
    """Driver kinds to classes, filled by ``clove_register_drivers`` implementations."""

    base = Driver
    base_name = "clove.drivers.Driver"
    what = "driver"

    def check(self, kind: str, cls: type[Driver]) -> None:
        """A driver must target this contract version and have a Config."""
        if getattr(cls, "api_version", None) != API_VERSION:
            raise ValueError(f"driver kind {kind!r}: {cls.__qualname__} targets driver API {cls.api_version}, this Clove has {API_VERSION}")
        if not hasattr(cls, "Config"):
            raise ValueError(f"driver kind {kind!r}: {cls.__qualname__} has no Config dataclass")


def get_plugin_manager() -> pluggy.PluginManager:
    """A new manager with the driver hookspecs and no plugins loaded yet."""
    pm = pluggy.PluginManager("clove")
    pm.add_hookspecs(hookspecs)
    return pm


def installed_drivers() -> list[str]:
    """Names of the entry points in :data:`ENTRY_POINT_GROUP` (nothing is imported)."""
    return installed(ENTRY_POINT_GROUP)


def load_drivers(allow: Iterable[str], *, pm: pluggy.PluginManager | None = None) -> DriverRegistry:
    """Load the allowlisted driver plugins, check every hook has a spec, collect their kinds.

    :raises ConfigError: a named plugin is not installed, fails to import, or registers badly.
    """
    pm = pm if pm is not None else get_plugin_manager()
    load_allowlisted(pm, ENTRY_POINT_GROUP, allow, "driver")
    registry = DriverRegistry()
    try:
        pm.hook.clove_register_drivers(registry=registry)
    except ValueError as err:
        raise ConfigError(f"driver plugins: {err}") from None
    return registry
