"""The CAN driver: one python-can bus (any interface) behind the Clove driver contract.

The host sends frames with the ``send`` operation and pumps received frames from
:meth:`CanDriver.read`; agents get those frames through the kernel, narrowed by their
:class:`~clove_driver_can.grant.CanGrant` and their own filters (:meth:`CanDriver.compile_filter`).
The kernel also narrows the bus itself to the ids its current listeners' grants admit
(:meth:`CanDriver.stream_filter`, applied by :meth:`CanDriver.set_stream_filter`): on
``socketcan`` as ``CAN_RAW_FILTER`` (filtered frames never leave the OS), on other interfaces
in :meth:`CanDriver.read` before frames go to the kernel.
python-can is imported only in :meth:`CanDriver._open`, so the kernel can import this module to
validate config and grants on a machine without it.
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

from clove.drivers import Driver, NoArgs, operation
from clove.errors import (
    DeviceBroken,
    DeviceBusy,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
)
from clove_driver_can.config import CanConfig
from clove_driver_can.filters import accepts, parse_receive_filter, receive_filter
from clove_driver_can.frames import SendArgs, compile_filter, frame_from_message
from clove_driver_can.grant import CanGrant

__all__ = ["CanDriver"]

_STATES = {"ACTIVE": "active", "PASSIVE": "passive", "ERROR": "off"}  # python-can BusState names
#: A filter no frame passes (a standard frame with bit 11 set cannot exist): python-can takes an
#: empty filter list as "no filter", so "nothing" needs one.
_NOTHING = {"can_id": 0x800, "can_mask": 0x800, "extended": False}


class CanDriver(Driver):
    """A CAN bus opened with ``can.Bus(interface=config.interface, channel=config.channel, ...)``.

    Stream items are frame dicts (see :mod:`clove_driver_can.frames`); error frames arrive with
    ``err = True``.
    """

    Config = CanConfig
    Grant = CanGrant
    stream = "items"
    stream_op = "recv"

    #: The longest single wait on the bus: python-can's ``virtual`` recv blocks on a queue that
    #: close() cannot wake, so a read waits in slices and checks for close between them.
    READ_SLICE: ClassVar[float] = 0.1
    #: Frames one read returns at most (the first waited for, the rest already there).
    BATCH: ClassVar[int] = 256

    config: CanConfig

    def __init__(self, config: CanConfig) -> None:
        self._bus: Any = None
        self._closing = False
        #: The receive filter applied in read() (interfaces without one in the OS); None: none.
        self._accept: Callable[[int], bool] | None = None
        #: (pairs, "socket" | "host") of the receive filter in place; None: every frame.
        self._rx: tuple[int, str] | None = None
        super().__init__(config)

    @classmethod
    def compile_filter(cls, filters: list[Any]) -> Callable[[Any], bool]:
        """python-can filters (``[{"can_id", "can_mask", "extended"?}]``) as a predicate."""
        return compile_filter(filters)

    @classmethod
    def stream_filter(cls, scopes: list[Any]) -> list[dict[str, int]] | None:
        """The listeners' ``recv_ids`` (their grants' scopes) as an exact ``(id, mask)`` cover,
        in python-can filter tables (``[]``: nobody listens, nothing passes)."""
        return receive_filter(scopes)

    @staticmethod
    def detect() -> list[dict[str, Any]]:
        """SocketCAN interfaces that are up (other interfaces cannot be listed cheaply)."""
        try:
            import can

            found = can.detect_available_configs(interfaces=["socketcan"])
        except Exception:  # noqa: BLE001 - detection is best effort: no library, no `ip`, no AF_CAN
            return []
        return [{"interface": "socketcan", "channel": str(c["channel"])} for c in found if "channel" in c]

    # ---- lifecycle ------------------------------------------------------------------------------

    def _open(self) -> None:
        import can
        from can.interfaces import VALID_INTERFACES

        cfg = self.config
        if cfg.interface not in VALID_INTERFACES:
            installed = ", ".join(sorted(VALID_INTERFACES))
            raise DeviceUnavailable(
                f"CanDriver: python-can has no interface {cfg.interface!r} (installed: {installed})",
                details={"interface": cfg.interface},
            )
        try:
            self._bus = can.Bus(
                interface=cfg.interface, channel=cfg.channel, ignore_config=True, **cfg.bus_kwargs()
            )
        except Exception as err:  # noqa: BLE001 - whatever stops an open makes the device unavailable
            where = f"{cfg.interface} channel {cfg.channel!r}"
            raise DeviceUnavailable(
                f"CanDriver: cannot open {where}: {type(err).__name__}: {err}",
                details={"interface": cfg.interface, "channel": cfg.channel},
            ) from err
        for name in ("frames_out", "error_frames", "frames_filtered"):
            self.counters.setdefault(name, 0)

    def _close(self) -> None:
        self._closing = True  # a read blocked in another thread stops at its next slice
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.shutdown()

    # ---- operations -----------------------------------------------------------------------------

    @operation("send", args=SendArgs)
    def send(self, args: SendArgs) -> dict[str, Any]:
        """Send one frame (id, data, ext, rtr, fd, brs); returns {"sent": true}."""
        if args.fd and not self.config.fd:
            raise InvalidArguments(
                "send: CAN FD frames need fd = true in the device's config",
                details={"op": "send", "argument": "fd"},
            )
        import can

        msg = can.Message(
            arbitration_id=args.id,
            is_extended_id=args.extended,
            is_remote_frame=args.rtr,
            is_fd=args.fd,
            bitrate_switch=args.brs,
            data=args.data,
            dlc=args.dlc if args.rtr else None,
        )
        self._bus.send(msg, timeout=self.config.send_timeout)
        self.counters["frames_out"] += 1
        return {"sent": True}

    @operation("status")
    def bus_status(self, args: NoArgs) -> dict[str, Any]:
        """Bus state (active, passive, off or unknown), interface, channel and counters."""
        return self.status()

    def status(self) -> dict[str, Any]:
        return {
            "state": self._state_name(),
            "interface": self.config.interface,
            "channel": self.config.channel,
            "bitrate": self.config.bitrate,
            "fd": self.config.fd,
            "rx_filters": None if self._rx is None else self._rx[0],
            "rx_filter_in": None if self._rx is None else self._rx[1],
            **self.counters,
        }

    # ---- the receive filter ---------------------------------------------------------------------

    def _set_stream_filter(self, spec: Any | None) -> None:
        """Narrow the bus to ``spec`` (from :meth:`stream_filter`). On ``socketcan`` python-can
        installs it as ``CAN_RAW_FILTER``: filtered frames are dropped by the OS and error frames
        still arrive (they pass ``CAN_RAW_ERR_FILTER`` alone). On other interfaces python-can
        would filter in software and drop error frames too, so :meth:`read` applies the filter
        itself and lets error frames through: the same frames reach the kernel either way."""
        if not self.config.rx_filter:
            return
        pairs = None if spec is None else parse_receive_filter(spec)
        bus = self._bus
        in_socket = self.config.interface == "socketcan"
        if in_socket:
            bus.set_filters(None if pairs is None else [{"can_id": i, "can_mask": m} for i, m in pairs] or [_NOTHING])
            if pairs is not None and not getattr(bus, "_is_filtered", False):
                bus.set_filters(None)  # the socket refused it; python-can would filter in software
                in_socket = False
        self._accept = None if pairs is None or in_socket else accepts(pairs)
        self._rx = None if pairs is None else (len(pairs), "socket" if in_socket else "host")

    def _admit(self, msg: Any) -> bool:
        accept = self._accept
        if accept is None or msg.is_error_frame or accept(msg.arbitration_id):
            return True
        self.counters["frames_filtered"] += 1
        return False

    def _state_name(self) -> str:
        bus = self._bus
        if bus is None:
            return "unknown"
        try:
            state = bus.state
        except Exception:  # noqa: BLE001 - many interfaces cannot tell; that is "unknown"
            return "unknown"
        return _STATES.get(getattr(state, "name", ""), "unknown")

    # ---- the stream -----------------------------------------------------------------------------

    def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
        bus = self._bus
        if bus is None or self._closing:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        skipped = 0  # filtered frames in a row, drained before the deadline is checked (bounded)
        while True:
            if deadline is None:
                wait = self.READ_SLICE
            else:
                wait = min(self.READ_SLICE, max(0.0, deadline - time.monotonic()))
            msg = bus.recv(wait)
            if msg is not None:
                if self._admit(msg):
                    break
                skipped += 1
                if skipped < self.BATCH and not self._closing:
                    continue
            skipped = 0
            if self._closing or (deadline is not None and time.monotonic() >= deadline):
                return []
        frames = [frame_from_message(msg)]
        pulled = 1
        while pulled < self.BATCH and not self._closing:
            msg = bus.recv(0)  # only what is already there
            if msg is None:
                break
            pulled += 1
            if self._admit(msg):
                frames.append(frame_from_message(msg))
        errors = sum(1 for f in frames if f["err"])
        if errors:
            self.counters["error_frames"] += errors
        return frames

    def fileno(self) -> int:
        """The bus socket (socketcan, udp_multicast); ``-1`` for interfaces without one."""
        bus = self._bus
        if bus is None:
            return -1
        try:
            fd = bus.fileno()
        except Exception:  # noqa: BLE001 - virtual raises NotImplementedError; others vary
            return -1
        return fd if isinstance(fd, int) and fd >= 0 else -1

    # ---- errors ---------------------------------------------------------------------------------

    def map_error(self, err: BaseException) -> DeviceError | None:
        can = sys.modules.get("can")
        if can is None:  # python-can never imported: nothing of ours to translate
            return None
        where = f"CanDriver {self.config.interface}:{self.config.channel}"
        details: dict[str, Any] = {"interface": self.config.interface, "channel": self.config.channel}
        if isinstance(err, can.CanInterfaceNotImplementedError):
            return DeviceUnavailable(f"{where}: the interface cannot be loaded: {err}", details=details)
        if isinstance(err, can.CanInitializationError):
            return DeviceUnavailable(f"{where}: cannot open the bus: {err}", details=details)
        if isinstance(err, can.CanTimeoutError):
            return DeviceTimeout(f"{where}: timed out: {err}", details=details)
        if isinstance(err, can.CanOperationError):
            code = getattr(err, "error_code", None)
            if code in (errno.ENOBUFS, errno.EAGAIN):
                return DeviceBusy(f"{where}: transmit queue full: {err}", details={**details, "errno": code})
            return DeviceBroken(f"{where}: {err}", details=details)
        if isinstance(err, can.CanError):
            return DeviceBroken(f"{where}: {err}", details=details)
        return None
