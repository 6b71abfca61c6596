"""The python-can interface ``simbus``: :class:`SimBus`, a node on a channel served by a hub."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from typing import Any, cast

import can
import zmq

from hil.simbus.channel import SimBusPaths, listening, simbus_paths, validate_channel
from hil.simbus.wire import (
    EVENTS,
    NOBLOCK,
    POLLIN,
    SENDER_ID_LEN,
    TOPIC_FRAME,
    TOPIC_PROBE,
    TOPIC_STATUS,
    decode,
    encode,
    parse_status,
)

_FD_LENGTHS = frozenset((0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64))


class SimBus(can.BusABC):
    """A node on a simulated CAN bus served by a :class:`SimBusHub` (python-can interface ``simbus``).

    :param channel: the bus name, as the hub was started with.
    :param can_filters: python-can filters (applied in this process, as python-can does).
    :param simbus_dir: the hub's directory (default :data:`DEFAULT_DIR` or ``$CLOVE_SIMBUS_DIR``).
    :param receive_own_messages: also receive the frames this bus sends (``is_rx`` False).
    :param fd: a CAN FD controller (may send FD frames); every node receives FD frames regardless.
    :param connect_timeout: seconds to wait for the hub to answer (the bus is usable on return).
    :param bitrate: accepted for compatibility and ignored (so is ``data_bitrate``).
    :raises can.CanInitializationError: no hub serves the channel, or it did not answer in time.
    :raises ValueError: an invalid channel name.

    ``fileno()`` returns -1: ZeroMQ's ``ZMQ_FD`` is edge-triggered and would mislead a
    ``select``-based reader, so python-can's ``Notifier`` uses a reader thread for this bus.

    Threads: one thread may receive while others send; sends are serialised by a lock.
    """

    #: Frames a sender queues before ``send`` waits for the hub.
    TX_QUEUE = 4096
    #: Frames queued locally for a receiver that is not reading (the hub queues more).
    RX_QUEUE = 50_000
    #: How long ``shutdown`` lets queued frames drain to the hub (milliseconds).
    SHUTDOWN_LINGER_MS = 1000
    #: Seconds a sender goes on using the bus state it read last (``state`` always reads it).
    STATUS_INTERVAL = 0.001
    #: Seconds between connection probes while connecting.
    PROBE_INTERVAL = 0.01

    def __init__(
        self,
        channel: Any = None,
        can_filters: can.typechecking.CanFilters | None = None,
        *,
        simbus_dir: str | os.PathLike[str] | None = None,
        receive_own_messages: bool = False,
        fd: bool = False,
        connect_timeout: float = 2.0,
        bitrate: int | None = None,
        data_bitrate: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.channel = validate_channel(channel)
        self.paths = simbus_paths(self.channel, simbus_dir)
        self.channel_info = f"simbus channel {self.channel!r} ({os.path.dirname(self.paths.pub)})"
        self.receive_own_messages = bool(receive_own_messages)
        self._fd = bool(fd)
        if self._fd:
            self._can_protocol = can.CanProtocol.CAN_FD
        self._sender = os.urandom(SENDER_ID_LEN)
        self._probe = TOPIC_PROBE + self._sender
        self._bus_off = False
        self._status_due = 0.0
        self._tx_lock = threading.Lock()
        self._pending: deque[bytes] = deque()  # frames that arrived while connecting

        for path in (self.paths.pub, self.paths.sub):
            if not os.path.exists(path):
                raise can.CanInitializationError(
                    f"no simbus hub for channel {self.channel!r}: {path} does not exist "
                    f"(start one: python -m hil.simbus --channel {self.channel} "
                    f"--dir {os.path.dirname(path)})"
                )
            if not listening(path):
                raise can.CanInitializationError(
                    f"no simbus hub for channel {self.channel!r}: nothing listens on {path} "
                    "(a stale socket: its hub is not running)"
                )

        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.SNDHWM, self.TX_QUEUE)
            self._pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue makes send wait, not drop
            self._pub.setsockopt(zmq.LINGER, self.SHUTDOWN_LINGER_MS)
            self._sub = self._ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.RCVHWM, self.RX_QUEUE)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.SUBSCRIBE, TOPIC_FRAME)
            self._sub.setsockopt(zmq.SUBSCRIBE, self._probe)  # after F: once it works, F does
            self._status = self._ctx.socket(zmq.SUB)
            self._status.setsockopt(zmq.CONFLATE, 1)  # only the latest state matters
            self._status.setsockopt(zmq.LINGER, 0)
            self._status.setsockopt(zmq.SUBSCRIBE, TOPIC_STATUS)
            self._pub.connect(SimBusPaths.endpoint(self.paths.sub))
            self._sub.connect(SimBusPaths.endpoint(self.paths.pub))
            self._status.connect(SimBusPaths.endpoint(self.paths.pub))
            self._handshake(float(connect_timeout))
            super().__init__(self.channel, can_filters=can_filters, **kwargs)
        except BaseException:
            self._ctx.destroy(linger=0)
            raise

    def _handshake(self, timeout: float) -> None:
        """Probe through the hub until the probe and a state report come back.

        Then the hub takes this node's frames and sends it everyone's: ZeroMQ subscriptions
        propagate asynchronously, so without this the first frames either way would be lost.
        """
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._status, zmq.POLLIN)
        probed = stated = False
        while not (probed and stated):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise can.CanInitializationError(
                    f"simbus hub for channel {self.channel!r} did not answer within {timeout} s "
                    f"({SimBusPaths.endpoint(self.paths.sub)} -> {SimBusPaths.endpoint(self.paths.pub)})"
                )
            with contextlib.suppress(zmq.Again):
                self._pub.send(self._probe, NOBLOCK)
            ready = dict(poller.poll(max(1, int(min(remaining, self.PROBE_INTERVAL) * 1000))))
            if self._sub in ready:
                while True:
                    try:
                        raw = self._sub.recv(NOBLOCK)
                    except zmq.Again:
                        break
                    if raw == self._probe:
                        probed = True
                    elif raw[:1] == TOPIC_FRAME:
                        self._pending.append(raw)
            if self._status in ready:
                self._poll_status()
                stated = True

    # ---- state ----------------------------------------------------------------------------------

    def _poll_status(self) -> None:
        status = self._status
        while cast(int, status.getsockopt(EVENTS)) & POLLIN:
            bus_off = parse_status(status.recv(NOBLOCK))
            if bus_off is not None:
                self._bus_off = bus_off

    @property
    def state(self) -> can.BusState:
        """``ACTIVE``, or ``ERROR`` while the hub's bus-off fault is active."""
        if self._is_shutdown:
            return can.BusState.ERROR if self._bus_off else can.BusState.ACTIVE
        with self._tx_lock:
            self._poll_status()
            return can.BusState.ERROR if self._bus_off else can.BusState.ACTIVE

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        raise NotImplementedError(
            "a simbus node's state follows the hub (SimBusControl.set_faults(bus_off=...))"
        )

    @property
    def bus_off(self) -> bool:
        """Whether the bus is off (the hub's ``bus_off`` fault)."""
        return self.state == can.BusState.ERROR

    def fileno(self) -> int:
        """-1: no readable file descriptor (see the class docstring)."""
        return -1

    # ---- sending --------------------------------------------------------------------------------

    def _check_frame(self, msg: can.Message) -> None:
        if msg.is_error_frame:
            raise ValueError(
                "nodes cannot send error frames; the hub injects them (SimBusControl.inject_error)"
            )
        limit = 0x1FFFFFFF if msg.is_extended_id else 0x7FF
        if not 0 <= msg.arbitration_id <= limit:
            kind = "extended (29-bit)" if msg.is_extended_id else "standard (11-bit)"
            raise ValueError(f"arbitration id {msg.arbitration_id:#x} does not fit a {kind} id")
        length = len(msg.data) if msg.data is not None else 0
        if msg.is_fd:
            if not self._fd:
                raise ValueError("a CAN FD frame on a bus opened without fd=True")
            if msg.is_remote_frame:
                raise ValueError("CAN FD has no remote frames")
            if length not in _FD_LENGTHS:
                raise ValueError(
                    f"a CAN FD frame carries 0-8, 12, 16, 20, 24, 32, 48 or 64 bytes, not {length}"
                )
        elif length > 8 or (msg.is_remote_frame and not 0 <= msg.dlc <= 8):
            raise ValueError(f"a classic CAN frame carries at most 8 bytes, got {max(length, msg.dlc)}")

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Put ``msg`` on the bus, stamped with ``time.time()`` (``msg`` itself is not changed).

        :param timeout: seconds to wait for room in the transmit queue (``None``: as long as it
            takes; ``0``: not at all).
        :raises can.CanOperationError: the bus is off, the queue stayed full, or the bus is shut down.
        :raises ValueError: the frame cannot exist on this bus (see :meth:`_check_frame`).
        """
        if self._is_shutdown:
            raise can.CanOperationError(f"simbus {self.channel!r}: the bus is shut down")
        self._check_frame(msg)
        with self._tx_lock:
            now = time.monotonic()
            if now >= self._status_due:  # reading the state costs ~2 us: at most once a millisecond
                self._status_due = now + self.STATUS_INTERVAL
                self._poll_status()
            if self._bus_off:
                raise can.CanOperationError(f"simbus {self.channel!r}: bus off (the hub's bus_off fault)")
            frame = encode(self._sender, msg, time.time())
            try:
                self._pub.send(frame, NOBLOCK)
                return
            except zmq.Again:
                if timeout is not None and timeout <= 0:
                    raise can.CanOperationError(f"simbus {self.channel!r}: transmit queue full") from None
            self._pub.setsockopt(zmq.SNDTIMEO, -1 if timeout is None else max(1, int(timeout * 1000)))
            try:
                self._pub.send(frame)
            except zmq.Again:
                raise can.CanOperationError(
                    f"simbus {self.channel!r}: transmit queue still full after {timeout} s"
                ) from None
            finally:
                self._pub.setsockopt(zmq.SNDTIMEO, -1)

    # ---- receiving ------------------------------------------------------------------------------

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        sub = self._sub
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._pending:
                raw = self._pending.popleft()
            else:
                try:
                    raw = sub.recv(NOBLOCK)
                except zmq.Again:
                    if deadline is None:
                        sub.poll(None)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None, False
                    sub.poll(max(1, math.ceil(remaining * 1000)))
                    continue
            if raw[:1] != TOPIC_FRAME:
                continue  # a late answer to a connection probe
            sender, msg = decode(raw, self.channel)
            if sender == self._sender:
                if not self.receive_own_messages:
                    continue
                msg.is_rx = False
            return msg, False

    # ---- closing --------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close the sockets; frames still queued get up to :attr:`SHUTDOWN_LINGER_MS` to drain."""
        if self._is_shutdown:
            return
        super().shutdown()
        with self._tx_lock:
            self._sub.close(linger=0)
            self._status.close(linger=0)
            self._pub.close()
            self._ctx.term()
