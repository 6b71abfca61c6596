"""python-can's ``clove`` interface: existing python-can code reaches a Clove CAN device unchanged.

Inside an agent::

    bus = can.Bus(interface="clove", channel="motor_bus")     # the device's configured name
    bus.send(can.Message(arbitration_id=0x101, data=b"\\x00\\x10", is_extended_id=False))
    msg = bus.recv(timeout=1.0)

Every send and receive goes through the kernel, so the agent's grant applies: a refused send
raises ``can.CanOperationError`` carrying the kernel's message (the ``PermissionDenied`` is its
``__cause__``). Filters set on the bus are forwarded to the kernel (``device.subscribe``) and are
also applied by python-can itself, so frames queued before a filter change are filtered too.

The bus subscribes when it is created, so frames arriving between creation and the first
``recv`` are kept (as a SocketCAN bus would). A send-only program can pass ``receive=False`` to
skip the subscription (and the journaled refusal when its grant lacks ``recv``).

Threads: python-can programs often receive in a ``can.Notifier`` thread while sending from
another. A ZeroMQ socket must not be used by two threads at once, so every use of a client is
serialised by a lock per client. A bus that creates its own client creates a second one for
sends, so a send never waits behind a blocking receive; a bus given ``client=`` shares it and
receives in short slices instead, so a send waits at most :attr:`CloveBus.SHARED_RECV_SLICE`.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import deque
from typing import Any

import can

from clove_sdk.client import CloveClient
from clove_sdk.errors import CloveError, InvalidArguments, PermissionDenied

__all__ = ["CloveBus"]

_STATES = {"active": can.BusState.ACTIVE, "passive": can.BusState.PASSIVE, "off": can.BusState.ERROR}

_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _client_lock(client: Any) -> threading.Lock:
    """The one lock serialising all use of ``client`` (shared by every bus on it)."""
    with _locks_guard:
        try:
            lock = _locks.get(client)
            if lock is None:
                lock = _locks[client] = threading.Lock()
        except TypeError:  # not weak-referenceable: this bus alone serialises it
            lock = threading.Lock()
        return lock


class CloveBus(can.BusABC):
    """A CAN bus that is a Clove device, reached through the kernel.

    :param channel: the device's name in the kernel's config (``[devices.NAME]``).
    :param can_filters: python-can filters, forwarded to the kernel.
    :param client: a ``CloveClient`` (or anything with ``device(name)``) to use; the bus then
        does not close it. Default: a new client on the default endpoint.
    :param socket_path: the endpoint for a client the bus creates (see ``CloveClient``).
    :param kernel_timeout: seconds a client the bus creates waits for each kernel reply.
    :param receive: subscribe to the device's frames (``False`` for a send-only bus).
    :param fd: report the CAN FD protocol (the device decides what it can send).
    :raises can.CanInitializationError: the kernel or the device cannot be reached.
    :raises ValueError: ``channel`` is not a device name, or the kernel refused the filters.
    """

    #: Maximum frames fetched from the kernel per receive call.
    BATCH = 256
    #: Longest kernel-side wait per receive when the bus has its own clients (it bounds how
    #: long :meth:`shutdown` waits for a receive in another thread).
    OWN_RECV_SLICE = 0.5
    #: Longest kernel-side wait per receive when sends share the receiving client.
    SHARED_RECV_SLICE = 0.05
    #: The least time a send waits for the kernel's reply, whatever python-can's timeout says
    #: (a tighter bound would fail sends on IPC latency alone).
    MIN_REPLY_TIMEOUT = 1.0

    def __init__(
        self,
        channel: Any,
        can_filters: can.typechecking.CanFilters | None = None,
        *,
        client: Any = None,
        socket_path: str | None = None,
        kernel_timeout: float = 30.0,
        receive: bool = True,
        fd: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must name a Clove device, e.g. 'motor_bus', got {channel!r}")
        self.channel = channel
        self.channel_info = f"Clove device {channel!r}"
        self._owns_client = client is None
        self._rx_client: Any = (
            client if client is not None else CloveClient(socket_path, timeout=kernel_timeout)
        )
        self._rx_device = self._rx_client.device(channel)
        if self._owns_client:
            self._tx_client: Any = CloveClient(socket_path, timeout=kernel_timeout)
            self._tx_device = self._tx_client.device(channel)
        else:
            self._tx_client, self._tx_device = self._rx_client, self._rx_device
        self._rx_lock = _client_lock(self._rx_client)
        self._tx_lock = _client_lock(self._tx_client)
        self._recv_slice = (
            self.OWN_RECV_SLICE if self._rx_lock is not self._tx_lock else self.SHARED_RECV_SLICE
        )
        self._receive = receive
        self._pending: deque[dict[str, Any]] = deque()
        self._subscribed = False
        self._rx_refused: PermissionDenied | None = None  # a refused subscribe, raised on recv
        self._initialising = True
        if fd:
            self._can_protocol = can.CanProtocol.CAN_FD
        try:
            super().__init__(channel, can_filters=can_filters, **kwargs)  # applies the filters
        except BaseException:
            self._close_clients()
            raise
        self._initialising = False

    # ---- sending --------------------------------------------------------------------------------

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Send ``msg`` through the kernel (``device.call("send", ...)``).

        :param timeout: how long to wait for the kernel (at least :attr:`MIN_REPLY_TIMEOUT`).
        :raises can.CanOperationError: refused by the grant, bad frame, or the device is down.
        """
        self._require_open()
        if msg.is_error_frame:
            raise can.CanOperationError("a Clove bus cannot send error frames")
        args: dict[str, Any] = {
            "id": msg.arbitration_id,
            "data": bytes(msg.data or b""),
            "ext": msg.is_extended_id,
            "rtr": msg.is_remote_frame,
            "fd": msg.is_fd,
            "brs": msg.bitrate_switch,
        }
        if msg.is_remote_frame:
            args["dlc"] = msg.dlc
        reply_timeout = None if timeout is None else max(float(timeout), self.MIN_REPLY_TIMEOUT)
        with self._tx_lock:
            try:
                self._tx_device.call("send", reply_timeout=reply_timeout, **args)
            except CloveError as err:
                raise can.CanOperationError(err.message) from err

    # ---- receiving ------------------------------------------------------------------------------

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        # Not filtered here: python-can filters again, which also catches frames queued under
        # earlier filters.
        if self._pending:
            return self._message(self._pending.popleft()), False
        self._require_open()
        if not self._receive:
            raise can.CanOperationError(f"{self.channel_info} was created with receive=False")
        if self._rx_refused is not None:
            raise can.CanOperationError(self._rx_refused.message) from self._rx_refused
        # None: the kernel answers at once; BusABC.recv loops until its own timeout passes.
        wait = (
            self._recv_slice if timeout is None else (min(timeout, self._recv_slice) if timeout > 0 else None)
        )
        with self._rx_lock:
            self._require_open()
            try:
                items = self._rx_device.recv(max_items=self.BATCH, timeout=wait)
            except CloveError as err:
                raise can.CanOperationError(err.message) from err
        self._pending.extend(items)
        if not self._pending:
            return None, False
        return self._message(self._pending.popleft()), False

    def _message(self, item: dict[str, Any]) -> can.Message:
        try:
            ident = int(item["id"])
            return can.Message(
                timestamp=float(item.get("ts", 0.0)),
                arbitration_id=ident,
                is_extended_id=bool(item.get("ext", ident > 0x7FF)),
                is_remote_frame=bool(item.get("rtr", False)),
                is_error_frame=bool(item.get("err", False)),
                dlc=item.get("dlc"),
                data=bytes(item.get("data", b"")),
                is_fd=bool(item.get("fd", False)),
                bitrate_switch=bool(item.get("brs", False)),
                channel=self.channel,
                is_rx=True,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise can.CanOperationError(
                f"{self.channel_info}: malformed frame from the kernel: {item!r}"
            ) from err

    def _apply_filters(self, filters: can.typechecking.CanFilters | None) -> None:
        """Forward the filters to the kernel by (re)subscribing with them."""
        if not self._receive:
            return
        wire = [
            {
                "can_id": int(f["can_id"]),
                "can_mask": int(f["can_mask"]),
                **({"extended": bool(f["extended"])} if "extended" in f else {}),
            }
            for f in filters or ()
        ]
        with self._rx_lock:
            try:
                self._rx_device.subscribe(filters=wire)
            except InvalidArguments as err:
                raise ValueError(
                    f"{self.channel_info}: the kernel refused the filters: {err.message}"
                ) from err
            except PermissionDenied as err:
                self._rx_refused = err  # a send-only grant: sending still works; recv raises this
                return
            except CloveError as err:
                kind = can.CanInitializationError if self._initialising else can.CanOperationError
                raise kind(f"{self.channel_info}: {err.message}") from err
        self._subscribed = True
        self._rx_refused = None

    # ---- state and shutdown ---------------------------------------------------------------------

    @property
    def state(self) -> can.BusState:
        """The device's bus state, from its driver (``off`` is ``BusState.ERROR``; a driver
        that cannot tell reports ``ACTIVE``, as python-can's default does)."""
        self._require_open()
        with self._tx_lock:
            try:
                status = self._tx_device.call("status")
            except CloveError as err:
                raise can.CanOperationError(err.message) from err
        name = status.get("state") if isinstance(status, dict) else None
        return _STATES.get(name, can.BusState.ACTIVE) if isinstance(name, str) else can.BusState.ACTIVE

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        raise NotImplementedError("a Clove device's bus state is set by the device's config, not by agents")

    def shutdown(self) -> None:
        """Unsubscribe (best effort) and close the clients this bus created. Safe twice."""
        if self._is_shutdown:
            return
        super().shutdown()
        with self._rx_lock:  # waits for a receive in another thread to finish its slice
            if self._subscribed:
                if self._owns_client:  # a dead kernel must not stall the program's exit
                    self._rx_client.timeout = min(self._rx_client.timeout, 2.0)
                # Best effort: the kernel drops the subscription with the agent anyway.
                with contextlib.suppress(CloveError):
                    self._rx_device.unsubscribe()
                self._subscribed = False
        self._pending.clear()
        self._close_clients()

    def _close_clients(self) -> None:
        if self._owns_client:
            with self._rx_lock:
                self._rx_client.close()
            with self._tx_lock:
                self._tx_client.close()

    def _require_open(self) -> None:
        if self._is_shutdown:
            raise can.CanOperationError(f"{self.channel_info} is shut down")
