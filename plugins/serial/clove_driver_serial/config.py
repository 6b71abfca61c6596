"""What an operator configures and what an agent is granted for a serial port.

The kernel imports this module to validate ``[devices.NAME]`` tables and grants, so it imports
nothing from pyserial: the driver (:mod:`clove_driver_serial.driver`) does that when it opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clove.drivers import DeviceGrant, deny, invalid

__all__ = ["SerialConfig", "SerialGrant", "SetModemArgs", "WriteArgs"]

PARITIES = ("N", "E", "O", "M", "S")
STOPBITS = (1.0, 1.5, 2.0)


@dataclass(frozen=True, slots=True)
class SerialConfig:
    """One serial port (``[devices.NAME]`` with ``driver = "serial"``).

    :param port: any name pyserial opens: ``/dev/ttyUSB0``, a pty slave, ``loop://``,
        ``socket://host:port``, ``rfc2217://host:port``.
    :param baudrate: bits per second (a pty ignores it).
    :param bytesize: data bits, 5 to 8.
    :param parity: ``N``, ``E``, ``O``, ``M`` or ``S``.
    :param stopbits: 1, 1.5 or 2.
    :param xonxoff: software flow control.
    :param rtscts: RTS/CTS hardware flow control.
    :param dsrdtr: DSR/DTR hardware flow control.
    :param exclusive: take an advisory lock on a tty so a second opener fails instead of
        stealing bytes (POSIX ttys only; URLs have no lock).
    :param read_chunk: the most bytes one read returns.
    :param write_timeout: seconds a write or flush may wait for the port to drain before it
        fails with DeviceTimeout (a stalled peer must not hang the driver host); keep it below the
        device's call_timeout (2 s by default) so the caller gets the timeout, not a host restart.
    """

    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False
    dsrdtr: bool = False
    exclusive: bool = True
    read_chunk: int = 4096
    write_timeout: float = 1.5

    def __post_init__(self) -> None:
        if not self.port.strip():
            raise invalid("port", "must name a port, e.g. '/dev/ttyUSB0' or 'socket://host:port'")
        if self.baudrate <= 0:
            raise invalid("baudrate", f"must be positive, got {self.baudrate}")
        if not 5 <= self.bytesize <= 8:
            raise invalid("bytesize", f"must be 5, 6, 7 or 8, got {self.bytesize}")
        if self.parity not in PARITIES:
            raise invalid("parity", f"must be one of {', '.join(PARITIES)}, got {self.parity!r}")
        if self.stopbits not in STOPBITS:
            raise invalid("stopbits", f"must be 1, 1.5 or 2, got {self.stopbits!r}")
        if not 1 <= self.read_chunk <= 1 << 20:
            raise invalid("read_chunk", f"must be between 1 and {1 << 20}, got {self.read_chunk}")
        if not self.write_timeout > 0:
            raise invalid("write_timeout", f"must be positive, got {self.write_timeout!r}")


@dataclass(frozen=True, slots=True)
class WriteArgs:
    """Arguments of ``write``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SetModemArgs:
    """Arguments of ``set_modem``: each line to drive, or ``None`` to leave it."""

    rts: bool | None = None
    dtr: bool | None = None
    brk: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialGrant(DeviceGrant):
    """What one agent may do with a serial port (``[agents.A.devices.NAME]``).

    Reading is the ``read`` op in ``ops``; writing is ``write``.

    :param max_write_bytes: the largest single write (``None``: no limit; ``0``: only empty
        writes).
    :param bytes_per_second: written bytes per second, kept as a ``write_bytes`` token bucket
        beside the base ``calls`` bucket (``None``: unlimited).
    """

    max_write_bytes: int | None = None
    bytes_per_second: float | None = None

    def __post_init__(self) -> None:
        DeviceGrant.__post_init__(self)  # explicit: zero-argument super() fails in slotted dataclasses
        if self.max_write_bytes is not None and self.max_write_bytes < 0:
            raise invalid("max_write_bytes", f"must be 0 or more, got {self.max_write_bytes}")
        if self.bytes_per_second is not None and not self.bytes_per_second > 0:
            raise invalid("bytes_per_second", f"must be positive, got {self.bytes_per_second!r}")

    def check(self, op: str, args: Any) -> None:
        if op == "write" and self.max_write_bytes is not None:
            size = len(args.data)
            if size > self.max_write_bytes:
                raise deny(
                    f"write of {size} bytes exceeds this grant's max_write_bytes of {self.max_write_bytes}",
                    size=size,
                    limit=self.max_write_bytes,
                )

    def rates(self) -> dict[str, float]:
        rates = DeviceGrant.rates(self)
        if self.bytes_per_second is not None:
            rates["write_bytes"] = self.bytes_per_second
        return rates

    def cost(self, op: str, args: Any) -> dict[str, float]:
        cost = DeviceGrant.cost(self, op, args)
        if op == "write" and self.bytes_per_second is not None:
            cost["write_bytes"] = float(len(args.data))
        return cost
