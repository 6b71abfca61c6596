"""Provider discovery: a fresh :class:`pluggy.PluginManager` per call (never a global), the
hookspecs, and only the allowlisted entry points of the ``clove.llm_providers`` group.

Set up like eggsample's ``get_plugin_manager()``; registration takes a typed registry, like
tox's ``tox_register_tox_env(register)``. Our own providers (``openai``, ``scripted``) are
entry points in Clove's ``pyproject.toml``, registered exactly as a third party's would be.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Final, final

import pluggy

from clove.errors import ConfigError
from clove.llm import hookspecs
from clove.llm.provider import Provider

__all__ = ["ENTRY_POINT_GROUP", "ProviderRegistry", "get_plugin_manager", "hookimpl", "installed_plugins", "load_registry"]

ENTRY_POINT_GROUP: Final = "clove.llm_providers"
hookimpl = pluggy.HookimplMarker("clove")


@final
class ProviderRegistry:
    """Provider kinds to classes, filled by ``clove_register_llm_providers`` implementations."""

    def __init__(self) -> None:
        self._kinds: dict[str, type[Provider]] = {}

    def add(self, kind: str, cls: type[Provider]) -> None:
        """:raises ValueError: an empty or duplicate kind, or a class that is not a Provider."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"an LLM provider kind must be a non-empty string, got {kind!r}")
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise ValueError(f"LLM provider kind {kind!r}: {cls!r} is not a clove.llm.Provider subclass")
        if kind in self._kinds and self._kinds[kind] is not cls:
            raise ValueError(f"LLM provider kind {kind!r} is registered twice ({self._kinds[kind].__qualname__}, {cls.__qualname__})")
        self._kinds[kind] = cls

    def get(self, kind: str) -> type[Provider]:
        """:raises KeyError: no plugin registered ``kind``."""
        return self._kinds[kind]

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds


def get_plugin_manager() -> pluggy.PluginManager:
    """A new manager with the LLM hookspecs and no plugins loaded yet."""
    pm = pluggy.PluginManager("clove")
    pm.add_hookspecs(hookspecs)
    return pm


def installed_plugins() -> list[str]:
    """Names of the entry points in :data:`ENTRY_POINT_GROUP` (nothing is imported)."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def load_registry(allow: Iterable[str], *, pm: pluggy.PluginManager | None = None) -> ProviderRegistry:
    """Load the allowlisted plugins into ``pm`` (a fresh one by default), check every hook has a
    spec, and collect their provider kinds.

    :raises ConfigError: an allowlisted plugin is not installed, fails to import, or registers
        badly.
    """
    pm = pm if pm is not None else get_plugin_manager()
    for name in allow:
        if pm.has_plugin(name):
            continue
        try:
            count = pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        except Exception as err:  # noqa: BLE001 - a broken plugin is a config problem, named
            raise ConfigError(f"LLM provider plugin {name!r} failed to load: {type(err).__name__}: {err}") from err
        if count == 0 and not pm.has_plugin(name):
            installed = ", ".join(installed_plugins()) or "none"
            raise ConfigError(
                f"LLM provider plugin {name!r} is not installed (entry point group {ENTRY_POINT_GROUP}; installed: {installed})",
                details={"plugin": name},
            )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise ConfigError(f"LLM provider plugin {pm.get_name(err.plugin) or err.plugin!r}: {err}") from None
    registry = ProviderRegistry()
    try:
        pm.hook.clove_register_llm_providers(registry=registry)
    except ValueError as err:
        raise ConfigError(f"LLM provider plugins: {err}") from None
    return registry
