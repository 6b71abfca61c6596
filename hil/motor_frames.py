"""The rover's motor frames on CAN (``hil/rover.dbc``, little-endian): their ids, and encoding and
decoding them with cantools.

* ``0x101 MotorCommand`` (navigator → controller): ``left_speed``, ``right_speed`` int16 mm/s.
* ``0x181 Odometry`` (controller): actual ``left_speed``, ``right_speed`` int16 mm/s,
  ``distance`` uint32 mm travelled in total (mean of both wheels' absolute travel).
* ``0x1F0 MotorFault`` (controller): ``code`` uint8 (1 = command out of range, 2 = command
  timeout), ``value`` int16 (the rejected speed for code 1, 0 for code 2).

The simulated controller that speaks them is :class:`hil.motor.MotorController`; every name here
is importable from :mod:`hil.motor` too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import can
import cantools
from cantools.database.can import Database

__all__ = [
    "DBC_PATH",
    "FAULT_OUT_OF_RANGE",
    "FAULT_TIMEOUT",
    "ID_COMMAND",
    "ID_FAULT",
    "ID_ODOMETRY",
    "Fault",
    "Odometry",
    "decode_command",
    "decode_fault",
    "decode_odometry",
    "encode_command",
    "encode_fault",
    "encode_odometry",
    "load_dbc",
]

DBC_PATH: Final = Path(__file__).with_name("rover.dbc")
ID_COMMAND: Final = 0x101
ID_ODOMETRY: Final = 0x181
ID_FAULT: Final = 0x1F0
FAULT_OUT_OF_RANGE: Final = 1
FAULT_TIMEOUT: Final = 2


@functools.cache
def load_dbc() -> Database:
    """The rover's CAN database (``hil/rover.dbc``), loaded once."""
    db = cantools.database.load_file(str(DBC_PATH))
    assert isinstance(db, Database)
    return db


@dataclass(frozen=True, slots=True)
class Odometry:
    t: float
    left: int
    right: int
    distance: int


@dataclass(frozen=True, slots=True)
class Fault:
    t: float
    code: int
    value: int


def encode_command(left: int, right: int) -> can.Message:
    """A ``MotorCommand`` frame (any int16 speeds: out-of-range ones are the controller's business).

    :raises cantools.database.EncodeError: a speed outside int16.
    """
    data = load_dbc().encode_message(ID_COMMAND, {"left_speed": int(left), "right_speed": int(right)})
    return can.Message(arbitration_id=ID_COMMAND, data=data, is_extended_id=False)


def encode_odometry(left: int, right: int, distance: int) -> can.Message:
    data = load_dbc().encode_message(
        ID_ODOMETRY, {"left_speed": int(left), "right_speed": int(right), "distance": int(distance)}
    )
    return can.Message(arbitration_id=ID_ODOMETRY, data=data, is_extended_id=False)


def encode_fault(code: int, value: int) -> can.Message:
    data = load_dbc().encode_message(ID_FAULT, {"code": int(code), "value": int(value)})
    return can.Message(arbitration_id=ID_FAULT, data=data, is_extended_id=False)


def _decode(frame_id: int, msg: can.Message) -> dict[str, int]:
    if msg.arbitration_id != frame_id or msg.is_extended_id or msg.is_remote_frame or msg.is_error_frame:
        raise ValueError(f"not a {frame_id:#x} data frame: {msg}")
    decoded = load_dbc().decode_message(frame_id, bytes(msg.data), decode_choices=False, scaling=False)
    if not isinstance(decoded, dict):  # a multiplexed container: not in this protocol
        raise ValueError(f"unexpected container frame {frame_id:#x}")
    return {name: int(value) for name, value in decoded.items() if isinstance(value, (int, float))}


def decode_command(msg: can.Message) -> tuple[int, int]:
    """``(left, right)`` mm/s. :raises ValueError: not a well-formed ``MotorCommand``."""
    try:
        values = _decode(ID_COMMAND, msg)
    except ValueError:
        raise
    except Exception as err:  # cantools' DecodeError and friends (a short frame)
        raise ValueError(f"malformed MotorCommand {msg}: {err}") from err
    return values["left_speed"], values["right_speed"]


def decode_odometry(msg: can.Message) -> Odometry:
    """:raises ValueError: not a well-formed ``Odometry`` frame."""
    try:
        values = _decode(ID_ODOMETRY, msg)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"malformed Odometry {msg}: {err}") from err
    return Odometry(msg.timestamp, values["left_speed"], values["right_speed"], values["distance"])


def decode_fault(msg: can.Message) -> Fault:
    """:raises ValueError: not a well-formed ``MotorFault`` frame."""
    try:
        values = _decode(ID_FAULT, msg)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"malformed MotorFault {msg}: {err}") from err
    return Fault(msg.timestamp, values["code"], values["value"])
