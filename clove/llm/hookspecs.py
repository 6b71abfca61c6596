"""Hook specifications for LLM provider plugins (pluggy project ``"clove"``).

A plugin is a module (or object) named by an entry point in the group ``clove.llm_providers``;
it is loaded only when the kernel config allowlists that entry point's name in
``[llm].plugins``. Hooks are for discovery only: completions go through
:class:`clove.llm.Provider` methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from clove.llm.registry import ProviderRegistry

hookspec = pluggy.HookspecMarker("clove")


@hookspec
def clove_register_llm_providers(registry: ProviderRegistry) -> None:
    """Register the provider kinds this plugin implements.

    Called once per plugin manager, after the allowlisted plugins are loaded and before any
    provider is built (at config load, and again at kernel boot). Implementations call
    ``registry.add(kind, ProviderClass)``; a kind is what ``[llm.providers.NAME].kind`` names.

    :param registry: the typed registry to add to. Adding a kind twice raises.
    :returns: nothing; the registry is the result.

    .. versionadded:: 0.1
    """
