"""Clove's CAN driver plugin, on python-can: ``[devices.NAME] driver = "can"``.

Registered through the ``clove.drivers`` entry point like any third-party driver. Importing this
package does not import python-can (the kernel imports it to validate config and grants).
"""

from __future__ import annotations

from clove.drivers import DriverRegistry, hookimpl
from clove_driver_can.config import CanConfig
from clove_driver_can.driver import CanDriver
from clove_driver_can.filters import id_mask_cover
from clove_driver_can.frames import SendArgs, compile_filter
from clove_driver_can.grant import CanGrant

__all__ = ["CanConfig", "CanDriver", "CanGrant", "SendArgs", "clove_register_drivers", "compile_filter", "id_mask_cover"]


@hookimpl
def clove_register_drivers(registry: DriverRegistry) -> None:
    """Register the ``can`` driver kind."""
    registry.add("can", CanDriver)
