"""Device grants given to a spawn over the wire (``spawn {devices: {...}}``).

The ``[devices.NAME]`` tables, ``[agents.A.devices.NAME]`` grants and :class:`DeviceSpec` are
parsed at config load, in :mod:`clove.config.devices`; this is the kernel's side of the same
grant schema.
"""

from __future__ import annotations

from typing import Any

from clove.config.devices import DeviceSpec, parse_grant
from clove.drivers.grants import DeviceGrant
from clove.drivers.schema import FieldError
from clove.errors import InvalidArguments

__all__ = ["grants_from_wire"]


def grants_from_wire(data: Any, devices: dict[str, DeviceSpec]) -> dict[str, DeviceGrant]:
    """Grants given to a spawn over the wire (``spawn {devices: {...}}``).

    :raises InvalidArguments: naming the device and key.
    """
    if not isinstance(data, dict):
        raise InvalidArguments("devices must be a map of device name to grant")
    grants: dict[str, DeviceGrant] = {}
    for name, table in data.items():
        if name not in devices:
            raise InvalidArguments(f"devices: no device {name!r} is configured", details={"device": name})
        try:
            grants[name] = parse_grant(devices[name], table)
        except FieldError as err:
            raise InvalidArguments(f"devices.{name}: {err}", details={"device": name, "key": err.key}) from None
    return grants
