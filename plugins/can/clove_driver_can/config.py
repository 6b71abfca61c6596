"""The ``[devices.NAME]`` table of a CAN device, checked when the kernel loads its config.

Pure: python-can is not imported here, because the kernel validates config without opening
anything. Whether ``interface`` names an installed python-can interface is only known at open
(the driver then raises ``DeviceUnavailable`` naming it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clove.drivers import invalid

__all__ = ["RESERVED_OPTIONS", "CanConfig"]

#: Bus keyword arguments the driver sets from named fields; ``options`` may not override them.
RESERVED_OPTIONS = frozenset(
    {
        "interface",
        "channel",
        "bitrate",
        "fd",
        "data_bitrate",
        "receive_own_messages",
        "can_filters",
        "bustype",
    }
)

_MAX_BITRATE = 1_000_000  # classic CAN (ISO 11898-1) tops out at 1 Mbit/s
_MAX_DATA_BITRATE = 16_000_000  # the fastest CAN FD data phase controllers offer


@dataclass(frozen=True, slots=True, kw_only=True)
class CanConfig:
    """One CAN bus, opened with ``can.Bus(interface=..., channel=..., ...)``.

    :param interface: any python-can interface name: ``"socketcan"``, ``"virtual"``,
        ``"udp_multicast"``, ``"pcan"``, ...
    :param channel: the interface's channel (``"can0"``, ``"PCAN_USBBUS1"``, a virtual bus name).
    :param bitrate: the nominal bitrate in bit/s (``None``: leave the interface's setting).
    :param fd: open the bus in CAN FD mode; required for sending FD frames.
    :param data_bitrate: the CAN FD data-phase bitrate (only with ``fd``).
    :param receive_own_messages: echo sent frames into the stream (python-can's option; lets a
        lone ``virtual`` bus observe its own sends).
    :param send_timeout: seconds a send may wait for room in the transmit queue before failing
        (the host's main thread must never block forever on a full queue).
    :param rx_filter: narrow the bus to the ids the current listeners' grants admit (kernel
        ``CAN_RAW_FILTER`` on ``socketcan``, in the host on other interfaces); ``false``: the host
        receives every frame (the kernel filters per agent either way).
    :param options: further keyword arguments for the python-can interface, e.g.
        ``{ preserve_timestamps = true }``.
    """

    interface: str
    channel: str
    bitrate: int | None = None
    fd: bool = False
    data_bitrate: int | None = None
    receive_own_messages: bool = False
    send_timeout: float = 1.0
    rx_filter: bool = True
    options: dict[str, str | int | float | bool] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.interface.strip():
            raise invalid("interface", "must name a python-can interface, e.g. 'socketcan' or 'virtual'")
        if self.interface == "clove":
            raise invalid(
                "interface", "'clove' is the agents' interface to the kernel; a device needs a real one"
            )
        if not self.channel.strip():
            raise invalid("channel", "must not be empty")
        if self.bitrate is not None and not 0 < self.bitrate <= _MAX_BITRATE:
            raise invalid("bitrate", f"must be between 1 and {_MAX_BITRATE} bit/s, got {self.bitrate}")
        if self.data_bitrate is not None:
            if not self.fd:
                raise invalid("data_bitrate", "needs fd = true (only CAN FD has a data phase)")
            if not 0 < self.data_bitrate <= _MAX_DATA_BITRATE:
                raise invalid(
                    "data_bitrate",
                    f"must be between 1 and {_MAX_DATA_BITRATE} bit/s, got {self.data_bitrate}",
                )
        if not 0 < self.send_timeout <= 60:
            raise invalid(
                "send_timeout", f"must be more than 0 and at most 60 seconds, got {self.send_timeout}"
            )
        for key in self.options:
            if key in RESERVED_OPTIONS:
                raise invalid(
                    f"options.{key}", f"set {key!r} as its own key of the device table, not in options"
                )

    def bus_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``can.Bus`` (unset optional fields are left out, so each
        interface keeps its own default)."""
        kwargs: dict[str, Any] = dict(self.options)
        kwargs["receive_own_messages"] = self.receive_own_messages
        if self.bitrate is not None:
            kwargs["bitrate"] = self.bitrate
        if self.fd:
            kwargs["fd"] = True
        if self.data_bitrate is not None:
            kwargs["data_bitrate"] = self.data_bitrate
        return kwargs
