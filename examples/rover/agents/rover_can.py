"""The rover's CAN protocol, shared by its agents (not an agent itself).

Every frame is little-endian and decoded with :mod:`struct`, so no agent needs cantools or a
DBC file:

========  ============  =====  ==========================================================
id        name          bytes  layout
========  ============  =====  ==========================================================
0x101     MotorCommand  4      left_speed int16 mm/s, right_speed int16 mm/s (navigator)
0x181     Odometry      8      left_speed int16, right_speed int16 (actual mm/s),
                               distance uint32 mm (motor controller, every 20 ms)
0x1F0     MotorFault    3      code uint8 (1 out of range, 2 command timeout), value int16
========  ============  =====  ==========================================================

Agents import it by name: the kernel runs an agent with its script's directory first on
``sys.path``, and that directory is visible (read-only) inside the sandbox.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MOTOR_COMMAND_ID = 0x101
ODOMETRY_ID = 0x181
MOTOR_FAULT_ID = 0x1F0

#: The motor controller's accepted range; anything outside it raises fault 1.
MAX_SPEED_MM_S = 800

_COMMAND = struct.Struct("<hh")
_ODOMETRY = struct.Struct("<hhI")
_FAULT = struct.Struct("<Bh")

FAULT_NAMES = {1: "out of range", 2: "command timeout"}


class Odometry(NamedTuple):
    left: int  #: actual left wheel speed, mm/s
    right: int  #: actual right wheel speed, mm/s
    distance: int  #: odometer, mm (uint32: wraps after ~4295 km)


class MotorFault(NamedTuple):
    code: int
    value: int

    @property
    def name(self) -> str:
        return FAULT_NAMES.get(self.code, f"unknown fault {self.code}")


def clamp_speed(value: float, limit: int = MAX_SPEED_MM_S) -> int:
    """``value`` (mm/s) rounded and held within ``±limit``."""
    return max(-limit, min(limit, int(round(value))))


def encode_motor_command(left: float, right: float) -> bytes:
    """The 4 data bytes of a 0x101 MotorCommand; speeds are clamped to ±800 mm/s."""
    return _COMMAND.pack(clamp_speed(left), clamp_speed(right))


def decode_motor_command(data: bytes) -> tuple[int, int]:
    """``(left, right)`` mm/s of a 0x101 frame. :raises ValueError: not 4 bytes."""
    _check(data, _COMMAND.size, "MotorCommand")
    left, right = _COMMAND.unpack(bytes(data))
    return left, right


def decode_odometry(data: bytes) -> Odometry:
    """A 0x181 Odometry frame. :raises ValueError: not 8 bytes."""
    _check(data, _ODOMETRY.size, "Odometry")
    return Odometry(*_ODOMETRY.unpack(bytes(data)))


def decode_fault(data: bytes) -> MotorFault:
    """A 0x1F0 MotorFault frame. :raises ValueError: not 3 bytes."""
    _check(data, _FAULT.size, "MotorFault")
    return MotorFault(*_FAULT.unpack(bytes(data)))


def odometer_delta(previous: int, current: int) -> int:
    """Millimetres travelled between two odometer readings, across the uint32 wrap."""
    return (current - previous) % (1 << 32)


def _check(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise ValueError(f"{what} frame has {len(data)} bytes, expected {size}")
