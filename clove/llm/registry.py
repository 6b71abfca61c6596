"""Provider discovery: a fresh :class:`pluggy.PluginManager` per call (never a global), the
hookspecs, and only the allowlisted entry points of the ``clove.llm_providers`` group.

Set up like eggsample's ``get_plugin_manager()``; registration takes a typed registry, like
tox's ``tox_register_tox_env(register)``. Our own providers (``openai``, ``scripted``) are
entry points in Clove's ``pyproject.toml``, registered exactly as a third party's would be.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, final

import pluggy

from clove.errors import ConfigError
from clove.llm import hookspecs
from clove.llm.provider import Provider
from clove.plugins import KindRegistry, installed, load_allowlisted

__all__ = ["ENTRY_POINT_GROUP", "ProviderRegistry", "get_plugin_manager", "hookimpl", "installed_plugins", "load_registry"]

ENTRY_POINT_GROUP: Final = "clove.llm_providers"
hookimpl = pluggy.HookimplMarker("clove")


@final
class ProviderRegistry(KindRegistry[Provider]):
    """Provider kinds to classes, filled by ``clove_register_llm_providers`` implementations."""

    base = Provider
    base_name = "clove.llm.Provider"
    what = "LLM provider"


def get_plugin_manager() -> pluggy.PluginManager:
    """A new manager with the LLM hookspecs and no plugins loaded yet."""
    pm = pluggy.PluginManager("clove")
    pm.add_hookspecs(hookspecs)
    return pm


def installed_plugins() -> list[str]:
    """Names of the entry points in :data:`ENTRY_POINT_GROUP` (nothing is imported)."""
    return installed(ENTRY_POINT_GROUP)


def load_registry(allow: Iterable[str], *, pm: pluggy.PluginManager | None = None) -> ProviderRegistry:
    """Load the allowlisted plugins into ``pm`` (a fresh one by default), check every hook has a
    spec, and collect their provider kinds.

    :raises ConfigError: an allowlisted plugin is not installed, fails to import, or registers
        badly.
    """
    pm = pm if pm is not None else get_plugin_manager()
    load_allowlisted(pm, ENTRY_POINT_GROUP, allow, "LLM provider")
    registry = ProviderRegistry()
    try:
        pm.hook.clove_register_llm_providers(registry=registry)
    except ValueError as err:
        raise ConfigError(f"LLM provider plugins: {err}") from None
    return registry
