"""pyserial URL handlers for Clove (``serial.protocol_handler_packages`` names this package).

pyserial's ``serial_for_url("clove://NAME")`` imports ``protocol_clove`` from here; see
:mod:`clove_sdk.serial_handlers.protocol_clove`. Register with ``import clove_sdk.pyserial``.
"""
