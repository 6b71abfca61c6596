"""The driver framework: what driver plugins import (and nothing of the kernel).

- :class:`Driver`, :func:`operation`, :class:`NoArgs`, :class:`Later`: the contract (see
  :mod:`clove.drivers.base`);
- :class:`DeviceGrant`, :class:`IdRanges`, :class:`TokenBucket`, :func:`deny`: grants;
- :func:`invalid`: how a config or grant dataclass refuses a value;
- :data:`hookimpl` and :class:`DriverRegistry`: registration through the ``clove.drivers``
  entry-point group;
- the device errors, re-exported from :mod:`clove.errors`.
"""

from clove.drivers.base import API_VERSION, Caller, Driver, NoArgs, OpSpec, operation
from clove.drivers.grants import DeviceGrant, IdRanges, TokenBucket, deny
from clove.drivers.later import Later
from clove.drivers.registry import DriverRegistry, hookimpl, load_drivers
from clove.drivers.schema import FieldError, invalid
from clove.errors import DeviceBroken, DeviceBusy, DeviceClosed, DeviceError, DeviceTimeout, DeviceUnavailable

__all__ = [
    "API_VERSION",
    "Caller",
    "DeviceBroken",
    "DeviceBusy",
    "DeviceClosed",
    "DeviceError",
    "DeviceGrant",
    "DeviceTimeout",
    "DeviceUnavailable",
    "Driver",
    "DriverRegistry",
    "FieldError",
    "IdRanges",
    "Later",
    "NoArgs",
    "OpSpec",
    "TokenBucket",
    "deny",
    "hookimpl",
    "invalid",
    "load_drivers",
    "operation",
]
