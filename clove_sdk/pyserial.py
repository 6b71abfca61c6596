"""Let pyserial open Clove devices: after ``import clove_sdk.pyserial``,
``serial.serial_for_url("clove://gps", timeout=1)`` is a port on the kernel's ``gps`` device.

pyserial finds URL handlers by importing ``<package>.protocol_<scheme>`` for each package in
``serial.protocol_handler_packages``; importing this module adds
:mod:`clove_sdk.serial_handlers` to that list (once, however often it is imported or
:func:`register` is called). The handler itself is
:mod:`clove_sdk.serial_handlers.protocol_clove`.
"""

from __future__ import annotations

import serial

__all__ = ["HANDLER_PACKAGE", "register"]

HANDLER_PACKAGE = "clove_sdk.serial_handlers"


def register() -> None:
    """Make ``clove://`` URLs known to :func:`serial.serial_for_url` (idempotent)."""
    if HANDLER_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(HANDLER_PACKAGE)


register()
