"""Clove's serial driver plugin (entry point ``serial`` in the ``clove.drivers`` group).

Registered exactly as a third party's driver would be: the kernel and driver hosts load this
module only when a device table says ``driver = "serial"``. Importing it imports no pyserial;
the driver does that when it opens a port.
"""

from __future__ import annotations

from clove.drivers import DriverRegistry, hookimpl
from clove_driver_serial.config import SerialConfig, SerialGrant, SetModemArgs, WriteArgs
from clove_driver_serial.driver import SerialDriver

__all__ = [
    "SerialConfig",
    "SerialDriver",
    "SerialGrant",
    "SetModemArgs",
    "WriteArgs",
    "clove_register_drivers",
]


@hookimpl
def clove_register_drivers(registry: DriverRegistry) -> None:
    """Add the ``serial`` kind."""
    registry.add("serial", SerialDriver)
