"""Hook specifications for driver plugins (pluggy project ``"clove"``).

A driver plugin is a module named by an entry point in the group ``clove.drivers``; the kernel
and driver hosts load it only when the deployment config names that entry point in a device's
``driver`` key (an explicit allowlist: nothing installed is loaded otherwise). Hooks are for
discovery only: device I/O goes through :class:`clove.drivers.Driver` methods, because a hook
call broadcasts to every plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from clove.drivers.registry import DriverRegistry

hookspec = pluggy.HookspecMarker("clove")


@hookspec
def clove_register_drivers(registry: DriverRegistry) -> None:
    """Register the driver kinds this plugin implements.

    Called once per plugin manager, after the allowlisted plugins are loaded: at config load in
    the kernel (to validate device tables and grants) and in each driver host before it opens its
    device. Implementations call ``registry.add(kind, DriverClass)``; a kind is what
    ``[devices.NAME].driver`` names. Import vendor libraries inside the driver, not here.

    :param registry: the typed registry to add to. Adding a kind twice raises.
    :returns: nothing; the registry is the result.

    .. versionadded:: 0.1
    """
